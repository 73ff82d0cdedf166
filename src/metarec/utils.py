"""Small cross-cutting helpers: where data lives, seeding, environment capture."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import random
import sys
from pathlib import Path

import numpy as np


def metarec_home() -> Path:
    """Cache root for datasets and embeddings; `$METAREC_HOME` overrides ~/.cache/metarec."""
    root = Path(os.environ.get("METAREC_HOME", Path.home() / ".cache" / "metarec")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def seed_everything(seed: int) -> np.random.Generator:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:  # torch is optional for the baselines
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass
    return np.random.default_rng(seed)


def versions() -> dict[str, str]:
    """Versions a result depends on, written next to every run."""
    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("metarec", "numpy", "pandas", "scipy", "implicit", "torch", "sentence-transformers"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
