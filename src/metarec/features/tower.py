"""A tower: the configured feature sources of one side, fitted, with their matrices as tensors.

The neural scorer projects each matrix with its own weights and sums the results (see
`meta/scorer.py`); the tower only owns the inputs, so the same sources serve training, evaluation
and items added at serve time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from metarec.data.schema import Dataset
from metarec.features.base import FeatureSource


class Tower:
    def __init__(self, sources: list[FeatureSource]) -> None:
        self.sources = sources
        self.matrices_: dict[str, torch.Tensor] = {}

    @property
    def learned_table(self) -> bool:
        """Whether any source asks for a learned per-row table (the ID residual)."""
        return any(s.learned_table for s in self.sources)

    @property
    def dense(self) -> list[FeatureSource]:
        return [s for s in self.sources if not s.learned_table]

    @property
    def dims(self) -> dict[str, int]:
        return {s.name: s.dim_ for s in self.dense}

    def fit(self, train: Dataset, revealed: pd.DataFrame | None = None) -> Tower:
        self.matrices_ = {s.name: torch.from_numpy(np.ascontiguousarray(s.fit_transform(train, revealed),
                                                                        dtype=np.float32))
                          for s in self.dense}  # fmt: skip
        for s in self.dense:
            s.dim_ = int(self.matrices_[s.name].shape[1])
        return self

    def rows(self, index: torch.Tensor | np.ndarray | None = None) -> dict[str, torch.Tensor]:
        """The matrices (or some of their rows), keyed by source name."""
        if index is None:
            return self.matrices_
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return {k: v[idx] for k, v in self.matrices_.items()}

    def transform(self, records: pd.DataFrame) -> dict[str, torch.Tensor]:
        """Rows for new records (items added after training, a new user's profile)."""
        return {s.name: torch.from_numpy(np.ascontiguousarray(s.transform(records), dtype=np.float32))
                for s in self.dense}  # fmt: skip

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays = {name: m.numpy() for name, m in self.matrices_.items()}
        return arrays, {s.name: s.get_state() | {"dim": s.dim_} for s in self.sources}

    def load(self, arrays: dict[str, np.ndarray], states: dict[str, Any]) -> Tower:
        for s in self.sources:
            s.set_state(states.get(s.name, {}))
        self.matrices_ = {s.name: torch.from_numpy(np.ascontiguousarray(arrays[s.name])) for s in self.dense}
        return self
