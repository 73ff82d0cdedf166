"""On-disk embedding cache: nothing is encoded twice, and using it does not get slower with its size.

One SQLite file per (encoder, template) namespace holds (SHA-1 of the text, float32 vector) rows.
A process reads a namespace's file once and keeps its vectors in memory, shared by every cache object
of that namespace; a text it has not seen is looked up by key on disk (another process may have
added it) before it is encoded, and new vectors are appended in one transaction (WAL: concurrent
readers and writers, never a half-written row). One-off texts (a search query) can be encoded with
`persist=False`: they live in a bounded in-memory LRU and never reach the disk.

Earlier versions wrote one `.npz` shard per call; a namespace that still has shards imports them into
its SQLite file on first open and deletes them (compaction).
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from metarec.text.encoders import TextEncoder
from metarec.utils import metarec_home

_LOCK = threading.RLock()  # guards the process-wide indexes and serialises this process's writes
_SQL_IN = 500  # keys per `IN (...)` lookup (SQLite's variable limit is far above; keeps statements small)


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
    #: per namespace file, the vectors this process has read or written (shared by all cache objects)
    _indexes: ClassVar[dict[Path, dict[bytes, np.ndarray]]] = {}
    #: per namespace file, vectors of texts encoded with persist=False (most recent last)
    _volatile: ClassVar[dict[Path, OrderedDict[bytes, np.ndarray]]] = {}
    volatile_size: ClassVar[int] = 10_000

    def __init__(self, encoder: TextEncoder, template: str = "raw", root: str | Path | None = None) -> None:
        self.encoder = encoder
        ns = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{encoder.name}__{template}")[:120]
        digest = hashlib.sha1(f"{encoder.name}\0{template}".encode()).hexdigest()[:10]
        self.dir = Path(root or metarec_home() / "embeddings") / f"{ns}-{digest}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = (self.dir / "vectors.sqlite").resolve()
        self.last = CacheStats()
        with _LOCK:
            if self.path not in self._indexes:
                self._open()

    # ------------------------------------------------------------------ storage
    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=60)) as con:
            yield con

    def _open(self) -> None:
        """Create the file, import legacy shards, and read every vector into this process's index."""
        with self._db() as con, con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vec BLOB NOT NULL) WITHOUT ROWID")
        self._compact_shards()
        with self._db() as con:
            self._indexes[self.path] = {bytes(k): np.frombuffer(v, np.float32) for k, v in con.execute(
                "SELECT key, vec FROM vectors")}  # fmt: skip
        self._volatile[self.path] = OrderedDict()

    def _compact_shards(self) -> None:
        shards = sorted(self.dir.glob("shard-*.npz"))
        if not shards:
            return
        rows: list[tuple[bytes, bytes]] = []
        for shard in shards:
            with np.load(shard) as z:
                rows += [(k.tobytes(), np.asarray(v, np.float32).tobytes()) for k, v in zip(z["keys"], z["vecs"],
                                                                                          strict=True)]  # fmt: skip
        self._write(rows)
        for shard in shards:  # only once their rows are committed
            shard.unlink(missing_ok=True)

    def _write(self, rows: list[tuple[bytes, bytes]]) -> None:
        with self._db() as con, con:  # one transaction: all rows or none
            con.executemany("INSERT OR IGNORE INTO vectors (key, vec) VALUES (?, ?)", rows)

    def _read(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        out: dict[bytes, np.ndarray] = {}
        with self._db() as con:
            for start in range(0, len(keys), _SQL_IN):
                chunk = keys[start : start + _SQL_IN]
                marks = ",".join("?" * len(chunk))
                for k, v in con.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", chunk):
                    out[bytes(k)] = np.frombuffer(v, np.float32)
        return out

    @classmethod
    def forget(cls) -> None:
        """Drop this process's in-memory indexes (the next cache object reads its file afresh)."""
        with _LOCK:
            cls._indexes.clear()
            cls._volatile.clear()

    def __len__(self) -> int:
        with self._db() as con:
            return int(con.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    # ------------------------------------------------------------------ encoding
    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress_bar: bool = False,
               persist: bool = True) -> np.ndarray:  # fmt: skip
        """Vectors for `texts` in order, encoding only texts not cached yet; `persist=False` keeps
        newly encoded vectors in memory only (bounded), for one-off texts such as search queries."""
        keys = [text_key(t) for t in texts]
        with _LOCK:
            index, volatile = self._indexes[self.path], self._volatile[self.path]
            missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in index and k not in volatile}
            if missing:  # another process may have written them since this one read the file
                index.update(self._read(list(missing)))
                missing = {k: t for k, t in missing.items() if k not in index}
        stats = CacheStats(texts=len(texts), unique=len(set(keys)))
        stats.hits = stats.unique - len(missing)
        if missing:
            t0 = time.perf_counter()
            vecs = np.asarray(self.encoder.encode(list(missing.values()), batch_size, show_progress_bar), np.float32)
            stats.seconds = time.perf_counter() - t0
            stats.encoded = len(missing)
            with _LOCK:
                if persist:
                    self._write([(k, v.tobytes()) for k, v in zip(missing, vecs, strict=True)])
                    index.update(zip(missing, vecs, strict=True))
                else:
                    volatile.update(zip(missing, vecs, strict=True))
                    while len(volatile) > self.volatile_size:
                        volatile.popitem(last=False)
        self.last = stats
        if not texts:
            return np.zeros((0, self.encoder.dim), np.float32)
        with _LOCK:
            rows = [index[k] if k in index else volatile[k] for k in keys]
        return np.stack(rows).astype(np.float32)
