"""Full-ranking evaluation of one model on one task, in user chunks so memory stays bounded.

Every model ranks the whole candidate set (the catalogue, or the cold items) with the user's own
history removed; no sampled negatives. A chunk holds at most `chunk_elements` scores, so a
catalogue of any size is evaluated in the same memory.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from metarec import metrics as M
from metarec.data.splits import EvalTask
from metarec.models.base import Recommender

DEFAULT_METRICS = (*M.RANKING, "auc", "coverage", "gini", "novelty", "tail")


@dataclass
class TaskResult:
    model: str
    task: EvalTask
    per_user: dict[str, np.ndarray] = field(default_factory=dict)
    aggregate: dict[str, float] = field(default_factory=dict)  # catalogue-level (coverage)
    skipped: str | None = None  # why the model cannot be scored on this task (not a zero)
    seconds: float = 0.0

    @property
    def users(self) -> np.ndarray:
        return self.task.users


def evaluate_task(
    model: Recommender,
    task: EvalTask,
    ks: list[int] = (10,),  # type: ignore[assignment]
    metrics: tuple[str, ...] = DEFAULT_METRICS,
    item_popularity: np.ndarray | None = None,
    n_train_users: int = 1,
    chunk_elements: int = 1 << 24,
    seed: int = 0,
) -> TaskResult:
    """Score `model` on `task`.

    Ties are broken in a seeded random order of the candidates, never by item id: dataset ids often
    follow popularity (MovieLens), so id order would quietly reward any model that outputs ties.
    """
    name = getattr(model, "display_name", model.name)
    if task.candidates is not None and task.candidates_cold and not model.supports_cold_items:
        return TaskResult(name, task, skipped="cannot score items unseen in training")
    if task.cold_users and not model.supports_cold_users:
        return TaskResult(name, task, skipped="cannot fold in unseen users")
    if task.explicit or task.within_query:
        return _evaluate_within_query(model, task, name, chunk_elements, ks, seed)
    t0 = time.perf_counter()
    cand = task.candidates
    n_cand = task.n_items if cand is None else len(cand)
    max_k = max(ks)
    history, target = task.history, task.target
    if cand is not None:
        h_cand, t_cand = history[:, cand], target[:, cand]
    else:
        h_cand, t_cand = history, target
    rows = max(1, chunk_elements // max(1, n_cand))
    parts: dict[str, list[np.ndarray]] = {}
    rec_counts = {k: np.zeros(n_cand, np.int64) for k in ks}
    pop = item_popularity if item_popularity is not None else np.zeros(task.n_items)
    pop_cand = pop if cand is None else pop[cand]
    perm = np.random.default_rng(seed).permutation(n_cand)  # ranking happens in this column order
    pop_cand = pop_cand[perm]
    tail = M.tail_items(pop_cand)
    # a model that reads order (SASRec) gets each entry's time position as its value
    given = task.history_order if getattr(model, "reads_order", False) else history
    for start in range(0, len(task.users), rows):
        sl = slice(start, start + rows)
        state = model.fold_in(given[sl], task.users[sl], known=not task.cold_users)
        scores = np.asarray(model.score_state(state, cand), dtype=np.float64)[:, perm]
        seen = h_cand[sl].toarray().astype(bool)[:, perm]
        rel = t_cand[sl].toarray().astype(bool)[:, perm] & ~seen
        scores[seen] = -np.inf
        top = M.topk(scores, max_k)
        hits = np.take_along_axis(rel, top, axis=1)
        # a top-K slot can only hold a seen item when fewer than K candidates remain
        hits &= np.isfinite(np.take_along_axis(scores, top, axis=1))
        res = M.ranking_metrics(hits, rel.sum(axis=1), ks)
        if "auc" in metrics:
            res["auc"] = M.auc(scores, rel, ~seen)
        if "novelty" in metrics:
            for k in ks:
                res[f"novelty@{k}"] = M.novelty(top[:, :k], pop_cand, n_train_users)
        if "tail" in metrics:
            for k in ks:
                res[f"tail@{k}"] = M.tail_share(top[:, :k], tail)
        for key, val in res.items():
            if key.split("@")[0] in metrics:
                parts.setdefault(key, []).append(val)
        for k in ks:
            np.add.at(rec_counts[k], top[:, :k].ravel(), 1)
    per_user = {k: np.concatenate(v) for k, v in parts.items()}
    aggregate = {f"coverage@{k}": M.coverage(rec_counts[k], n_cand) for k in ks} if "coverage" in metrics else {}
    if "gini" in metrics:
        aggregate.update({f"gini@{k}": M.gini(rec_counts[k]) for k in ks})
    return TaskResult(name, task, per_user, aggregate, seconds=time.perf_counter() - t0)


def _evaluate_within_query(model: Recommender, task: EvalTask, name: str, chunk_elements: int,
                           ks: Sequence[int] = (1, 3), seed: int = 0) -> TaskResult:  # fmt: skip
    """Each user's query items ordered among themselves (MeLU's protocol): nDCG@k with the ratings as
    linear gains, or binary gains rating >= `task.label_threshold` (label-0 rows stay as negatives; a
    user whose query has no positive is undefined, NaN, and left out); for models that predict
    ratings, MAE and RMSE over the query ratings. Ties are broken in a seeded random column order."""
    t0 = time.perf_counter()
    rates = getattr(model, "predicts_ratings", False)
    history = task.history_ratings if rates else task.history
    truth = task.target_ratings
    present = task.target
    perm = np.random.default_rng(seed).permutation(task.n_items)
    rows = max(1, chunk_elements // max(1, task.n_items))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(task.users), rows):
        sl = slice(start, start + rows)
        state = model.fold_in(history[sl], task.users[sl], known=not task.cold_users)
        scores = np.asarray(model.score_state(state), dtype=np.float64)[:, perm]
        r = truth[sl].toarray().astype(np.float64)[:, perm]
        q = present[sl].toarray()[:, perm] > 0
        gains = (r >= task.label_threshold).astype(np.float64) if task.label_threshold is not None else r
        for k, v in M.graded_ndcg(scores, gains, q, list(ks)).items():
            parts.setdefault(f"ndcg@{k}", []).append(v)
        if rates:
            err = np.where(q, scores - r, 0.0)
            n = np.maximum(q.sum(1), 1)
            parts.setdefault("mae", []).append(np.abs(err).sum(1) / n)
            parts.setdefault("rmse", []).append(np.sqrt((err**2).sum(1) / n))
    per_user = {k: np.concatenate(v) for k, v in parts.items()}
    return TaskResult(name, task, per_user, {}, seconds=time.perf_counter() - t0)
