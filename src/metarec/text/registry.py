"""Encoders loaded once per process, and encoding through the on-disk cache.

Kept in `text/` (not in a model module) because every text reader uses them: content models, the
text feature source of the neural models, the CLI's `embed` and the service's search.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from metarec.text.cache import EmbeddingCache
from metarec.text.encoders import DEFAULT_MODEL, TextEncoder, build_encoder

DEFAULT_TEXT: dict[str, Any] = {"encoder": "sentence-transformers", "model": DEFAULT_MODEL}
_ENCODERS: dict[str, TextEncoder] = {}
_CONFIGS: dict[int, dict[str, Any]] = {}  # id(encoder) -> the [text] table that built it (for Ray workers)
#: set by a distributed back-end while it runs (`metarec.distributed.ray_session`): wraps a loaded encoder
#: in one that encodes elsewhere (same name and dim, so the cache is shared); text/ never imports it
remote: Callable[[TextEncoder, dict[str, Any]], TextEncoder] | None = None


def get_encoder(cfg: dict[str, Any] | None) -> TextEncoder:
    """Load a language model once per process; TF-IDF is refitted per corpus, so never shared."""
    cfg = {**DEFAULT_TEXT, **(cfg or {})}
    if cfg.get("encoder") == "tfidf":
        return build_encoder(cfg)
    key = json.dumps(cfg, sort_keys=True, default=str)
    if key not in _ENCODERS:
        _ENCODERS[key] = build_encoder(cfg)
        _CONFIGS[id(_ENCODERS[key])] = cfg
    return _ENCODERS[key]


def encode_texts(encoder: TextEncoder, texts: Sequence[str], template: str, batch_size: int = 64,
                 persist: bool = True) -> np.ndarray:  # fmt: skip
    """Through the on-disk cache for language models; TF-IDF vocabularies differ per fit, so direct.
    `persist=False`: one-off texts (search queries) are cached in memory only, never on disk."""
    if encoder.name.startswith("tfidf"):
        return encoder.encode(texts, batch_size)
    if remote is not None and persist and id(encoder) in _CONFIGS:  # texts not cached yet go to Ray workers
        encoder = remote(encoder, _CONFIGS[id(encoder)])
    return EmbeddingCache(encoder, template).encode(texts, batch_size, persist=persist)
