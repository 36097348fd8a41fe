"""Uplift of a treated group over a holdout, with 95% intervals: the difference in conversion rate (Newcombe's
hybrid score interval, from each group's Wilson interval) and in revenue per customer (Welch's t interval).

Both intervals are checked by simulation in ``tests/test_uplift.py``: over 200 seeded populations with a
known effect, each covers the true difference in at least 90% of them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

__all__ = ["Estimate", "conversion_uplift", "revenue_uplift", "wilson"]

_Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    """A difference (treated minus holdout) and its 95% interval; NaN where a group is empty."""

    diff: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float | None]:
        def finite(x: float) -> float | None:
            return round(x, 6) if math.isfinite(x) else None

        return {"diff": finite(self.diff), "low": finite(self.low), "high": finite(self.high)}


def wilson(successes: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson's score interval for a proportion."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def conversion_uplift(converted: int, n: int, held_converted: int, held_n: int) -> Estimate:
    """Rate of the treated minus rate of the holdout, with Newcombe's hybrid score interval (method 10 of
    Newcombe 1998), which keeps its coverage at the low rates and small groups campaigns have."""
    if n == 0 or held_n == 0:
        return Estimate(math.nan, math.nan, math.nan)
    p1, p0 = converted / n, held_converted / held_n
    l1, u1 = wilson(converted, n)
    l0, u0 = wilson(held_converted, held_n)
    d = p1 - p0
    return Estimate(
        d, d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    )


def revenue_uplift(treated: Sequence[float], holdout: Sequence[float]) -> Estimate:
    """Mean revenue per customer of the treated minus that of the holdout (zeros for those who bought
    nothing), with Welch's t interval: the groups differ in size and in spread."""
    n1, n0 = len(treated), len(holdout)
    if n1 < 2 or n0 < 2:
        return Estimate(math.nan, math.nan, math.nan)
    m1, m0 = sum(treated) / n1, sum(holdout) / n0
    v1 = sum((x - m1) ** 2 for x in treated) / (n1 - 1)
    v0 = sum((x - m0) ** 2 for x in holdout) / (n0 - 1)
    a, b = v1 / n1, v0 / n0
    se = math.sqrt(a + b)
    d = m1 - m0
    if se == 0:
        return Estimate(d, d, d)
    df = (a + b) ** 2 / ((a * a / (n1 - 1) if n1 > 1 else 0) + (b * b / (n0 - 1) if n0 > 1 else 0))
    t = float(stats.t.ppf(0.975, df))
    return Estimate(d, d - t * se, d + t * se)
