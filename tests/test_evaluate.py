"""The evaluator: ties never follow item ids, chunking changes nothing, seen items never count."""

from __future__ import annotations

import numpy as np
import pandas as pd

from metarec.data.schema import ITEM, USER, Dataset
from metarec.data.splits import EvalTask, cold_user
from metarec.eval.evaluate import evaluate_task
from metarec.models import build_model
from metarec.models.base import Recommender, UserState


class Constant(Recommender):
    name = "constant"

    def _fit(self, train: Dataset, valid: pd.DataFrame | None = None, revealed: pd.DataFrame | None = None) -> None:
        pass

    def score_state(self, state: UserState, items: np.ndarray | None = None) -> np.ndarray:
        return np.zeros((state.history.shape[0], self.n_items_ if items is None else len(items)))


def _task(n_users: int = 200, n_items: int = 500) -> tuple[Dataset, EvalTask]:
    inter = pd.DataFrame({"user_id": np.repeat(np.arange(n_users), 5), "item_id": np.tile(np.arange(5), n_users)})
    items = pd.DataFrame({"item_id": np.arange(n_items).astype(str)})
    ds = Dataset.from_frames("ties", inter, items)
    query = ds.interactions
    support = query.iloc[:0]
    return ds, EvalTask("cold-user", 0, 0, np.arange(n_users), support, query, n_items, cold_users=True)


def test_ties_are_broken_at_random_not_by_item_id():
    ds, task = _task()
    res = evaluate_task(Constant().fit(ds), task, [5], ("hr",))
    # relevant items are ids 0..4: id order would give HR@5 = 1; chance is ~5% for 5 of 500
    assert res.per_user["hr@5"].mean() < 0.15


def test_chunking_does_not_change_results(synth):
    fold = next(cold_user(synth, shots=[5], n_folds=3))
    model = build_model("als", {"factors": 16, "iterations": 5}).fit(fold.train)
    big = evaluate_task(model, fold.tasks[0], [5, 10], chunk_elements=1 << 24)
    small = evaluate_task(model, fold.tasks[0], [5, 10], chunk_elements=3 * synth.n_items)
    for key in big.per_user:
        assert np.allclose(big.per_user[key], small.per_user[key], equal_nan=True), key
    assert big.aggregate == small.aggregate


def test_seen_items_are_excluded_and_never_relevant(synth):
    fold = next(cold_user(synth, shots=[5], n_folds=3))
    task = fold.tasks[0]
    # ask for the support items back as if they were the truth: nothing can be hit
    trick = EvalTask("cold-user", 0, 5, task.users, task.support, task.support, task.n_items, cold_users=True)
    res = evaluate_task(build_model("itemknn").fit(fold.train), trick, [10], ("hr", "ndcg"))
    assert res.per_user["hr@10"].sum() == 0
    assert set(task.support[USER]) == set(trick.query[USER]) and len(task.support[ITEM]) > 0
