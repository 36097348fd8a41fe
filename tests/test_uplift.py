"""The uplift estimators (``evals.uplift``) against simulated campaigns whose true effect is known: 200
seeded populations, each split into a treated group and a holdout by ``tailor.core.holdout``'s draw."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evals.uplift import conversion_uplift, revenue_uplift, wilson
from tailor.core.holdout import draw, in_holdout

RUNS = 200


def test_the_holdout_draw_is_stable_uniform_and_salted() -> None:
    ids = [f"c{n}" for n in range(20_000)]
    held = [c for c in ids if in_holdout(c, 0.1, "s1")]
    assert 0.09 < len(held) / len(ids) < 0.11
    assert held == [c for c in ids if in_holdout(c, 0.1, "s1")], "the same customers every time"
    assert set(held) != {c for c in ids if in_holdout(c, 0.1, "s2")}, "a new salt, a new group"
    assert not any(in_holdout(c, 0.0, "s1") for c in ids[:1000])
    # A larger share keeps the smaller one's members: raising it moves customers in, never out.
    assert set(held) <= {c for c in ids if in_holdout(c, 0.2, "s1")}
    assert all(0.0 <= draw(c, "s1") < 1.0 for c in ids[:1000])


def test_wilson_interval_on_known_values() -> None:
    low, high = wilson(10, 100)
    assert low == pytest.approx(0.0552, abs=1e-4) and high == pytest.approx(0.1744, abs=1e-4)
    assert wilson(0, 50)[0] == pytest.approx(0.0, abs=1e-12) and math.isnan(wilson(0, 0)[0])


def _campaign(
    seed: int, n: int, share: float, base: float, lift: float, spend: float
) -> tuple[list[float], list[float]]:
    """Revenue per customer in each group: a purchase with chance ``base`` (plus ``lift`` if emailed),
    of a log-normal amount with mean ``spend``."""
    rng = np.random.default_rng(seed)
    salt = f"sim-{seed}"
    treated: list[float] = []
    holdout: list[float] = []
    sigma = 0.8
    mu = math.log(spend) - sigma**2 / 2
    for k in range(n):
        held = in_holdout(f"c{k}", share, salt)
        bought = rng.random() < base + (0.0 if held else lift)
        value = float(rng.lognormal(mu, sigma)) if bought else 0.0
        (holdout if held else treated).append(value)
    return treated, holdout


def test_the_intervals_cover_the_true_uplift_in_at_least_90_percent_of_seeded_campaigns() -> None:
    n, share, base, lift, spend = 3_000, 0.2, 0.05, 0.02, 40.0
    conv_hits = revenue_hits = 0
    widths = []
    for seed in range(RUNS):
        treated, holdout = _campaign(seed, n, share, base, lift, spend)
        conv = conversion_uplift(
            sum(v > 0 for v in treated), len(treated), sum(v > 0 for v in holdout), len(holdout)
        )
        revenue = revenue_uplift(treated, holdout)
        conv_hits += conv.low <= lift <= conv.high
        revenue_hits += revenue.low <= lift * spend <= revenue.high
        widths.append(conv.high - conv.low)
    assert conv_hits / RUNS >= 0.90, f"conversion interval covered the truth in {conv_hits}/{RUNS}"
    assert revenue_hits / RUNS >= 0.90, f"revenue interval covered the truth in {revenue_hits}/{RUNS}"
    # Not covering by being useless: the interval is narrower than the effect is large, typically.
    assert float(np.median(widths)) < 2.5 * lift


def test_no_effect_is_mostly_found_to_include_zero_and_empty_groups_give_no_estimate() -> None:
    zero_in = 0
    for seed in range(RUNS):
        treated, holdout = _campaign(10_000 + seed, 2_000, 0.25, 0.05, 0.0, 30.0)
        est = conversion_uplift(
            sum(v > 0 for v in treated), len(treated), sum(v > 0 for v in holdout), len(holdout)
        )
        zero_in += est.low <= 0.0 <= est.high
    assert zero_in / RUNS >= 0.90
    assert math.isnan(conversion_uplift(3, 10, 0, 0).diff)
    assert math.isnan(revenue_uplift([1.0, 2.0], [3.0]).diff)
    flat = revenue_uplift([0.0, 0.0, 0.0], [0.0, 0.0])
    assert (flat.diff, flat.low, flat.high) == (0.0, 0.0, 0.0)
    assert conversion_uplift(5, 10, 1, 10).as_dict()["diff"] == pytest.approx(0.4)
