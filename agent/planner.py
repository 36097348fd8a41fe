"""Next-best action: score every action the customer could get, pick one, keep the rest as rejected."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from itertools import pairwise
from statistics import median

from agent.state import Action, Alternative, Plan, PlannedProduct, Trigger
from tailor.models import Event, EventKind, Evidence, Item, Recommendation

__all__ = ["plan_action"]

_MAX_PRODUCTS = 3
_CART_WINDOW = timedelta(days=14)
_WIN_BACK_AFTER = timedelta(days=90)


def _cart(events: Sequence[Event], now: datetime, catalog: Mapping[str, Item]) -> list[PlannedProduct]:
    bought_after: dict[str, datetime] = {}
    for e in events:
        if e.kind is EventKind.PURCHASE and e.item_id:
            bought_after[e.item_id] = max(bought_after.get(e.item_id, e.timestamp), e.timestamp)
    out: dict[str, PlannedProduct] = {}
    for e in events:
        if e.kind is not EventKind.ADD_TO_CART or not e.item_id or now - e.timestamp > _CART_WINDOW:
            continue
        item = catalog.get(e.item_id)
        if item is None or not item.in_stock or bought_after.get(e.item_id, e.timestamp) > e.timestamp:
            continue
        ev = Evidence(
            kind="cart",
            summary=f"added {item.title} to the basket",
            event_ids=(e.id or "",),
            item_ids=(e.item_id,),
        )
        out[e.item_id] = PlannedProduct(item_id=e.item_id, score=1.0, evidence=(ev,))
    return list(out.values())[:_MAX_PRODUCTS]


def _due(rec: Recommendation, events: Sequence[Event], now: datetime) -> float:
    """How overdue a repeat item is: days since its last purchase over the usual interval (0 if not due)."""
    times = sorted(
        {e.timestamp.date() for e in events if e.kind is EventKind.PURCHASE and e.item_id == rec.item.id}
    )
    if len(times) < 3:
        return 0.0
    gaps = [(b - a).days for a, b in pairwise(times) if (b - a).days > 0]
    if not gaps:
        return 0.0
    usual = median(gaps)
    since = (now.date() - times[-1]).days
    return since / usual if usual > 0 else 0.0


def plan_action(
    *,
    trigger: Trigger,
    events: Sequence[Event],
    recommendations: Sequence[Recommendation],
    catalog: Mapping[str, Item],
    now: datetime,
) -> Plan:
    purchases = [e for e in events if e.kind is EventKind.PURCHASE]
    last_purchase = max((e.timestamp for e in purchases), default=None)
    candidates: list[tuple[Action, float, str, list[PlannedProduct]]] = []

    cart = _cart(events, now, catalog)
    if cart:
        bonus = 0.2 if trigger.kind == "abandoned_cart" else 0.0
        candidates.append(("abandoned_cart", 0.8 + bonus, f"{len(cart)} item(s) left in the basket", cart))

    due = sorted(((r, _due(r, events, now)) for r in recommendations), key=lambda p: -p[1])
    due_products = [
        PlannedProduct(item_id=r.item.id, score=d, evidence=r.evidence) for r, d in due if d >= 1.0
    ]
    if due_products:
        top = min(due[0][1], 3.0)
        candidates.append(
            (
                "replenishment",
                0.5 + 0.1 * top,
                f"{len(due_products)} regular item(s) are due again",
                due_products[:_MAX_PRODUCTS],
            )
        )

    recs = [PlannedProduct(item_id=r.item.id, score=r.score, evidence=r.evidence) for r in recommendations]
    if last_purchase is not None and now - last_purchase >= _WIN_BACK_AFTER and recs:
        bonus = 0.3 if trigger.kind == "win_back" else 0.0
        days = (now - last_purchase).days
        candidates.append(("win_back", 0.55 + bonus, f"no purchase for {days} days", recs[:_MAX_PRODUCTS]))
    if recs:
        evidenced = sum(1 for p in recs[:_MAX_PRODUCTS] if p.evidence)
        candidates.append(
            ("recommend", 0.4 + 0.05 * evidenced, f"{len(recs)} relevant item(s) found", recs[:_MAX_PRODUCTS])
        )
    candidates.append(("nothing", 0.1, "nothing relevant enough to send", []))

    candidates.sort(key=lambda c: -c[1])
    action, score, reason, products = candidates[0]
    rejected = tuple(Alternative(action=a, score=round(s, 3), why=w) for a, s, w, _ in candidates[1:])
    evidence = tuple(e for p in products for e in p.evidence)
    return Plan(
        action=action,
        score=round(score, 3),
        reason=reason,
        products=tuple(products),
        rejected=rejected,
        evidence=evidence,
    )
