"""The same network trained as an ordinary model: no meta-learning, the non-meta reference.

Each training user has a learned vector (start + residual) fitted to their whole history; a new
user gets the shared start vector (plus profile features) and no adaptation.
"""

from __future__ import annotations

import numpy as np
import torch

from metarec.meta.algorithms.base import Algorithm, Batch, Net, batch_logits
from metarec.meta.scorer import Params, task_loss


class Global(Algorithm):
    name = "global"
    episodic = False

    def init_extra(self, n_users: int, dim: int) -> Params:
        return {"user_res": torch.zeros(n_users, dim)}

    def outer_loss(self, net: Net, batch: Batch) -> torch.Tensor:
        fast = {"u": batch.u0 + net.extra["user_res"][torch.from_numpy(batch.users)]}
        return task_loss(net.inner.objective, batch_logits(fast, net), batch.query)

    def _known(self, net: Net, u0: torch.Tensor, users: np.ndarray | None, known: bool) -> Params | None:
        if known and users is not None and "user_res" in net.extra:
            return {"u": u0 + net.extra["user_res"][torch.from_numpy(np.asarray(users))]}
        return None

    def adapt(self, net: Net, support: torch.Tensor, u0: torch.Tensor, users: np.ndarray | None,
              known: bool) -> Params:  # fmt: skip
        return self._known(net, u0, users, known) or {"u": u0}
