"""Pseudonymised exports: keyed hashes for user ids, coarse timestamps, no free-text user fields."""

from __future__ import annotations

import re

import pandas as pd
import pytest
from typer.testing import CliRunner

from metarec.cli import app
from metarec.data.pseudonym import keyed_hash, pseudonymise, without_users
from metarec.data.sources import synthetic
from metarec.errors import ConfigError


def test_keyed_hash_is_stable_keyed_and_refuses_an_empty_key():
    a, b = keyed_hash("k1", ["u1", "u2"]), keyed_hash("k2", ["u1", "u2"])
    assert a == keyed_hash("k1", ["u1", "u2"]) and a[0] != a[1] and a[0] != b[0]
    assert all(re.fullmatch(r"[0-9a-f]{32}", h) for h in a)
    with pytest.raises(ConfigError, match="must not be empty"):
        keyed_hash("", ["u1"])


def test_pseudonymise_drops_ids_text_and_time_detail():
    ds = synthetic.make(n_users=40, n_items=30, seed=1)
    inter, items, users = pseudonymise(ds, "secret", "day", keep_user_fields=["age"])
    assert list(users.columns) == ["user_id", "age"]  # the free-text profile and the planted topic are gone
    assert not set(users["user_id"]) & set(ds.users["user_id"])
    assert len(inter) == len(ds.interactions) and (inter["timestamp"] % 86_400 == 0).all()
    # one user's events stay together under one pseudonym
    per_user = ds.interactions.groupby("user").size().sort_index().to_numpy()
    assert sorted(inter.groupby("user_id").size()) == sorted(per_user)
    pd.testing.assert_frame_equal(items, ds.items)
    with pytest.raises(ConfigError, match="not a user field"):
        pseudonymise(ds, "secret", keep_user_fields=["user_id"])
    with pytest.raises(ConfigError, match="time unit"):
        pseudonymise(ds, "secret", time_unit="minute")


def test_without_users_removes_their_events_and_ids():
    ds = synthetic.make(n_users=40, n_items=30, seed=1)
    gone = keyed_hash("k", ["u3", "u7", "nobody"])
    out, n = without_users(ds, set(gone), "k")
    assert n == 2 and out.n_users == 38 and not {"u3", "u7"} & set(out.users["user_id"])
    kept = ds.interactions[~ds.interactions["user"].isin([3, 7])]
    assert len(out.interactions) == len(kept)
    assert list(out.users.columns) == list(ds.users.columns)


def test_data_export_cli(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["data", "export", "synthetic", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--pseudonymise KEY" in res.output
    res = runner.invoke(app, ["data", "export", "synthetic", "--out", str(tmp_path / "x"), "--pseudonymise", "s3",
                              "--time-unit", "week"])  # fmt: skip
    assert res.exit_code == 0, res.output
    users = pd.read_csv(tmp_path / "x" / "users.csv")
    inter = pd.read_csv(tmp_path / "x" / "interactions.csv")
    assert list(users.columns) == ["user_id"] and users["user_id"].str.fullmatch(r"[0-9a-f]{32}").all()
    assert set(inter["user_id"]) <= set(users["user_id"]) and (inter["timestamp"] % (7 * 86_400) == 0).all()
