"""What a campaign did: its customers' purchases after each decision, the targeted against the holdout.

The rules, as the report states them:
- A customer's window opens at the decision for them (an email made, or held back: the item's
  ``decided_at``, on the service's clock) and lasts ``TAILOR_ATTRIBUTION_DAYS``. Under the ``last_send`` rule
  (``TAILOR_ATTRIBUTION_RULE``, the default) a purchase is the last send's: the window closes early at the
  customer's next email from anywhere else (another campaign, a direct send; ``Store.sends_of``), so one
  purchase counts toward one campaign. Held-out customers' windows close the same way, so both groups are
  measured alike. Under ``every_window`` it counts toward every campaign whose window holds it.
- The comparison is by assignment (intention to treat): **targeted** is every customer decided for and not
  held out (an email made, or refused for consent, the frequency cap or nothing worth sending), **holdout**
  those refused as ``holdout``. Both are a random split of the audience (``tailor.core.holdout``), so the
  difference is what the campaign, with its refusals, did.
- Failed, cancelled and forgotten customers' items are left out, and counted.
- Engagement, of the emails the campaign made: an email counts as opened (clicked) when an email_open
  (email_click) event of its customer names its send (``Event.send_id``, the send token: the CRM's Email
  Opened and Email Link Clicked, or a click on a product link, which carries ``tailor_send=``;
  ``tailor.core.sends``). A forwarded email opened by someone else does not count. Opens are a floor: a
  client that blocks images reports none, so a click without an open counts as a click only.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from evals.uplift import conversion_uplift, revenue_uplift
from tailor.app.ops import Ops
from tailor.core.errors import DataError
from tailor.core.models import EventKind, JsonObject
from tailor.core.sends import job_send_id, send_token
from tailor.data.store import Store

__all__ = ["ATTRIBUTION_RULES", "AttributionRule", "campaign_uplift", "window_end"]

AttributionRule = Literal["last_send", "every_window"]
ATTRIBUTION_RULES: tuple[AttributionRule, ...] = ("last_send", "every_window")


def window_end(
    start: datetime,
    window: timedelta,
    sends: list[tuple[str, datetime]],
    own: str | None,
    rule: AttributionRule,
) -> tuple[datetime, bool]:
    """Where a customer's window that opened at ``start`` closes: ``start + window``, or under ``last_send``
    at their first send after ``start`` that is not ``own`` (the decision's own email), when that comes
    first. Also whether such a send closed it."""
    end = start + window
    if rule == "last_send":
        later = [when for send_id, when in sends if send_id != own and start < when < end]
        if later:
            return min(later), True
    return end, False


def campaign_uplift(
    store: Store,
    ops: Ops,
    job_id: str,
    *,
    window_days: int,
    now: datetime,
    rule: AttributionRule = "last_send",
) -> JsonObject:
    if rule not in ATTRIBUTION_RULES:
        raise DataError(
            f"unknown attribution rule {rule!r}", hint=f"use one of {', '.join(ATTRIBUTION_RULES)}"
        )
    # Per customer: whether they bought in their window, and for how much.
    groups: dict[str, list[tuple[bool, float]]] = {"targeted": [], "holdout": []}
    left_out: dict[str, int] = {}
    open_windows = 0
    handed_on = 0  # windows a later send closed early
    window = timedelta(days=window_days)
    sends: dict[str, str] = {}  # each email's send token: its customer
    secret = ops.secret("send")
    items = ops.job_items(job_id)
    every_send = store.sends_of([item.customer_id for item in items]) if rule == "last_send" else {}
    for item in items:
        result = item.result or {}
        decided = result.get("decided_at") if isinstance(result, dict) else None
        why_not = None
        if item.status == "failed":
            why_not = "failed"
        elif item.reason == "forgotten" or not store.has_customer(item.customer_id):
            why_not = "forgotten"
        elif not isinstance(decided, str):
            why_not = "no_decision_time"
        if why_not is not None:
            left_out[why_not] = left_out.get(why_not, 0) + 1
            continue
        start = datetime.fromisoformat(str(decided))
        own = job_send_id(job_id, item.customer_id) if item.status == "done" else None
        end, cut = window_end(start, window, every_send.get(item.customer_id, []), own, rule)
        handed_on += cut
        if end > now:
            open_windows += 1
        bought = store.events(item.customer_id, kinds=[EventKind.PURCHASE], since=start, until=end)
        revenue = float(sum(e.value or 0.0 for e in bought))
        group = "holdout" if item.reason == "holdout" else "targeted"
        groups[group].append((bool(bought), revenue))
        if item.status == "done":
            sends[send_token(secret, job_id, item.customer_id)] = item.customer_id
    targeted, holdout = groups["targeted"], groups["holdout"]
    conv = conversion_uplift(
        sum(b for b, _ in targeted), len(targeted), sum(b for b, _ in holdout), len(holdout)
    )
    rev = revenue_uplift([r for _, r in targeted], [r for _, r in holdout])

    def summary(values: list[tuple[bool, float]]) -> JsonObject:
        n = len(values)
        converted = sum(b for b, _ in values)
        total = round(sum(r for _, r in values), 2)
        return {
            "customers": n,
            "converted": converted,
            "rate": round(converted / n, 6) if n else None,
            "revenue": total,
            "revenue_per_customer": round(total / n, 4) if n else None,
        }

    seen = store.email_engagement(sends)
    opened = sum(EventKind.EMAIL_OPEN in seen.get(x, ()) for x in sends)
    clicked = sum(EventKind.EMAIL_CLICK in seen.get(x, ()) for x in sends)
    engagement: JsonObject = {
        "emailed": len(sends),
        "opened": opened,
        "clicked": clicked,
        "open_rate": round(opened / len(sends), 6) if sends else None,
        "click_rate": round(clicked / len(sends), 6) if sends else None,
    }
    return {
        "job_id": job_id,
        "window_days": window_days,
        "rule": rule,
        "windows_closed_by_a_later_send": handed_on,
        "engagement": engagement,
        "windows_still_open": open_windows,
        "groups": {"targeted": summary(targeted), "holdout": summary(holdout)},
        "uplift": {"conversion": conv.as_dict(), "revenue_per_customer": rev.as_dict()},
        "left_out": dict(sorted(left_out.items())),
        "rules": (
            f"a purchase within {window_days} days after the decision for a customer counts"
            + (
                ", unless another email was sent to the customer between the decision and the purchase"
                " (the last send's)"
                if rule == "last_send"
                else ", whatever other emails the customer got meanwhile (it may count for several campaigns)"
            )
            + "; targeted (every"
            " customer decided for and not held out, whether emailed or refused) against the holdout; 95%"
            " intervals: Newcombe's hybrid score for conversion, Welch's t for revenue per customer; an email"
            " is opened (clicked) when an email_open (email_click) event names its send id"
        ),
    }
