"""Baselines learn the planted structure, fold cold users in, and honour the interface."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metarec.data.splits import cold_item, cold_user, warm
from metarec.errors import ConfigError
from metarec.eval.evaluate import evaluate_task
from metarec.models import REGISTRY, build_model
from metarec.models.base import NotFittedError

FAST = {
    "als": {"factors": 16, "iterations": 10},
    "bpr": {"factors": 16, "iterations": 50},
    "itemknn": {"neighbours": 50},
    "sasrec": {"dim": 16, "epochs": 3, "max_len": 10},
    "gru4rec": {"dim": 16, "epochs": 3, "max_len": 10},
    "cke": {"dim": 16, "epochs": 3, "batch_size": 1024},
}


def _ndcg(model, task):
    return evaluate_task(model, task, [10], ("ndcg",)).per_user["ndcg@10"].mean()


@pytest.mark.parametrize("kind", ["popularity", "itemknn", "als", "bpr"])
def test_beats_random_warm_and_cold_user(synth, kind):
    wf = warm(synth)
    cf = next(cold_user(synth, shots=[5], n_folds=3, seed=0))
    for fold in (wf, cf):
        task = fold.tasks[0]
        rnd = _ndcg(build_model("random").fit(fold.train), task)
        got = _ndcg(build_model(kind, FAST.get(kind)).fit(fold.train), task)
        assert got > 1.5 * rnd, (kind, fold.protocol, got, rnd)


def test_personalised_models_beat_popularity_on_planted_topics(synth):
    fold = next(cold_user(synth, shots=[10], n_folds=3, seed=0))
    task = fold.tasks[0]
    pop = _ndcg(build_model("popularity").fit(fold.train), task)
    for kind in ("itemknn", "als"):
        assert _ndcg(build_model(kind, FAST[kind]).fit(fold.train), task) > pop


def test_cf_models_refuse_cold_items_instead_of_scoring_zero(synth):
    fold = next(cold_item(synth, n_folds=3))
    for kind in ("popularity", "itemknn", "als", "bpr"):
        r = evaluate_task(build_model(kind, FAST.get(kind)).fit(fold.train), fold.tasks[0])
        assert r.skipped and not r.per_user
    r = evaluate_task(build_model("random").fit(fold.train), fold.tasks[0])
    assert r.skipped is None and len(r.per_user["ndcg@10"]) == len(fold.tasks[0].users)


def test_als_fold_in_recovers_a_training_user(synth):
    """Folding in a user's full training row lands near the factors ALS learned for them."""
    m = build_model("als", {"factors": 16, "iterations": 15}).fit(synth)
    users = np.arange(20)
    learned = m.fold_in(m.train_matrix_[users], users, known=True).payload
    folded = m.fold_in(m.train_matrix_[users], users, known=False).payload
    cos = (learned * folded).sum(1) / np.linalg.norm(learned, axis=1) / np.linalg.norm(folded, axis=1)
    assert cos.mean() > 0.9


def test_bpr_fold_in_ranks_support_neighbourhood(synth):
    m = build_model("bpr", FAST["bpr"]).fit(synth)
    topics = synth.items["topic"].to_numpy()
    t0 = np.flatnonzero(topics == 0)[:5]
    state = m.adapt(pd.DataFrame({"item": t0}))
    top = [i for i, _ in m.recommend_for(state, 10)]
    assert np.mean(topics[top] == 0) > 0.5
    assert not set(top) & set(t0.tolist())


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_interface(synth, kind, request):
    params = FAST.get(kind)
    if kind.startswith("llm-"):  # a tiny random language model stands in for SmolLM2
        params = {"llm": request.getfixturevalue("tiny_lm"), "candidates": 8}
    m = build_model(kind, params)
    with pytest.raises(NotFittedError):
        m.recommend(0)
    if kind == "cke":  # needs a knowledge graph: the planted topics as one
        synth = request.getfixturevalue("synth_kg")
    m.fit(synth)
    recs = m.recommend(0, k=5)
    assert len(recs) == 5
    seen = set(synth.matrix()[0].indices.tolist())
    assert not {i for i, _ in recs} & seen
    assert [s for _, s in recs] == sorted((s for _, s in recs), reverse=True)
    assert m.score(np.array([0, 1])).shape == (2, synth.n_items)
    assert m.score(np.array([0]), np.array([3, 4])).shape == (1, 2)
    assert all(k in repr(m) for k in m.get_params())


def test_build_model_errors():
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("svd++")
    with pytest.raises(ConfigError, match="als"):
        build_model("als", {"factorz": 3})


def test_adapt_validates_item_ids(synth):
    m = build_model("popularity").fit(synth)
    with pytest.raises(Exception, match="outside"):
        m.adapt(pd.DataFrame({"item": [synth.n_items + 5]}))


def test_tail_rerank_trades_a_little_accuracy_for_the_long_tail(synth):
    """Popularity recommends only the short head; xQuAD brings each user's appetite for the tail in."""
    from metarec import metrics as M

    fold = warm(synth)
    task = fold.tasks[0]
    pop = np.bincount(fold.train.interactions["item"].to_numpy(), minlength=synth.n_items)
    base = build_model("popularity").fit(fold.train)
    model = build_model("rerank", {"base": {"type": "popularity"}, "weight": 0.0}).fit(fold.train)
    state = model.fold_in(task.history, task.users)
    s0 = model.score_state(state)
    seen = task.history.toarray() > 0
    ranked = lambda s: M.topk(np.where(seen, -np.inf, s), 10)  # noqa: E731
    assert (ranked(s0) == ranked(base.score_state(base.fold_in(task.history, task.users)))).all()
    metrics = ("ndcg", "coverage", "tail")
    before = evaluate_task(model, task, [10], metrics, pop, synth.n_users)
    model.set_params(weight=0.6)
    after = evaluate_task(model, task, [10], metrics, pop, synth.n_users)
    assert after.per_user["tail@10"].mean() > before.per_user["tail@10"].mean() + 0.2
    assert after.aggregate["coverage@10"] > before.aggregate["coverage@10"]
    top = ranked(model.score_state(state))
    assert not np.take_along_axis(seen, top, axis=1).any()  # the list never spends a slot on a seen item
    with pytest.raises(ConfigError, match="weight"):
        build_model("rerank", {"base": {"type": "popularity"}, "weight": 2.0}).fit(fold.train)


def test_model_spec_gives_text_models_and_wrapped_text_bases_the_runs_text_table():
    """One place turns `[models.X]` into (kind, params) for train / evaluate / tune / Ray Train / transfer."""
    from metarec.models import model_spec

    text = {"encoder": "tfidf", "max_features": 500}
    cfg = {"text": text, "models": {
        "maml": {"type": "meta", "text": {"max_features": 50}},
        "als": {"factors": 8},
        "rr": {"type": "rerank", "base": {"type": "content"}},
        "rr-als": {"type": "rerank", "base": {"type": "als"}},
    }}  # fmt: skip
    assert model_spec(cfg, "maml") == ("meta", {"text": {"encoder": "tfidf", "max_features": 50}})
    assert model_spec(cfg, "als") == ("als", {"factors": 8})
    assert model_spec(cfg, "rr") == ("rerank", {"base": {"type": "content", "text": text}})
    assert model_spec(cfg, "rr-als") == ("rerank", {"base": {"type": "als"}})
    assert cfg["models"]["maml"] == {"type": "meta", "text": {"max_features": 50}}  # the config is not changed
