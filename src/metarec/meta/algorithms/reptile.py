"""Reptile (Nichol et al. 2018): adapt on support + query, move the start toward the adapted weights.

The shared item tables learn from the query loss at the adapted point (first order); the start
vector is pulled toward each user's adapted weights by a squared-distance term.
"""

from __future__ import annotations

import torch

from metarec.meta.algorithms.base import Algorithm, Batch, Net, adapt_batch, batch_logits, start_fast
from metarec.meta.scorer import task_loss


class Reptile(Algorithm):
    name = "reptile"
    first_order = True

    def outer_loss(self, net: Net, batch: Batch) -> torch.Tensor:
        obj = net.inner.objective
        sup, qry = batch.support, batch.query
        both = sup + qry if obj == "rating" else torch.clamp(sup + qry, max=1.0)
        fixed = {k: v.detach() for k, v in adapt_batch(net, both, batch.u0, first_order=True).items()}
        task = task_loss(obj, batch_logits(fixed, net), qry, exclude=sup)
        start, _ = start_fast(net.theta, batch.u0, net.inner)
        pull = sum(0.5 * ((start[k] - fixed[k]) ** 2).sum(dim=tuple(range(1, start[k].dim()))).mean() for k in start)
        return task + pull
