"""The one training loop: every neural model hands it a `TrainStep` and gets its weights trained.

The loop owns the optimiser, the epochs and the callbacks; the step owns the model: which tensors
are trained, how an epoch is cut into batches and what a batch's loss is. That split is what lets
a wrapper replace the optimiser (DP-SGD: Opacus wraps it; `wrap_optimizer`) and a distributed worker
run the same `step` on its shard, without touching the model. A step that computes its own gradients
(per-task gradients for DP-SGD, `privacy.dp.PrivateStep`) defines `backward(batch, index, epoch)`, which
fills them and returns the batch's loss (or None: not to be published); the loop then calls it instead of
`loss(...).backward()`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from metarec.errors import ConfigError


class TrainStep(Protocol):
    def parameters(self) -> list[torch.Tensor]:
        """The tensors the optimiser updates."""
        ...

    def batches(self, epoch: int) -> Iterable[Any]:
        """One epoch's batches. Seeded by the step, so a run from scratch repeats exactly; a run
        resumed from a checkpoint restarts the step's random streams and the optimiser's moments."""
        ...

    def loss(self, batch: Any, index: int, epoch: int) -> torch.Tensor:
        """The scalar loss of one batch; `index` is the batch's position in the epoch."""
        ...

    def after_update(self) -> None:
        """Projections after each optimiser step (e.g. keep learned learning rates non-negative)."""
        ...

    def state(self) -> dict[str, torch.Tensor]:
        """A snapshot of everything trained (detached copies), for best-epoch restore and checkpoints."""
        ...

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy `state` into the trained tensors (in place; names absent from `state` are left as they are)."""
        ...


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    epochs_run: int = 0
    seconds: float = 0.0
    best: dict[str, float] = field(default_factory=dict)  # what callbacks report (best score, epoch)


class Trainer:
    """Adam over a `TrainStep` for up to `epochs` epochs, with callbacks at the epoch boundaries."""

    def __init__(
        self,
        epochs: int,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        callbacks: Sequence[Any] = (),
        wrap_optimizer: Callable[[torch.optim.Optimizer], torch.optim.Optimizer] | None = None,
    ) -> None:
        if epochs < 0:
            raise ConfigError(f"epochs must be >= 0, got {epochs}")
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.callbacks = list(callbacks)
        self.wrap_optimizer = wrap_optimizer
        self.stop = False  # a callback sets it to end training after the current epoch
        self.start_epoch = 0  # a resuming callback (Checkpoint) moves it forward
        self.optimizer: torch.optim.Optimizer | None = None

    def _emit(self, event: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, event)(self, *args)

    def fit(self, step: TrainStep) -> TrainResult:
        t0 = time.perf_counter()
        opt: torch.optim.Optimizer = torch.optim.Adam(step.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        self.optimizer = self.wrap_optimizer(opt) if self.wrap_optimizer else opt
        result = TrainResult()
        self.stop = False
        self._emit("on_train_begin", step, result)
        for epoch in range(self.start_epoch, self.epochs):
            logs: dict[str, float] = {"epoch": epoch, "loss": self.run_epoch(step, epoch)}
            self._emit("on_epoch_end", step, epoch, logs)
            result.history.append(logs)
            if self.stop:
                break
        result.epochs_run = len(result.history)
        self._emit("on_train_end", step, result)
        result.seconds = time.perf_counter() - t0
        return result

    def run_epoch(self, step: TrainStep, epoch: int) -> float:
        """One pass over the step's batches; returns the mean batch loss."""
        assert self.optimizer is not None, "call fit()"
        losses = []
        own_backward = getattr(step, "backward", None)
        for index, batch in enumerate(step.batches(epoch)):
            self.optimizer.zero_grad()
            if own_backward is not None:  # returns the loss, or None where it must not be published (DP)
                value = own_backward(batch, index, epoch)
            else:
                loss = step.loss(batch, index, epoch)
                loss.backward()
                value = loss.item()
            self.optimizer.step()
            step.after_update()
            if value is not None:
                losses.append(float(value))
        return float(np.mean(losses)) if losses else float("nan")
