"""Value checks every loader applies, so a bad file stops with one message naming file, line and column.

Ratings must be finite and non-negative; timestamps are Unix seconds between 1970 and 2100 (a 13-digit
value is almost always milliseconds, and the message says so).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from metarec.errors import DataError

MAX_TIME = 4_102_444_800  # 2100-01-01T00:00:00Z in Unix seconds


def rating_problem(value: float) -> str | None:
    if not np.isfinite(value):
        return "must be a finite number"
    if value < 0:
        return "must not be negative"
    return None


def time_problem(value: float) -> str | None:
    if not np.isfinite(value) or value != int(value):
        return "must be whole Unix seconds"
    if not 0 <= value < MAX_TIME:
        hint = " (it looks like milliseconds: divide by 1000)" if MAX_TIME * 10 < value < MAX_TIME * 1000 else ""
        return f"must be Unix seconds between 1970 and 2100{hint}"
    return None


def _bad_ratings(vals: np.ndarray) -> np.ndarray:
    return ~np.isfinite(vals) | (vals < 0)


def _bad_times(vals: np.ndarray) -> np.ndarray:
    finite = np.isfinite(vals)
    safe = np.where(finite, vals, 0.0)
    return ~finite | (safe != np.floor(safe)) | (safe < 0) | (safe >= MAX_TIME)


CHECKS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[float], str | None]]] = {
    "rating": (_bad_ratings, rating_problem),
    "timestamp": (_bad_times, time_problem),
}


def check_column(values: np.ndarray, kind: str, where: Callable[[int], str]) -> None:
    """Raise for the first bad value of a rating / timestamp column (vectorised: one pass over the
    column); `where(i)` names the file, line and column of row i."""
    vals = np.asarray(values, dtype=np.float64)
    mask, problem = CHECKS[kind]
    bad = mask(vals)
    if bad.any():
        i = int(bad.argmax())
        raise DataError(f"{where(i)}: {float(vals[i])!r} {problem(float(vals[i]))}")
