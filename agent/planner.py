"""Next-best action: score every action the customer could get, pick one, keep the rest as rejected."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from itertools import pairwise
from statistics import median
from typing import Literal

from agent.exploration import Exploration, draws, epsilon_propensity
from agent.state import ACTIONS, Action, Alternative, Plan, PlanFact, PlannedProduct, SlotDraw, Trigger
from guardrails.base import Finding
from tailor.core.models import Event, EventKind, Evidence, Item, Recommendation, Refusal

__all__ = ["plan_action", "refused_plan"]

_MAX_PRODUCTS = 3
_CART_WINDOW = timedelta(days=14)
_WIN_BACK_AFTER = timedelta(days=90)
# The actions whose products are the ranker's list, so one of their slots can be explored; and how many
# ranked items, from that slot on, it is drawn among.
_SLOT_ACTIONS = frozenset({"recommend", "win_back"})
_SLOT_POOL = 6


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


def _not_qualified(
    events: Sequence[Event],
    recommendations: Sequence[Recommendation],
    last_purchase: datetime | None,
    now: datetime,
) -> dict[Action, str]:
    """Why each action could not be offered, for the ones that did not make the candidate list."""
    if last_purchase is None:
        silence = "no purchase on record to win back from"
    elif now - last_purchase < _WIN_BACK_AFTER:
        days = (now - last_purchase).days
        silence = f"last purchase {days} days ago, under the {_WIN_BACK_AFTER.days}-day win-back threshold"
    else:
        silence = "no relevant item to win them back with"
    carts = sum(1 for e in events if e.kind is EventKind.ADD_TO_CART)
    return {
        "abandoned_cart": (
            f"no in-stock item left unbought in the basket in the last {_CART_WINDOW.days} days"
            + (f" ({carts} basket event(s) in the history)" if carts else " (no basket in the history)")
        ),
        "replenishment": "no regularly bought item is due again",
        "win_back": silence,
        "recommend": "no relevant item found" if not recommendations else "no recommended item qualified",
    }


def _history_fact(events: Sequence[Event], recommendations: Sequence[Recommendation]) -> PlanFact:
    purchases = [e for e in events if e.kind is EventKind.PURCHASE]
    latest = max(purchases, key=lambda e: e.timestamp, default=None)
    carts = [e for e in events if e.kind is EventKind.ADD_TO_CART and e.id]
    summary = (
        f"{len(events)} event(s) in the history, {len(purchases)} purchase(s), {len(carts)} basket event(s), "
        f"{len(recommendations)} recommended item(s)"
    )
    if latest is not None:
        summary += f"; last purchase on {latest.timestamp:%Y-%m-%d}"
    ids = [e.id for e in [*([latest] if latest else []), *carts[-3:]] if e is not None and e.id]
    return PlanFact(kind="history", summary=summary, event_ids=tuple(dict.fromkeys(ids)))


def plan_action(
    *,
    trigger: Trigger,
    events: Sequence[Event],
    recommendations: Sequence[Recommendation],
    catalog: Mapping[str, Item],
    now: datetime,
    exploration: Exploration | None = None,
    customer_id: str = "",
) -> Plan:
    """The best-scored qualified action; with ``exploration`` on, sometimes another qualified one, and the
    last product slot of a recommendation sometimes a lower-ranked item (``agent.exploration``), each with
    its exact probability on the plan."""
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
    greedy = candidates[0][0]
    chosen, propensity, explored, slot = 0, 1.0, False, None
    if exploration is not None and exploration.share > 0:
        explore_action, which, explore_slot, which_item = draws(exploration, customer_id)
        emails = [i for i, c in enumerate(candidates) if c[0] != "nothing"]
        if emails:
            if explore_action < exploration.share:
                chosen = emails[int(which * len(emails))]
                explored = chosen != 0
            propensity = epsilon_propensity(exploration.share, len(emails), greedy=chosen == 0)
        if candidates[chosen][0] in _SLOT_ACTIONS and len(recs) > _MAX_PRODUCTS:
            slot = _draw_slot(recs, exploration.share, explore_slot, which_item)
    action, score, reason, products = candidates[chosen]
    if slot is not None:
        by_id = {p.item_id: p for p in recs}
        products = [*products[: slot.index], by_id[slot.item_id]]
    considered = {a for a, *_ in candidates}
    why_not = _not_qualified(events, recommendations, last_purchase, now)
    rejected = (
        *(
            Alternative(action=a, score=round(s, 3), why=w)
            for i, (a, s, w, _) in enumerate(candidates)
            if i != chosen
        ),
        *(Alternative(action=a, score=0.0, why=why_not[a]) for a in ACTIONS if a not in considered),
    )
    evidence: tuple[Evidence | PlanFact, ...] = tuple(e for p in products for e in p.evidence)
    if action == "nothing":
        evidence = (_history_fact(events, recommendations),)
    return Plan(
        action=action,
        score=round(score, 3),
        reason=reason,
        products=tuple(products),
        rejected=rejected,
        evidence=evidence,
        refused="nothing_relevant" if action == "nothing" else None,
        greedy=greedy,
        propensity=propensity,
        explored=explored,
        slot=slot,
    )


def _draw_slot(recs: Sequence[PlannedProduct], share: float, explore: float, which: float) -> SlotDraw:
    """The last product slot of a recommendation, drawn among the ranked items from that slot on."""
    index = _MAX_PRODUCTS - 1
    pool = tuple(p.item_id for p in recs[index : index + _SLOT_POOL])
    pick = int(which * len(pool)) if explore < share else 0
    return SlotDraw(
        index=index,
        pool=pool,
        item_id=pool[pick],
        propensity=epsilon_propensity(share, len(pool), greedy=pick == 0),
        explored=pick != 0,
    )


_GATE_FACTS: dict[str, Literal["consent", "quiet_hours", "frequency_cap", "holdout"]] = {
    "holdout": "holdout",
    "no_marketing_consent": "consent",
    "no_personalization_consent": "consent",
    "quiet_hours": "quiet_hours",
    "frequency_cap": "frequency_cap",
}


def refused_plan(refusal: Refusal, findings: Sequence[Finding] = ()) -> Plan:
    """The "nothing" plan of a run stopped before planning (no consent, quiet hours, contacted too
    recently, unknown customer). Nothing of the customer's history was read, so no action was scored:
    each is rejected at 0 with the rule that stopped the run, and the evidence is that rule's findings."""
    found = list(findings) or [Finding(refusal.reason, refusal.detail)]
    facts = tuple(
        PlanFact(kind=_GATE_FACTS.get(f.rule, "unknown_customer"), summary=f"{f.rule}: {f.message}")
        for f in found
    )
    why = f"not considered: {refusal.reason.replace('_', ' ')} ({refusal.detail})"
    return Plan(
        action="nothing",
        score=0.0,
        reason=f"{refusal.reason.replace('_', ' ')}: {refusal.detail}",
        rejected=tuple(Alternative(action=a, score=0.0, why=why) for a in ACTIONS if a != "nothing"),
        evidence=facts,
        refused=refusal.reason,
    )
