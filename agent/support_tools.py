"""The support agent's tools: each one look at this customer's own data, or the catalog, before the clock.

Both ways of thinking use these tools and nothing else. Offline, the question's intent picks them
(``plan``). With a model, the model picks among those its intent allows (``ALLOWED``), by the OpenAI
tool-calling protocol (``agent/support_model.py``). Whatever the plan needs and the model did not pick is
run after it (``Toolbox.run``), so an answer never lacks a fact because a model forgot to ask.

No tool takes a customer: the run's customer is the only one a tool can read, and no tool reads past the
store's clock. Each call is timed and counted into the answer (``ToolCall``), with who asked for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal, TypeVar

from agent.intent import Entities, Intent, IntentGuess, read_entities
from agent.support import (
    HISTORY_LIMIT,
    WANTED,
    ToolCall,
    ToolSpec,
    ask_the_catalog,
    find_ticket,
    title_of,
    untold,
)
from agent.support_compose import PROBLEMS
from agent.support_state import Facts, SupportDeps
from guardrails.injection import defuse
from tailor.core.models import Customer, Event, EventKind, Item

__all__ = ["ALLOWED", "TOOLS", "Toolbox", "plan"]

T = TypeVar("T")
_SHOWN = 5  # lines of a tool's answer shown to a model

By = Literal["plan", "model"]


_NONE: Mapping[str, Any] = {"type": "object", "properties": {}}
TOOLS: dict[str, ToolSpec] = {
    t.name: t
    for t in (
        ToolSpec(
            "orders",
            "The lines of one of the customer's orders, by its number; or her latest orders without one.",
            {
                "type": "object",
                "properties": {"order_id": {"type": "string", "maxLength": 20}},
            },
        ),
        ToolSpec(
            "returns",
            "Her returns: of the order asked about, else her latest.",
            _NONE,
        ),
        ToolSpec("ticket", "The customer's own support ticket about this problem, if she filed one.", _NONE),
        ToolSpec("policy", "What the support policy lets the agent offer for this kind of problem.", _NONE),
        ToolSpec("catalog_items", "Price and stock of each product the question names.", _NONE),
        ToolSpec(
            "catalog_search",
            "Products in the shop's catalog that match a description and suit the customer.",
            {
                "type": "object",
                "properties": {"query": {"type": "string", "maxLength": 120}},
            },
        ),
        ToolSpec("recommendations", "Products picked for the customer from her history, with why.", _NONE),
        ToolSpec("best_sellers", "The best sellers in the customer's country.", _NONE),
        ToolSpec("contacts", "The marketing emails sent to the customer, and her consent to them.", _NONE),
    )
}

# What a model may look at for each kind of question. Nothing is sold to a customer with a problem: a
# question about a late parcel gets no recommendations and no catalog search, whoever asks for them.
_SELLING = ("catalog_items", "catalog_search", "recommendations", "best_sellers")
ALLOWED: dict[Intent, frozenset[str]] = {
    "late_delivery": frozenset({"orders", "returns", "ticket", "policy"}),
    "damaged_item": frozenset({"orders", "returns", "ticket", "policy"}),
    "return_refund": frozenset({"orders", "returns", "ticket", "policy"}),
    "product_question": frozenset({"orders", "returns", *_SELLING}),
    "gift_idea": frozenset({"orders", "returns", *_SELLING}),
    "other": frozenset({"orders", "returns", "ticket", "policy", *_SELLING}),
    "email_complaint": frozenset({"contacts"}),
    "account_consent": frozenset({"contacts"}),
}


def plan(
    intent: Intent, entities: Entities, *, personal: bool, can_search: bool, dated: bool
) -> tuple[str, ...]:
    """The tools an answer to this question needs, in the order they run: the offline way of thinking, and
    what a model's picks are completed with."""
    out: list[str] = []
    if personal and entities.unknown_order_ids:
        out.append("orders")  # only her newest events were read: an older order is looked up
    if intent in PROBLEMS or intent == "other":
        out += ["returns", "ticket", "policy"]
    if intent == "product_question":
        out.append("catalog_items")
    if personal and can_search and intent in ("product_question", "gift_idea"):
        out.append("catalog_search")
    if personal and intent in ("product_question", "gift_idea", "other"):
        out.append("recommendations")
        if dated:
            out.append("best_sellers")
    if intent == "email_complaint":
        out.append("contacts")
    return tuple(out)


def _orders(history: Sequence[Event]) -> dict[str, tuple[Event, ...]]:
    lines: dict[str, list[Event]] = {}
    for e in history:
        if e.kind is EventKind.PURCHASE and e.order_id and e.id:
            lines.setdefault(e.order_id, []).append(e)
    return {o: tuple(ls) for o, ls in lines.items()}


def _day(event: Event) -> str:
    return f"{event.timestamp:%Y-%m-%d}"


class Toolbox:
    """The tools of one support run, bound to its customer and its clock. Each tool runs once per run (a
    second call answers from the first); ``facts()`` is what they found."""

    def __init__(self, deps: SupportDeps, customer: Customer, guess: IntentGuess, asked: str) -> None:
        self.deps, self.customer, self.guess, self.asked = deps, customer, guess, asked
        self.calls: list[ToolCall] = []
        self.refused: list[str] = []  # what a model asked for that its question does not allow
        self._done: dict[str, Any] = {}
        self.personal = customer.consent.personalization
        self.history: Sequence[Event] = ()
        if self.personal:
            self.history = self._timed(
                "history",
                "plan",
                lambda: deps.store.events(customer.id, until=deps.now, limit=HISTORY_LIMIT),
                len,
            )
        self.catalog: Mapping[str, Item] = deps.recommender.catalog or deps.store.item_map()
        self.lines = _orders(self.history)
        purchases = [e for e in self.history if e.kind is EventKind.PURCHASE]
        entities = self._timed(
            "entities",
            "plan",
            lambda: read_entities(asked, orders=purchases, catalog=self.catalog),
            lambda e: len(e.order_ids) + len(e.unknown_order_ids) + len(e.item_ids),
        )
        if not self.personal:
            # Her orders were not read, so no number can be said to be none of hers.
            entities = replace(entities, order_ids=(), unknown_order_ids=(), by_reference=False)
        self.entities: Entities = entities

    @property
    def intent(self) -> Intent:
        return self.guess.intent

    def plan(self) -> tuple[str, ...]:
        return plan(
            self.intent,
            self.entities,
            personal=self.personal,
            can_search=self.deps.ask is not None,
            dated=self.deps.now is not None,
        )

    def allowed(self) -> tuple[ToolSpec, ...]:
        """The tools a model may pick for this question (none of her data without her consent)."""
        names = ALLOWED[self.intent] if self.personal else ALLOWED[self.intent] & {"contacts"}
        return tuple(spec for name, spec in TOOLS.items() if name in names)

    def ran(self, name: str) -> bool:
        return name in self._done

    def _timed(self, name: str, by: By, run: Callable[[], T], found: Callable[[T], int]) -> T:
        began = time.perf_counter()
        result = run()
        ms = round((time.perf_counter() - began) * 1000, 2)
        self.calls.append(ToolCall(name=name, ms=ms, found=found(result), by=by))
        return result

    def _once(self, name: str, by: By, run: Callable[[], T], found: Callable[[T], int]) -> T:
        if name not in self._done:
            self._done[name] = self._timed(name, by, run, found)
        result: T = self._done[name]
        return result

    # -- the tools --------------------------------------------------------------------------------
    def run(self, name: str, by: By = "plan", **args: Any) -> str:
        """Run one tool and say what it found, in a few plain lines (what a model is shown)."""
        if name == "orders":
            return self.orders(by, order_id=args.get("order_id"))
        if name == "catalog_search":
            return self.catalog_search(by, query=args.get("query"))
        tool: Callable[[By], str] = getattr(self, name)
        return tool(by)

    def call(self, name: str, args: Mapping[str, Any]) -> str:
        """A model's call: run when its question allows that tool, refused in words otherwise."""
        if name not in {t.name for t in self.allowed()}:
            self.refused.append(name)
            return f"The tool {name!r} is not available for this question."
        return self.run(name, "model", **{k: v for k, v in args.items() if isinstance(v, str)})

    def orders(self, by: By = "plan", order_id: str | None = None) -> str:
        wanted = tuple(self.entities.unknown_order_ids)
        if order_id is not None:
            # A model's argument is data like any other: only a number of hers is ever looked at.
            order_id = order_id.strip()[:20]
            wanted = (order_id,) if order_id and order_id not in self.lines else ()
        if wanted and self.personal:
            key = "orders" if order_id is None else f"orders:{order_id}"
            older = self._once(
                key,
                by,
                lambda: _orders(self.deps.store.order_lines(self.customer.id, wanted, until=self.deps.now)),
                len,
            )
            found = {o: older[o] for o in wanted if o in older}
            if found:
                self.lines = {**self.lines, **found}
                if order_id is None:
                    self.entities = replace(
                        self.entities,
                        order_ids=(*self.entities.order_ids, *found),
                        unknown_order_ids=tuple(o for o in self.entities.unknown_order_ids if o not in found),
                    )
        elif order_id is not None:
            self._once(f"orders:{order_id}", by, lambda: order_id in self.lines, int)
        if order_id is not None and order_id in self.lines and not self.entities.order_ids:
            # The question named no order and the model found one of hers: that is the order asked about.
            self.entities = replace(self.entities, order_ids=(order_id,), by_reference=True)
        if order_id is not None and order_id not in self.lines:
            return f"No order of hers is numbered {order_id}. Her latest orders:\n" + self._latest_text()
        chosen = (
            [order_id] if order_id is not None else list(self.entities.order_ids) or self.newest()[:_SHOWN]
        )
        return "\n".join(self._order_text(o) for o in chosen if o in self.lines) or "She has no orders."

    def newest(self) -> tuple[str, ...]:
        return tuple(sorted(self.lines, key=lambda o: max(e.timestamp for e in self.lines[o]), reverse=True))

    def _order_text(self, order_id: str) -> str:
        ls = self.lines[order_id]
        titles = ", ".join(title_of(self.catalog, e.item_id) for e in ls[:_SHOWN])
        more = f" and {len(ls) - _SHOWN} more" if len(ls) > _SHOWN else ""
        return f"order {order_id} on {_day(ls[0])}: {titles}{more}"

    def _latest_text(self) -> str:
        return "\n".join(self._order_text(o) for o in self.newest()[:3]) or "She has no orders."

    def asked_orders(self) -> dict[str, tuple[Event, ...]]:
        return {o: self.lines[o] for o in self.entities.order_ids if o in self.lines}

    def returns(self, by: By = "plan") -> str:
        asked = self.asked_orders()

        def find() -> tuple[Event, ...]:
            wanted = set(self.entities.item_ids) | {e.item_id for ls in asked.values() for e in ls}
            returns = tuple(e for e in self.history if e.kind is EventKind.RETURN and e.id)
            related = tuple(r for r in returns if r.item_id in wanted or r.order_id in asked)
            # Her latest return stands in only for a question about what she received: for a late parcel
            # it is noise.
            fallback = returns[-1:] if self.intent in ("return_refund", "damaged_item") else ()
            return related or fallback

        found: tuple[Event, ...] = self._once("returns", by, find, len)
        return (
            "\n".join(f"returned {title_of(self.catalog, r.item_id)} on {_day(r)}" for r in found)
            or "No returns about this."
        )

    def ticket(self, by: By = "plan") -> str:
        asked = self.asked_orders()

        def find() -> Event | None:
            deps = self.deps
            ticket = find_ticket(
                deps.store, self.customer.id, self.asked, self.history, deps.search, deps.now
            )
            # Her ticket stands as evidence only when it is about this: the order asked about, or the same
            # kind of problem. Her last ticket about something else ("other colours?") is no answer to "it's
            # late".
            if ticket is not None and not (
                (ticket.order_id and ticket.order_id in asked)
                or (
                    (not asked or self.entities.by_reference)
                    and deps.intents.guess(ticket.text or "").intent == self.intent
                )
            ):
                return None
            return ticket

        ticket: Event | None = self._once("ticket", by, find, lambda t: int(t is not None))
        if ticket is None:
            return "She filed no ticket about this."
        # A ticket is untrusted text: a model is shown it defused, as data, and without her contact details.
        said, _ = defuse(" ".join((ticket.text or "").split())[:200])
        said = untold(said, self.customer, self.deps.brand)
        return (
            f"ticket of {_day(ticket)}{f' about order {ticket.order_id}' if ticket.order_id else ''}: {said}"
        )

    def policy(self, by: By = "plan") -> str:
        intent = self.intent
        if intent in PROBLEMS and not self.guess.named:
            self.ticket(by)  # a problem her ticket reports is a problem named

        def find() -> tuple[str, ...]:
            # Amends for a problem the question names, or that her ticket about it reports: a question that
            # only reads like a late parcel ("do you deliver to France?") is offered nothing.
            reported = self.guess.named or self._done.get("ticket") is not None
            return self.deps.brand.offers_for(intent) if intent in PROBLEMS and reported else ()

        offers: tuple[str, ...] = self._once("policy", by, find, len)
        return "May offer: " + "; ".join(offers) if offers else "The policy offers nothing for this."

    def catalog_items(self, by: By = "plan") -> str:
        items: tuple[Item, ...] = self._once(
            "catalog_items",
            by,
            lambda: tuple(self.catalog[i] for i in self.entities.item_ids if i in self.catalog),
            len,
        )
        return "\n".join(
            f"{i.title}: {i.price_text}, {'in' if i.in_stock else 'out of'} stock" for i in items
        ) or ("The question names no product of the catalog.")

    def catalog_search(self, by: By = "plan", query: str | None = None) -> str:
        ask = self.deps.ask
        if ask is None or not self.personal:
            return "The catalog cannot be searched here."
        text = " ".join((query or "").split())[:120] or self.asked
        hits = self._once(
            "catalog_search",
            by,
            lambda: tuple(ask_the_catalog(ask, self.customer.id, text, self.history)),
            len,
        )
        return "\n".join(title_of(self.catalog, h.item_id) for h in hits) or "Nothing in the catalog matches."

    def recommendations(self, by: By = "plan") -> str:
        if not self.personal:
            return "Nothing can be recommended without her consent."
        recs = self._once(
            "recommendations",
            by,
            lambda: tuple(self.deps.recommender.recommend(self.customer.id, WANTED, now=self.deps.now)),
            len,
        )
        return "\n".join(
            f"{r.item.title}: {r.evidence[0].summary}" if r.evidence else r.item.title for r in recs
        ) or ("Nothing to recommend.")

    def best_sellers(self, by: By = "plan") -> str:
        now = self.deps.now
        if now is None or not self.personal:
            return "No best sellers without the store's clock."
        country = self.customer.country
        picks = self._once(
            "best_sellers",
            by,
            lambda: tuple(self.deps.recommender.popular(now=now, country=country, k=4 * WANTED)),
            len,
        )
        return "\n".join(title_of(self.catalog, p.item_id) for p in picks[:_SHOWN]) or "No best sellers."

    def contacts(self, by: By = "plan") -> str:
        now = self.deps.now
        sent: tuple[Any, ...] = self._once(
            "contacts",
            by,
            lambda: tuple(
                sorted(
                    (t for t in self.deps.store.contacts(self.customer.id) if now is None or t < now),
                    reverse=True,
                )
            ),
            len,
        )
        consent = "given" if self.customer.consent.marketing_email else "not given"
        last = f", the last on {sent[0]:%Y-%m-%d}" if sent else ""
        return f"{len(sent)} marketing email(s) sent{last}; marketing consent {consent}."

    def facts(self) -> Facts:
        d = self._done
        return Facts(
            orders=self.asked_orders(),
            latest_orders=self.newest(),
            lines=self.lines,
            returns=d.get("returns", ()),
            ticket=d.get("ticket"),
            items=d.get("catalog_items", ()),
            catalog_hits=d.get("catalog_search", ()),
            recommendations=d.get("recommendations", ()),
            popular=d.get("best_sellers", ()),
            offers=d.get("policy", ()),
            contacts=d.get("contacts", ()),
        )
