"""A generative LM as a ranker: re-rank a retriever's top candidates by what the LM expects next.

For each user, the retriever (any registered model) proposes `candidates` items; the LM reads the
titles of up to `history` of the user's items and scores each candidate title as the continuation
"They will also like <title>" (one prompt pass, its KV cache shared across candidates). Raw
log-likelihood mostly measures how familiar a title is, so the LM score is its pointwise mutual
information with the user: log p(title | the user's titles) - log p(title | no titles).

- `llm-rerank`: z(retriever) + w * z(LM) over the candidates, w chosen on meta-valid users from
  `weights` (0 included: where the LM does not help on validation, the retriever's order is kept);
- `llm-zero-shot`: the LM's order alone over the candidates of a popularity retriever.
Candidates move to the top of the list in the new order; the rest keep the retriever's order. The LM
runs per user (one batched pass each): this is a measured component, not a default.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from metarec import metrics as M
from metarec.data.schema import ITEM, USER, Dataset
from metarec.errors import ConfigError
from metarec.models.base import Recommender, UserState, build_wrapped, pack_wrapped, unpack_wrapped

_LMS: dict[tuple[str, int | None], Any] = {}  # loaded once per process: tens of seconds for a GGUF


def _lm(name: str, threads: int | None) -> Any:
    from metarec.llm import CausalLM

    if (name, threads) not in _LMS:
        _LMS[(name, threads)] = CausalLM(name, threads=threads)
    return _LMS[(name, threads)]


class LLMRerankRecommender(Recommender):
    name = "llm-rerank"
    zero_shot = False

    def __init__(self, base: dict[str, Any] | None = None, llm: str = "smollm2-135m", candidates: int = 20,
                 history: int = 5, weights: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0, 3.0), valid_k: int = 5,
                 threads: int | None = 1, seed: int = 0) -> None:  # fmt: skip
        super().__init__(seed)
        self.base = base
        self.llm = llm
        self.candidates = candidates
        self.history = history
        self.weights = weights
        self.valid_k = valid_k
        self.threads = threads

    def _base_model(self) -> Recommender:
        return build_wrapped(self.base, "popularity" if self.zero_shot else "itemknn", self.name,
                             "the retriever, e.g. base = { type = 'itemknn' }", self.seed,
                             refused=frozenset({"llm-rerank", "llm-zero-shot"}))  # fmt: skip

    def _fit(self, train: Dataset, valid: pd.DataFrame | None = None, revealed: pd.DataFrame | None = None) -> None:
        if self.candidates < 2:
            raise ConfigError(f"{self.name}.candidates must be at least 2, got {self.candidates}")
        self.base_ = self._base_model().fit(train, valid=valid, revealed=revealed)
        self.supports_cold_items = self.base_.supports_cold_items
        self.supports_cold_users = self.base_.supports_cold_users
        if "title" not in train.items.columns:
            raise ConfigError(f"{self.name} reads item titles: the dataset has no 'title' column")
        self.titles_ = train.items["title"].astype(str).tolist()
        self.lm_ = _lm(self.llm, self.threads)
        self._prior: dict[int, float] = {}  # log p(title | no user): the familiarity removed from each score
        self.llm_seconds_ = 0.0
        self.weight_ = float("inf") if self.zero_shot else 0.0
        if not self.zero_shot and valid is not None and len(valid):
            self.weight_, log = self._select_weight(train, valid)
            self.fit_info_["weight_selection"] = log
        self.fit_info_["weight"] = self.weight_

    def _select_weight(self, train: Dataset, valid: pd.DataFrame) -> tuple[float, dict[str, float]]:
        """Meta-valid users, asked as test users are: their `valid_k` earliest items are the history,
        the rest relevant; NDCG@10 over the re-ranked list for each weight (LM scores computed once)."""
        users = np.unique(valid[USER].to_numpy())
        rows = valid.sort_values([c for c in ("timestamp",) if c in valid.columns] or [USER], kind="stable")
        first = rows.groupby(USER).head(self.valid_k)
        rest = rows.drop(first.index)
        hist = sp.csr_matrix((np.ones(len(first)), (np.searchsorted(users, first[USER]), first[ITEM])),
                             shape=(len(users), train.n_items))  # fmt: skip
        rel = np.zeros((len(users), train.n_items), bool)
        rel[np.searchsorted(users, rest[USER]), rest[ITEM].to_numpy()] = True
        state = self.base_.fold_in(hist, None, known=False)
        base = self.base_.score_state(state)
        cand, lm = self._candidates_and_lm(state.history, base)
        log = {}
        for w in self.weights:
            scores = self._combine(base, cand, lm, w)
            top = M.topk(scores, 10)
            ok = rel.sum(1) > 0
            if not ok.any():  # no valid user has items left to find: keep the retriever
                return 0.0, {}
            log[str(w)] = float(M.ranking_metrics(np.take_along_axis(rel, top, 1)[ok], rel.sum(1)[ok], [10])
                                ["ndcg@10"].mean())  # fmt: skip
        best = max(self.weights, key=lambda w: (log[str(w)], -w))  # ties: the smaller weight
        return float(best), log

    def fold_in(self, history: Any, users: np.ndarray | None = None, known: bool = False) -> UserState:
        return self.base_.fold_in(history, users, known=known)

    # ------------------------------------------------------------------ scoring
    def _prompt(self, items: np.ndarray) -> str:
        titles = "; ".join(self.titles_[i] for i in items[: self.history])
        return f"A user liked these films: {titles}." if len(items) else "Here is a film."

    def _llm_scores(self, liked: np.ndarray, cand: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        texts = [" " + self.titles_[i] for i in cand]
        cond = self.lm_.score(self._prompt(liked), texts, prefill="They will also like")
        missing = [i for i in cand if i not in self._prior]
        if missing:
            prior = self.lm_.score(self._prompt(np.zeros(0, np.int64)), [" " + self.titles_[i] for i in missing],
                                   prefill="They will also like")  # fmt: skip
            self._prior.update(zip(missing, prior.tolist(), strict=True))
        self.llm_seconds_ += time.perf_counter() - t0
        return cond - np.array([self._prior[i] for i in cand], np.float32)

    def _candidates_and_lm(self, history: sp.csr_matrix, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        masked = base.astype(np.float64).copy()  # never a seen item, never one outside `items`
        history = sp.csr_matrix(history)
        rows = np.repeat(np.arange(history.shape[0]), np.diff(history.indptr))
        masked[rows, history.indices] = -np.inf
        cand = M.topk(masked, min(self.candidates, base.shape[1]))
        lm = np.stack([self._llm_scores(history[r].indices, cand[r]) for r in range(len(cand))])  # one LM pass each
        return cand, lm

    def _combine(self, base: np.ndarray, cand: np.ndarray, lm: np.ndarray, w: float) -> np.ndarray:
        b = np.take_along_axis(base, cand, 1).astype(np.float64)
        zb = (b - b.mean(1, keepdims=True)) / (b.std(1, keepdims=True) + 1e-9)
        zl = (lm - lm.mean(1, keepdims=True)) / (lm.std(1, keepdims=True) + 1e-9)
        mixed = zl + 1e-6 * zb if np.isinf(w) else zb + w * zl
        out = base.astype(np.float64).copy()
        # candidates above everything else, in the mixed order; the rest keep the retriever's order
        top = np.nanmax(np.where(np.isfinite(out), out, np.nan), axis=1, keepdims=True)
        top = np.nan_to_num(top, nan=0.0)
        lift = top + 1.0 + (mixed - mixed.min(1, keepdims=True))
        np.put_along_axis(out, cand, lift, 1)
        return out

    def score_state(self, state: UserState, items: np.ndarray | None = None) -> np.ndarray:
        base = self.base_.score_state(state)
        if self.weight_ == 0.0:
            out = base
        else:
            if items is not None:  # candidates come from the items asked about (e.g. the cold items)
                allowed = np.full(base.shape[1], -np.inf)
                allowed[items] = 0.0
                base = base + allowed[None, :]
            cand, lm = self._candidates_and_lm(state.history, base)
            out = self._combine(base, cand, lm, self.weight_).astype(np.float32)
        return out if items is None else out[:, items]

    def _state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, extra = pack_wrapped(self.base_)
        return arrays, {**extra, "titles": self.titles_, "weight": self.weight_}

    def _load_state(self, arrays: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        self.base_ = unpack_wrapped(self._base_model(), arrays, extra)
        self.supports_cold_items = self.base_.supports_cold_items
        self.supports_cold_users = self.base_.supports_cold_users
        self.titles_, self.weight_ = list(extra["titles"]), float(extra["weight"])
        self.lm_, self._prior, self.llm_seconds_ = _lm(self.llm, self.threads), {}, 0.0


class LLMZeroShotRecommender(LLMRerankRecommender):
    name = "llm-zero-shot"
    zero_shot = True


__all__ = ["LLMRerankRecommender", "LLMZeroShotRecommender"]
