"""Hand-written metrics cross-checked against ranx (ranking), scikit-learn (AUC, errors), scipy."""

from __future__ import annotations

import numpy as np
import pytest
from ranx import Qrels, Run, evaluate
from scipy import stats
from sklearn.metrics import roc_auc_score

from metarec import metrics as M
from metarec.eval.stats import mean_ci, paired_bootstrap


def _random_case(seed: int, n_users: int = 40, n_items: int = 60):
    rng = np.random.default_rng(seed)
    scores = rng.random((n_users, n_items))
    rel = rng.random((n_users, n_items)) < rng.uniform(0.02, 0.3, size=(n_users, 1))
    rel[0] = False
    rel[0, 5] = True  # a user with a single relevant item
    return scores, rel


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranking_metrics_match_ranx(seed):
    scores, rel = _random_case(seed)
    keep = rel.any(axis=1)
    scores, rel = scores[keep], rel[keep]
    ks = [1, 5, 10, 20]
    top = M.topk(scores, max(ks))
    ours = M.ranking_metrics(np.take_along_axis(rel, top, axis=1), rel.sum(axis=1), ks)
    qrels = Qrels({f"u{u}": {f"i{i}": 1 for i in np.flatnonzero(rel[u])} for u in range(len(rel))})
    run = Run({f"u{u}": {f"i{i}": float(scores[u, i]) for i in range(scores.shape[1])} for u in range(len(rel))})
    names = {"precision": "precision", "recall": "recall", "f1": "f1", "ndcg": "ndcg", "hr": "hit_rate",
             "mrr": "mrr", "map": "map"}  # fmt: skip
    for k in ks:
        theirs = evaluate(qrels, run, [f"{v}@{k}" for v in names.values()], make_comparable=True)
        for ours_name, ranx_name in names.items():
            assert ours[f"{ours_name}@{k}"].mean() == pytest.approx(theirs[f"{ranx_name}@{k}"], abs=1e-9), (
                ours_name,
                k,
            )


def test_topk_orders_best_first():
    s = np.array([[0.1, 0.9, 0.5, 0.7], [4.0, 3.0, 2.0, 1.0]])
    assert M.topk(s, 3).tolist() == [[1, 3, 2], [0, 1, 2]]
    assert M.topk(s, 10).shape == (2, 4)


def test_auc_counts_ties_as_half_like_sklearn():
    """Regression (issue 11): ties were broken by position (0.625 where sklearn gives 0.375)."""
    scores = np.array([[0.5, 0.5, 0.2, 0.9, 0.5, 0.5]])
    rel = np.array([[True, False, True, False, False, True]])
    valid = np.ones_like(rel)
    assert M.auc(scores, rel, valid)[0] == pytest.approx(roc_auc_score(rel[0], scores[0]))
    rng = np.random.default_rng(4)
    coarse = rng.integers(0, 3, size=(40, 30)).astype(float)  # many ties
    r = rng.random((40, 30)) < 0.3
    v = rng.random((40, 30)) > 0.1
    ours = M.auc(coarse, r, v)
    for u in range(40):
        if 0 < (r[u] & v[u])[v[u]].sum() < v[u].sum():
            assert ours[u] == pytest.approx(roc_auc_score((r[u] & v[u])[v[u]], coarse[u][v[u]]))


def test_auc_matches_sklearn_with_excluded_items():
    scores, rel = _random_case(3)
    rng = np.random.default_rng(9)
    valid = rng.random(scores.shape) > 0.2
    ours = M.auc(scores, rel, valid)
    for u in range(len(scores)):
        r, v = rel[u] & valid[u], valid[u]
        if 0 < r[v].sum() < v.sum():
            assert ours[u] == pytest.approx(roc_auc_score(r[v], scores[u][v]))
        else:
            assert np.isnan(ours[u])


def test_coverage_and_novelty():
    counts = np.array([3, 0, 1, 0])
    assert M.coverage(counts, 4) == 0.5
    pop = np.array([50.0, 0.0])
    nov = M.novelty(np.array([[0], [1]]), pop, 99)
    assert nov[1] > nov[0] > 0  # a never-seen item is more novel than a ubiquitous one


def test_mean_ci_matches_scipy_t_interval():
    v = np.random.default_rng(0).normal(0.3, 0.1, 50)
    ci = mean_ci(v)
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert (ci.low, ci.high) == pytest.approx((lo, hi))
    assert mean_ci(np.array([np.nan, 1.0, 1.0])).n == 2


def test_paired_bootstrap_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 400)  # large between-user variance
    better = base + 0.02 + rng.normal(0, 0.01, 400)
    d = paired_bootstrap(better, base, "diff")
    assert d.low > 0
    r = paired_bootstrap(better, base, "ratio")
    assert r.low > 1.0
    same = paired_bootstrap(base + rng.normal(0, 0.01, 400), base, "diff")
    assert same.low < 0 < same.high
    with pytest.raises(ValueError):
        paired_bootstrap(base, base[:-1])


def test_graded_ndcg_matches_sklearn_within_each_users_candidates():
    from sklearn.metrics import ndcg_score

    rng = np.random.default_rng(11)
    scores = rng.random((30, 25))
    gains = rng.integers(0, 6, size=(30, 25)).astype(float)
    cand = rng.random((30, 25)) < 0.4
    ours = M.graded_ndcg(scores, gains, cand, [1, 3, 5])
    for k in (1, 3, 5):
        for u in range(30):
            c = cand[u]
            if gains[u][c].sum() == 0:
                assert np.isnan(ours[k][u])
            elif c.sum() > 1:
                want = ndcg_score(gains[u][c][None], scores[u][c][None], k=k)
                assert ours[k][u] == pytest.approx(want), (k, u)


def test_gini_and_tail_share():
    rng = np.random.default_rng(2)
    counts = rng.integers(0, 50, size=40).astype(float)
    # the mean-absolute-difference definition, computed the slow way
    mad = np.abs(counts[:, None] - counts[None, :]).mean()
    assert M.gini(counts) == pytest.approx(mad / (2 * counts.mean()))
    assert M.gini(np.full(10, 3.0)) == pytest.approx(0.0)
    assert M.gini(np.r_[np.zeros(9), 5.0]) == pytest.approx(0.9)  # one item takes every slot: (n - 1) / n
    pop = np.array([100, 1, 50, 2, 3, 80, 0, 4, 5, 6])
    tail = M.tail_items(pop)  # the two most popular of ten are the head
    assert tail.tolist() == [False, True, True, True, True, False, True, True, True, True]
    top = np.array([[0, 5, 1], [6, 7, 8]])
    assert M.tail_share(top, tail).tolist() == pytest.approx([1 / 3, 1.0])
