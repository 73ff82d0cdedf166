"""Experiment configs (TOML): one file says dataset, protocols, models and metrics.

Unknown top-level keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from metarec.errors import ConfigError

DEFAULTS: dict[str, Any] = {
    "name": None,
    "seed": 42,
    "num_threads": 0,
    "dataset": {},
    "text": {"encoder": "sentence-transformers", "model": "all-MiniLM-L6-v2"},
    "protocols": {},
    "models": {},
    "evaluation": {
        "ks": [5, 10, 20],
        "metrics": ["precision", "recall", "f1", "ndcg", "hr", "mrr", "map", "auc", "coverage", "novelty"],
        "main_metric": "ndcg@10",
        "report_metrics": ["ndcg@10", "recall@10", "hr@10"],
        "compare_to": "popularity",
        "compare_to_best": [],  # per protocol cell, compare every model with the best of these
        "bootstrap": 2000,
        "chunk_elements": 1 << 24,
    },
}


def _merge(base: dict[str, Any], over: dict[str, Any], where: str = "") -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, val in over.items():
        if key not in base and where in ("", "evaluation"):
            allowed = ", ".join(sorted(base))
            raise ConfigError(f"unknown config key '{where + '.' if where else ''}{key}'; allowed: {allowed}")
        if isinstance(base.get(key), dict) and isinstance(val, dict) and key == "evaluation":
            out[key] = _merge(base[key], val, key)
        else:
            out[key] = val
    return out


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config {path} not found; the shipped ones are in configs/")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    cfg = _merge(DEFAULTS, raw)
    if overrides:
        cfg = _merge(cfg, overrides)
    cfg["name"] = cfg["name"] or path.stem
    if not cfg["dataset"]:
        raise ConfigError(f"{path}: a [dataset] table is required (e.g. source = 'movielens')")
    if not cfg["protocols"]:
        raise ConfigError(f"{path}: at least one [protocols.<name>] table is required")
    if not cfg["models"]:
        raise ConfigError(f"{path}: at least one [models.<name>] table is required")
    ev = cfg["evaluation"]
    if not ev["ks"] or any(not isinstance(k, int) or k < 1 for k in ev["ks"]):
        raise ConfigError(f"{path}: evaluation.ks must be positive integers, got {ev['ks']}")
    return cfg
