"""Callbacks of the training loop: early stopping on validation users, history / progress, checkpoints,
TensorBoard scalars.

A callback implements any of `on_train_begin(trainer, step, result)`,
`on_epoch_end(trainer, step, epoch, logs)` and `on_train_end(trainer, step, result)`; the base
class makes all three no-ops. Order matters: a callback sees the logs that earlier ones wrote.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

if TYPE_CHECKING:
    from metarec.training.trainer import Trainer, TrainResult, TrainStep


class Callback:
    def on_train_begin(self, trainer: Trainer, step: TrainStep, result: TrainResult) -> None:
        return None

    def on_epoch_end(self, trainer: Trainer, step: TrainStep, epoch: int, logs: dict[str, float]) -> None:
        return None

    def on_train_end(self, trainer: Trainer, step: TrainStep, result: TrainResult) -> None:
        return None


class EarlyStopping(Callback):
    """Scores the current weights after each epoch (higher is better), keeps the best and restores it.

    `score` is the model's validation measure on users it never trains on (meta-valid users);
    training stops after `patience` epochs without improvement. `selects` names the tensors the score
    actually measures (default: all); the others keep their last values (e.g. training users' own
    vectors, which a cold-user score never reads). `score_start` also scores the weights training
    starts from (epoch -1): a pretrained start (transfer) is kept when training only makes it worse.
    """

    def __init__(self, score: Callable[[], float], patience: int = 10, monitor: str = "valid",
                 selects: Callable[[str], bool] | None = None, score_start: bool = False) -> None:  # fmt: skip
        self.score = score
        self.score_start = score_start
        self.patience = patience
        self.monitor = monitor
        self.selects = selects
        self.best_score = -np.inf
        self.best_epoch = -1
        self.best_state: dict[str, torch.Tensor] | None = None
        self._bad = 0

    def on_train_begin(self, trainer: Trainer, step: TrainStep, result: TrainResult) -> None:
        if self.score_start:
            self.on_epoch_end(trainer, step, trainer.start_epoch - 1, {})

    def on_epoch_end(self, trainer: Trainer, step: TrainStep, epoch: int, logs: dict[str, float]) -> None:
        score = self.score()
        logs[self.monitor] = score
        if score > self.best_score:
            self.best_score, self.best_epoch, self._bad = score, epoch, 0
            state = step.state()
            self.best_state = {k: v for k, v in state.items() if self.selects is None or self.selects(k)}
            return
        self._bad += 1
        if self._bad >= self.patience:
            trainer.stop = True

    def on_train_end(self, trainer: Trainer, step: TrainStep, result: TrainResult) -> None:
        if self.best_state is not None:
            step.load_state(self.best_state)
        result.best = {self.monitor: float(self.best_score), "epoch": self.best_epoch}


class History(Callback):
    """Prints each epoch's logs when `verbose` (the logs themselves are kept in `TrainResult.history`)."""

    def __init__(self, verbose: bool = False, printer: Callable[[str], Any] = print) -> None:
        self.verbose = verbose
        self.printer = printer

    def on_epoch_end(self, trainer: Trainer, step: TrainStep, epoch: int, logs: dict[str, float]) -> None:
        if self.verbose:
            self.printer(json.dumps({k: round(v, 5) if isinstance(v, float) else v for k, v in logs.items()}))


class Checkpoint(Callback):
    """Writes the trained tensors after every `every` epochs (safetensors + a JSON of the epoch) and,
    with `resume=True`, starts from the last checkpoint in `directory` (the optimiser restarts)."""

    def __init__(self, directory: str | Path, every: int = 1, resume: bool = False) -> None:
        self.directory = Path(directory)
        self.every = max(1, every)
        self.resume = resume

    @property
    def weights(self) -> Path:
        return self.directory / "checkpoint.safetensors"

    @property
    def info(self) -> Path:
        return self.directory / "checkpoint.json"

    def on_train_begin(self, trainer: Trainer, step: TrainStep, result: TrainResult) -> None:
        if self.resume and self.weights.exists() and self.info.exists():
            step.load_state(load_file(str(self.weights)))
            trainer.start_epoch = int(json.loads(self.info.read_text())["epoch"]) + 1

    def on_epoch_end(self, trainer: Trainer, step: TrainStep, epoch: int, logs: dict[str, float]) -> None:
        if (epoch + 1) % self.every:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.weights.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in step.state().items()}, str(tmp))
        tmp.replace(self.weights)  # never a half-written checkpoint
        self.info.write_text(json.dumps({"epoch": epoch, "logs": logs}))


class TensorBoard(Callback):
    """Each epoch's logs (loss, meta-valid NDCG@10) as TensorBoard scalars, written while training
    runs, so `tensorboard --logdir DIR` shows the curves live. Needs the `track` extra (tensorboard)."""

    def __init__(self, log_dir: str | Path) -> None:
        from metarec.utils import require

        require("tensorboard", "track")  # at configuration time, not after the data has loaded
        self.log_dir = Path(log_dir)
        self._writer: Any = None

    def on_train_begin(self, trainer: Trainer, step: TrainStep, result: TrainResult) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(self.log_dir))

    def on_epoch_end(self, trainer: Trainer, step: TrainStep, epoch: int, logs: dict[str, float]) -> None:
        if self._writer is None:
            return
        for name, value in logs.items():
            if isinstance(value, int | float) and np.isfinite(value):
                self._writer.add_scalar(name, float(value), epoch)
        self._writer.flush()

    def on_train_end(self, trainer: Trainer, step: TrainStep, result: TrainResult) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
