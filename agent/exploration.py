"""Exploration: a configured share of decisions drawn at random among the options the planner qualified, so
that Tailor's own decision log can judge policies it did not follow (IPS and doubly robust estimates,
``evals.policy``).

Epsilon-greedy, because its propensities are exact and closed-form: with share ``e`` and ``k`` email actions
the customer qualifies for, the planner's own choice goes out with probability ``1 - e + e/k`` and each other
with ``e/k``. The last product slot of a recommendation (``recommend``, ``win_back``) is explored the same way
over the ranked items from that slot on. A basket or a replenishment lists the customer's own items, which
are not explored.

"nothing" is never explored into, and an action that did not qualify is never sent: withholding is the
holdout's (``tailor.core.holdout``), drawn apart from this, so its group and this draw are independent.

Each draw is an HMAC of the decision's key (a job item, or the trigger and the day) under the retailer's
salt, apart from the holdout's by a prefix: a retried item draws what it drew before, and another campaign
draws afresh for the same customer.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

__all__ = ["Exploration", "draws", "epsilon_propensity"]


@dataclass(frozen=True)
class Exploration:
    """``share``: the epsilon (0: the planner's choice always); ``salt``: the retailer's secret for the
    draws; ``key``: what makes this decision's draws its own."""

    share: float = 0.0
    salt: str = ""
    key: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 0.5:
            raise ValueError(f"the exploration share must be in [0, 0.5], got {self.share}")


def draws(exploration: Exploration, customer_id: str) -> tuple[float, float, float, float]:
    """Four numbers in [0, 1), uniform and fixed for (salt, key, customer): explore the action?, which one,
    explore the slot?, which item."""
    message = "\0".join(("explore", exploration.key, customer_id)).encode()
    digest = hmac.new(exploration.salt.encode(), message, hashlib.sha256).digest()
    a, b, c, d = (int.from_bytes(digest[i : i + 8], "big") / 2**64 for i in range(0, 32, 8))
    return a, b, c, d


def epsilon_propensity(share: float, options: int, *, greedy: bool) -> float:
    """The probability epsilon-greedy gives one of ``options`` choices: the greedy one, or any other."""
    if options < 1:
        raise ValueError("epsilon-greedy needs at least one option")
    return (1.0 - share if greedy else 0.0) + share / options
