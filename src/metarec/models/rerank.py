"""Tail-aware re-ranking: any model's top candidates re-ordered to give the long tail more exposure.

Personalised xQuAD (Abdollahpouri, Burke & Mobasher, FLAIRS 2019, "smooth" variant): items are in
the short head (the 20 % most popular in training) or the long tail; a user's appetite for each is
the share of their own history in it. Greedily, position by position, the next item maximises

    (1 - weight) * relevance(i)  +  weight * sum_c  P(c | u) * [i in c] * (1 - share of c in the list so far)

so a list that already holds enough tail items for this user stops favouring the tail. Vectorised over
users; the loop runs over the `length` positions only. `weight = 0` returns the base ranking.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from metarec import metrics as M
from metarec.data.schema import Dataset
from metarec.errors import ConfigError
from metarec.models.base import Recommender, UserState, build_wrapped, pack_wrapped, unpack_wrapped


class TailRerankRecommender(Recommender):
    name = "rerank"

    def __init__(self, base: dict[str, Any] | None = None, weight: float = 0.3, candidates: int = 100,
                 length: int = 20, head_share: float = 0.2, seed: int = 0) -> None:  # fmt: skip
        super().__init__(seed)
        self.base = base
        self.weight = weight
        self.candidates = candidates
        self.length = length
        self.head_share = head_share

    def _base_model(self) -> Recommender:
        return build_wrapped(self.base, "als", self.name, "the model to re-rank, e.g. base = { type = 'als', "
                             "factors = 64 }", self.seed, refused=frozenset({self.name}))  # fmt: skip

    def _fit(self, train: Dataset, valid: pd.DataFrame | None = None, revealed: pd.DataFrame | None = None) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ConfigError(f"rerank.weight must be in [0, 1], got {self.weight}")
        self.base_ = self._base_model().fit(train, valid=valid, revealed=revealed)
        self._after_base()
        self.tail_ = M.tail_items(np.asarray(self.train_matrix_.sum(axis=0)).ravel(), self.head_share)

    def _after_base(self) -> None:
        self.supports_cold_items = self.base_.supports_cold_items
        self.supports_cold_users = self.base_.supports_cold_users
        self.predicts_ratings = getattr(self.base_, "predicts_ratings", False)

    def fold_in(self, history: Any, users: np.ndarray | None = None, known: bool = False) -> UserState:
        return self.base_.fold_in(history, users, known=known)

    def score_state(self, state: UserState, items: np.ndarray | None = None) -> np.ndarray:
        scores = np.asarray(self.base_.score_state(state, items), dtype=np.float64)
        if self.weight == 0.0:
            return scores
        tail = self.tail_ if items is None else self.tail_[items]
        hist = state.history if items is None else state.history[:, items]
        # the user's appetite for the tail: the share of their history there (the catalogue's share if none)
        n_hist = np.asarray(hist.sum(axis=1)).ravel()
        p_tail = np.where(n_hist > 0, np.asarray(hist @ tail.astype(np.float64)).ravel() / np.maximum(n_hist, 1),
                          tail.mean())  # fmt: skip
        masked = scores.copy()
        masked[hist.nonzero()] = -np.inf  # seen items never take a slot of the list
        return self._rerank(scores, masked, tail, p_tail)

    def _rerank(self, scores: np.ndarray, masked: np.ndarray, tail: np.ndarray, p_tail: np.ndarray) -> np.ndarray:
        n_users, n_items = scores.shape
        n_cand = min(self.candidates, n_items)
        length = min(self.length, n_cand)
        cand = M.topk(masked, n_cand)  # (users, n_cand), best first
        rel = np.take_along_axis(masked, cand, axis=1)
        finite = np.isfinite(rel)
        lo = np.where(finite, rel, np.inf).min(axis=1, keepdims=True)
        hi = np.where(finite, rel, -np.inf).max(axis=1, keepdims=True)
        rel = np.where(finite, (rel - lo) / np.maximum(hi - lo, 1e-12), -np.inf)  # min-max per user
        is_tail = tail[cand]
        taken = np.zeros_like(is_tail)
        rows = np.arange(n_users)
        chosen = np.empty((n_users, length), np.int64)
        n_tail = np.zeros(n_users)
        for pos in range(length):  # positions, not users: each step is one (users x candidates) product
            share_tail = n_tail / max(pos, 1)
            share_head = (pos - n_tail) / max(pos, 1)
            # smooth xQuAD: a category's bonus shrinks with its share of the list so far
            bonus = np.where(is_tail, (p_tail * (1 - share_tail))[:, None], ((1 - p_tail) * (1 - share_head))[:, None])
            value = (1 - self.weight) * rel + self.weight * bonus
            value[taken] = -np.inf
            pick = value.argmax(axis=1)
            chosen[:, pos] = pick
            taken[rows, pick] = True
            n_tail += is_tail[rows, pick]
        # the re-ranked list on top, in order; every other item keeps its base order below it
        top = np.where(np.isfinite(scores), scores, -np.inf).max(axis=1, keepdims=True)
        out = scores - np.where(np.isfinite(top), top, 0.0) - 1.0  # <= -1, base order kept
        picked = np.take_along_axis(cand, chosen, axis=1)
        np.put_along_axis(out, picked, (length - np.arange(length, dtype=np.float64))[None, :].repeat(n_users, 0), 1)
        return out

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, extra = pack_wrapped(self.base_)
        return {**arrays, "tail": self.tail_}, extra

    def _load_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.tail_ = arrays["tail"].astype(bool)
        self.base_ = unpack_wrapped(self._base_model(), arrays, extra)
        self._after_base()
