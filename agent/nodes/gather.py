from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from langgraph.runtime import Runtime

from agent.audit import record
from agent.intent import read_entities
from agent.support import HISTORY_LIMIT, ToolCall, ask_the_catalog, find_ticket
from agent.support_compose import PROBLEMS
from agent.support_state import Facts, SupportDeps, SupportState
from tailor.core.models import Event, EventKind

T = TypeVar("T")
_WANTED = 3


def _orders(history: Sequence[Event]) -> dict[str, tuple[Event, ...]]:
    lines: dict[str, list[Event]] = {}
    for e in history:
        if e.kind is EventKind.PURCHASE and e.order_id and e.id:
            lines.setdefault(e.order_id, []).append(e)
    return {o: tuple(ls) for o, ls in lines.items()}


async def gather(state: SupportState, runtime: Runtime[SupportDeps]) -> dict[str, Any]:
    """Only the facts the question needs, each through one tool over her own data (or the catalog),
    timed and counted. Nothing after the store's clock is read, so nothing after it is ever evidence."""
    start = time.perf_counter()
    deps = runtime.context
    assert state.customer is not None and state.guess is not None  # set by understand
    customer, intent = state.customer, state.guess.intent
    calls: list[ToolCall] = []

    def tool(name: str, run: Callable[[], T], found: Callable[[T], int]) -> T:
        began = time.perf_counter()
        result = run()
        calls.append(
            ToolCall(name=name, ms=round((time.perf_counter() - began) * 1000, 2), found=found(result))
        )
        return result

    personal = customer.consent.personalization
    history: Sequence[Event] = ()
    if personal:
        history = tool(
            "history", lambda: deps.store.events(customer.id, until=deps.now, limit=HISTORY_LIMIT), len
        )
    catalog = deps.recommender.catalog or deps.store.item_map()
    lines = _orders(history)
    purchases = [e for e in history if e.kind is EventKind.PURCHASE]
    entities = tool(
        "entities",
        lambda: read_entities(state.asked, orders=purchases, catalog=catalog),
        lambda e: len(e.order_ids) + len(e.unknown_order_ids) + len(e.item_ids),
    )
    if not personal:
        # Her orders were not read, so no number can be said to be none of hers.
        entities = replace(entities, order_ids=(), unknown_order_ids=(), by_reference=False)
    elif entities.unknown_order_ids:
        # Only her newest events were read: an older order of hers is looked up before "no such order".
        older = tool(
            "orders",
            lambda: _orders(deps.store.order_lines(customer.id, entities.unknown_order_ids, until=deps.now)),
            len,
        )
        found = {o: older[o] for o in entities.unknown_order_ids if o in older}
        if found:
            lines = {**lines, **found}
            entities = replace(
                entities,
                order_ids=(*entities.order_ids, *found),
                unknown_order_ids=tuple(o for o in entities.unknown_order_ids if o not in found),
            )
    newest = tuple(sorted(lines, key=lambda o: max(e.timestamp for e in lines[o]), reverse=True))
    asked_orders = {o: lines[o] for o in entities.order_ids if o in lines}
    facts: dict[str, Any] = {"orders": asked_orders, "latest_orders": newest, "lines": lines}
    if intent in PROBLEMS or intent == "other":
        wanted_items = set(entities.item_ids) | {e.item_id for ls in asked_orders.values() for e in ls}
        returns = tuple(e for e in history if e.kind is EventKind.RETURN and e.id)
        related = tuple(r for r in returns if r.item_id in wanted_items or r.order_id in asked_orders)
        # Her latest return stands in only for a question about what she received: for a late parcel it is
        # noise.
        fallback = returns[-1:] if intent in ("return_refund", "damaged_item") else ()
        facts["returns"] = tool("returns", lambda: related or fallback, len)
        ticket = tool(
            "ticket",
            lambda: find_ticket(deps.store, customer.id, state.asked, history, deps.search, deps.now),
            lambda t: int(t is not None),
        )
        # Her ticket stands as evidence only when it is about this: the order asked about, or the same kind
        # of problem. Her last ticket about something else ("other colours?") is no answer to "it's late".
        if ticket is not None and not (
            (ticket.order_id and ticket.order_id in asked_orders)
            or (
                (not asked_orders or entities.by_reference)
                and deps.intents.guess(ticket.text or "").intent == intent
            )
        ):
            ticket = None
        facts["ticket"] = ticket
        # Amends for a problem the question names, or that her ticket about it reports: a question that only
        # reads like a late parcel ("do you deliver to France?") is offered nothing.
        reported = state.guess.named or ticket is not None
        facts["offers"] = tool(
            "policy", lambda: deps.brand.offers_for(intent) if intent in PROBLEMS and reported else (), len
        )
    if intent == "product_question":
        facts["items"] = tool(
            "catalog_items", lambda: tuple(catalog[i] for i in entities.item_ids if i in catalog), len
        )
    if personal and deps.ask is not None and intent in ("product_question", "gift_idea"):
        ask = deps.ask
        facts["catalog_hits"] = tool(
            "catalog_search", lambda: tuple(ask_the_catalog(ask, customer.id, state.asked, history)), len
        )
    # Nothing is sold to a customer with a problem: recommendations answer product and gift questions.
    if personal and intent in ("product_question", "gift_idea", "other"):
        facts["recommendations"] = tool(
            "recommendations",
            lambda: tuple(deps.recommender.recommend(customer.id, _WANTED, now=deps.now)),
            len,
        )
        if deps.now is not None:
            now = deps.now
            facts["popular"] = tool(
                "best_sellers",
                lambda: tuple(deps.recommender.popular(now=now, country=customer.country, k=4 * _WANTED)),
                len,
            )
    if intent == "email_complaint":
        facts["contacts"] = tool(
            "contacts",
            lambda: tuple(
                sorted(
                    (t for t in deps.store.contacts(customer.id) if deps.now is None or t < deps.now),
                    reverse=True,
                )
            ),
            len,
        )
    return {
        "history": history,
        "catalog": catalog,
        "entities": entities,
        "facts": Facts(**facts),
        "tools": calls,
        "audit": record("gather", start, tools=[c.name for c in calls], found=sum(c.found for c in calls)),
    }
