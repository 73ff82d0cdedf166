"""The one training loop of the neural models, and its callbacks."""

from metarec.training.callbacks import Callback, Checkpoint, EarlyStopping, History, TensorBoard
from metarec.training.trainer import Trainer, TrainResult, TrainStep

__all__ = ["Callback", "Checkpoint", "EarlyStopping", "History", "TensorBoard", "TrainResult", "TrainStep", "Trainer"]
