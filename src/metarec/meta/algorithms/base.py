"""What every training algorithm of the neural scorer shares: the inner loop and the interface.

In learn2learn's spirit the algorithm is separate from the network and from the loop: the model
hands it the shared weights and a batch, and asks two things only,
- `outer_loss(net, batch)`: the objective whose `.backward()` trains the shared weights;
- `adapt(net, support, u0, users, known)`: a batch of users' fast weights at test / serve time.
The inner loop is `torch.func.grad` inside `torch.func.vmap`: one call adapts a whole batch of
users, with no Python loop over users.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

import numpy as np
import torch
from torch.func import grad, vmap

from metarec.meta.scorer import HEAD_KEYS, Params, logits_one, multinomial_nll, rating_mse, task_loss


@dataclass(frozen=True)
class InnerLoop:
    steps: int = 3
    lr: float = 1.0
    reg: float = 0.0  # pulls the adapted user vector toward its start (a prior for tiny support sets)
    adapt: tuple[str, ...] = ("u",)  # "u" and / or the head keys W1, a1, W2
    first_order: bool = False
    objective: str = "ranking"  # or "rating": support / query rows then hold ratings (0 = unrated)


@dataclass
class Net:
    """The network as one algorithm step sees it: shared weights and this batch's item table."""

    theta: Params  # shared weights (initialisation, item tables, head)
    lrs: Params  # inner learning rates (learned by Meta-SGD)
    inner: InnerLoop
    E: torch.Tensor  # item vectors of the items in play
    b: torch.Tensor  # item biases
    extra: Params = field(default_factory=dict)  # the algorithm's own weights (e.g. per-user vectors)


@dataclass
class Batch:
    users: np.ndarray  # dense user ids
    support: torch.Tensor  # (n, items) multi-hot (or ratings) the inner loop adapts on
    query: torch.Tensor  # (n, items) the held-out target
    u0: torch.Tensor  # (n, dim) start vectors (user_init + profile features)


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


def adapt_batch(net: Net, sup: torch.Tensor, u0: torch.Tensor, first_order: bool | None = None) -> Params:
    """Adapt every user of the batch on its support row; returns batched fast weights."""
    inner = net.inner
    fast, shared = start_fast(net.theta, u0, inner)
    fo = inner.first_order if first_order is None else first_order
    fn = partial(_adapt_one, steps=inner.steps, reg=inner.reg, first_order=fo, objective=inner.objective)
    lr_map = {k: net.lrs[k] for k in fast}
    out = vmap(fn, in_dims=(0, None, None, None, 0, 0, None))(fast, shared, net.E, net.b, sup, u0, lr_map)
    if "u" not in out:
        out["u"] = u0
    return out


def batch_logits(fast: Params, net: Net) -> torch.Tensor:
    shared = {k: net.theta[k] for k in HEAD_KEYS if k in net.theta and k not in fast}
    return vmap(logits_one, in_dims=(0, None, None, None))(fast, shared, net.E, net.b)


class Algorithm:
    """How the scorer learns. Subclasses set the class flags and override what differs."""

    name: ClassVar[str] = ""
    #: trained on few-shot (support, query) episodes; False: each training user's whole history
    episodic: ClassVar[bool] = True
    #: inner gradients treated as constants in the outer update
    first_order: ClassVar[bool] = False
    #: the inner learning rates are trained (Meta-SGD)
    learns_inner_lr: ClassVar[bool] = False

    def init_extra(self, n_users: int, dim: int) -> Params:
        """Weights this algorithm adds to the network (trained with it, saved with it)."""
        return {}

    def outer_loss(self, net: Net, batch: Batch) -> torch.Tensor:
        """MAML's objective: the query loss after adapting on the support set."""
        fast = adapt_batch(net, batch.support, batch.u0, first_order=self.first_order)
        return task_loss(net.inner.objective, batch_logits(fast, net), batch.query, exclude=batch.support)

    def adapt(self, net: Net, support: torch.Tensor, u0: torch.Tensor, users: np.ndarray | None,
              known: bool) -> Params:  # fmt: skip
        """Fast weights of a batch of users from their support rows (no gradient to the shared weights)."""
        return adapt_batch(net, support, u0)
