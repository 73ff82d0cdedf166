"""ID residual: a learned vector and bias per item seen in training (collaborative memory).

It gives no matrix of its own; its presence tells the model to keep a learned per-item table that is
switched off for items without training interactions, so cold items score from the other sources.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from metarec.errors import ConfigError
from metarec.features.base import FeatureSource, Side


class IdSource(FeatureSource):
    kind = "id"
    learned_table = True

    def __init__(self, name: str = "id", side: Side = "item") -> None:
        super().__init__(name, side)
        if side != "item":
            raise ConfigError("the 'id' source is for items; a user's learned vector is the adapted user vector")

    def transform(self, records: pd.DataFrame) -> np.ndarray:
        return np.zeros((len(records), 0), np.float32)
