"""Retrieval by inner product: exact for small catalogues, HNSW (hnswlib) above a size threshold.

Scores are e_i . h + b_i, so items are indexed as [e_i, b_i] and queried with [h, 1]: the bias
rides along as one more dimension. New items are inserted incrementally; seen items are filtered
out by over-fetching and dropping them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    import hnswlib


class RowBuffer:
    """Rows appended in amortised O(1) time into a buffer that grows by a quarter at a time.

    Appending with np.vstack copies the whole matrix per new item, and the freed copies fragment the
    heap (the service's RSS crept up under a soak). Appends never move rows a reader sees, so a `view`
    taken earlier stays valid while others append; `set` rewrites rows in place (callers hold the
    lock readers search under)."""

    def __init__(self, rows: np.ndarray) -> None:
        self._buf = np.ascontiguousarray(rows)
        self._n = len(rows)

    def __len__(self) -> int:
        return self._n

    @property
    def view(self) -> np.ndarray:
        return self._buf[: self._n]

    def append(self, rows: np.ndarray) -> np.ndarray:
        """Add rows; returns the new view."""
        n = self._n + len(rows)
        if n > len(self._buf):
            grown = np.empty((max(n, len(self._buf) + len(self._buf) // 4, 256), *self._buf.shape[1:]), self._buf.dtype)
            grown[: self._n] = self._buf[: self._n]
            self._buf = grown
        self._buf[self._n : n] = rows
        self._n = n
        return self.view

    def set(self, ids: np.ndarray, rows: np.ndarray) -> None:
        """Rewrite existing rows."""
        if len(ids) and (np.min(ids) < 0 or np.max(ids) >= self._n):
            raise IndexError(f"rows {ids} outside 0..{self._n - 1}")
        self._buf[ids] = rows


class ItemIndex:
    def __init__(self, vectors: np.ndarray, exact_below: int = 20_000, ef: int = 200, M: int = 32, seed: int = 0):
        self.exact_below = exact_below
        self.ef, self.M, self.seed = ef, M, seed
        self._rows = RowBuffer(np.asarray(vectors, dtype=np.float32))
        self.hnsw: hnswlib.Index | None = None  # built once the catalogue reaches `exact_below`
        if len(self.vectors) >= exact_below:
            self._build()

    @property
    def vectors(self) -> np.ndarray:
        return self._rows.view

    @property
    def size(self) -> int:
        return len(self._rows)

    @property
    def approximate(self) -> bool:
        return self.hnsw is not None

    def _build(self) -> None:
        import hnswlib

        n, d = self.vectors.shape
        index = hnswlib.Index(space="ip", dim=d)
        index.init_index(max_elements=max(2 * n, 1024), ef_construction=self.ef, M=self.M, random_seed=self.seed)
        index.add_items(self.vectors, np.arange(n))
        index.set_ef(self.ef)
        self.hnsw = index

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Append items (ids continue the dense range) and index them at once."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        start = len(self._rows)
        ids = np.arange(start, start + len(vectors))
        self._rows.append(vectors)
        if self.hnsw is not None:
            if self.hnsw.get_max_elements() < len(self.vectors):
                self.hnsw.resize_index(2 * len(self.vectors))
            self.hnsw.add_items(vectors, ids)
        elif len(self.vectors) >= self.exact_below:
            self._build()
        return ids

    def update(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Replace the vectors of indexed items (a new item warming up from its first users)."""
        vectors = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        ids = np.asarray(ids, dtype=np.int64)
        self._rows.set(ids, vectors)
        if self.hnsw is not None:  # hnswlib updates an existing label in place
            self.hnsw.add_items(vectors, ids)

    def search(self, query: np.ndarray, k: int, exclude: set[int] | None = None,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Top-k ids and scores for one query vector, best first, skipping `exclude`; `allowed` (ids):
        among those only, scored exactly (a domain's items: one matrix-vector product, no recall loss)."""
        exclude = exclude or set()
        if allowed is not None:
            cand = np.asarray(allowed, np.int64)
            if exclude:
                cand = cand[~np.isin(cand, np.fromiter(exclude, np.int64, len(exclude)))]
            k = min(k, len(cand))
            if k <= 0:
                return np.empty(0, np.int64), np.empty(0, np.float32)
            scores = (self.vectors @ np.asarray(query, dtype=np.float32))[cand]  # no copy of the domain's rows
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top], kind="stable")]
            return cand[top], scores[top]
        k = min(k, self.size - len(exclude))
        if k <= 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        q = np.asarray(query, dtype=np.float32)
        if self.hnsw is None:
            scores = self.vectors @ q
            if exclude:
                scores[list(exclude)] = -np.inf
            top = np.argpartition(-scores, k - 1)[:k]
            top = top[np.argsort(-scores[top], kind="stable")]
            return top, scores[top]
        fetch = min(self.size, k + len(exclude))
        self.hnsw.set_ef(max(self.ef, fetch))
        ids, dist = self.hnsw.knn_query(q, k=fetch)
        ids, sims = ids[0], 1.0 - dist[0]  # hnswlib's "ip" distance is 1 - dot
        keep = np.array([i not in exclude for i in ids], dtype=bool)
        return ids[keep][:k].astype(np.int64), sims[keep][:k].astype(np.float32)

    def search_batch(self, queries: np.ndarray, k: int, exclude: sp.csr_matrix | None = None,
                     chunk: int = 1024) -> np.ndarray:  # fmt: skip
        """Top-k ids per query row (n x k, best first; -1 where fewer remain), skipping each row's
        `exclude` items (a users x items CSR; any stored entry counts): one batched HNSW query (or matrix
        products, `chunk` rows at a time, when exact) for many users, as an offline evaluation asks."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        n = len(q)
        out = np.full((n, k), -1, np.int64)
        if n == 0 or k <= 0 or self.size == 0:
            return out
        if exclude is None:
            exclude = sp.csr_matrix((np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(n + 1, np.int32)),
                                    shape=(n, self.size))  # fmt: skip
        kk = min(k, self.size)
        if self.hnsw is None:
            for s in range(0, n, chunk):
                scores = q[s : s + chunk] @ self.vectors.T
                ex = exclude[s : s + chunk]
                scores[np.repeat(np.arange(ex.shape[0]), np.diff(ex.indptr)), ex.indices] = -np.inf
                top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
                top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), 1, kind="stable"), 1)
                top[~np.isfinite(np.take_along_axis(scores, top, 1))] = -1
                out[s : s + chunk, :kk] = top
            return out
        # over-fetch by the heaviest history of each chunk, so one heavy user does not slow every query
        for s in range(0, n, chunk):
            ex = exclude[s : s + chunk]
            m = ex.shape[0]
            fetch = min(self.size, kk + int(np.diff(ex.indptr).max(initial=0)))
            self.hnsw.set_ef(max(self.ef, fetch))
            ids = self.hnsw.knn_query(q[s : s + chunk], k=fetch)[0].astype(np.int64)
            rows = np.repeat(np.arange(m), np.diff(ex.indptr))
            seen = np.isin(np.arange(m)[:, None] * self.size + ids, rows * self.size + ex.indices)
            order = np.argsort(seen, axis=1, kind="stable")[:, :kk]  # the first kk unseen, in the index's order
            top = np.take_along_axis(ids, order, 1)
            top[np.take_along_axis(seen, order, 1)] = -1
            out[s : s + chunk, :kk] = top
        return out
