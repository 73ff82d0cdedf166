"""Model artefacts: safetensors weights + a JSON manifest; no pickle anywhere.

A model directory holds everything needed to serve without the training data: the learned tensors,
the item text vectors, the training interactions (to exclude seen items), the id maps, and a
manifest with the hyper-parameters, package versions, encoder id, dataset fingerprint and metrics.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.torch import load_file, save_file

from metarec.data.schema import Dataset
from metarec.errors import MetarecError
from metarec.models.meta import MetaRecommender
from metarec.utils import versions

FORMAT = "metarec-model/1"


def save_model(model: MetaRecommender, out: str | Path, train: Dataset, config: dict[str, Any] | None = None) -> Path:
    if not isinstance(model, MetaRecommender) or not hasattr(model, "theta_"):
        raise MetarecError("only a fitted neural / meta model can be saved as an artefact")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    m = model.train_matrix_.tocsr()
    tensors = {k: v.contiguous() for k, v in model.parameters_dict().items()}
    tensors["warm"] = model.warm_
    tensors["train.indptr"] = torch.from_numpy(m.indptr.astype(np.int64))
    tensors["train.indices"] = torch.from_numpy(m.indices.astype(np.int64))
    if model.item_text_ is not None:
        tensors["item_text"] = model.item_text_.contiguous()
    if model.user_text_ is not None:
        tensors["user_text"] = model.user_text_.contiguous()
    save_file(tensors, str(out / "model.safetensors"))
    manifest = {
        "format": FORMAT,
        "model": "meta",
        "params": model.get_params(),
        "encoder": getattr(getattr(model, "encoder_", None), "name", None),
        "dataset": {
            "name": train.name,
            "fingerprint": train.fingerprint(),
            "n_users": train.n_users,
            "n_items": train.n_items,
        },
        "metrics": {
            "best_valid_ndcg@10": model.best_valid_ndcg_,
            "epochs": model.epochs_run_,
            "train_seconds": model.train_seconds_,
            "history": model.history_,
        },
        "config": config,
        "versions": versions(),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    ids = {"item_ids": train.items["item_id"].tolist(), "user_ids": train.users["user_id"].tolist()}
    titles = train.items["title"].astype(str).tolist() if "title" in train.items.columns else None
    if titles is not None:
        ids["item_titles"] = titles
    (out / "ids.json").write_text(json.dumps(ids))
    return out


def load_model(path: str | Path) -> tuple[MetaRecommender, dict[str, Any]]:
    """Rebuild a fitted model from its directory; returns (model, manifest + id maps)."""
    path = Path(path)
    if not (path / "manifest.json").exists():
        raise MetarecError(
            f"{path} is not a metarec model directory (no manifest.json); create one with `metarec train`"
        )
    manifest = json.loads((path / "manifest.json").read_text())
    if manifest.get("format") != FORMAT:
        raise MetarecError(f"{path}: unsupported artefact format {manifest.get('format')!r}, expected {FORMAT}")
    t = load_file(str(path / "model.safetensors"))
    model = MetaRecommender(**manifest["params"])
    n_users, n_items = manifest["dataset"]["n_users"], manifest["dataset"]["n_items"]
    model.n_users_, model.n_items_ = n_users, n_items
    indptr, indices = t["train.indptr"].numpy(), t["train.indices"].numpy()
    model.train_matrix_ = sp.csr_matrix((np.ones(len(indices), np.float32), indices, indptr), shape=(n_users, n_items))
    model.theta_ = {k.split(".", 1)[1]: v for k, v in t.items() if k.startswith("theta.")}
    model.lrs_ = {k.split(".", 1)[1]: v for k, v in t.items() if k.startswith("lr.")}
    model.user_res_ = t.get("user_res")
    model.warm_ = t["warm"]
    model.item_text_ = t.get("item_text")
    model.user_text_ = t.get("user_text")
    model.best_valid_ndcg_ = manifest["metrics"]["best_valid_ndcg@10"]
    model.epochs_run_ = manifest["metrics"]["epochs"]
    model.train_seconds_ = manifest["metrics"]["train_seconds"]
    model.history_ = manifest["metrics"]["history"]
    if model.use_text:
        from metarec.models.content import get_encoder

        model.encoder_ = get_encoder(model.text)
    model._cache_items()
    manifest.update(json.loads((path / "ids.json").read_text()))
    return model, manifest
