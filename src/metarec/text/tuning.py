"""Teaching the language model what people do: LoRA fine-tuning of the text encoder on behaviour.

A frozen encoder places items by what their text says; two films with unrelated titles watched by
the same people stay far apart. Here low-rank adapters (peft's LoRA on the attention projections)
are trained contrastively on co-interaction pairs, in the spirit of UniSRec / Recformer: two items
close in some user's history are a positive pair, the other items of the batch are negatives
(symmetric InfoNCE). Only the adapter learns (about 0.3 % of MiniLM's weights); it is saved as
`adapter_model.safetensors` + `adapter_config.json`, and its fingerprint joins the encoder's name, so
the embedding cache never mixes vectors of the tuned and the frozen model.

Where it runs: `metarec llm tune` writes an adapter for a whole dataset (for serving); a text feature
source with `tune = {...}` tunes on each fold's training interactions inside `fit` (never on test
items' users), which is how an evaluation must use it. Adapters live in ~/.cache/metarec/adapters/
under their fingerprint; a saved model carries copies of its adapters (`adapters/`), installed back
into the cache when it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from metarec.data.schema import ITEM, USER, Dataset, time_columns
from metarec.errors import ConfigError

ADAPTER_FILE = "adapter_model.safetensors"


class TuneConfig(BaseModel):
    """LoRA and training settings (validated; unknown keys are refused)."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(8, ge=1, le=256)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = ["query", "value"]
    epochs: int = Field(1, ge=1)
    pairs_per_epoch: int = Field(6_400, ge=64)
    window: int = Field(5, ge=1)  # a pair: two items at most this far apart in a user's time order
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-4, gt=0)
    temperature: float = Field(0.2, gt=0)  # 0.05 collapsed every title onto one point (ml-100k)
    max_length: int = Field(64, ge=8)
    threads: int | None = None
    seed: int = 0


def cointeraction_pairs(train: Dataset, n: int, window: int, seed: int) -> np.ndarray:
    """(n, 2) item pairs drawn uniformly from all pairs at most `window` apart in a user's time order."""
    df = train.interactions.drop_duplicates([USER, ITEM])
    df = df.sort_values(time_columns(df, USER, "the co-interaction pairs of text tuning"), kind="stable")
    items, users = df[ITEM].to_numpy(), df[USER].to_numpy()
    left, right = [], []
    for d in range(1, window + 1):  # a loop over offsets, not over users: each step is one vector op
        same = users[d:] == users[:-d]
        left.append(items[:-d][same])
        right.append(items[d:][same])
    a, b = np.concatenate(left), np.concatenate(right)
    if not len(a):
        raise ConfigError("text tuning needs users with at least two interactions")
    pick = np.random.default_rng(seed).integers(0, len(a), size=n)
    return np.stack([a[pick], b[pick]], axis=1)


def adapter_home() -> Path:
    return Path.home() / ".cache" / "metarec" / "adapters"


def install_adapter(path: str | Path) -> str:
    """Copy an adapter directory into the cache under its fingerprint (idempotent); returns it."""
    fingerprint = adapter_fingerprint(path)
    target = adapter_home() / fingerprint
    if not (target / ADAPTER_FILE).exists():
        tmp = target.with_name(target.name + ".part")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(path, tmp)
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return fingerprint


def find_adapter(ref: str | Path) -> Path:
    """An adapter by directory or by fingerprint (looked up in the cache)."""
    p = Path(ref)
    if (p / ADAPTER_FILE).exists():
        return p
    cached = adapter_home() / str(ref)
    if (cached / ADAPTER_FILE).exists():
        return cached
    raise ConfigError(f"LoRA adapter {str(ref)!r} not found (neither a directory with {ADAPTER_FILE} nor a "
                      f"fingerprint in {adapter_home()}); create one with `metarec llm tune`")  # fmt: skip


def tuned_for(model: str, texts: Sequence[str], train: Dataset, cfg: TuneConfig, log: Any = None) -> str:
    """Tune (or reuse) an adapter for these texts and training interactions; returns its fingerprint.
    The key covers the model, the texts, the pairs and the settings, so a second fit of the same fold
    trains nothing and another fold never reuses this one's adapter."""
    pairs = cointeraction_pairs(train, cfg.pairs_per_epoch, cfg.window, cfg.seed)
    h = hashlib.sha256(json.dumps([model, cfg.model_dump()], sort_keys=True).encode())
    h.update("\x1f".join(texts).encode())
    h.update(pairs.tobytes())
    marker = adapter_home() / f"tuned-{h.hexdigest()[:16]}.json"
    if marker.exists():
        fingerprint = json.loads(marker.read_text())["fingerprint"]
        if (adapter_home() / fingerprint / ADAPTER_FILE).exists():
            return str(fingerprint)
    out = adapter_home() / f"{marker.stem}.tmp"
    shutil.rmtree(out, ignore_errors=True)
    summary = tune_encoder(model, texts, pairs, cfg, out, log=log)
    fingerprint = install_adapter(out)
    shutil.rmtree(out, ignore_errors=True)
    marker.write_text(json.dumps({**summary, "adapter": fingerprint}, default=str))
    return fingerprint


def adapter_fingerprint(path: str | Path) -> str:
    """Short hash of the adapter's weights: part of the encoder's name and so of the cache key."""
    file = Path(path) / ADAPTER_FILE
    if not file.exists():
        raise ConfigError(f"{path} is not a LoRA adapter directory (no {ADAPTER_FILE}); create one with "
                          "`metarec llm tune` or a text source with tune = {...}")  # fmt: skip
    return hashlib.sha256(file.read_bytes()).hexdigest()[:12]


def tune_encoder(model: str, texts: Sequence[str], pairs: np.ndarray, cfg: TuneConfig, out: str | Path,
                 log: Any = None) -> dict[str, Any]:  # fmt: skip
    """Train a LoRA adapter on `pairs` (rows index `texts`) and write it to `out`; returns a summary."""
    import torch
    from peft import LoraConfig
    from sentence_transformers import SentenceTransformer

    from metarec.text.encoders import resolve_model_path

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    st = SentenceTransformer(resolve_model_path(model), device="cpu")
    st.max_seq_length = cfg.max_length
    st.add_adapter(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                              target_modules=list(cfg.target_modules)))  # fmt: skip
    params = [p for p in st.parameters() if p.requires_grad]
    n_total = sum(p.numel() for p in st.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr)
    texts = list(texts)
    rng = np.random.default_rng(cfg.seed)
    st.train()
    t0, losses = time.perf_counter(), []

    def embed(idx: np.ndarray) -> torch.Tensor:
        feats = st.preprocess([texts[i] for i in idx])
        return torch.nn.functional.normalize(st(feats)["sentence_embedding"], dim=-1)

    for epoch in range(cfg.epochs):
        order = rng.permutation(len(pairs))
        total = 0.0
        for start in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
            batch = pairs[order[start : start + cfg.batch_size]]
            a, b = embed(batch[:, 0]), embed(batch[:, 1])
            logits = a @ b.T / cfg.temperature
            # the same item twice in a batch is not a negative of itself
            dup = torch.from_numpy(batch[:, 1][None, :] == batch[:, 1][:, None])
            same = dup & ~torch.eye(len(batch), dtype=torch.bool)
            logits = logits.masked_fill(same, -1e4)
            target = torch.arange(len(batch))
            loss = (torch.nn.functional.cross_entropy(logits, target)
                    + torch.nn.functional.cross_entropy(logits.T, target)) / 2  # fmt: skip
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
        losses.append(total / max(1, len(order) // cfg.batch_size))
        if log is not None:
            log(f"text tuning epoch {epoch}: loss {losses[-1]:.4f} ({time.perf_counter() - t0:.0f} s)")
    st.eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    auto: Any = st[0].auto_model
    auto.save_pretrained(str(out))  # the adapter only (peft), not the base weights
    return {"model": model, "adapter": str(out), "fingerprint": adapter_fingerprint(out), "losses": losses,
            "seconds": time.perf_counter() - t0, "trainable_params": sum(p.numel() for p in params),
            "total_params": n_total, "pairs": len(pairs), "config": cfg.model_dump()}  # fmt: skip


__all__ = [
    "ADAPTER_FILE",
    "TuneConfig",
    "adapter_fingerprint",
    "adapter_home",
    "cointeraction_pairs",
    "find_adapter",
    "install_adapter",
    "tune_encoder",
    "tuned_for",
]
