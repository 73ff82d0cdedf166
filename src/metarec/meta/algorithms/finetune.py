"""Transfer learning without meta-training: the global model, then a new user's vector fine-tuned
on the support set with the same number of plain gradient steps as the meta models' inner loop."""

from __future__ import annotations

import numpy as np
import torch

from metarec.meta.algorithms.base import Net, adapt_batch
from metarec.meta.algorithms.plain import Global
from metarec.meta.scorer import Params


class FineTune(Global):
    name = "finetune"

    def adapt(self, net: Net, support: torch.Tensor, u0: torch.Tensor, users: np.ndarray | None,
              known: bool) -> Params:  # fmt: skip
        return self._known(net, u0, users, known) or adapt_batch(net, support, u0)
