"""What a campaign did: its customers' purchases after each decision, the targeted against the holdout, and
the purchases credited to the emails it sent.

The rules, as the report states them:
- A customer's window opens at the decision for them (an email made, or held back: the item's
  ``decided_at``, on the service's clock) and lasts ``TAILOR_ATTRIBUTION_DAYS``.
- The comparison is by assignment (intention to treat), over whole windows: **targeted** is every customer
  decided for and not held out (an email made, or refused for consent, the frequency cap or nothing worth
  sending), **holdout** those refused as ``holdout``. Both are a random split of the audience
  (``tailor.core.holdout``), so the difference is what the campaign, with its refusals, did. Whole windows,
  whatever else the customer was sent: what happens after the split must not decide what is counted, and
  other campaigns' emails do not reach the two groups alike (the frequency cap holds them back from the
  emailed customers only), so cutting windows at them would favour the campaign.
- **Credit**, of the emails the campaign sent: under ``last_send`` (``TAILOR_ATTRIBUTION_RULE``, the
  default) a purchase is credited to the last email the customer was sent before it, so an email's window
  closes early at the customer's next email from anywhere else (another campaign, a direct send;
  ``Store.sends_of``) and a purchase is credited to at most one email; under ``every_window`` to every email
  whose window holds it. Credit says which send a purchase followed, not what the send caused: that is
  the comparison's.
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
    credited: list[tuple[bool, float]] = []  # per email sent: under ``rule``
    left_out: dict[str, int] = {}
    open_windows = 0
    handed_on = 0  # emails' windows a later send closed early
    window = timedelta(days=window_days)
    sends: dict[str, str] = {}  # each email's send token: its customer
    secret = ops.secret("send")
    items = ops.job_items(job_id)
    emailed = [item.customer_id for item in items if item.status == "done"]
    every_send = store.sends_of(emailed) if rule == "last_send" else {}
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
        if start + window > now:
            open_windows += 1
        bought = store.events(item.customer_id, kinds=[EventKind.PURCHASE], since=start, until=start + window)
        group = "holdout" if item.reason == "holdout" else "targeted"
        groups[group].append((bool(bought), float(sum(e.value or 0.0 for e in bought))))
        if item.status == "done":
            sends[send_token(secret, job_id, item.customer_id)] = item.customer_id
            own = job_send_id(job_id, item.customer_id)
            end, cut = window_end(start, window, every_send.get(item.customer_id, []), own, rule)
            handed_on += cut
            mine = [e for e in bought if e.timestamp < end]
            credited.append((bool(mine), float(sum(e.value or 0.0 for e in mine))))
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
        "engagement": engagement,
        "windows_still_open": open_windows,
        "groups": {"targeted": summary(targeted), "holdout": summary(holdout)},
        "uplift": {"conversion": conv.as_dict(), "revenue_per_customer": rev.as_dict()},
        "credit": {
            "rule": rule,
            "emails": len(credited),
            "converted": sum(b for b, _ in credited),
            "revenue": round(sum(r for _, r in credited), 2),
            "windows_closed_by_a_later_send": handed_on,
        },
        "left_out": dict(sorted(left_out.items())),
        "rules": (
            f"a purchase within {window_days} days after the decision for a customer counts; targeted (every"
            " customer decided for and not held out, whether emailed or refused) against the holdout, over"
            " whole windows; 95% intervals: Newcombe's hybrid score for conversion, Welch's t for revenue per"
            " customer; credit: "
            + (
                "a purchase is credited to the last email the customer was sent before it (an email's window"
                " closes at the customer's next email from anywhere else)"
                if rule == "last_send"
                else "a purchase is credited to every email whose window holds it"
            )
            + "; an email is opened (clicked) when an email_open (email_click) event names its send id"
        ),
    }
