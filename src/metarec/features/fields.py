"""Structured fields: categories (and token lists such as genres) as multi-hot, numbers standardised.

A column of numbers becomes one standardised value (mean / std of the training table; missing -> 0,
the mean). A column of strings becomes a multi-hot over the values seen in training, split on
`split[column]` when given (MovieLens genres: " "); unseen values at transform time are ignored.
Integer codes that are categories, not quantities (a topic id, a zip code), go in `categorical`.
"""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd

from metarec.data.schema import Dataset
from metarec.errors import DataError
from metarec.features.base import FeatureSource, Side


class FieldsSource(FeatureSource):
    kind = "fields"

    def __init__(
        self,
        name: str = "fields",
        side: Side = "item",
        columns: list[str] | None = None,
        split: dict[str, str] | None = None,
        categorical: list[str] | None = None,
        min_count: int = 1,
    ) -> None:
        super().__init__(name, side)
        self.columns = list(columns or [])
        self.categorical = set(categorical or [])
        self.split = dict(split or {})
        self.min_count = min_count
        self.numeric_: dict[str, tuple[float, float]] = {}
        self.vocab_: dict[str, list[str]] = {}

    def _dummies(self, col: str, values: pd.Series) -> pd.DataFrame:
        """One 0/1 column per distinct value (or token of a split value), vectorised by pandas."""
        text = values.astype("string").fillna("").str.strip()
        sep = self.split.get(col)
        if sep:
            text = text.str.split(sep).str.join("\x1f")  # a separator that never occurs in real text
            return text.str.get_dummies(sep="\x1f")
        return pd.get_dummies(text.mask(text == ""), dtype=np.int8)

    def fit(self, train: Dataset, revealed: pd.DataFrame | None = None) -> Self:
        table = self.records(train)
        missing = [c for c in self.columns if c not in table.columns]
        if missing:
            raise DataError(
                f"fields source {self.name!r}: {self.side}s of {train.name} lack column(s) {missing}; "
                f"available: {[c for c in table.columns if not c.endswith('_id')]}"
            )
        self.numeric_, self.vocab_ = {}, {}
        for col in self.columns:
            s = table[col]
            numeric = pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)
            if numeric and col not in self.categorical:
                x = pd.to_numeric(s, errors="coerce").astype("float64")
                self.numeric_[col] = (float(x.mean()), float(x.std()) or 1.0)
            else:
                counts = self._dummies(col, s).sum(axis=0)
                self.vocab_[col] = sorted(str(v) for v in counts[counts >= self.min_count].index if str(v))
        self.dim_ = len(self.numeric_) + sum(len(v) for v in self.vocab_.values())
        return self

    def transform(self, records: pd.DataFrame) -> np.ndarray:
        out = np.zeros((len(records), self.dim_), np.float32)
        at = 0
        for col, (mu, sd) in self.numeric_.items():
            if col in records.columns:
                x = pd.to_numeric(records[col], errors="coerce").astype("float64").to_numpy()
                out[:, at] = np.nan_to_num((x - mu) / sd, nan=0.0)
            at += 1
        for col, vocab in self.vocab_.items():
            if col in records.columns and len(records):
                hot = self._dummies(col, records[col]).reindex(columns=vocab, fill_value=0)
                out[:, at : at + len(vocab)] = hot.to_numpy(np.float32) > 0
            at += len(vocab)
        return out

    def get_state(self) -> dict[str, Any]:
        return {"dim": self.dim_, "numeric": self.numeric_, "vocab": self.vocab_}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.numeric_ = {k: (float(v[0]), float(v[1])) for k, v in state["numeric"].items()}
        self.vocab_ = {k: list(v) for k, v in state["vocab"].items()}
