"""Model artefacts: safetensors arrays + a JSON manifest, written from `state_dict()`; no pickle.

A model directory holds everything needed to serve without the training data: the learned arrays
(including the training interactions, to exclude seen items), the id maps, and a manifest with
the model kind, its constructor parameters, the JSON part of its state, package versions, the
dataset fingerprint and fit metrics. Any registered model can be saved and loaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
from safetensors.numpy import load_file, save_file

from metarec.data.schema import Dataset
from metarec.errors import MetarecError
from metarec.models import REGISTRY, Recommender
from metarec.models.base import ModelState
from metarec.utils import versions

FORMAT = "metarec-model/2"


def kind_of(model: Recommender) -> str:
    for kind, cls in REGISTRY.items():
        if type(model) is cls:
            return kind
    raise MetarecError(f"{type(model).__name__} is not a registered model; add it to metarec.models.REGISTRY")


def save_model(model: Recommender, out: str | Path, train: Dataset, config: dict[str, Any] | None = None) -> Path:
    state = model.state_dict()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.copy(order="C") for k, v in state.arrays.items()}, str(out / "model.safetensors"))
    manifest = {
        "format": FORMAT,
        "model": kind_of(model),
        "params": model.get_params(),
        "state": state.extra,
        "dataset": {
            "name": train.name,
            "fingerprint": train.fingerprint(),
            "n_users": train.n_users,
            "n_items": train.n_items,
        },
        "metrics": state.extra.get("fit_info", {}),
        "config": config,
        "versions": versions(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    ids: dict[str, Any] = {"item_ids": train.items["item_id"].tolist(), "user_ids": train.users["user_id"].tolist()}
    if "title" in train.items.columns:
        ids["item_titles"] = train.items["title"].astype(str).tolist()
    if (domains := train.item_domains()) is not None:  # the service recommends within a domain
        ids["item_domains"] = domains.tolist()
    ids["item_facts"] = item_facts(train.items)
    (out / "ids.json").write_text(json.dumps(ids))
    for fingerprint in sorted(_adapters(state.extra)):  # tuned text encoders travel with the model
        from metarec.text.tuning import find_adapter

        dest = out / "adapters" / fingerprint
        if not dest.exists():
            shutil.copytree(find_adapter(fingerprint), dest)
    return out


def _adapters(extra: Any) -> set[str]:
    """Fingerprints of the LoRA adapters a model's JSON state refers to (key `adapter`, any depth)."""
    if isinstance(extra, dict):
        found = {str(v) for k, v in extra.items() if k == "adapter" and isinstance(v, str) and v}
        return found.union(*(_adapters(v) for v in extra.values()))
    if isinstance(extra, list):
        return set().union(*(_adapters(v) for v in extra))
    return set()


#: item columns that are never facts to cite (ids, free text, the title itself)
_NOT_FACTS = {"item_id", "title", "description", "text", "reviews", "summary", "profile"}


def item_facts(items: pd.DataFrame, max_chars: int = 40) -> dict[str, list[str]]:
    """Short categorical / numeric item columns (genres, year, brand, ...) as strings, one per item:
    what an explanation may cite about an item besides its title (long free text is left out)."""
    out: dict[str, list[str]] = {}
    for col in items.columns:
        if col.lower() in _NOT_FACTS or col.startswith("_"):
            continue
        values = items[col].astype("string").fillna("").str.strip()
        if len(values) and values.str.len().mean() <= max_chars:
            out[col] = values.tolist()
    return out


def load_model(path: str | Path) -> tuple[Recommender, dict[str, Any]]:
    """Rebuild a fitted model from its directory; returns (model, manifest + id maps)."""
    path = Path(path)
    if not (path / "manifest.json").exists():
        raise MetarecError(
            f"{path} is not a metarec model directory (no manifest.json); create one with `metarec train`"
        )
    manifest = json.loads((path / "manifest.json").read_text())
    if manifest.get("format") != FORMAT:
        raise MetarecError(
            f"{path}: artefact format {manifest.get('format')!r} is not {FORMAT!r} (written by another metarec "
            "version); retrain it with `metarec train`"
        )
    kind = manifest["model"]
    if kind not in REGISTRY:
        raise MetarecError(f"{path}: unknown model kind {kind!r}; this metarec has {', '.join(REGISTRY)}")
    for adapter in sorted((path / "adapters").glob("*")) if (path / "adapters").is_dir() else []:
        from metarec.text.tuning import install_adapter

        install_adapter(adapter)  # into the cache, where the model's text sources look it up
    model = REGISTRY[kind](**manifest["params"])
    model.load_state_dict(ModelState(load_file(str(path / "model.safetensors")), manifest["state"]))
    manifest.update(json.loads((path / "ids.json").read_text()))
    return model, manifest
