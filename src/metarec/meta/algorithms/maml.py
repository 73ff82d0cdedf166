"""MAML (Finn et al. 2017): backpropagate the query loss through the inner steps (second order)."""

from __future__ import annotations

from metarec.meta.algorithms.base import Algorithm


class MAML(Algorithm):
    name = "maml"
