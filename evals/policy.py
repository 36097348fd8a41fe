"""Offline policy evaluation: judge a next-best-action policy from logged decisions, before an A/B test.

Each logged decision records the context (customer, moment), the action the *logging* policy took, the
probability it had of taking it (the propensity) and the reward that followed. A *target* policy's value is
estimated by replay with inverse propensity scoring:

- IPS:  mean(1[a = pi(x)] * r / p)                              (unbiased when p > 0 wherever pi acts)
- SNIPS: sum(1[a = pi(x)] * r / p) / sum(1[a = pi(x)] / p)       (a little biased, much less variance)

Online Retail has no email logs, so ``synthetic_log`` builds a *synthetic* log from real purchase behaviour:
a uniform-random logging policy over recommendation actions, and reward = the customer bought one of the
recommended items within 7 days in the real data. Because the data is fixed, every action's reward is known
for every context, so the true value of each policy is known too and printed next to its estimate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd

from evals.base import Artifact, read_jsonl
from evals.estimate import Estimate
from evals.own_log import OwnLog, estimate, own_policies, served, simulate_own_log, uplift_over_nothing
from evals.own_log import true_value as own_true_value
from tailor.core.errors import DataError, RecordError
from tailor.core.utc import utc_series, utc_timestamp

__all__ = [
    "ACTIONS",
    "Decision",
    "Estimate",
    "Policy",
    "PolicyEval",
    "bought_within",
    "event_times",
    "ips",
    "load_decisions",
    "simulate",
    "snips",
    "standard_policies",
    "synthetic_log",
]

ACTIONS = ("popular", "repeat", "recent")
REWARD_WINDOW = pd.Timedelta(days=7)
LIST_SIZE = 10
_Z95 = 1.96  # the IPS interval's normal quantile


@dataclass(frozen=True)
class Decision:
    """One logged decision; ``rewards`` holds every action's reward when known (simulated or synthetic)."""

    customer_id: str
    timestamp: pd.Timestamp
    action: str
    propensity: float
    reward: float
    features: Mapping[str, float] = field(default_factory=dict)
    rewards: Mapping[str, float] | None = None


Policy = Callable[[Decision], str]


def _weights(
    log: Sequence[Decision], policy: Policy
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    if not log:
        raise DataError("no logged decisions to evaluate a policy on")
    w = np.empty(len(log))
    r = np.empty(len(log))
    for i, d in enumerate(log):
        if not 0.0 < d.propensity <= 1.0:
            raise DataError(
                f"decision {i} ({d.customer_id} at {d.timestamp}) has propensity {d.propensity}",
                hint="propensities must be in (0, 1]",
            )
        w[i] = (1.0 / d.propensity) if policy(d) == d.action else 0.0
        r[i] = d.reward
    return w, r


def ips(log: Sequence[Decision], policy: Policy, *, z: float = _Z95) -> Estimate:
    """IPS with a normal-approximation confidence interval (the terms are i.i.d.)."""
    w, r = _weights(log, policy)
    terms = w * r
    mean = float(terms.mean())
    half = z * float(terms.std(ddof=1)) / math.sqrt(len(terms)) if len(terms) > 1 else math.inf
    return Estimate(mean, mean - half, mean + half, len(terms), int((w > 0).sum()))


def snips(log: Sequence[Decision], policy: Policy, *, seed: int = 0, resamples: int = 200) -> Estimate:
    """Self-normalized IPS with a seeded bootstrap percentile interval (the ratio has no simple variance)."""
    w, r = _weights(log, policy)
    if w.sum() == 0:
        return Estimate(math.nan, math.nan, math.nan, len(w), 0)
    value = float((w * r).sum() / w.sum())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(w), size=(resamples, len(w)))
    ws, rs = w[idx], r[idx]
    denom = ws.sum(axis=1)
    boots = (ws * rs).sum(axis=1)[denom > 0] / denom[denom > 0]
    low, high = (float(x) for x in np.percentile(boots, [2.5, 97.5])) if len(boots) else (math.nan, math.nan)
    return Estimate(value, low, high, len(w), int((w > 0).sum()))


def true_value(log: Sequence[Decision], policy: Policy) -> float:
    """The value a policy really has on these contexts; only where every action's reward is known."""
    total = 0.0
    for i, d in enumerate(log):
        if d.rewards is None:
            raise DataError(f"decision {i} does not know every action's reward; the true value is unknown")
        total += d.rewards[policy(d)]
    return total / len(log)


def simulate(
    n: int, *, seed: int = 0, actions: Sequence[str] = ("a", "b", "c")
) -> tuple[list[Decision], Callable[[Policy], float]]:
    """A bandit with known reward probabilities and a non-uniform logging policy.

    Returns the log and a function giving any policy's exact expected value on the same contexts, the
    ground truth an estimator is checked against.
    """
    rng = np.random.default_rng(seed)
    k = len(actions)
    x = rng.uniform(0, 1, size=n)
    # Reward probability of action j rises or falls with x, so the best action depends on the context.
    slopes = np.linspace(-0.6, 0.6, k)
    probs = np.clip(0.3 + np.outer(x - 0.5, slopes), 0.02, 0.98)
    logits = np.outer(x, np.arange(k, dtype=float))
    prop = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    chosen = np.array([rng.choice(k, p=p) for p in prop])
    reward = (rng.uniform(size=n) < probs[np.arange(n), chosen]).astype(float)
    log = [
        Decision(
            customer_id=str(i),
            timestamp=pd.Timestamp(0, tz="UTC"),
            action=actions[chosen[i]],
            propensity=float(prop[i, chosen[i]]),
            reward=float(reward[i]),
            features={"x": float(x[i])},
        )
        for i in range(n)
    ]
    index = {a: j for j, a in enumerate(actions)}

    def expected(policy: Policy) -> float:
        return float(np.mean([probs[i, index[policy(d)]] for i, d in enumerate(log)]))

    return log, expected


def _naive_utc(ts: pd.Series) -> npt.NDArray[np.datetime64]:
    # numpy compares datetime64 only without zones, so everything is brought to naive UTC first.
    ts = utc_series(ts)
    out: npt.NDArray[np.datetime64] = ts.dt.tz_localize(None).to_numpy(dtype="datetime64[ns]")
    return out


def event_times(events: pd.DataFrame) -> dict[str, npt.NDArray[np.datetime64]]:
    """Each customer's event times, sorted, as ``bought_within`` searches them."""
    return {str(cid): np.sort(_naive_utc(g["timestamp"])) for cid, g in events.groupby("customer_id")}


def bought_within(
    times: Mapping[str, npt.NDArray[np.datetime64]],
    customer_id: str,
    start: pd.Timestamp,
    window: pd.Timedelta,
) -> float:
    """A decision's reward: 1.0 when the customer has an event of ``times`` (``event_times``) in
    [start, start + window), else 0.0. The one rule for every log: a JSONL file's or Tailor's own."""
    mine = times.get(str(customer_id))
    if mine is None or not len(mine):
        return 0.0
    begin = utc_timestamp(start).tz_localize(None)
    lo, hi = np.searchsorted(mine, [begin.to_datetime64(), (begin + window).to_datetime64()], side="left")
    return 1.0 if hi > lo else 0.0


def load_decisions(path: Path, events: pd.DataFrame | None = None) -> list[Decision]:
    """Logged decisions from JSONL: ``customer_id``, ``timestamp``, ``action``, ``propensity``, and either
    ``reward`` or (with ``events``, e.g. ``Store.events_frame(kinds=[EMAIL_CLICK, PURCHASE])``) a reward taken
    as 1 when the customer clicked or bought within 7 days of the decision."""
    out: list[Decision] = []
    by_customer = event_times(events) if events is not None else {}
    for line, rec in enumerate(read_jsonl(path), 1):
        for name in ("customer_id", "timestamp", "action", "propensity"):
            if name not in rec:
                raise RecordError("missing", source=str(path), line=line, field=name)
        try:
            ts = utc_timestamp(rec["timestamp"])
            propensity = float(rec["propensity"])
        except (ValueError, TypeError) as exc:
            raise RecordError(str(exc), source=str(path), line=line) from exc
        if "reward" in rec:
            reward = float(rec["reward"])
        elif events is not None:
            reward = bought_within(by_customer, str(rec["customer_id"]), ts, REWARD_WINDOW)
        else:
            raise RecordError("no reward and no events to derive it from", source=str(path), line=line)
        out.append(
            Decision(
                str(rec["customer_id"]), ts, str(rec["action"]), propensity, reward, rec.get("features", {})
            )
        )
    return out


def synthetic_log(purchases: pd.DataFrame, n: int, *, seed: int = 0) -> list[Decision]:
    """A SYNTHETIC log over real purchases: at a random weekly moment a random active customer gets one of
    ``ACTIONS`` uniformly at random (propensity 1/3); reward = they bought a listed item within 7 days.

    ``popular``: the 10 items most customers bought in the previous 30 days; ``repeat``: the customer's 10
    most-bought items; ``recent``: the 10 distinct items they bought last.
    """
    need = {"customer_id", "item_id", "timestamp"}
    if not need <= set(purchases.columns):
        raise DataError(f"purchases lack columns {sorted(need - set(purchases.columns))}")
    if purchases.empty:
        raise DataError("no purchases to build a synthetic log from")
    df = purchases[["customer_id", "item_id", "timestamp"]].sort_values("timestamp")
    start, end = df["timestamp"].min(), df["timestamp"].max()
    first = start + pd.Timedelta(days=60)  # some history before the first decision
    last = end - REWARD_WINDOW  # every reward window lies inside the data
    if first >= last:
        raise DataError("purchases span too short a time for 7-day rewards after 60 days of history")
    moments = list(pd.date_range(first.normalize(), last, freq="7D"))
    rng = np.random.default_rng(seed)
    groups = {cid: g for cid, g in df.groupby("customer_id", sort=True)}
    customers = sorted(groups)
    first_seen = df.groupby("customer_id")["timestamp"].min()
    popular_cache: dict[pd.Timestamp, list[str]] = {}
    log: list[Decision] = []
    attempts = 0
    while len(log) < n and attempts < n * 20:
        attempts += 1
        t = moments[int(rng.integers(len(moments)))]
        cid = customers[int(rng.integers(len(customers)))]
        if first_seen[cid] >= t:
            continue  # nothing to personalise on yet
        g = groups[cid]
        before = g[g["timestamp"] < t]
        after = set(g.loc[(g["timestamp"] >= t) & (g["timestamp"] < t + REWARD_WINDOW), "item_id"])
        if t not in popular_cache:
            window = df[(df["timestamp"] < t) & (df["timestamp"] >= t - pd.Timedelta(days=30))]
            popular_cache[t] = list(
                window.groupby("item_id")["customer_id"]
                .nunique()
                .sort_values(ascending=False)
                .index[:LIST_SIZE]
            )
        lists = {
            "popular": popular_cache[t],
            "repeat": list(before["item_id"].value_counts().index[:LIST_SIZE]),
            "recent": list(dict.fromkeys(before["item_id"].iloc[::-1]))[:LIST_SIZE],
        }
        rewards = {a: float(bool(after & set(items))) for a, items in lists.items()}
        action = ACTIONS[int(rng.integers(len(ACTIONS)))]
        orders = before["timestamp"].nunique()
        log.append(
            Decision(cid, t, action, 1.0 / len(ACTIONS), rewards[action], {"orders": float(orders)}, rewards)
        )
    if len(log) < n:
        raise DataError(f"only {len(log)} of {n} decisions could be drawn; too few active customers")
    return log


def standard_policies() -> dict[str, Policy]:
    """The candidate next-best-action policies compared by default."""
    return {
        "always_popular": lambda d: "popular",
        "always_repeat": lambda d: "repeat",
        "always_recent": lambda d: "recent",
        # Loyal customers get their own staples, new ones what everybody buys.
        "repeat_if_loyal": lambda d: "repeat" if d.features.get("orders", 0.0) >= 3 else "popular",
    }


def _always(action: str) -> Policy:
    def policy(d: Decision) -> str:
        return action

    return policy


class PolicyEval:
    """``run()`` → ``policy.<log>.<policy>.{ips,ips_low,ips_high,snips,snips_low,snips_high[,true]}``.

    ``<log>`` is ``synthetic`` (built from ``purchases``, every action's reward known, so each estimate is
    printed next to the truth and the estimators are checked: ``policy.synthetic.{ips,snips}_max_abs_error``,
    ``policy.synthetic.ips_max_z`` (the worst IPS error in standard errors) and
    ``policy.synthetic.ci_coverage``, the share of policies whose IPS interval holds the true value) and,
    when ``log`` is given, ``logged`` (real logged decisions: estimates only, over the standard policies and
    one "always do X" policy per logged action). Given both, both are reported.
    """

    name = "policy"

    def __init__(
        self,
        purchases: pd.DataFrame | None = None,
        *,
        log: Sequence[Decision] | None = None,
        own: OwnLog | None = None,
        own_clicks: OwnLog | None = None,
        n: int = 3000,
        seed: int = 0,
        policies: Mapping[str, Policy] | None = None,
        simulations: int = 200,
    ) -> None:
        if purchases is None and log is None and own is None:
            raise DataError(
                "PolicyEval needs purchases (for a synthetic log), a logged-decision list or Tailor's own log"
            )
        self.purchases = purchases
        self.log = list(log) if log is not None else None
        self.own = own
        # The same decisions rewarded by engagement: a click on the email the decision made.
        self.own_clicks = own_clicks
        self.simulations = simulations
        self.n = n
        self.seed = seed
        self.policies = dict(policies or standard_policies())
        self._intervals: dict[str, dict[str, dict[str, float]]] = {}
        self.unjudged: dict[str, str] = {}

    def _logged_policies(self, log: Sequence[Decision]) -> dict[str, Policy]:
        out = dict(self.policies)
        for action in sorted({d.action for d in log}):
            out.setdefault(f"always_{action}", _always(action))
        return out

    def _estimate(
        self, prefix: str, log: Sequence[Decision], policies: Mapping[str, Policy], truth: bool
    ) -> dict[str, float]:
        out: dict[str, float] = {f"{prefix}.decisions": float(len(log))}
        out[f"{prefix}.logging.value"] = float(np.mean([d.reward for d in log]))
        rows: dict[str, dict[str, float]] = {}
        for name, policy in policies.items():
            a, s = ips(log, policy), snips(log, policy, seed=self.seed)
            row = {
                "ips": a.value,
                "ips_low": a.low,
                "ips_high": a.high,
                "snips": s.value,
                "snips_low": s.low,
                "snips_high": s.high,
            }
            if truth:
                row["true"] = true_value(log, policy)
            rows[name] = row
            out.update({f"{prefix}.{name}.{k}": v for k, v in row.items()})
        if truth and rows:
            # The estimators against the truth they are meant to recover: these can fail.
            out[f"{prefix}.ips_max_abs_error"] = max(abs(r["ips"] - r["true"]) for r in rows.values())
            snips_err = [abs(r["snips"] - r["true"]) for r in rows.values() if math.isfinite(r["snips"])]
            out[f"{prefix}.snips_max_abs_error"] = max(snips_err) if snips_err else math.nan
            # The same error in units of its own standard error: scale-free, so one gate fits any reward rate.
            out[f"{prefix}.ips_max_z"] = max(
                abs(r["ips"] - r["true"]) / max((r["ips_high"] - r["ips_low"]) / (2 * _Z95), 1e-12)
                for r in rows.values()
            )
            out[f"{prefix}.ci_coverage"] = sum(
                r["ips_low"] <= r["true"] <= r["ips_high"] for r in rows.values()
            ) / len(rows)
        self._intervals[prefix] = rows
        return out

    def run(self) -> dict[str, float]:
        self._intervals = {}
        self.unjudged = {}
        out: dict[str, float] = {}
        if self.purchases is not None:
            synthetic = synthetic_log(self.purchases, self.n, seed=self.seed)
            out.update(self._estimate("policy.synthetic", synthetic, self.policies, truth=True))
        if self.log is not None:
            out.update(
                self._estimate("policy.logged", self.log, self._logged_policies(self.log), truth=False)
            )
        if self.own is not None:
            out.update(self._own("policy.own", self.own))
            out.update({f"policy.own.{name}.unjudged": 1.0 for name in self.unjudged})
        if self.own_clicks is not None:
            out.update(self._own("policy.own_clicks", self.own_clicks))
        # The estimators Tailor's own log is judged by, checked on every run, a log or not (a few seconds).
        out.update(self._own_check())
        return out

    def _own(self, prefix: str, log: OwnLog) -> dict[str, float]:
        """Each standard policy on Tailor's own log, by IPS and doubly robust; a policy the log cannot
        judge (no holdout: sending nothing) is reported as such in ``self.unjudged``."""
        out: dict[str, float] = {
            f"{prefix}.decisions": float(len(log.action)),
            f"{prefix}.holdout": float((~log.targeted).sum()),
            f"{prefix}.explored": float(
                (log.targeted & (log.propensity < 1) & (log.action != served(log))).sum()
            ),
            f"{prefix}.logging.value": float(log.reward.mean()),
        }
        rows: dict[str, dict[str, float]] = {}
        for name, policy in own_policies().items():
            try:
                a, b = estimate(log, policy, method="ips"), estimate(log, policy, method="dr", seed=self.seed)
            except DataError as exc:
                self.unjudged[name] = exc.message
                continue
            rows[name] = {
                "ips": a.value,
                "ips_low": a.low,
                "ips_high": a.high,
                "dr": b.value,
                "dr_low": b.low,
                "dr_high": b.high,
                "matched": float(a.matched),
            }
        if "send_nothing" in rows:
            for name in rows:
                if name == "send_nothing":
                    continue
                gain = uplift_over_nothing(log, own_policies()[name], method="dr", seed=self.seed)
                rows[name].update({"uplift": gain.value, "uplift_low": gain.low, "uplift_high": gain.high})
        for name, row in rows.items():
            out.update({f"{prefix}.{name}.{k}": v for k, v in row.items()})
        keep = ("ips", "ips_low", "ips_high", "dr", "dr_low", "dr_high")
        self._intervals[prefix] = {name: {k: r[k] for k in keep} for name, r in rows.items()}
        return out

    def _own_check(self) -> dict[str, float]:
        """The same estimators on ``simulations`` seeded logs whose true values are known: the share of
        intervals that hold the truth, the worst over the policies (``evals.own_log.simulate_own_log``).
        Twice: a customer a decision (``own_simulated``), and 10,000 decisions for 2,500 customers, four
        each on average, as weekly campaigns would make (``own_simulated_repeat``), where intervals that
        counted each decision as a draw of its own would hold the truth too rarely
        (``tests/test_own_log.py``)."""
        out: dict[str, float] = {}
        policies = own_policies()
        for prefix, customers in (("own_simulated", None), ("own_simulated_repeat", 2_500)):
            for method in ("ips", "dr"):
                per_policy = {name: 0 for name in policies}
                for run in range(self.simulations):
                    sim = simulate_own_log(10_000, seed=self.seed * 100_003 + run, customers=customers)
                    for name, policy in policies.items():
                        e = estimate(sim, policy, method=method, seed=run)
                        per_policy[name] += e.low <= own_true_value(sim, policy) <= e.high
                out[f"policy.{prefix}.{method}_coverage"] = min(per_policy.values()) / self.simulations
            out[f"policy.{prefix}.runs"] = float(self.simulations)
        return out

    def artifacts(self) -> dict[str, Artifact]:
        titles = {
            "policy.synthetic": ("policy_values", "Policy value by replay (SYNTHETIC log)"),
            "policy.logged": ("policy_values_logged", "Policy value by replay (logged sends)"),
            "policy.own": ("policy_values_own", "Policy value on Tailor's own decision log"),
            "policy.own_clicks": (
                "policy_values_own_clicks",
                "Policy value on Tailor's own decision log, rewarded by a click on the email it made",
            ),
        }
        out: dict[str, Artifact] = {
            titles[prefix][0]: {
                "kind": "intervals",
                "title": titles[prefix][1],
                "rows": {k: dict(v) for k, v in rows.items()},
            }
            for prefix, rows in self._intervals.items()
            if rows
        }
        if self.unjudged:
            out["policy_unjudged"] = {
                "kind": "table",
                "title": "Policies Tailor's own log cannot judge, and why",
                "columns": ["policy", "why"],
                "rows": [[name, why] for name, why in self.unjudged.items()],
            }
        return out
