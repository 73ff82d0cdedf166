"""First-order MAML: the outer update ignores the inner steps' second derivatives (cheaper)."""

from __future__ import annotations

from metarec.meta.algorithms.base import Algorithm


class FOMAML(Algorithm):
    name = "fomaml"
    first_order = True
