"""Policies judged on Tailor's own decision log (``evals.own_log``): the estimators against a simulator whose
true values are known, and the log's own rules (what can and cannot be judged on it)."""

from __future__ import annotations

import numpy as np
import pytest

from evals.own_log import (
    ACTIONS,
    NOTHING,
    OwnLog,
    estimate,
    own_policies,
    recommend_first,
    send_nothing,
    served,
    simulate_own_log,
    true_value,
    uplift_over_nothing,
)
from tailor.core.errors import DataError


def test_every_estimate_holds_the_true_value_in_at_least_nine_runs_of_ten() -> None:
    """200 seeded logs of 10,000 decisions, a 10% holdout and 10% exploration: each policy's 95% interval,
    by IPS and doubly robust, holds its true value in at least 90% of them; so does the uplift over sending
    nothing."""
    hits: dict[tuple[str, str], int] = {}
    widths: dict[tuple[str, str], float] = {}
    uplift_hits = 0
    runs = 200
    for seed in range(runs):
        log = simulate_own_log(10_000, seed=seed, holdout=0.1, explore=0.1)
        for name, policy in own_policies().items():
            truth = true_value(log, policy)
            for method in ("ips", "dr"):
                e = estimate(log, policy, method=method, seed=seed)
                hits[name, method] = hits.get((name, method), 0) + (e.low <= truth <= e.high)
                widths[name, method] = widths.get((name, method), 0.0) + (e.high - e.low) / runs
        gain = uplift_over_nothing(log, served, method="dr", seed=seed)
        uplift_hits += gain.low <= true_value(log, served) - true_value(log, send_nothing) <= gain.high
    assert min(hits.values()) >= 0.9 * runs, hits
    assert uplift_hits >= 0.9 * runs
    # The fitted reward model takes variance out: the alternative's interval is narrower doubly robust.
    assert widths["recommend_first", "dr"] < widths["recommend_first", "ips"]


def test_a_customer_decided_for_again_and_again_is_one_draw_not_several() -> None:
    """10,000 decisions for 2,500 customers (four each on average, as weekly campaigns make them; a customer
    keeps her holdout and her chance to buy): clustered by customer, each interval holds its true value in at
    least 90% of 200 runs, and so does the uplift. Counted as 10,000 independent draws, sending nothing's
    interval holds it too rarely: the holdout is a draw of customers, not of decisions."""
    import dataclasses

    runs = 200
    hits: dict[tuple[str, str], int] = {}
    naive_nothing = uplift_hits = 0
    for seed in range(runs):
        log = simulate_own_log(10_000, seed=seed, customers=2_500)
        assert log.customer is not None and len(np.unique(log.customer)) <= 2_500
        # The holdout is the customer's: all her decisions are in it, or none.
        held = {int(c) for c in log.customer[~log.targeted]}
        assert not held & {int(c) for c in log.customer[log.targeted]}
        for name, policy in own_policies().items():
            truth = true_value(log, policy)
            for method in ("ips", "dr"):
                e = estimate(log, policy, method=method, seed=seed)
                hits[name, method] = hits.get((name, method), 0) + (e.low <= truth <= e.high)
        gain = uplift_over_nothing(log, served, method="dr", seed=seed)
        uplift_hits += gain.low <= true_value(log, served) - true_value(log, send_nothing) <= gain.high
        naive = estimate(dataclasses.replace(log, customer=None), send_nothing)
        naive_nothing += naive.low <= true_value(log, send_nothing) <= naive.high
    assert min(hits.values()) >= 0.9 * runs, hits
    assert uplift_hits >= 0.9 * runs
    assert naive_nothing < 0.9 * runs, naive_nothing


def test_clustered_by_customer_with_one_decision_each_is_the_plain_interval() -> None:
    log = simulate_own_log(2_000, seed=7)
    assert log.customer is None
    each_alone = OwnLog(
        log.targeted, log.action, log.propensity, log.scores, log.reward, customer=np.arange(2_000)
    )
    for policy in (served, send_nothing, recommend_first):
        a, b = estimate(log, policy), estimate(each_alone, policy)
        assert (a.value, a.n) == (b.value, b.n)
        assert a.low == pytest.approx(b.low, rel=1e-9) and a.high == pytest.approx(b.high, rel=1e-9)
    with pytest.raises(DataError, match="customers must be between 1 and the 10 decisions"):
        simulate_own_log(10, customers=11)
    with pytest.raises(DataError, match="disagree in length: customer"):
        OwnLog(log.targeted, log.action, log.propensity, log.scores, log.reward, customer=np.arange(3))


def test_without_exploration_an_alternative_policy_is_not_recovered() -> None:
    """What exploration buys: with none, the log only ever shows the planner's choice, so an alternative's
    estimate misses its true value (it counts only the customers where both agree)."""
    misses = 0
    for seed in range(20):
        log = simulate_own_log(10_000, seed=seed, explore=0.0)
        e = estimate(log, recommend_first)
        misses += not e.low <= true_value(log, recommend_first) <= e.high
    assert misses >= 18


def _row(action: str, group: str, propensity: float, options: dict[str, float]) -> dict[str, object]:
    return {
        "customer_id": "c",
        "action": action,
        "propensity": propensity,
        "detail": {"group": group, "options": options, "action_propensity": propensity},
    }


def test_a_log_read_from_decision_rows_keeps_groups_options_and_probabilities() -> None:
    rows = [
        _row("recommend", "targeted", 0.9, {"recommend": 0.5, "nothing": 0.1}),
        _row("win_back", "targeted", 0.05, {"recommend": 0.5, "win_back": 0.85, "nothing": 0.1}),
        _row("nothing", "holdout", 1.0, {}),
        _row("nothing", "targeted", 1.0, {}),
    ]
    rows[1]["customer_id"] = rows[3]["customer_id"] = "d"
    log = OwnLog.from_rows(rows, [1.0, 0.0, 1.0, 0.0])
    assert log.customer is not None and log.customer.tolist() == [0, 1, 0, 1]  # one index per customer id
    with pytest.raises(DataError, match="decision 2 names no customer"):
        OwnLog.from_rows([*rows[:2], {**rows[2], "customer_id": None}], [1.0, 0.0, 1.0])
    assert log.targeted.tolist() == [True, True, False, True]
    assert [ACTIONS[a] for a in log.action] == ["recommend", "win_back", "nothing", "nothing"]
    assert log.propensity.tolist() == [0.9, 0.05, 1.0, 1.0]
    assert [ACTIONS[a] for a in served(log)] == ["recommend", "win_back", "nothing", "nothing"]
    assert [ACTIONS[a] for a in recommend_first(log)] == ["recommend", "recommend", "nothing", "nothing"]
    # Sending nothing is the holdout's mean; the served policy's IPS over the targeted: (1/0.9 + 0) / 3.
    assert estimate(log, send_nothing).value == 1.0
    assert estimate(log, served).value == pytest.approx((1 / 0.9) / 3)


def test_an_action_scored_zero_did_not_qualify() -> None:
    """Refused before planning (consent, the frequency cap), every action is scored 0: none qualified, so
    every policy sends that customer nothing, and the row counts for each."""
    rows = [
        _row("nothing", "targeted", 1.0, {"abandoned_cart": 0.0, "recommend": 0.0, "win_back": 0.0}),
        _row("recommend", "targeted", 1.0, {"recommend": 0.5}),
    ]
    log = OwnLog.from_rows(rows, [1.0, 1.0])
    assert not log.qualified[0].any()
    assert [ACTIONS[a] for a in served(log)] == ["nothing", "recommend"]
    assert estimate(log, served).value == 1.0


def test_what_the_log_cannot_answer_is_refused_by_name() -> None:
    rows = [_row("recommend", "targeted", 1.0, {"recommend": 0.5})]
    log = OwnLog.from_rows(rows, [1.0])
    with pytest.raises(DataError, match="no holdout group") as info:
        estimate(log, send_nothing)
    assert info.value.hint is not None and "TAILOR_HOLDOUT_SHARE" in info.value.hint

    def withhold_first(log: OwnLog) -> np.ndarray:
        return np.where(np.arange(len(log.action)) == 0, NOTHING, served(log))

    def win_back_always(log: OwnLog) -> np.ndarray:
        return np.full(len(log.action), ACTIONS.index("win_back"))

    mixed = OwnLog.from_rows([*rows, *rows, _row("nothing", "holdout", 1.0, {})], [1.0, 0.0, 0.0])
    with pytest.raises(DataError, match="withholds the email from 1 customers who qualified"):
        estimate(mixed, withhold_first)
    with pytest.raises(DataError, match="an action 2 customers did not qualify for"):
        estimate(mixed, win_back_always)
    with pytest.raises(DataError, match="took 'email', not one of"):
        OwnLog.from_rows([_row("email", "targeted", 1.0, {})], [0.0])
    with pytest.raises(DataError, match=r"decision 0 has propensity 0\.0, outside"):
        OwnLog.from_rows([_row("recommend", "targeted", 0.0, {"recommend": 0.4})], [0.0])
    with pytest.raises(DataError, match="2 decisions but 1 rewards"):
        OwnLog.from_rows(mixed_rows := [*rows, *rows], [1.0])
    assert len(mixed_rows) == 2
    with pytest.raises(DataError, match="unknown estimator 'snips'"):
        estimate(log, served, method="snips")
