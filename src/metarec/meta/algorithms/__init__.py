"""Training algorithms of the neural scorer, one small class per file, chosen by name in a config.

A new algorithm is one new file (a subclass of `Algorithm`) plus one line in `ALGORITHMS`.
"""

from __future__ import annotations

from metarec.errors import ConfigError
from metarec.meta.algorithms.base import (
    Algorithm,
    Batch,
    InnerLoop,
    Net,
    adapt_batch,
    adapt_keys,
    batch_logits,
    start_fast,
)
from metarec.meta.algorithms.finetune import FineTune
from metarec.meta.algorithms.fomaml import FOMAML
from metarec.meta.algorithms.maml import MAML
from metarec.meta.algorithms.metasgd import MetaSGD
from metarec.meta.algorithms.plain import Global
from metarec.meta.algorithms.reptile import Reptile

ALGORITHMS: dict[str, type[Algorithm]] = {
    "maml": MAML,
    "fomaml": FOMAML,
    "metasgd": MetaSGD,
    "reptile": Reptile,
    "global": Global,
    "finetune": FineTune,
}


def build_algorithm(name: str) -> Algorithm:
    if name not in ALGORITHMS:
        raise ConfigError(f"algorithm must be one of {', '.join(ALGORITHMS)}, got {name!r}")
    return ALGORITHMS[name]()


__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "Batch",
    "InnerLoop",
    "Net",
    "adapt_batch",
    "adapt_keys",
    "batch_logits",
    "build_algorithm",
    "start_fast",
]
