"""The off-policy estimators against ground truth, and the synthetic log against real purchases."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from evals.policy import (
    Decision,
    PolicyEval,
    bought_within,
    event_times,
    ips,
    load_decisions,
    simulate,
    snips,
    synthetic_log,
)
from tailor.core.errors import DataError, RecordError


def test_ips_and_snips_recover_the_known_value_of_each_policy() -> None:
    log, expected = simulate(40_000, seed=7)
    policies = {
        "a": lambda d: "a",
        "c": lambda d: "c",
        "contextual": lambda d: "c" if d.features["x"] > 0.5 else "a",
    }
    for name, policy in policies.items():
        truth = expected(policy)
        a, s = ips(log, policy), snips(log, policy, seed=1)
        assert abs(a.value - truth) < 0.02, (name, a, truth)
        assert abs(s.value - truth) < 0.02, (name, s, truth)
        assert a.low <= truth <= a.high, (name, a, truth)
    # The contextual policy is really better, and the estimate says so.
    assert ips(log, policies["contextual"]).value > ips(log, policies["a"]).high


def test_a_policy_the_logger_never_followed_is_worth_zero_by_ips() -> None:
    log, _ = simulate(500, seed=0)
    est = ips(log, lambda d: "never-logged")
    assert est.value == 0.0 and est.matched == 0


def test_a_bad_propensity_is_refused_with_the_decision_named() -> None:
    bad = [Decision("c1", pd.Timestamp("2011-01-01", tz="UTC"), "a", 0.0, 1.0)]
    with pytest.raises(DataError, match="c1"):
        ips(bad, lambda d: "a")


def _purchases() -> pd.DataFrame:
    rows = []
    start = pd.Timestamp("2011-01-03", tz="UTC")
    # c1 rebuys item A every week; c2 buys B and C alternately; everyone buys P now and then.
    for week in range(30):
        t = start + pd.Timedelta(days=7 * week)
        rows.append(("c1", "A", t + pd.Timedelta(days=1)))
        rows.append(("c2", "B" if week % 2 else "C", t + pd.Timedelta(days=2)))
        if week % 3 == 0:
            rows += [("c1", "P", t), ("c2", "P", t), ("c3", "P", t)]
        # Twelve best-sellers among three other customers crowd c1's and c2's items out of "popular".
        rows += [(f"f{n % 3}", f"F{n}", t) for n in range(12)] + [
            (f"f{(n + 1) % 3}", f"F{n}", t) for n in range(12)
        ]
    return pd.DataFrame(rows, columns=["customer_id", "item_id", "timestamp"])


def test_synthetic_log_rewards_are_real_purchases_within_seven_days() -> None:
    purchases = _purchases()
    log = synthetic_log(purchases, 200, seed=3)
    assert len(log) == 200
    assert {d.action for d in log} == {"popular", "repeat", "recent"}
    for d in log:
        assert d.propensity == pytest.approx(1 / 3)
        assert d.rewards is not None and d.reward == d.rewards[d.action]
        bought = purchases[
            (purchases["customer_id"] == d.customer_id)
            & (purchases["timestamp"] >= d.timestamp)
            & (purchases["timestamp"] < d.timestamp + pd.Timedelta(days=7))
        ]
        if bought.empty:
            assert not any(d.rewards.values())
    # c1 buys A every week, so recommending their own staple pays off every time.
    c1 = [d for d in log if d.customer_id == "c1"]
    assert c1 and all(d.rewards is not None and d.rewards["repeat"] == 1.0 for d in c1)
    # Same seed, same log.
    assert [(d.customer_id, d.action) for d in synthetic_log(purchases, 200, seed=3)] == [
        (d.customer_id, d.action) for d in log
    ]


def test_policy_eval_reports_synthetic_values_with_truth_and_intervals() -> None:
    ev = PolicyEval(_purchases(), n=300, seed=0)
    out = ev.run()
    assert out["policy.synthetic.decisions"] == 300
    for name in ("always_popular", "always_repeat", "always_recent", "repeat_if_loyal"):
        assert out[f"policy.synthetic.{name}.ips_low"] <= out[f"policy.synthetic.{name}.ips"]
        assert out[f"policy.synthetic.{name}.ips"] <= out[f"policy.synthetic.{name}.ips_high"]
        assert 0.0 <= out[f"policy.synthetic.{name}.true"] <= 1.0
    assert out["policy.synthetic.always_repeat.true"] > out["policy.synthetic.always_popular.true"]
    art = ev.artifacts()["policy_values"]
    assert "SYNTHETIC" in art["title"] and set(art["rows"]) >= {"always_repeat"}


def test_load_decisions_derives_rewards_from_events_and_names_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    lines = [
        {"customer_id": "c1", "timestamp": "2011-03-01T00:00:00", "action": "repeat", "propensity": 0.5},
        {"customer_id": "c9", "timestamp": "2011-03-01T00:00:00", "action": "popular", "propensity": 0.5},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    log = load_decisions(path, events=_purchases())
    assert [d.reward for d in log] == [1.0, 0.0]  # c1 bought within the week, c9 never did
    path.write_text(json.dumps({"customer_id": "c1", "action": "a", "propensity": 1}) + "\n")
    with pytest.raises(RecordError, match=r"log.jsonl:1.*timestamp"):
        load_decisions(path, events=_purchases())


def test_policy_eval_checks_its_estimators_against_the_synthetic_truth() -> None:
    out = PolicyEval(_purchases(), n=300, seed=0).run()
    names = ("always_popular", "always_repeat", "always_recent", "repeat_if_loyal")
    errors = [abs(out[f"policy.synthetic.{n}.ips"] - out[f"policy.synthetic.{n}.true"]) for n in names]
    assert out["policy.synthetic.ips_max_abs_error"] == pytest.approx(max(errors))
    covered = [
        out[f"policy.synthetic.{n}.ips_low"]
        <= out[f"policy.synthetic.{n}.true"]
        <= out[f"policy.synthetic.{n}.ips_high"]
        for n in names
    ]
    assert out["policy.synthetic.ci_coverage"] == pytest.approx(sum(covered) / len(names))
    assert 0.0 <= out["policy.synthetic.ips_max_z"] < 3.0
    # A wrong propensity in the log (the logger said 1/3, but it is told 1/10 here) is caught by the check.
    skewed = [
        Decision(d.customer_id, d.timestamp, d.action, 0.1, d.reward, d.features, d.rewards)
        for d in synthetic_log(_purchases(), 300, seed=0)
    ]
    ev = PolicyEval(log=skewed, seed=0)
    logged = ev.run()
    assert "policy.synthetic.decisions" not in logged and "policy.logged.always_repeat.true" not in logged
    wrong = ev._estimate("policy.synthetic", skewed, ev.policies, truth=True)
    assert wrong["policy.synthetic.ips_max_z"] > 3.0


def test_logged_and_synthetic_logs_are_reported_side_by_side() -> None:
    t = pd.Timestamp("2011-03-01", tz="UTC")
    log = [
        Decision("c1", t, "replenishment", 0.5, 1.0),
        Decision("c2", t, "win_back", 0.5, 0.0),
    ]
    ev = PolicyEval(_purchases(), log=log, n=200, seed=1)
    out = ev.run()
    assert out["policy.logged.decisions"] == 2 and out["policy.synthetic.decisions"] == 200
    assert out["policy.logged.always_replenishment.ips"] == pytest.approx(1.0)  # (1/0.5 * 1) / 2
    assert out["policy.logged.always_win_back.ips"] == 0.0
    arts = ev.artifacts()
    assert "SYNTHETIC" in arts["policy_values"]["title"]
    assert "SYNTHETIC" not in arts["policy_values_logged"]["title"]


def test_a_reward_counts_events_from_the_decision_up_to_but_not_at_the_window_end() -> None:
    """The one reward rule of every log: an event in [start, start + window), whatever the zones."""
    events = pd.DataFrame(
        {
            "customer_id": ["a", "a", "b"],
            "timestamp": pd.to_datetime(
                ["2011-03-01T10:00:00+00:00", "2011-03-08T10:00:00+00:00", "2011-02-28T23:59:00+00:00"]
            ),
        }
    )
    times = event_times(events)
    start = pd.Timestamp("2011-03-01T10:00:00+00:00")
    week = pd.Timedelta(days=7)
    assert bought_within(times, "a", start, week) == 1.0  # at the start: counted
    assert bought_within(times, "a", start + pd.Timedelta(seconds=1), week) == 1.0  # the 8th, inside
    assert bought_within(times, "a", start + pd.Timedelta(days=7, seconds=1), week) == 0.0  # past both
    assert bought_within(times, "a", start - week, week) == 0.0  # the window ends where the event is
    assert bought_within(times, "b", start, week) == 0.0  # before the decision
    assert bought_within(times, "nobody", start, week) == 0.0
    # The same moment written in another zone is the same moment.
    assert bought_within(times, "a", pd.Timestamp("2011-03-08T11:00:00+01:00"), pd.Timedelta(hours=1)) == 1.0
    assert bought_within(times, "a", pd.Timestamp("2011-03-08T10:00:00+01:00"), pd.Timedelta(hours=1)) == 0.0
