"""On-disk embedding cache: nothing is encoded twice.

Keyed by (encoder, template) namespace and the SHA-1 of each text: a second run encodes nothing it
has seen, and a changed text re-encodes only that text. Each call that encodes something appends
one shard (`.npz`: keys + float32 vectors), written to a temp file and renamed, so an interrupted
run never leaves a half-written shard behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metarec.text.encoders import TextEncoder
from metarec.utils import metarec_home


@dataclass
class CacheStats:
    texts: int = 0
    unique: int = 0
    hits: int = 0
    encoded: int = 0
    seconds: float = 0.0

    @property
    def texts_per_second(self) -> float:
        return self.encoded / self.seconds if self.seconds > 0 and self.encoded else float("nan")


def text_key(text: str) -> bytes:
    return hashlib.sha1(text.encode("utf-8")).digest()


class EmbeddingCache:
    def __init__(self, encoder: TextEncoder, template: str = "raw", root: str | Path | None = None) -> None:
        self.encoder = encoder
        ns = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{encoder.name}__{template}")[:120]
        digest = hashlib.sha1(f"{encoder.name}\0{template}".encode()).hexdigest()[:10]
        self.dir = Path(root or metarec_home() / "embeddings") / f"{ns}-{digest}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._index: dict[bytes, np.ndarray] | None = None
        self.last = CacheStats()

    def _load(self) -> dict[bytes, np.ndarray]:
        if self._index is None:
            self._index = {}
            for shard in sorted(self.dir.glob("shard-*.npz")):
                with np.load(shard) as z:
                    for k, v in zip(z["keys"], z["vecs"], strict=True):
                        self._index[k.tobytes()] = v
        return self._index

    def __len__(self) -> int:
        return len(self._load())

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool = False) -> np.ndarray:
        """Vectors for `texts` in order, encoding only texts not cached yet."""
        index = self._load()
        keys = [text_key(t) for t in texts]
        missing: dict[bytes, str] = {}
        for k, t in zip(keys, texts, strict=True):
            if k not in index and k not in missing:
                missing[k] = t
        stats = CacheStats(texts=len(texts), unique=len(set(keys)))
        stats.hits = stats.unique - len(missing)
        if missing:
            t0 = time.perf_counter()
            vecs = self.encoder.encode(list(missing.values()), batch_size, show_progress_bar)
            stats.seconds = time.perf_counter() - t0
            stats.encoded = len(missing)
            # raw digest bytes as a uint8 matrix: numpy "S" strings would drop trailing NUL bytes
            new_keys = np.frombuffer(b"".join(missing), dtype=np.uint8).reshape(len(missing), 20)
            self._write_shard(new_keys, vecs.astype(np.float32))
            for k, v in zip(missing, vecs, strict=True):
                index[k] = v.astype(np.float32)
        self.last = stats
        dim = self.encoder.dim if not index else len(next(iter(index.values())))
        if not texts:
            return np.zeros((0, dim), np.float32)
        return np.stack([index[k] for k in keys]).astype(np.float32)

    def _write_shard(self, keys: np.ndarray, vecs: np.ndarray) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.dir, suffix=".tmp")
        os.close(fd)
        with open(tmp, "wb") as fh:
            np.savez(fh, keys=keys, vecs=vecs)
        name = f"shard-{time.time_ns()}-{os.getpid()}.npz"
        os.replace(tmp, self.dir / name)
