"""Distributed evaluation: every (fold, model) unit of an experiment is one Ray task.

A task runs `eval.experiment.score_unit`, the function the local loop runs, on the dataset and fold
it reads from Ray's object store (put once, shared by every task), so its numbers are the local ones.
At most `num_workers` units are in flight, whatever the cluster's size, the neural models' units first;
results come back as they finish (for the progress line) and are returned in the local run's order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from metarec.distributed.settings import DistributedSettings as DistributedConfig
from metarec.utils import require

if TYPE_CHECKING:
    from metarec.data.schema import Dataset
    from metarec.data.splits import Fold
    from metarec.eval.evaluate import TaskResult
    from metarec.eval.experiment import Unit

Outcome = tuple[list["TaskResult"], float]
_NEURAL = frozenset({"meta", "sasrec", "gru4rec", "cke", "neural"})


def _score(cfg: dict[str, Any], ds: Dataset, unit: Unit, fold: Fold, threads: int) -> Outcome:
    import dataclasses

    import torch

    from metarec.eval.experiment import score_unit

    torch.set_num_threads(threads)  # a worker owns `cpus_per_worker` cores, not the machine's
    results, fit_seconds = score_unit(cfg, ds, dataclasses.replace(unit, fold=fold))
    for r in results:
        r.task = None  # type: ignore[assignment]  # the driver has the task; do not ship it back
    return results, fit_seconds


def run_units(cfg: dict[str, Any], ds: Dataset, units: list[Unit], dcfg: DistributedConfig,
              done: Callable[[Unit, list[TaskResult], float], None]) -> list[Outcome]:  # fmt: skip
    ray = require("ray", "ray")
    score = ray.remote(num_cpus=dcfg.cpus_per_worker, max_retries=2)(_score)
    threads = max(1, int(dcfg.cpus_per_worker))
    ds_ref = ray.put(ds)
    fold_refs: dict[int, Any] = {}
    pending: dict[Any, int] = {}
    out: list[Outcome | None] = [None] * len(units)
    # longest first (neural models train for epochs; the rest fit in seconds), so no long fit starts last
    # while the other workers idle; results still come back in the local run's order
    todo = sorted(range(len(units)), key=lambda i: ("epochs" in units[i].params or units[i].kind in _NEURAL, -i))
    while todo or pending:
        while todo and len(pending) < dcfg.num_workers:
            i = todo.pop()
            unit = units[i]
            key = id(unit.fold)
            if key not in fold_refs:
                fold_refs[key] = ray.put(unit.fold)
            light = dataclasses.replace(unit, fold=None)  # type: ignore[arg-type]  # the fold travels once, through the object store
            pending[score.remote(cfg, ds_ref, light, fold_refs[key], threads)] = i
        ready, _ = ray.wait(list(pending), num_returns=1)
        i = pending.pop(ready[0])
        results, fit_seconds = ray.get(ready[0])
        out[i] = (results, fit_seconds)
        done(units[i], results, fit_seconds)
    return [o for o in out if o is not None]
