"""Meta-learning algorithms as inner / outer steps over the scorer's pure functions.

Separate from the model, in learn2learn's spirit: the inner loop adapts a user's "fast" parameters
(the user vector, and optionally the decision layers) on the support set; the algorithms differ in
how the outer update uses the adapted weights:

- maml:    backprop through the inner steps (second order)
- fomaml:  the same, with inner gradients treated as constants (first order)
- metasgd: maml with a learned inner learning rate per fast parameter entry
- reptile: inner steps on support + query; the initialisation moves toward the adapted weights;
           the shared item tables learn from the query loss at the adapted point (first order)

All of it is `torch.func.grad` inside `torch.func.vmap`: one call adapts a whole batch of users,
with no Python loop over users.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch.func import grad, vmap

from metarec.meta.scorer import HEAD_KEYS, Params, logits_one, multinomial_nll, rating_mse, task_loss

ALGORITHMS = ("maml", "fomaml", "metasgd", "reptile")


@dataclass(frozen=True)
class InnerLoop:
    steps: int = 3
    lr: float = 1.0
    reg: float = 0.0  # pulls the adapted user vector toward its start (a prior for tiny support sets)
    adapt: tuple[str, ...] = ("u",)  # "u" and / or the head keys W1, a1, W2
    first_order: bool = False
    objective: str = "ranking"  # or "rating": support / query rows then hold ratings (0 = unrated)


def adapt_keys(spec: str) -> tuple[str, ...]:
    """Config string -> fast parameter names: 'user', 'head' (MeLU's local update) or 'user+head'."""
    parts = {p.strip() for p in spec.split("+")}
    bad = parts - {"user", "head"}
    if bad or not parts:
        raise ValueError(f"adapt_params must be 'user', 'head' or 'user+head', got {spec!r}")
    return (("u",) if "user" in parts else ()) + (HEAD_KEYS if "head" in parts else ())


def _inner_loss(fast: Params, shared: Params, E: torch.Tensor, b: torch.Tensor, sup: torch.Tensor,
                u0: torch.Tensor, u_fixed: torch.Tensor, reg: float, objective: str) -> torch.Tensor:  # fmt: skip
    if "u" not in fast:
        fast = {**fast, "u": u_fixed}
    if objective == "rating":
        loss = rating_mse(logits_one(fast, shared, E, b), sup)
        return loss + reg * ((fast["u"] - u0) ** 2).sum() if reg and "u" in fast else loss
    # scaled by k^gamma (gamma learned by the second-order algorithms): one item moves the
    # user a little, twenty further, as evidence should; a plain mean steps as far from one noisy item
    gamma = shared.get("shot_gamma", 0.0)
    loss = multinomial_nll(logits_one(fast, shared, E, b), sup) * sup.sum() ** gamma
    if reg and "u" in fast:
        loss = loss + reg * ((fast["u"] - u0) ** 2).sum()
    return loss


def _adapt_one(fast: Params, shared: Params, E: torch.Tensor, b: torch.Tensor, sup: torch.Tensor, u0: torch.Tensor,
               lrs: Params, steps: int, reg: float, first_order: bool, objective: str) -> Params:  # fmt: skip
    u_fixed = u0
    for _ in range(steps):
        g = grad(_inner_loss)(fast, shared, E, b, sup, u0, u_fixed, reg, objective)
        if first_order:
            g = {k: v.detach() for k, v in g.items()}
        fast = {k: fast[k] - lrs[k] * g[k] for k in fast}
    return fast


def start_fast(theta: Params, u0: torch.Tensor, inner: InnerLoop) -> tuple[Params, Params]:
    """Per-user fast weights (batched copies) and the shared rest of the head."""
    n = u0.shape[0]
    fast = {k: theta[k].expand(n, *theta[k].shape) for k in inner.adapt if k != "u" and k in theta}
    if "u" in inner.adapt:
        fast["u"] = u0
    shared = {k: theta[k] for k in (*HEAD_KEYS, "shot_gamma") if k in theta and k not in fast}
    return fast, shared


def adapt_batch(theta: Params, lrs: Params, inner: InnerLoop, E: torch.Tensor, b: torch.Tensor,
                sup: torch.Tensor, u0: torch.Tensor, steps: int | None = None,
                first_order: bool | None = None) -> Params:  # fmt: skip
    """Adapt every user of the batch on its support multi-hot row; returns batched fast weights."""
    fast, shared = start_fast(theta, u0, inner)
    fo = inner.first_order if first_order is None else first_order
    fn = partial(_adapt_one, steps=inner.steps if steps is None else steps, reg=inner.reg, first_order=fo,
                 objective=inner.objective)  # fmt: skip
    lr_map = {k: lrs[k] for k in fast}
    out = vmap(fn, in_dims=(0, None, None, None, 0, 0, None))(fast, shared, E, b, sup, u0, lr_map)
    if "u" not in out:
        out["u"] = u0
    return out


def batch_logits(fast: Params, theta: Params, E: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    shared = {k: theta[k] for k in HEAD_KEYS if k in theta and k not in fast}
    return vmap(logits_one, in_dims=(0, None, None, None))(fast, shared, E, b)


def outer_loss(algorithm: str, theta: Params, lrs: Params, inner: InnerLoop, E: torch.Tensor, b: torch.Tensor,
               sup: torch.Tensor, qry: torch.Tensor, u0: torch.Tensor) -> torch.Tensor:  # fmt: skip
    """The meta-objective for one meta-batch; `.backward()` on it updates the initialisation."""
    obj = inner.objective
    if algorithm in ("maml", "metasgd", "fomaml"):
        fast = adapt_batch(theta, lrs, inner, E, b, sup, u0, first_order=algorithm == "fomaml")
        return task_loss(obj, batch_logits(fast, theta, E, b), qry, exclude=sup)
    if algorithm == "reptile":
        both = sup + qry if obj == "rating" else torch.clamp(sup + qry, max=1.0)
        fast = adapt_batch(theta, lrs, inner, E, b, both, u0, first_order=True)
        fixed = {k: v.detach() for k, v in fast.items()}
        # shared item tables: query loss at the adapted point; init: pulled toward the adapted weights
        task = task_loss(obj, batch_logits(fixed, theta, E, b), qry, exclude=sup)
        start, _ = start_fast(theta, u0, inner)
        pull = sum(0.5 * ((start[k] - fixed[k]) ** 2).sum(dim=tuple(range(1, start[k].dim()))).mean() for k in start)
        return task + pull
    raise ValueError(f"unknown meta-learning algorithm {algorithm!r}; choose from {', '.join(ALGORITHMS)}")
