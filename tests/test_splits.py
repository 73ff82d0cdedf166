"""Protocols are seeded, deterministic and leak nothing from test into train."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from metarec.data.schema import ITEM, TIME, USER
from metarec.data.splits import cold_both, cold_item, cold_user, make_folds, predefined, warm
from metarec.errors import ConfigError


def _pairs(df: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(df[USER].to_numpy().tolist(), df[ITEM].to_numpy().tolist(), strict=True))


def test_warm_is_temporal_and_disjoint(synth):
    fold = warm(synth, test_ratio=0.2)
    train, task = fold.train.interactions, fold.tasks[0]
    assert not _pairs(train) & _pairs(task.query)
    assert len(train) + len(task.query) == len(synth.interactions)
    last_train = train.groupby(USER)[TIME].max()
    first_test = task.query.groupby(USER)[TIME].min()
    assert (last_train.loc[first_test.index] <= first_test).all()
    # history is exactly the user's training rows
    assert _pairs(task.support) == _pairs(train[train[USER].isin(task.users)])
    n = synth.interactions.groupby(USER).size()
    assert (task.query.groupby(USER).size() == np.maximum(1, np.floor(n * 0.2)).astype(int)).all()


def test_leave_last_out(synth):
    task = warm(synth, leave_out=1).tasks[0]
    assert (task.query.groupby(USER).size() == 1).all()


def test_cold_user_folds_partition_users_and_never_leak(synth):
    folds = list(cold_user(synth, shots=[1, 5, 10], n_folds=5, valid_ratio=0.1, seed=3))
    all_test = []
    for fold in folds:
        train_users = set(fold.train.interactions[USER])
        assert not train_users & set(fold.valid_users)
        for task in fold.tasks:
            assert task.cold_users
            assert not train_users & set(task.users)
            assert not _pairs(task.support) & _pairs(task.query)
            assert (task.support.groupby(USER).size() == task.k).all()
            # support = the k earliest interactions of each user
            assert (task.support.groupby(USER)[TIME].max() <= task.query.groupby(USER)[TIME].min()).all()
        all_test.append(np.unique(np.concatenate([t.users for t in fold.tasks])))
    cat = np.concatenate(all_test)
    assert len(cat) == len(np.unique(cat)) == synth.interactions[USER].nunique()
    again = list(cold_user(synth, shots=[1, 5, 10], n_folds=5, valid_ratio=0.1, seed=3))
    assert all(np.array_equal(a.tasks[1].users, b.tasks[1].users) for a, b in zip(folds, again, strict=True))
    other = list(cold_user(synth, shots=[5], n_folds=5, seed=4))
    assert not np.array_equal(folds[0].tasks[1].users, other[0].tasks[0].users)


def test_cold_user_random_support_is_seeded(synth):
    a = next(cold_user(synth, shots=[5], support="random", seed=1)).tasks[0].support
    b = next(cold_user(synth, shots=[5], support="random", seed=1)).tasks[0].support
    assert _pairs(a) == _pairs(b)
    with pytest.raises(ConfigError):
        next(cold_user(synth, shots=[5], support="latest"))


def test_cold_item_removes_items_from_training(synth):
    folds = list(cold_item(synth, n_folds=4, seed=0))
    seen_cold = []
    for fold in folds:
        assert not set(fold.train.interactions[ITEM]) & set(fold.cold_items)
        task = fold.tasks[0]
        assert set(task.query[ITEM]) <= set(fold.cold_items)
        assert np.array_equal(task.candidates, fold.cold_items)
        assert not set(task.support[ITEM]) & set(fold.cold_items)
        seen_cold.append(fold.cold_items)
    cat = np.concatenate(seen_cold)
    assert len(cat) == len(np.unique(cat)) == synth.interactions[ITEM].nunique()


def test_cold_item_reveal_is_never_scored_or_trained(synth):
    fold = next(cold_item(synth, n_folds=4, reveal_share=0.2, seed=0))
    revealed = fold.revealed
    assert len(revealed) > 0 and set(revealed[ITEM]) <= set(fold.cold_items)
    assert not _pairs(revealed) & _pairs(fold.tasks[0].query)
    assert not _pairs(revealed) & _pairs(fold.train.interactions)
    # each revealed item keeps at least one interaction to score
    assert set(revealed[ITEM]) <= set(fold.tasks[0].query[ITEM])


def test_cold_both_has_unseen_users_and_items(synth):
    for fold in cold_both(synth, shots=[3], n_folds=5, seed=0, reveal_share=0.2):
        revealed = fold.revealed
        assert set(revealed[ITEM]) <= set(fold.cold_items)
        assert not set(revealed[USER]) & set(fold.tasks[0].users)  # test users' rows are never revealed
        train = fold.train.interactions
        task = fold.tasks[0]
        assert not set(train[USER]) & set(task.users)
        assert not set(train[ITEM]) & set(fold.cold_items)
        assert not set(task.support[ITEM]) & set(fold.cold_items)
        assert set(task.query[ITEM]) <= set(fold.cold_items)
        assert set(task.query[USER]) == set(task.users)


def test_predefined_split_column(synth):
    df = synth.interactions.copy()
    df["split"] = np.where(df.groupby(USER).cumcount(ascending=False) == 0, "test", "train")
    (fold,) = predefined(synth.with_interactions(df))
    assert (fold.train.interactions["split"] == "train").all()
    assert len(fold.tasks[0].query) == synth.n_users
    with pytest.raises(ConfigError, match="split"):
        list(predefined(synth))


def test_query_set_protocol_roles_and_labels(synth):
    """MeLU's protocol: users with 13-100 interactions, 8:1:1 users, a query of 10 random items each."""
    folds = list(make_folds(synth, "query-set", {"seeds": 2}, 0))
    assert len(folds) == 2
    for fold in folds:
        task = fold.tasks[0]
        assert task.within_query and task.cold_users and task.label_threshold == 4.0
        assert (task.query.groupby(USER).size() == 10).all()
        assert not set(fold.train.interactions[USER]) & set(task.users)  # test users are cold
        assert not set(fold.valid[USER]) & set(task.users)
        n = synth.interactions.groupby(USER).size()
        assert n.loc[task.users].between(13, 100).all()
        assert len(task.users) == round(0.1 * n.between(13, 100).sum())
        sup_n = task.support.groupby(USER).size()
        assert (sup_n + 10 == n.loc[sup_n.index]).all()  # the rest of each test user's rows is the support
        assert (task.query["rating"] < 4).any()  # label-0 rows stay in the query as negatives
    assert folds[0].tasks[0].users.tolist() != folds[1].tasks[0].users.tolist()  # another seed, other users


def test_predefined_roles_from_columns_and_bad_values(synth):
    from metarec.data.splits import query_set_roles

    roles = [query_set_roles(synth, seed=s) for s in (0, 1)]
    df = synth.interactions.assign(split_0=roles[0]["split"], role_0=roles[0]["role"],
                                   split_1=roles[1]["split"], role_1=roles[1]["role"])  # fmt: skip
    params = {"column": ["split_0", "split_1"], "role": ["role_0", "role_1"], "rank_within": "query",
              "label_threshold": 4}  # fmt: skip
    from_file = list(make_folds(synth.with_interactions(df), "predefined", params, 0))
    built = list(make_folds(synth, "query-set", {"seeds": 2}, 0))
    for a, b in zip(from_file, built, strict=True):  # the exported split gives the same tasks
        assert a.tasks[0].users.tolist() == b.tasks[0].users.tolist()
        cols = [USER, ITEM, "rating"]
        assert a.tasks[0].query[cols].sort_index().equals(b.tasks[0].query[cols].sort_index())
        assert a.tasks[0].support[cols].sort_index().equals(b.tasks[0].support[cols].sort_index())
    bad = df.assign(role_0=df["role_0"].where(df["role_0"] != "query", "qury"))
    with pytest.raises(ConfigError, match="'qury' is not one of"):
        list(make_folds(synth.with_interactions(bad), "predefined", params, 0))
    with pytest.raises(ConfigError, match="rank_within"):
        list(make_folds(synth.with_interactions(df), "predefined", {**params, "rank_within": "all"}, 0))


def test_unknown_protocol_and_bad_params_are_config_errors(synth):
    with pytest.raises(ConfigError, match="unknown protocol"):
        list(make_folds(synth, "hot-user", {}, 0))
    with pytest.raises(ConfigError, match="cold-user"):
        list(make_folds(synth, "cold-user", {"shotz": [1]}, 0))


def test_earliest_without_timestamps_warns_and_says_what_it_uses():
    """Regression (issue 10, item 15): without a time column 'earliest' silently meant row order."""
    from metarec.data.schema import Dataset, RowOrderWarning

    inter = pd.DataFrame({"user_id": ["u1"] * 4 + ["u2"] * 4, "item_id": list("abcdabcd")})
    ds = Dataset.from_frames("no-time", inter)
    with pytest.warns(RowOrderWarning, match="row order.*support = 'random'"):
        list(cold_user(ds, shots=[1], n_folds=2, valid_ratio=0.0, support="earliest"))
    timed = Dataset.from_frames("timed", inter.assign(timestamp=range(8)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RowOrderWarning)
        list(cold_user(timed, shots=[1], n_folds=2, valid_ratio=0.0, support="earliest"))


def _two_domains(synth):
    import dataclasses

    parity = np.where(synth.items["topic"].to_numpy() % 2 == 0, "even", "odd")
    return dataclasses.replace(synth, items=synth.items.assign(domain=parity))


def test_bridge_users_keep_their_source_history_and_are_cold_in_the_target(synth):
    from metarec.data.splits import bridge

    ds = _two_domains(synth)
    dom = ds.item_domains()
    odd = np.flatnonzero(dom == "odd")
    folds = list(bridge(ds, source="even", target="odd", shots=[0, 2], n_folds=3, min_source=3, seed=1))
    tested = np.concatenate([f.tasks[0].users for f in folds])
    assert len(tested) == len(set(tested)) > 30  # each bridge user is tested once
    for f in folds:
        train = f.train.interactions
        test_users = f.tasks[0].users
        mine = train[train[USER].isin(test_users)]
        assert len(mine) and set(dom[mine[ITEM]]) == {"even"}  # source history kept, target history gone
        valid_rows = train[train[USER].isin(f.valid_users)]  # meta-valid users: like test users, source only
        assert set(dom[valid_rows[ITEM]]) == {"even"} and set(dom[f.valid[ITEM]]) == {"odd"}
        by = {(t.protocol, t.k): t for t in f.tasks}
        for k in (0, 2):
            with_src, only = by[("bridge", k)], by[("bridge-target-only", k)]
            assert np.array_equal(with_src.users, only.users) and with_src.query.equals(only.query)
            assert set(dom[with_src.query[ITEM]]) == {"odd"} and np.array_equal(with_src.candidates, odd)
            assert not with_src.candidates_cold and with_src.cold_users
            assert len(only.support) == k * len(only.users)
            assert set(dom[with_src.support[ITEM]]) == ({"even"} if k == 0 else {"even", "odd"})
            pairs = set(zip(with_src.support[USER], with_src.support[ITEM], strict=True))
            assert not pairs & set(zip(with_src.query[USER], with_src.query[ITEM], strict=True))


def test_bridge_domains_from_a_declared_partition_and_clear_errors(synth):
    from metarec.data.splits import bridge, item_domains

    dom = item_domains(synth, {"column": "topic", "target": [0]})
    assert set(dom[synth.items["topic"].to_numpy() == 0]) == {"target"} and (dom == "source").sum() > 0
    fold = next(bridge(synth, partition={"column": "topic", "target": [0, 1]}, shots=[1], n_folds=2, min_source=2))
    assert {t.label for t in fold.tasks} == {"bridge@1", "bridge-target-only@1"}
    with pytest.raises(ConfigError, match="needs item domains"):
        next(bridge(synth))
    with pytest.raises(ConfigError, match=r"no domain 'films'; the items' domains are \['even', 'odd'\]"):
        next(bridge(_two_domains(synth), source="films", target="odd"))
    with pytest.raises(ConfigError, match="no column 'genre'"):
        next(bridge(synth, partition={"column": "genre", "target": ["x"]}))
    with pytest.raises(ConfigError, match="needs column and target"):
        next(bridge(synth, partition={"column": "topic"}))
    with pytest.raises(ConfigError, match="k >= 0"):
        next(bridge(synth, partition={"column": "topic", "target": [0]}, shots=[]))
    named = next(bridge(synth, source="rest", target="space", partition={"column": "topic", "target": 0},
                        shots=[1], n_folds=2, min_source=2))  # fmt: skip
    assert len(named.tasks) == 2
