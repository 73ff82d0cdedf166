"""Meta-SGD (Li et al. 2017): MAML with a learned inner learning rate per fast-weight entry."""

from __future__ import annotations

from metarec.meta.algorithms.base import Algorithm


class MetaSGD(Algorithm):
    name = "metasgd"
    learns_inner_lr = True
