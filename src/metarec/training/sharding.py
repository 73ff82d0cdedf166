"""Data-parallel training of the one loop: each worker takes its slice of every batch and the workers'
gradients are all-reduced before each optimiser step (torch.distributed; Ray Train sets up the gloo group).

Every worker runs the same seeded step, so all draw the same batches (and negatives, dropout masks); worker
r keeps rows r, r+W, ... of each batch. Its loss is scaled by W * n_r / n, so the averaged gradient is
the full batch's mean-loss gradient exactly, and the weights stay identical on every worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import numpy as np
import torch


class ShardedStep:
    """A `TrainStep` whose batches are (rows, ...) tuples of equal-length arrays, cut to one worker's rows."""

    def __init__(self, step: Any, rank: int, world: int) -> None:
        self.step, self.rank, self.world = step, rank, world

    def __getattr__(self, name: str) -> Any:  # parameters, state, load_state, after_update, valid, ...
        return getattr(self.step, name)

    def batches(self, epoch: int) -> Iterable[Any]:
        for batch in self.step.batches(epoch):
            n = len(batch[0])
            rows = np.arange(self.rank, n, self.world)
            yield n, tuple(part[rows] for part in batch)

    def loss(self, batch: tuple[int, Any], index: int, epoch: int) -> torch.Tensor:
        n, part = batch
        if len(part[0]) == 0:  # fewer rows than workers: this worker adds nothing but joins the all-reduce
            return sum((p.sum() * 0.0 for p in self.step.parameters()), torch.zeros(()))
        return self.step.loss(part, index, epoch) * (self.world * len(part[0]) / n)


class AllReduceOptimizer:
    """Wraps an optimiser: before each step, every parameter's gradient is averaged over the process group."""

    def __init__(self, inner: torch.optim.Optimizer) -> None:
        self.inner = inner
        self.param_groups = inner.param_groups
        self.state = inner.state
        self.defaults = inner.defaults

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Any = None) -> Any:
        import torch.distributed as dist

        world = dist.get_world_size()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= world
        return self.inner.step(closure)

    def state_dict(self) -> dict[str, Any]:
        return self.inner.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.inner.load_state_dict(state_dict)


def all_reduce(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """`wrap_optimizer` hook of the training loop for data-parallel workers."""
    return cast(torch.optim.Optimizer, AllReduceOptimizer(opt))
