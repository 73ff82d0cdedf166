"""User-level DP-SGD meta-training: exact per-task gradients, Poisson batches, the accountant's budget,
and clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from metarec.data.splits import cold_user
from metarec.errors import ConfigError
from metarec.models import build_model
from metarec.models.io import load_model, save_model

pytest.importorskip("opacus")

TEXT_ID = {"text": {"template": "{title}. {description}"}, "id": {}}
FAST = {"epochs": 15, "patience": 15, "item_features": TEXT_ID, "dim": 32, "lr": 3e-3}


@pytest.fixture(scope="module")
def fold(synth):
    return next(cold_user(synth, shots=[5], n_folds=3, seed=0))


@pytest.mark.parametrize(
    "params",
    [{"algorithm": "maml"}, {"algorithm": "reptile"}, {"algorithm": "metasgd", "set_encoder": True, "hidden": 8}],
)
def test_per_task_gradients_equal_each_users_own_gradient(fold, params):
    from metarec.models.meta import _MetaStep

    m = build_model("meta", {**FAST, **params, "epochs": 1, "residual_dropout": 0.0}).fit(fold.train)
    for k, v in m._trained().items():  # fitting leaves them frozen; train them again (the inner rates if learned)
        v.requires_grad_(not k.startswith("lr.") or m.algorithm_.learns_inner_lr)
    step = _MetaStep(m, fold.train, fold.valid)
    bu, sup, qry = next(iter(step.batches(0)))
    grads, losses = step.task_grads((bu, sup, qry), 0, 0)
    named = step.named_parameters()
    assert set(grads) == set(named) and losses.shape == (len(bu),)
    for i in (0, len(bu) // 2, len(bu) - 1):  # a loop over users, in the test only
        loss = step.loss((bu[i : i + 1], sup[i : i + 1], qry[i : i + 1]), 0, 0)
        assert loss.item() == pytest.approx(float(losses[i]), rel=1e-5)
        want = torch.autograd.grad(loss, list(named.values()), allow_unused=True)
        for (name, p), g in zip(named.items(), want, strict=True):
            g = torch.zeros_like(p) if g is None else g
            torch.testing.assert_close(grads[name][i], g, rtol=1e-4, atol=1e-6, msg=name)


def test_poisson_batches_join_each_user_independently(fold):
    from metarec.meta.tasks import EpisodeSampler, time_rank_matrix

    ranks = time_rank_matrix(fold.train)
    users = np.flatnonzero(np.diff(ranks.indptr) >= 2)
    sampler = EpisodeSampler(ranks, users, [1], seed=0)
    sizes = [len(u) for u, _, sup, _ in sampler.poisson(0.1, 400)]
    assert np.mean(sizes) == pytest.approx(0.1 * len(sampler.users), rel=0.05)
    assert np.var(sizes) == pytest.approx(0.1 * 0.9 * len(sampler.users), rel=0.25)  # binomial, not fixed
    empty = next(EpisodeSampler(ranks, users, [1], seed=0).poisson(0.0, 1))
    assert len(empty[0]) == 0 and empty[2].shape == (0, fold.train.n_items)


def test_dp_training_reports_the_budget_it_spent_and_saves_it(fold, tmp_path):
    from opacus.accountants import RDPAccountant

    m = build_model("meta", {**FAST, "dp": {"epsilon": 8.0, "max_grad_norm": 0.5}}).fit(fold.train, valid=fold.valid)
    spent = m.fit_info_["privacy"]
    assert 7.0 < spent["epsilon"] <= 8.0 and spent["delta"] == pytest.approx(1 / spent["users"])
    per_epoch = round(spent["users"] / m.meta_batch)  # every step run is counted, and only those
    assert spent["steps"] == m.fit_info_["epochs"] * per_epoch and not spent["reproducible"]
    assert all(np.isnan(h["loss"]) for h in m.fit_info_["history"])  # the un-noised loss is not published
    acc = RDPAccountant()  # the same budget, recomputed from the run's noise, rate and steps + the popularity release
    acc.history = [(spent["noise_multiplier"], spent["sample_rate"], int(spent["steps"])),
                   (spent["prior_noise_multiplier"], 1.0, 1)]  # fmt: skip
    assert acc.get_epsilon(spent["delta"]) == pytest.approx(spent["epsilon"])
    loaded, manifest = load_model(save_model(m, tmp_path / "dp", fold.train))
    assert loaded.train_matrix_.nnz == 0 and loaded.train_matrix_.shape == m.train_matrix_.shape  # no histories
    assert manifest["metrics"]["privacy"]["epsilon"] == pytest.approx(spent["epsilon"])  # in the artefact manifest
    assert loaded.get_params()["dp"] == {"epsilon": 8.0, "max_grad_norm": 0.5}


def test_reproducible_runs_repeat_and_default_runs_do_not(fold):
    def fit(dp):
        m = build_model("meta", {**FAST, "epochs": 3, "dp": dp}).fit(fold.train, valid=fold.valid)
        return m.theta_["user_init"].clone()

    rep = {"epsilon": 8, "reproducible": True}
    assert torch.equal(fit(rep), fit(rep))
    assert not torch.equal(fit({"epsilon": 8}), fit({"epsilon": 8}))  # noise and batches from the OS CSPRNG


def test_clipping_alone_keeps_the_model_learning(fold):
    """With a budget so large the noise vanishes, DP-SGD is clipped SGD: it must still learn the planted
    structure (a sum of wrongly placed per-task gradients would not)."""
    plain = build_model("meta", FAST).fit(fold.train, valid=fold.valid)
    clipped = build_model("meta", {**FAST, "dp": {"epsilon": 1e7, "max_grad_norm": 5.0}}).fit(
        fold.train, valid=fold.valid
    )
    assert clipped.fit_info_["privacy"]["noise_multiplier"] < 0.05
    assert clipped.fit_info_["best_valid_ndcg@10"] > 0.8 * plain.fit_info_["best_valid_ndcg@10"]


def test_unreachable_budget_and_unsafe_settings_are_refused(fold):
    with pytest.raises(ConfigError, match=r"cannot be reached|needs noise multiplier"):
        build_model("meta", {**FAST, "epochs": 500, "dp": {"epsilon": 0.01, "prior_noise_multiplier": 0}}).fit(
            fold.train, valid=fold.valid
        )
    with pytest.raises(ConfigError, match="popularity release alone"):
        build_model("meta", {**FAST, "dp": {"epsilon": 0.01}}).fit(fold.train, valid=fold.valid)
    with pytest.raises(ConfigError, match="above 1 / users"):
        build_model("meta", {**FAST, "dp": {"epsilon": 8, "delta": 0.5}}).fit(fold.train, valid=fold.valid)
    with pytest.raises(ConfigError, match="vector per training user"):
        build_model("meta", {"algorithm": "global", "dp": {"epsilon": 8}})
    with pytest.raises(ConfigError, match="negatives"):
        build_model("meta", {"negatives": 50, "dp": {"epsilon": 8}})
    with pytest.raises(ConfigError, match="user_features"):
        build_model("meta", {"user_features": {"demo": {"type": "fields", "columns": ["age"]}}, "dp": {"epsilon": 8}})
    with pytest.raises(ConfigError, match="reviews"):
        build_model("meta", {"item_features": {"text": {"template": "{reviews}"}}, "dp": {"epsilon": 8}})
    with pytest.raises(ConfigError, match="epsilon"):
        build_model("meta", {"dp": {"epsilon": -1}})
    with pytest.raises(ConfigError, match="epsilon"):
        build_model("meta", {"dp": {"epslion": 8}})


class _Memoriser:
    """A model that has memorised its training users: it scores a member's whole history high."""

    def __init__(self, history: dict[bytes, np.ndarray], n_items: int) -> None:
        self.history, self.n_items = history, n_items

    def fold_in(self, sup):
        return sup.toarray()

    def score_state(self, sup):
        rows = [self.history.get(r.tobytes(), np.zeros(self.n_items)) * 10.0 for r in sup]
        return np.vstack(rows)


def test_loss_threshold_attack_separates_a_memoriser_and_not_a_coin(fold):
    from metarec.meta.tasks import split_rows, time_rank_matrix
    from metarec.privacy.membership import loss_threshold_auc

    ranks = time_rank_matrix(fold.train)
    users = np.flatnonzero(np.diff(ranks.indptr) > 5)
    members, others = ranks[users[:60]], ranks[users[60:120]]
    sup, _ = split_rows(members, 5, members.data)
    full = (members.toarray() > 0).astype(np.float64)
    seen = {s.astype(np.float32).tobytes(): f for s, f in zip(sup, full, strict=True)}
    got = loss_threshold_auc(_Memoriser(seen, ranks.shape[1]), members, others)
    assert got["auc"] > 0.95 and got["members"] == 60 and got["member_loss"] < got["non_member_loss"]
    plain = build_model("meta", {**FAST, "epochs": 2}).fit(fold.train, valid=fold.valid)
    same = loss_threshold_auc(plain, others[:30], others[30:])  # both halves are training users: a coin
    assert 0.3 < same["auc"] < 0.7


def test_cli_trains_a_private_model_and_reports_its_budget(tmp_path):
    from typer.testing import CliRunner

    from metarec.cli import app

    out = tmp_path / "dp"
    res = CliRunner().invoke(app, ["train", "-c", "configs/synthetic.toml", "--model", "maml", "--out", str(out),
                                   "--set", "models.maml.dp={epsilon = 3, max_grad_norm = 0.3}"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "user-level DP: epsilon" in res.output and "(target 3)" in res.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert 0 < manifest["metrics"]["privacy"]["epsilon"] <= 3.0
    res = CliRunner().invoke(app, ["train", "-c", "configs/synthetic.toml", "--model", "maml", "--out", str(out),
                                   "--set", "models.maml.dp={epsilon = 3, delta = 0.9}"])  # fmt: skip
    assert res.exit_code == 2 and "above 1 / users" in res.output, res.output


def test_a_missing_privacy_extra_is_one_actionable_line(fold, monkeypatch):
    import sys

    from metarec.errors import MetarecError

    monkeypatch.setitem(sys.modules, "opacus", None)  # as if `metarec[privacy]` were not installed
    with pytest.raises(MetarecError, match=r"metarec\[privacy\]"):
        build_model("meta", {**FAST, "dp": {"epsilon": 8}}).fit(fold.train, valid=fold.valid)
    monkeypatch.setitem(sys.modules, "flwr", None)
    with pytest.raises(MetarecError, match=r"metarec\[privacy\]"):
        build_model("meta", {**FAST, "federated": {"clients": 2}}).fit(fold.train, valid=fold.valid)
