"""Small cross-cutting helpers: where data lives, seeding, environment capture, optional extras."""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

from metarec.errors import MetarecError


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
    pkgs = ("metarec", "numpy", "pandas", "scipy", "implicit", "torch", "sentence-transformers", "pykeen", "ray",
            "mlflow-skinny")  # fmt: skip
    for pkg in pkgs:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    commit = git_commit()
    if commit:
        out["git_commit"] = commit
    return out


def git_commit() -> str | None:
    """The checkout's commit (with '+dirty' for uncommitted changes), or None outside a git checkout.

    `$METAREC_GIT_COMMIT` wins: a benchmark reads the commit once at its start and hands it to its
    worker processes, so editing files while it runs does not mislabel its results."""
    if os.environ.get("METAREC_GIT_COMMIT"):
        return os.environ["METAREC_GIT_COMMIT"]
    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        if sha.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def require(module: str, extra: str, package: str | None = None) -> ModuleType:
    """Import `module`, which comes with the `metarec[extra]` install, or fail in one actionable line.

    `package` is the distribution to name in the message when it differs from the module
    (e.g. module "sklearn", package "scikit-learn"); it defaults to the module's top-level name.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = package or module.split(".")[0]
        hint = f"pip install 'metarec[{extra}]'"
        absent = exc.name is not None and (module == exc.name or module.startswith(exc.name + "."))
        if absent:
            raise MetarecError(f"metarec {extra} needs {package}, which is not installed: {hint}") from None
        # the module is there but fails to load (a dependency of it is missing, a broken wheel): keep the cause
        raise MetarecError(f"metarec {extra} needs {package}, which failed to import ({exc}): {hint}") from exc
