"""New items that learn from their first users: the meta model's item warm-up and item-KNN on reveals."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from metarec.data.splits import cold_item
from metarec.errors import ConfigError
from metarec.eval.evaluate import evaluate_task
from metarec.meta.warmup import Adopters, apply_warmup, earliest_adopters, init_item_warmup
from metarec.models import build_model
from metarec.models.io import load_model, save_model


@pytest.fixture(scope="module")
def early(synth):
    """A launch: a third of the items are new, each one's earliest 20% of users revealed."""
    return next(cold_item(synth, n_folds=3, reveal_share=0.2, seed=0))


def _ndcg(model, task) -> float:
    return float(np.nanmean(evaluate_task(model, task).per_user["ndcg@10"]))


def test_adopters_pool_their_vectors_and_mask_their_own_interactions():
    reveal = sp.csr_matrix(np.array([[1, 1, 0], [0, 0, 0], [0, 0, 1]], np.float32))  # items x users
    users = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
    a = Adopters(reveal)
    assert torch.allclose(a.taste(users), torch.tensor([[2.0, 1.0], [0.0, 0.0], [0.0, 5.0]]))
    assert a.count.tolist() == [2.0, 0.0, 1.0]
    mask = a.query_mask(np.array([0, 2]), torch.tensor([1.0, 1.0, 0.0]))
    assert mask.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]  # item 2 is not playing a new one


def test_warmup_moves_only_new_items_with_adopters():
    theta = init_item_warmup(2)
    theta["warm_W"] = torch.eye(2)
    E, b = torch.ones(3, 2), torch.zeros(3)
    taste, count = torch.full((3, 2), 4.0), torch.tensor([3.0, 0.0, 3.0])
    E2, b2 = apply_warmup(theta, E, b, taste, count, new=torch.tensor([1.0, 1.0, 0.0]))
    assert not torch.equal(E2[0], E[0]) and b2[0] > 0  # new, with adopters
    assert torch.equal(E2[1:], E[1:]) and torch.equal(b2[1:], b[1:])  # new without adopters; warm


def test_earliest_adopters_follow_time_and_never_take_all(synth):
    R = earliest_adopters(synth, 0.2)
    n = np.bincount(synth.interactions.drop_duplicates(["user", "item"])["item"], minlength=synth.n_items)
    got = np.asarray(R.sum(axis=1)).ravel()
    assert np.all(got <= np.maximum(n - 1, 0)) and np.all(got[n >= 2] >= 1)


def test_warmup_beats_early_adopter_popularity_and_round_trips(synth, early, tmp_path):
    task = early.tasks[0]
    params = {"epochs": 8, "dim": 16, "item_warmup": 0.2, "warmup_epochs": 15,
              "item_features": {"text": {"template": "{title}"}, "id": {}}}  # fmt: skip
    model = build_model("meta", params).fit(early.train, revealed=early.revealed)
    pop = build_model("popularity").fit(early.train, revealed=early.revealed)
    plain = build_model("meta", {k: v for k, v in params.items() if not k.startswith(("item_warmup", "warmup"))})
    plain.fit(early.train, revealed=early.revealed)
    got, base, launch_only = _ndcg(model, task), _ndcg(pop, task), _ndcg(plain, task)
    assert got > base and got > launch_only, (got, base, launch_only)
    assert model.warmup_ is not None and float(model.warmup_[1][early.cold_items].sum()) == len(early.revealed)
    # the warm-up is part of the artefact: a reloaded model scores the new items identically
    again, _ = load_model(save_model(model, tmp_path / "m", early.train))
    users = task.users[:20]
    assert np.allclose(model.score(users, early.cold_items), again.score(users, early.cold_items), atol=1e-5)


def test_itemknn_ranks_new_items_through_their_early_adopters(synth, early, tmp_path):
    task = early.tasks[0]
    launch = build_model("itemknn").fit(early.train)
    assert not launch.supports_cold_items  # launch day: no interaction, no neighbour
    knn = build_model("itemknn").fit(early.train, revealed=early.revealed)
    rnd = build_model("random").fit(early.train)
    assert _ndcg(knn, task) > 1.5 * _ndcg(rnd, task)
    # revealed rows shape the similarities only, never a user's history
    assert knn.train_matrix_.nnz == early.train.matrix().nnz
    again, _ = load_model(save_model(knn, tmp_path / "k", early.train))
    assert again.supports_cold_items


def test_bad_warmup_configs():
    with pytest.raises(ConfigError, match="item_warmup"):
        build_model("meta", {"item_warmup": 1.5})
    with pytest.raises(ConfigError, match="ID residual"):
        build_model("meta", {"item_warmup": 0.1, "item_features": {"text": {}}})
    with pytest.raises(ConfigError, match="ranking objective"):
        build_model("meta", {"item_warmup": 0.1, "objective": "rating"})
    with pytest.raises(ConfigError, match="warmup_items"):
        build_model("meta", {"item_warmup": 0.1, "warmup_items": 0.0})
