"""Next-item protocol and the order-aware models (SASRec, GRU4Rec) on data with a planted order."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metarec.data.schema import Dataset
from metarec.data.splits import make_folds, next_item, order_matrix
from metarec.errors import ConfigError
from metarec.eval.evaluate import evaluate_task
from metarec.models import build_model
from metarec.models.sequential import last_items

N_ITEMS = 40


@pytest.fixture(scope="module")
def walks() -> Dataset:
    """Every user walks the catalogue in order from a random start (item s, s+1, s+2, ...): the next
    item is fully determined by the last one, while popularity is nearly flat."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(240):
        start, n = int(rng.integers(N_ITEMS)), int(rng.integers(12, 25))
        rows += [(f"u{u}", f"i{(start + j) % N_ITEMS}", 1_000 + 10 * j) for j in range(n)]
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(N_ITEMS)], "title": [f"item {i}" for i in range(N_ITEMS)]})
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(240)]})
    return Dataset.from_frames("walks", inter.sample(frac=1.0, random_state=0), items, users)  # file order shuffled


def test_next_item_split_holds_out_the_last_two_in_time(walks):
    folds = list(next_item(walks, repeats=2))
    assert [f.fold for f in folds] == [0, 1] and folds[0].tasks[0].query.equals(folds[1].tasks[0].query)
    fold = folds[0]
    task, inter = fold.tasks[0], walks.interactions
    latest = inter.sort_values("timestamp").groupby("user")["item"].last()
    assert len(task.users) == walks.n_users
    assert (task.query.set_index("user")["item"].sort_index() == latest.sort_index()).all()
    assert fold.valid is not None and len(fold.valid) == walks.n_users
    assert len(fold.train.interactions) + 2 * walks.n_users == len(inter)
    # the support is the training rows plus the validation item, never the test item
    assert len(task.support) == len(inter) - walks.n_users
    assert not task.support.merge(task.query, on=["user", "item"]).shape[0]
    with pytest.raises(ConfigError, match="min_interactions"):
        list(make_folds(walks, "next-item", {"min_interactions": 2}, 0))


def test_history_order_puts_the_latest_item_last(walks):
    task = next(next_item(walks)).tasks[0]
    seq = last_items(task.history_order, 5)
    u0 = task.support[task.support["user"] == task.users[0]].sort_values("timestamp")["item"].to_numpy()
    assert seq[0].tolist() == (u0[-5:] + 1).tolist()
    short = order_matrix(pd.DataFrame({"user": [0, 0], "item": [7, 3], "timestamp": [2, 1]}), 1, N_ITEMS)
    assert last_items(short, 4).tolist() == [[0, 0, 4, 8]]  # right-aligned, padding 0, item + 1


@pytest.mark.parametrize("kind", ["sasrec", "gru4rec"])
def test_sequence_models_learn_the_planted_order(walks, kind):
    fold = next(next_item(walks))
    params = {"dim": 32, "epochs": 40, "max_len": 10, "patience": 5, "lr": 5e-3, "dropout": 0.1}
    model = build_model(kind, params, seed=0).fit(fold.train, valid=fold.valid)
    pop = build_model("popularity").fit(fold.train)
    got = {m.name: float(np.mean(evaluate_task(m, fold.tasks[0], [10], ("hr",)).per_user["hr@10"]))
           for m in (model, pop)}  # fmt: skip
    assert got[kind] > 0.8 and got["popularity"] < 0.45, got
    assert model.fit_info_["best_valid_ndcg@10"] > 0.5


def test_sasrec_reads_order_attends_and_round_trips(walks, tmp_path):
    from metarec.models.io import load_model, save_model

    fold = next(next_item(walks))
    params = {"dim": 32, "epochs": 25, "max_len": 10, "patience": 5, "lr": 5e-3, "dropout": 0.1}
    model = build_model("sasrec", params, seed=1).fit(fold.train, valid=fold.valid)
    # a new user who watched 3, 4, 5 in that order is sent to 6; the same items reversed point elsewhere
    fwd = model.adapt(pd.DataFrame({"item": [3, 4, 5]}))
    rev = model.adapt(pd.DataFrame({"item": [5, 4, 3]}))
    assert model.recommend_for(fwd, 1)[0][0] == 6
    assert model.recommend_for(rev, 1)[0][0] != 6
    timed = model.adapt(pd.DataFrame({"item": [5, 3, 4], "timestamp": [3, 1, 2]}))  # time order wins
    assert model.recommend_for(timed, 1)[0][0] == 6
    weights = model.attention(fwd.history)[0]
    assert sorted(i for i, _ in weights) == [3, 4, 5] and abs(sum(w for _, w in weights) - 1) < 1e-5
    with pytest.raises(ConfigError, match="attention"):
        build_model("gru4rec", {"epochs": 1, "dim": 8}).fit(fold.train, valid=fold.valid).attention(fwd.history)
    path = save_model(model, tmp_path / "sasrec", walks)
    again, _ = load_model(path)
    users = np.arange(5)
    np.testing.assert_allclose(again.score(users), model.score(users), rtol=1e-5, atol=1e-5)


def test_text_item_tower_scores_items_never_trained_on(synth):
    params = {"dim": 16, "epochs": 3, "max_len": 10, "item_features": {"text": {"template": "{title}"}, "id": {}},
              "text": {"encoder": "tfidf"}}  # fmt: skip
    model = build_model("sasrec", params).fit(synth)
    assert model.supports_cold_items and not build_model("sasrec", {"epochs": 1}).fit(synth).supports_cold_items
    assert np.isfinite(model.score(np.array([0]))).all()


def test_from_frames_keeps_rows_together_whatever_the_index():
    """A filtered or shuffled frame (index not 0..n-1) once had its ratings and timestamps re-aligned by
    index label onto other rows."""
    inter = pd.DataFrame({"user_id": ["a", "b", "c"], "item_id": ["x", "y", "z"], "rating": [1.0, 2.0, 3.0],
                          "timestamp": [10, 20, 30]}, index=[2, 0, 1])  # fmt: skip
    ds = Dataset.from_frames("t", inter)
    got = ds.interactions.assign(u=ds.users["user_id"].to_numpy()[ds.interactions["user"]])
    assert got.set_index("u")[["rating", "timestamp"]].loc[["a", "b", "c"]].to_numpy().tolist() == [
        [1.0, 10], [2.0, 20], [3.0, 30]]  # fmt: skip


def test_sequence_aware_set_encoder_follows_the_latest_taste():
    """Users switch topic part-way (a few items of topic A, then topic B); the support is the earliest 8
    items, so it holds both, and the query is the rest of B. Attention with recency positions learns to
    follow the latest items; the order-free mean follows the majority."""
    from metarec.data.splits import cold_user

    rng = np.random.default_rng(0)
    rows = []
    for u in range(300):
        a, b = rng.choice(6, 2, replace=False)
        s = int(rng.integers(3, 7))
        seq = [*(rng.choice(10, s, replace=False) + 10 * a), *(rng.choice(10, 8, replace=False) + 10 * b)]
        rows += [(f"u{u}", f"i{i}", t) for t, i in enumerate(seq)]
    ds = Dataset.from_frames("switch", pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]))
    fold = next(cold_user(ds, shots=[8], n_folds=4, folds=[0], seed=0, support="earliest", valid_ratio=0.1))
    base = {"epochs": 40, "dim": 16, "item_features": {"id": {}}, "train_support": "earliest", "train_shots": [8],
            "valid_k": [8], "set_encoder": True}  # fmt: skip
    got = {}
    for name, extra in (("mean", {}), ("sequence", {"support_order": True})):
        model = build_model("meta", {**base, **extra}, seed=0).fit(fold.train, valid=fold.valid)
        got[name] = float(np.mean(evaluate_task(model, fold.tasks[0], [10], ("ndcg",)).per_user["ndcg@10"]))
    assert model.reads_order and got["sequence"] > 1.2 * got["mean"], got
    # a new user: the same items in the opposite order give a different start
    a = model.adapt(pd.DataFrame({"item": [0, 1, 2, 30, 31]}))
    b = model.adapt(pd.DataFrame({"item": [30, 31, 0, 1, 2]}))
    assert not np.allclose(model.score_state(a), model.score_state(b))
    with pytest.raises(ConfigError, match="set_encoder"):
        build_model("meta", {"support_order": True})


def test_a_reused_item_keeps_its_latest_position():
    df = pd.DataFrame({"user": [0, 0, 0, 0], "item": [5, 6, 5, 7], "timestamp": [1, 2, 3, 4]})
    m = order_matrix(df, 1, 10)
    assert dict(zip(m.indices.tolist(), m.data.tolist(), strict=True)) == {5: 3.0, 6: 2.0, 7: 4.0}
    assert last_items(m, 3).tolist() == [[7, 6, 8]]  # 6 then 5 then 7, as item + 1
