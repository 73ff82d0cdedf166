"""The feature-source protocol: something that turns items (or users) into a matrix.

A source is fitted on training data only (a vocabulary, an encoder's cache) and then gives
- `fit_transform(train, revealed)`: one row per catalogue item (or per user) of the dataset;
- `transform(records)`: rows for records it has never seen (an item added at serve time, a new
  user's profile), from their raw fields alone.
The neural models project each source's matrix into their item / user vectors and sum them, so a
new kind of signal is a new source, not a new branch inside a model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal, Self

import numpy as np
import pandas as pd

from metarec.data.schema import Dataset
from metarec.errors import ConfigError

Side = Literal["item", "user"]


class FeatureSource(ABC):
    """Base class; subclasses take their hyper-parameters as keyword arguments (from the config)."""

    #: the registry name (`type = "..."` in a config)
    kind: ClassVar[str] = ""
    #: True for a source that asks the model for a learned per-row table instead of giving a matrix
    learned_table: ClassVar[bool] = False

    def __init__(self, name: str, side: Side) -> None:
        if side not in ("item", "user"):
            raise ConfigError(f"feature source {name!r}: side must be 'item' or 'user', got {side!r}")
        self.name = name
        self.side = side
        self.dim_ = 0

    def records(self, train: Dataset) -> pd.DataFrame:
        """The item or user table of a dataset, whichever side this source describes."""
        return train.items if self.side == "item" else train.users

    def fit(self, train: Dataset, revealed: pd.DataFrame | None = None) -> Self:
        """Learn what the source needs from training data (vocabularies, scales); default: nothing."""
        return self

    def fit_transform(self, train: Dataset, revealed: pd.DataFrame | None = None) -> np.ndarray:
        """Rows for every item (user) of `train`; `revealed` interactions may be read as side information."""
        return self.fit(train, revealed).transform(self.records(train))

    @abstractmethod
    def transform(self, records: pd.DataFrame) -> np.ndarray:
        """float32 rows for `records` (columns as in the dataset's item / user table)."""

    def get_state(self) -> dict[str, Any]:
        """JSON-ready learned state, saved in an artefact's manifest so `transform` works after loading."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what `get_state` returned (the constructor has already been called)."""
        self.dim_ = int(state.get("dim", self.dim_))
