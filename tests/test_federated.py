"""Federated meta-learning on Flower's simulation runtime (clients on Ray): weights travel, data stays."""

from __future__ import annotations

import numpy as np
import pytest

from metarec.data.splits import cold_user
from metarec.errors import ConfigError
from metarec.models import build_model

pytest.importorskip("flwr")

TEXT_ID = {"text": {"template": "{title}. {description}"}, "id": {}}
FAST = {"epochs": 15, "patience": 15, "item_features": TEXT_ID, "dim": 32, "lr": 3e-3}


@pytest.fixture(scope="module")
def fold(synth):
    return next(cold_user(synth, shots=[5], n_folds=3, seed=0))


@pytest.mark.slow
def test_federated_rounds_learn_and_report_their_traffic(fold):
    m = build_model("meta", {**FAST, "federated": {"clients": 3, "rounds": 3, "local_epochs": 2}})
    m.fit(fold.train, valid=fold.valid)
    log = m.fit_info_["federated"]
    scores = [r["valid_ndcg@10"] for r in log["rounds"]]
    assert len(scores) == 4  # before the first round, then after each
    assert max(scores[1:]) > scores[0] + 0.05  # the averaged client updates learn
    assert m.fit_info_["best_valid_ndcg@10"] == pytest.approx(max(scores))
    assert sum(log["client_users"]) == (np.diff(fold.train.matrix().indptr) >= 2).sum()  # every training user, once
    weights = sum(v.nbytes for v in m.get_weights().values())
    for way in ("down", "up"):  # measured by Flower's records: the weights and little else
        assert weights <= log["bytes_per_client_round"][way] < 1.05 * weights
    # the model keeps the best round's weights and serves like any meta model
    state = m.fold_in(fold.train.matrix()[:2])
    assert m.score_state(state).shape == (2, fold.train.n_items)
    assert m._train_to_save().nnz == 0  # the artefact carries no client's interactions


def test_federated_settings_are_checked():
    with pytest.raises(ConfigError, match="clients"):
        build_model("meta", {"federated": {"clients": 1}})
    with pytest.raises(ConfigError, match="vector per training user"):
        build_model("meta", {"algorithm": "finetune", "federated": {}})
    with pytest.raises(ConfigError, match="federated"):
        build_model("meta", {"federated": {"round": 3}})
    with pytest.raises(ConfigError, match="a table"):
        build_model("meta", {"federated": True})


def test_federated_training_refuses_a_running_ray_session(fold, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    with pytest.raises(ConfigError, match="outside a Ray session"):
        build_model("meta", {**FAST, "federated": {"clients": 2}}).fit(fold.train, valid=fold.valid)
