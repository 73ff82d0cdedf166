"""User-level differentially private meta-training: DP-SGD with Opacus' optimiser and RDP accountant.

In meta-learning one task is one user, so clipping each task's meta-gradient bounds what any one
user's whole history can move the weights: the guarantee covers a user, not a single rating.
The model computes the per-task gradients itself (one vmapped `torch.func` call over the meta-batch,
`_MetaStep.task_grads`); Opacus' `DPOptimizer` clips them, adds Gaussian noise and averages, and its
RDP accountant counts the privacy spent. Batches are Poisson-sampled (each user joins each step with
probability q), which is what the accountant's subsampling bound assumes.

What it does not cover: the meta-valid users that pick the best epoch (they are never trained on, but
the choice reads them), and anything outside the trained weights (the service's database holds raw
events until deletion).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from metarec.errors import ConfigError
from metarec.utils import require


class DPConfig(BaseModel):
    """`[model] dp = {epsilon = 8}`: the target budget and the clipping bound of user-level DP-SGD."""

    model_config = ConfigDict(extra="forbid")

    epsilon: float = Field(gt=0, description="target epsilon of the whole training run")
    delta: float | None = Field(default=None, gt=0, lt=1, description="target delta; None = 1 / training users")
    max_grad_norm: float = Field(default=1.0, gt=0, description="clipping bound of each user's meta-gradient")
    max_noise_multiplier: float = Field(
        default=50.0, gt=0, description="refuse a run that needs more noise than this (its updates would be noise)"
    )
    prior_noise_multiplier: float = Field(
        default=10.0,
        ge=0,
        description="noise of the one release of item popularity that starts the item biases, "
        "relative to prior_max_items ** 0.5; 0 = no release, a flat start",
    )
    reproducible: bool = Field(
        default=False,
        description="draw the noise and the batches from the model's seed (repeatable runs for research); anyone "
        "with the artefact (which records the seed) can then replay them, which voids the guarantee against them",
    )
    prior_max_items: int = Field(
        default=50,
        ge=1,
        description="a user's weight in the popularity release is capped "
        "so that their items count as at most this many",
    )


class PrivacyPlan:
    """The noise a run needs to stay within (epsilon, delta), derived before training starts."""

    def __init__(self, config: DPConfig, n_users: int, batch: int, epochs: int, tasks_per_epoch: int = 0) -> None:
        if n_users < 2:
            raise ConfigError(f"DP training needs users to hide among: {n_users} meta-training user(s)")
        self.config = config
        self.n_users = n_users
        self.accountant: Any = None
        self.delta = config.delta if config.delta is not None else 1.0 / n_users
        if self.delta > 1.0 / n_users:
            raise ConfigError(f"dp.delta = {self.delta:g} is above 1 / users = {1 / n_users:g}: a mechanism may "
                              "then publish a user's history outright; set it well below (1 / users is the "
                              "loosest accepted value and the default)")  # fmt: skip
        self.sample_rate = min(1.0, batch / n_users)
        per_epoch = (tasks_per_epoch or n_users) / batch
        self.steps_per_epoch = max(1, round(per_epoch))
        self.steps = self.steps_per_epoch * epochs
        require("opacus", "privacy")
        eps = config.epsilon
        hint = (f"{n_users} users, {epochs} epochs x {self.steps_per_epoch} steps, batch {batch} (q = "
                f"{self.sample_rate:.3g}), delta = {self.delta:.3g}: raise dp.epsilon, train on more users, "
                "or run fewer epochs")  # fmt: skip
        prior = config.prior_noise_multiplier
        self.noise_multiplier = 0.0
        if prior and self._epsilon(math.inf, prior) >= eps:
            raise ConfigError(f"the popularity release alone (dp.prior_noise_multiplier = {prior:g}) spends "
                              f"epsilon >= {eps:g}: raise dp.prior_noise_multiplier, or set it to 0 for a flat "
                              "start")  # fmt: skip
        if self.steps == 0:
            return
        try:
            sigma = self._solve(eps)
        except ValueError as exc:
            raise ConfigError(f"dp.epsilon = {eps:g} cannot be reached ({exc}) with {hint}") from None
        if sigma > config.max_noise_multiplier:
            raise ConfigError(f"dp.epsilon = {eps:g} needs noise multiplier {sigma:.1f} > "
                              f"dp.max_noise_multiplier = {config.max_noise_multiplier:g} (each update would be "
                              f"mostly noise) with {hint}")  # fmt: skip
        self.noise_multiplier = float(sigma)

    def _history(self, sigma: float, prior: float) -> list[tuple[float, float, int]]:
        """The mechanisms as Opacus' RDP accountant composes them: `steps` subsampled Gaussian steps,
        and the one popularity release (all users, sample rate 1)."""
        out = [(sigma, self.sample_rate, self.steps)] if math.isfinite(sigma) else []
        return out + ([(prior, 1.0, 1)] if prior else [])

    def _epsilon(self, sigma: float, prior: float) -> float:
        from opacus.accountants import RDPAccountant

        acc = RDPAccountant()
        acc.history = self._history(sigma, prior)
        return float(acc.get_epsilon(self.delta)) if acc.history else 0.0

    def _solve(self, eps: float, tolerance: float = 0.01) -> float:
        """The smallest noise multiplier whose composed epsilon stays within `eps` (bisection, as Opacus'
        `get_noise_multiplier`, which composes only the SGD steps)."""
        prior = self.config.prior_noise_multiplier
        low, high, eps_high = 0.0, 10.0, math.inf
        while eps_high > eps:
            high *= 2
            if high > 1e6:
                raise ValueError("the budget is too low for any noise level")
            eps_high = self._epsilon(high, prior)
        while eps - eps_high > tolerance:
            mid = (low + high) / 2
            if (e := self._epsilon(mid, prior)) < eps:
                high, eps_high = mid, e
            else:
                low = mid
        return high

    def seed(self, seed: int, offset: int) -> int:
        """The seed of one of the run's random streams: from the model's seed only when `reproducible`,
        else from the operating system's CSPRNG (nothing in the artefact lets anyone replay the noise)."""
        return seed + offset if self.config.reproducible else secrets.randbits(63)

    def popularity(self, matrix: Any, seed: int) -> np.ndarray:
        """Item counts released once with the Gaussian mechanism: each user's row is scaled to L2 norm at
        most sqrt(prior_max_items) (their sensitivity), noise N(0, (prior_noise_multiplier * that)^2) is
        added, negatives are cut to 0. With prior_noise_multiplier = 0: all ones (a flat start)."""
        prior, cap = self.config.prior_noise_multiplier, self.config.prior_max_items
        n_items = matrix.shape[1]
        if not prior:
            return np.ones(n_items)
        per_user = np.diff(matrix.indptr)
        scale = np.minimum(1.0, np.sqrt(cap / np.maximum(per_user, 1)))
        counts = np.asarray((matrix > 0).T @ scale).ravel()
        rng = np.random.default_rng(self.seed(seed, 7717))
        return np.maximum(counts + rng.normal(0.0, prior * math.sqrt(cap), n_items), 0.0)

    def wrap_optimizer(self, batch: int, seed: int) -> Any:
        """The training loop's `wrap_optimizer` hook: Opacus' DPOptimizer over the loop's Adam, with the
        accountant stepping at every optimiser step."""
        from opacus.accountants import RDPAccountant
        from opacus.optimizers import DPOptimizer

        self.accountant = RDPAccountant()

        def wrap(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
            gen = torch.Generator().manual_seed(self.seed(seed, 4099))
            dp = DPOptimizer(opt, noise_multiplier=self.noise_multiplier, max_grad_norm=self.config.max_grad_norm,
                             expected_batch_size=batch, generator=gen)  # fmt: skip
            dp.attach_step_hook(self.accountant.get_optimizer_hook_fn(sample_rate=self.sample_rate))
            return dp

        return wrap

    def spent(self) -> dict[str, float]:
        """The privacy spent so far (the accountant's epsilon at this plan's delta) and the settings."""
        steps = sum(n for _, _, n in self.accountant.history) if self.accountant is not None else 0
        prior = self.config.prior_noise_multiplier
        acc = type(self.accountant)() if self.accountant is not None else None
        eps = 0.0
        if acc is not None:
            acc.history = list(self.accountant.history) + ([(prior, 1.0, 1)] if prior else [])
            eps = float(acc.get_epsilon(self.delta)) if acc.history else 0.0
        return {"epsilon": eps, "delta": self.delta, "target_epsilon": self.config.epsilon,
                "reproducible": self.config.reproducible,
                "prior_noise_multiplier": prior, "noise_multiplier": self.noise_multiplier,
                "max_grad_norm": self.config.max_grad_norm, "sample_rate": self.sample_rate, "steps": float(steps),
                "users": float(self.n_users)}  # fmt: skip


class PrivateStep:
    """Wraps the meta-model's training step for DP-SGD: Poisson-sampled batches, and a `backward` that
    stores each task's gradient where Opacus' optimiser reads it (`p.grad_sample`)."""

    def __init__(self, step: Any, plan: PrivacyPlan, seed: int) -> None:
        self.step, self.plan = step, plan
        self.rng = np.random.default_rng(plan.seed(seed, 0))  # which users join which step: secret too

    def __getattr__(self, name: str) -> Any:  # parameters, state, load_state, after_update, valid, ...
        return getattr(self.step, name)

    def batches(self, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        sampler = self.step.sampler
        for users, _, sup, qry in sampler.poisson(self.plan.sample_rate, self.plan.steps_per_epoch, self.rng):
            yield users, sup, qry

    def backward(self, batch: tuple[np.ndarray, np.ndarray, np.ndarray], index: int, epoch: int) -> None:
        """Per-task gradients into `p.grad_sample`. Returns no loss: the batch's loss is computed from the
        users' data without noise, so it is not published (history, TensorBoard and MLflow show none)."""
        named = self.step.named_parameters()
        if len(batch[0]) == 0:  # an empty Poisson batch: no gradient, the optimiser still adds its noise
            for p in named.values():
                p.grad_sample = torch.zeros((0, *p.shape))
            return None
        grads, _ = self.step.task_grads(batch, index, epoch)
        for name, p in named.items():
            p.grad_sample = grads[name]
        return None

    def release(self) -> None:
        """Drop what Opacus leaves on the trained tensors (per-task gradients: batch x parameters)."""
        for p in self.step.named_parameters().values():
            p.grad = None
            for attr in ("grad_sample", "summed_grad"):
                if hasattr(p, attr):
                    delattr(p, attr)
