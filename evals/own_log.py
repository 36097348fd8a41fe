"""Policies judged on Tailor's own decision log: what the served policy, "send nothing" and an alternative
are worth, by inverse propensity scoring and doubly robust estimates, with 95% intervals.

Two random draws make Tailor's log (``tailor.app.jobs``): the holdout group's (``tailor.core.holdout``,
independent of everything about the customer) and, for the targeted, exploration's (``agent.exploration``:
epsilon-greedy among the email actions the customer qualified for, each with its exact probability). So:

- **"send nothing"** is worth the holdout group's mean reward: the group is a uniform draw of the audience
  and every one of them got nothing.
- **A policy that sends** (one of the qualified email actions to each customer who qualifies for one, and
  nothing to the rest, as the rails leave them) is judged on the targeted group, itself a uniform draw:
  - IPS: ``mean(1[a = pi(x)] r / p)``, with ``p`` the action's probability within the group;
  - doubly robust: ``mean(q(x, pi(x)) + 1[a = pi(x)] (r - q(x, a)) / p)``, with ``q`` each action's mean
    reward fitted on the other half of the log (cross-fitted, seeded), so the model never scores the rows
    it was fitted on.
  Both are unbiased because ``p`` is exact; the doubly robust terms vary less when ``q`` is any good.
- **A customer decided for more than once** (a campaign a week) is one draw, not several: the holdout is hers
  for good (a hash of her id) and her decisions share her tastes, so the intervals are clustered by customer
  (the variance of the per-customer sums: a cluster-robust standard error). Counted decision by decision,
  a customer in four campaigns would count as four independent draws, and the intervals would be too narrow.
- A policy that withholds an email from some who qualify cannot be judged: nobody who qualified was
  withheld except the holdout, whose options were never planned. It is refused by name.

``simulate_own_log`` draws such a log where every action's true reward probability is known, the check
that the intervals hold the truth (``tests/test_own_log.py``: 200 seeded runs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from evals.estimate import Estimate
from tailor.core.errors import DataError

__all__ = [
    "ACTIONS",
    "NOTHING",
    "OwnLog",
    "OwnPolicy",
    "estimate",
    "own_policies",
    "recommend_first",
    "send_nothing",
    "served",
    "simulate_own_log",
    "uplift_over_nothing",
]

# The email actions a plan may take (``agent.state.ACTIONS`` less "nothing"), then "nothing".
ACTIONS = ("abandoned_cart", "replenishment", "win_back", "recommend", "nothing")
NOTHING = ACTIONS.index("nothing")
_EMAILS = NOTHING
_Z95 = 1.96
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class OwnLog:
    """The log as arrays, one row a decision: ``targeted`` (else held out), the ``action`` taken (an index
    of ``ACTIONS``), its probability within its group, the planner's ``scores`` of the email actions (NaN:
    not qualified), the ``reward`` observed, and where known (a simulation) every action's expected reward.
    """

    targeted: npt.NDArray[np.bool_]
    action: I64
    propensity: F64
    scores: F64
    reward: F64
    truth: F64 | None = None
    customer: I64 | None = None  # who each decision was for (an index); None: a customer a decision

    def __post_init__(self) -> None:
        n = len(self.action)
        if n == 0:
            raise DataError("the decision log is empty: nothing to judge a policy on")
        shapes = {
            "targeted": self.targeted.shape,
            "propensity": self.propensity.shape,
            "reward": self.reward.shape,
            **({"customer": self.customer.shape} if self.customer is not None else {}),
        }
        bad = [name for name, shape in shapes.items() if shape != (n,)]
        if bad or self.scores.shape != (n, _EMAILS):
            raise DataError(f"the log's arrays disagree in length: {', '.join(bad) or 'scores'}")
        if not np.all((self.propensity > 0) & (self.propensity <= 1)):
            first = int(np.argmax(~((self.propensity > 0) & (self.propensity <= 1))))
            raise DataError(f"decision {first} has propensity {self.propensity[first]}, outside (0, 1]")

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, object]], rewards: Sequence[float]) -> OwnLog:
        """From the ops database's decision rows (``Ops.all_decisions``) and each row's reward."""
        if len(rows) != len(rewards):
            raise DataError(f"{len(rows)} decisions but {len(rewards)} rewards")
        n = len(rows)
        missing = next((i for i, r in enumerate(rows) if not r.get("customer_id")), None)
        if missing is not None:
            # The intervals are clustered by customer: a row of nobody cannot be put in a cluster.
            raise DataError(f"decision {missing} names no customer")
        ids: dict[str, int] = {}
        customer = np.array([ids.setdefault(str(r["customer_id"]), len(ids)) for r in rows], np.int64)
        targeted = np.zeros(n, dtype=bool)
        action = np.zeros(n, dtype=np.int64)
        propensity = np.zeros(n)
        scores = np.full((n, _EMAILS), np.nan)
        for i, row in enumerate(rows):
            detail = row.get("detail")
            detail = detail if isinstance(detail, dict) else {}
            taken = str(row.get("action"))
            if taken not in ACTIONS:
                raise DataError(f"decision {i} took {taken!r}, not one of {', '.join(ACTIONS)}")
            action[i] = ACTIONS.index(taken)
            targeted[i] = detail.get("group") != "holdout"
            # Rows logged before exploration carried only the joint probability; within the targeted
            # group the planner's choice then had probability 1.
            within = detail.get("action_propensity", 1.0)
            propensity[i] = float(within) if isinstance(within, int | float) else 1.0
            options = detail.get("options")
            for name, score in options.items() if isinstance(options, dict) else ():
                # Scored 0: did not qualify (rows of the first logs listed those too).
                if name in ACTIONS[:_EMAILS] and isinstance(score, int | float) and score > 0:
                    scores[i, ACTIONS.index(name)] = float(score)
        return cls(targeted, action, propensity, scores, np.asarray(rewards, dtype=float), customer=customer)

    @property
    def qualified(self) -> npt.NDArray[np.bool_]:
        return ~np.isnan(self.scores)


OwnPolicy = Callable[[OwnLog], I64]


def served(log: OwnLog) -> I64:
    """The planner's own choice: the best-scored qualified email action, or nothing."""
    filled = np.where(log.qualified, log.scores, -np.inf)
    return np.where(log.qualified.any(axis=1), filled.argmax(axis=1), NOTHING).astype(np.int64)


def send_nothing(log: OwnLog) -> I64:
    return np.full(len(log.action), NOTHING, dtype=np.int64)


def recommend_first(log: OwnLog) -> I64:
    """An alternative: a recommendation whenever one qualifies, else the planner's choice."""
    rec = ACTIONS.index("recommend")
    return np.where(log.qualified[:, rec], rec, served(log)).astype(np.int64)


def own_policies() -> dict[str, OwnPolicy]:
    return {"served": served, "send_nothing": send_nothing, "recommend_first": recommend_first}


def _interval(terms: F64, matched: int, customer: I64 | None = None) -> Estimate:
    """The mean of ``terms`` with a 95% interval; with ``customer``, clustered by it: the variance of the
    mean is that of the per-customer sums of ``terms - mean`` (with the small-sample factor G / (G - 1)),
    which is the usual standard error when every customer has one term."""
    n = len(terms)
    mean = float(terms.mean())
    if customer is None:
        half = _Z95 * float(terms.std(ddof=1)) / math.sqrt(n) if n > 1 else math.inf
        return Estimate(mean, mean - half, mean + half, n, matched)
    _, cluster = np.unique(customer, return_inverse=True)
    sums = np.bincount(cluster, weights=terms - mean)
    g = len(sums)
    half = _Z95 * math.sqrt(float(np.sum(sums**2)) * g / (g - 1)) / n if g > 1 else math.inf
    return Estimate(mean, mean - half, mean + half, n, matched)


def _of(log: OwnLog, rows: npt.NDArray[np.bool_]) -> I64 | None:
    return None if log.customer is None else log.customer[rows]


def _reward_model(log: OwnLog, rows: npt.NDArray[np.bool_]) -> F64:
    """Each action's mean reward over ``rows`` (0 where the action was never taken there)."""
    q = np.zeros(len(ACTIONS))
    for a in range(len(ACTIONS)):
        taken = rows & (log.action == a)
        if taken.any():
            q[a] = float(log.reward[taken].mean())
    return q


def estimate(log: OwnLog, policy: OwnPolicy, *, method: str = "ips", seed: int = 0) -> Estimate:
    """The policy's value per decision (module docstring); ``method``: ``ips`` or ``dr``."""
    if method not in ("ips", "dr"):
        raise DataError(f"unknown estimator {method!r}: use ips or dr")
    chosen = policy(log)
    if np.all(chosen == NOTHING):
        held = ~log.targeted
        if not held.any():
            raise DataError(
                "no holdout group in the log: what sending nothing is worth cannot be measured",
                hint="set TAILOR_HOLDOUT_SHARE above 0 for the campaigns to learn from",
            )
        return _interval(log.reward[held], int(held.sum()), _of(log, held))
    rows = log.targeted
    if not rows.any():
        raise DataError("no targeted decisions in the log: a policy that sends cannot be judged")
    withheld = rows & log.qualified.any(axis=1) & (chosen == NOTHING)
    if withheld.any():
        raise DataError(
            f"the policy withholds the email from {int(withheld.sum())} customers who qualified for one:"
            " the log holds no such choice outside the holdout, whose options were never planned"
        )
    offered = log.qualified[np.arange(len(chosen)), np.minimum(chosen, _EMAILS - 1)] | (chosen == NOTHING)
    if not np.all(offered[rows]):
        raise DataError(
            f"the policy takes an action {int((~offered & rows).sum())} customers did not qualify for:"
            " the planner never offers it to them, so the log holds no such choice"
        )
    match = (log.action == chosen) & rows
    weight = np.where(match, 1.0 / log.propensity, 0.0)
    if method == "ips":
        return _interval((weight * log.reward)[rows], int(match.sum()), _of(log, rows))
    # Cross-fitted by customer where the log knows them: a customer's other decisions are her, not others.
    if log.customer is None:
        fold = np.random.default_rng(seed).integers(0, 2, size=len(chosen))
    else:
        _, cluster = np.unique(log.customer, return_inverse=True)
        fold = np.random.default_rng(seed).integers(0, 2, size=int(cluster.max()) + 1)[cluster]
    terms = np.zeros(len(chosen))
    for k in (0, 1):
        q = _reward_model(log, rows & (fold != k))
        here = rows & (fold == k)
        terms[here] = q[chosen[here]] + weight[here] * (log.reward[here] - q[log.action[here]])
    return _interval(terms[rows], int(match.sum()), _of(log, rows))


def uplift_over_nothing(log: OwnLog, policy: OwnPolicy, *, method: str = "ips", seed: int = 0) -> Estimate:
    """The policy's value less sending nothing's: two independent groups (of different customers: a
    customer's holdout is hers for good), so the variances add."""
    a = estimate(log, policy, method=method, seed=seed)
    b = estimate(log, send_nothing)
    half = math.hypot(a.high - a.value, b.high - b.value)
    diff = a.value - b.value
    return Estimate(diff, diff - half, diff + half, a.n + b.n, a.matched)


def true_value(log: OwnLog, policy: OwnPolicy) -> float:
    """The policy's expected reward on these very customers; only where every action's is known."""
    if log.truth is None:
        raise DataError("the log does not know every action's reward: its true value is unknown")
    return float(log.truth[np.arange(len(log.action)), policy(log)].mean())


def simulate_own_log(
    n: int, *, seed: int = 0, holdout: float = 0.1, explore: float = 0.1, customers: int | None = None
) -> OwnLog:
    """A log of ``n`` decisions as Tailor writes it, with every action's reward probability known.

    Each decision's customer qualifies for each email action with probability one half (some for none), the
    planner scores them, and each action lifts the customer's chance to buy over sending nothing by an
    amount that differs by action and customer, sometimes below zero, and that the planner's score follows
    with noise. A ``holdout`` share gets nothing; the rest get the best-scored action, or with probability
    ``explore`` one drawn uniformly among those they qualify for.

    By default every decision is a customer of its own. With ``customers``, the decisions are for that many
    customers (each decision's drawn uniformly), as a store's weekly campaigns are: a customer keeps her
    chance to buy, her lifts and her holdout in every decision for her, and customers differ as real ones do
    (a chance to buy of 0.1 on average, from a beta distribution: most rarely buy, a few often). What
    qualifies her changes from one decision to the next.
    """
    if not 0 < holdout < 1 or not 0 <= explore <= 0.5:
        raise DataError(f"holdout must be in (0, 1) and explore in [0, 0.5], got {holdout} and {explore}")
    if customers is not None and not 1 <= customers <= n:
        raise DataError(f"customers must be between 1 and the {n} decisions, got {customers}")
    rng = np.random.default_rng(seed)
    qualified = rng.uniform(size=(n, _EMAILS)) < 0.5
    mean_lift = [0.04, 0.06, 0.02, 0.03]
    who: I64 | None = None
    if customers is None:
        base = rng.uniform(0.02, 0.12, size=n)
        lift = rng.normal(mean_lift, 0.03, size=(n, _EMAILS))
    else:
        who = rng.integers(0, customers, size=n)
        base = rng.beta(0.5, 4.5, size=customers)[who]
        lift = rng.normal(mean_lift, 0.03, size=(customers, _EMAILS))[who]
    # The planner's scores know something of the lifts, not all: its choice beats a random one, not always.
    scores = np.where(qualified, 0.6 + 2.0 * lift + rng.normal(0, 0.05, size=(n, _EMAILS)), np.nan)
    truth = np.clip(np.column_stack([base[:, None] + lift, base]), 0.0, 1.0)
    if customers is None:
        targeted = rng.uniform(size=n) >= holdout
    else:
        targeted = (rng.uniform(size=customers) >= holdout)[who]
    log = OwnLog(targeted, np.zeros(n, dtype=np.int64), np.ones(n), scores, np.zeros(n))
    greedy = served(log)
    k = qualified.sum(axis=1)
    explored = rng.uniform(size=n) < explore
    # A uniform pick among each row's qualified actions: the rank of a uniform draw among them.
    pick = np.floor(rng.uniform(size=n) * np.maximum(k, 1)).astype(np.int64)
    order = np.cumsum(qualified, axis=1) - 1
    drawn = np.where(qualified & (order == pick[:, None]), 1, 0).argmax(axis=1)
    action = np.where(k == 0, NOTHING, np.where(explored, drawn, greedy))
    action = np.where(targeted, action, NOTHING).astype(np.int64)
    propensity = np.where(
        targeted & (k > 0),
        np.where(action == greedy, 1 - explore, 0.0) + explore / np.maximum(k, 1),
        1.0,
    )
    reward = (rng.uniform(size=n) < truth[np.arange(n), action]).astype(float)
    return OwnLog(targeted, action, propensity, scores, reward, truth, customer=who)
