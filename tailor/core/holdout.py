"""The holdout group: a stable share of customers who get no marketing email, so that what the emails did
can be measured against them (``tailor.app.attribution``).

A customer's place is drawn from an HMAC of their id under the retailer's salt (``TAILOR_HOLDOUT_SALT``):
the same customer is in or out on every replica and in every campaign, the group is a uniform draw of the
customer base, and a new salt draws a new group."""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["draw", "in_holdout"]


def draw(customer_id: str, salt: str) -> float:
    """A number in [0, 1), uniform over customers and fixed for each one under ``salt``."""
    digest = hmac.new(salt.encode(), customer_id.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def in_holdout(customer_id: str, share: float, salt: str) -> bool:
    return share > 0 and draw(customer_id, salt) < share
