"""Per-user metrics from top-K lists and relevance masks, vectorised over a chunk of users.

Definitions follow ranx / trec_eval with binary relevance (cross-checked in tests): AP@K divides
by the user's total number of relevant items; NDCG uses gain 1 / log2(rank + 1).
"""

from __future__ import annotations

import numpy as np

RANKING = ("precision", "recall", "f1", "ndcg", "hr", "mrr", "map")


def topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first (argpartition, then sort k)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def ranking_metrics(hits: np.ndarray, n_rel: np.ndarray, ks: list[int]) -> dict[str, np.ndarray]:
    """hits[u, j]: the item at rank j is relevant for u; n_rel[u]: u's number of relevant items."""
    hits = hits.astype(np.float64)
    n_rel = n_rel.astype(np.float64)
    ranks = np.arange(1, hits.shape[1] + 1, dtype=np.float64)
    discounts = 1.0 / np.log2(ranks + 1.0)
    cum_hits = np.cumsum(hits, axis=1)
    safe_rel = np.maximum(n_rel, 1.0)
    first = np.where(hits.any(axis=1), hits.argmax(axis=1) + 1.0, np.inf)
    ideal = np.concatenate([[0.0], np.cumsum(discounts)])
    out: dict[str, np.ndarray] = {}
    for k in ks:
        kk = min(k, hits.shape[1])
        h = cum_hits[:, kk - 1] if kk > 0 else np.zeros(len(hits))
        p = h / k
        r = h / safe_rel
        out[f"precision@{k}"] = p
        out[f"recall@{k}"] = r
        out[f"f1@{k}"] = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
        out[f"hr@{k}"] = (h > 0).astype(np.float64)
        out[f"mrr@{k}"] = np.where(first <= kk, 1.0 / first, 0.0)
        dcg = (hits[:, :kk] * discounts[:kk]).sum(axis=1)
        out[f"ndcg@{k}"] = dcg / np.maximum(ideal[np.minimum(n_rel, kk).astype(int)], 1e-12)
        prec_at_hits = hits[:, :kk] * cum_hits[:, :kk] / ranks[:kk]
        out[f"map@{k}"] = prec_at_hits.sum(axis=1) / safe_rel
    return out


def auc(scores: np.ndarray, relevant: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-user ROC AUC over the valid (unseen, candidate) items: P(score(pos) > score(neg)), a tie
    counting one half (Mann-Whitney U from average ranks, as sklearn's roc_auc_score)."""
    from scipy.stats import rankdata

    # invalid items rank strictly below every valid one (a valid -inf is lifted to the lowest finite)
    s = np.where(valid, np.maximum(np.asarray(scores, np.float64), np.finfo(np.float64).min), -np.inf)
    ranks = rankdata(s, method="average", axis=1) - (~valid).sum(axis=1, keepdims=True)
    pos = relevant & valid
    n_pos = pos.sum(axis=1)
    n_neg = valid.sum(axis=1) - n_pos
    u_stat = (ranks * pos).sum(axis=1) - n_pos * (n_pos + 1) / 2.0
    denom = (n_pos * n_neg).astype(np.float64)
    return np.divide(u_stat, denom, out=np.full(len(s), np.nan), where=denom > 0)


def graded_ndcg(scores: np.ndarray, gains: np.ndarray, candidates: np.ndarray, ks: list[int]) -> dict[int, np.ndarray]:
    """Per-user NDCG@k with graded gains (e.g. ratings, linear) over each user's own candidate set
    (MeLU's query set): DCG of the top k candidates by score / DCG of the best order; NaN when a
    user's candidates have no gain. Matches sklearn's ndcg_score on untied scores."""
    ranked = np.where(candidates, scores, -np.inf)
    g = np.where(candidates, gains, 0.0).astype(np.float64)
    out = {}
    for k in ks:
        top = topk(ranked, k)
        disc = 1.0 / np.log2(np.arange(2, top.shape[1] + 2))
        dcg = (np.take_along_axis(g, top, axis=1) * disc).sum(1)
        ideal = (-np.sort(-g, axis=1)[:, : top.shape[1]] * disc).sum(1)
        out[k] = np.divide(dcg, ideal, out=np.full(len(g), np.nan), where=ideal > 0)
    return out


def coverage(recommended_counts: np.ndarray, n_candidates: int) -> float:
    """Share of the candidate catalogue that appears in at least one top-K list."""
    return float((recommended_counts > 0).sum() / max(1, n_candidates))


def gini(recommended_counts: np.ndarray) -> float:
    """Gini index of how often each candidate is recommended: 0 = every item equally often,
    1 = one item takes every slot (sorted-values formula of the Lorenz curve)."""
    x = np.sort(np.asarray(recommended_counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return float("nan")
    return float(((2 * np.arange(1, n + 1) - n - 1) * x).sum() / (n * total))


def tail_items(item_popularity: np.ndarray, head_share: float = 0.2) -> np.ndarray:
    """Boolean mask of the long tail: every item outside the `head_share` most popular ones (by
    training interactions; the 20 % short head of the Pareto convention)."""
    n_head = int(np.ceil(head_share * len(item_popularity)))
    tail = np.ones(len(item_popularity), bool)
    tail[np.argsort(-item_popularity, kind="stable")[:n_head]] = False
    return tail


def tail_share(top: np.ndarray, tail: np.ndarray) -> np.ndarray:
    """Per user, the share of the recommended items that come from the long tail."""
    return tail[top].mean(axis=1)


def novelty(top: np.ndarray, item_popularity: np.ndarray, n_users: int) -> np.ndarray:
    """Mean self-information -log2 p(i) of recommended items, p from training users (add-one)."""
    p = (item_popularity[top] + 1.0) / (n_users + 1.0)
    return (-np.log2(p)).mean(axis=1)
