"""Uncertainty over users: t intervals for a mean, paired bootstrap for a comparison."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n: int

    def fmt(self, digits: int = 4) -> str:
        half = (self.high - self.low) / 2
        return f"{self.mean:.{digits}f} ± {half:.{digits}f}"

    def as_dict(self) -> dict[str, float | int]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def mean_ci(values: np.ndarray, confidence: float = 0.95) -> Interval:
    """Mean and Student-t interval; NaNs (undefined for a user, e.g. AUC with no negatives) dropped."""
    v = np.asarray(values, np.float64)
    v = v[~np.isnan(v)]
    n = len(v)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    m = float(v.mean())
    if n == 1:
        return Interval(m, m, m, 1)
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1) * v.std(ddof=1) / np.sqrt(n))
    return Interval(m, m - half, m + half, n)


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    kind: str = "diff",
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Percentile interval of mean(a) - mean(b) (or mean(a) / mean(b)) resampling the same users.

    Pairing matters: the two models are scored on identical users, so the between-user variance
    cancels and the interval is far tighter than comparing two independent CIs.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired bootstrap needs scores on the same users: {a.shape} vs {b.shape}")
    if kind not in ("diff", "ratio"):
        raise ValueError("kind must be 'diff' or 'ratio'")
    defined = ~(np.isnan(a) | np.isnan(b))  # a user undefined for either model (e.g. no positive) is left out
    a, b = a[defined], b[defined]
    if len(a) == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    ma, mb = a[idx].mean(axis=1), b[idx].mean(axis=1)

    def stat(x: np.ndarray | float, y: np.ndarray | float) -> np.ndarray | float:
        return x - y if kind == "diff" else np.divide(x, y)

    with np.errstate(divide="ignore", invalid="ignore"):  # a resample may average to 0 (dropped below)
        boot = stat(ma, mb)
    lo, hi = np.nanpercentile(boot, [50 * (1 - confidence), 50 * (1 + confidence)])
    return Interval(float(stat(a.mean(), b.mean())), float(lo), float(hi), len(a))
