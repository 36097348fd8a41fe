"""Suggestions for a support agent: resolve, make amends within what the brand allows, suggest a product.

Each comes with talking points and the evidence from the customer's own history behind it: real event ids
(a ticket, a return, an order) or real item ids (a recommendation, a best seller in her country). Three come
back whenever her history and the catalog hold three well-founded ones; every talking point has been through
the injection and privacy rails first, and what a rail changed or dropped is recorded.

A ticket is untrusted text: anyone who can write to the CRM can write one. It is quoted as data, never as
an instruction and never as the customer's own words (nothing records who wrote it), and only when the
untrusted-text rail lets it be quoted whole; otherwise it is withheld whole, with a note that says why,
and the agent is pointed to the ticket itself. Offers come from the retailer configuration alone."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from guardrails import injection, output, privacy, untrusted
from guardrails.base import Finding, RailContext
from guardrails.injection import defuse
from prompts import PromptRef, render
from retrieval.embeddings import Embedder
from retrieval.rules import ColdPick
from retrieval.search import CatalogHit
from retrieval.vector_store import HistoryHit, VectorStore
from tailor.core.brand import BrandConfig
from tailor.core.models import Customer, Event, EventKind, Evidence, Item
from tailor.data.store import Store

__all__ = [
    "WANTED",
    "CatalogAsk",
    "GuardrailNote",
    "HistorySearch",
    "Suggestion",
    "SupportAnswer",
    "SupportModel",
    "ToolSpec",
    "ToolUse",
    "history_search",
    "resolve_suggestion",
    "untold",
]

HistorySearch = Callable[[str, str, int], Sequence[HistoryHit]]  # (customer_id, question, limit) -> hits
# (customer_id, question, her purchases newest first, item ids to leave out, limit) -> ``CatalogHit``s
CatalogAsk = Callable[[str, str, Sequence[str], Sequence[str], int], Sequence[CatalogHit]]

WANTED = 3  # suggestions in an answer
HISTORY_LIMIT = 500  # her newest events read for an answer
_REDACTED = "[redacted: {}]"


def history_search(vectors: VectorStore, embedder: Embedder) -> HistorySearch:
    """Semantic search over one customer's own text history in Qdrant (``VectorStore.search_history``)."""

    def search(customer_id: str, question: str, limit: int) -> Sequence[HistoryHit]:
        vector = embedder.encode([question], keep=False)[0]
        return list(vectors.search_history(customer_id, vector, limit))

    return search


class Suggestion(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str
    title: str
    talking_points: tuple[str, ...]
    evidence: tuple[Evidence, ...]
    # Who wrote the talking points: the offline templates, or the model (held to the evidence first).
    points_by: Literal["template", "model"] = "template"


class GuardrailNote(BaseModel):
    """What a rail found before the answer was returned, and what was done: the offending spans were
    ``redacted`` (the suggestion still stands on its evidence); the suggestion was ``dropped`` and the next
    well-founded one took its place; a ticket was ``withheld`` whole from the talking points; or the
    question was ``neutralized`` before it was searched with or echoed. A model's talking points that did not
    stand on the suggestion's evidence were ``trimmed`` from it, or, none standing, ``replaced`` by the
    offline ones. ``detail`` never repeats what was
    removed."""

    model_config = ConfigDict(frozen=True)

    kind: str
    title: str
    action: Literal["redacted", "dropped", "withheld", "neutralized", "trimmed", "replaced"]
    rules: tuple[str, ...]
    detail: str


class ToolCall(BaseModel):
    """One look at the data an answer took: which tool, how long, how many facts it found."""

    model_config = ConfigDict(frozen=True)

    name: str
    ms: float
    found: int
    # Who asked for it: the offline plan for the question's intent, or the model (``agent/support_model``).
    by: Literal["plan", "model"] = "plan"


class SupportAnswer(BaseModel):
    model_config = ConfigDict(frozen=True)

    customer_id: str
    question: str
    suggestions: tuple[Suggestion, ...]
    guardrail_notes: tuple[GuardrailNote, ...] = ()
    # What the question was taken to be about, and how sure: ``other`` below the intent model's threshold.
    intent: str = "other"
    confidence: float = 0.0
    # Order numbers the question named that are none of this customer's orders.
    no_match: tuple[str, ...] = ()
    tools: tuple[ToolCall, ...] = ()
    # How it was thought: ``offline`` (the intent model and the plan), or the model that picked the tools
    # and wrote the talking points (``openai:MODEL``); and where the model's work was not used, why.
    thinker: str = "offline"
    fell_back: tuple[str, ...] = ()


@dataclass(frozen=True)
class ToolSpec:
    """One tool as a model sees it: its name, what it is for, and its arguments as a JSON schema."""

    name: str
    description: str
    parameters: Mapping[str, Any]

    def openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


ToolUse = Callable[[str, Mapping[str, Any]], str]  # (tool name, arguments) -> what it found, in words


class SupportModel(Protocol):
    name: str

    def choose_tools(self, question: str, intent: str, tools: Sequence[ToolSpec], call: ToolUse) -> int:
        """Let the model call ``tools`` through ``call``; the number of calls it made."""
        ...

    def write_points(self, question: str, suggestion: Suggestion, offers: Sequence[str]) -> tuple[str, ...]:
        """The talking points the model writes for ``suggestion``, from its evidence alone."""
        ...

    @property
    def prompts(self) -> tuple[PromptRef, ...]: ...


def short(error: Exception, most: int = 200) -> str:
    """An error in one line, cut to ``most`` characters: an endpoint's error can carry its whole request."""
    text = " ".join(str(error).split())
    return text if len(text) <= most else text[: most - 1] + "…"


def points_of(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def event_evidence(event: Event, summary: str, *more: Event) -> Evidence:
    """One fact from her history: the event, and ``more`` of the same kind (an order's other lines)."""
    kind: Literal["support_ticket", "return", "order"] = (
        "support_ticket"
        if event.kind is EventKind.SUPPORT_TICKET
        else "return"
        if event.kind is EventKind.RETURN
        else "order"
    )
    events = (event, *more)
    return Evidence(
        kind=kind,
        summary=summary,
        event_ids=tuple(e.id or "" for e in events),
        item_ids=tuple(dict.fromkeys(e.item_id for e in events if e.item_id)),
    )


def title_of(catalog: Mapping[str, Item], item_id: str | None) -> str:
    item = catalog.get(item_id or "")
    return item.title if item else "an item"


def find_ticket(
    store: Store,
    customer_id: str,
    asked: str,
    history: Sequence[Event],
    search: HistorySearch | None,
    now: datetime | None,
) -> Event | None:
    """The ticket nearest the question in meaning (Qdrant), else her latest one; filed before ``now``."""
    hits = list(search(customer_id, asked, 3)) if search else []
    ids = [str(h.event_id) for h in hits if getattr(h, "kind", "") == EventKind.SUPPORT_TICKET.value]
    # Only the customer's own, stored events can be evidence: a hit is resolved to its event. The history
    # index holds every event it was given, later ones too (historical data read at a set clock): what
    # happens after the store's clock has not happened yet, and is never evidence.
    found = {
        e.id: e
        for e in store.get_events(ids)
        if e.customer_id == customer_id and (now is None or e.timestamp < now)
    }
    for event_id in ids:
        if event_id in found:
            return found[event_id]
    tickets = [e for e in history if e.kind is EventKind.SUPPORT_TICKET and e.id]
    return tickets[-1] if tickets else None


_WHY_WITHHELD = {
    "instruction": "reads as an instruction",
    "link": "carries a link off the shop's domains",
    "markup": "carries markup",
    "code": "carries a code",
    "offer": "names an offer the shop has not configured",
}


def resolve_suggestion(
    ticket: Event, orders: Sequence[Event], context: RailContext
) -> tuple[Suggestion, GuardrailNote | None]:
    """The "resolve" suggestion for a ticket: its text quoted as data when the untrusted-text rail lets it
    be quoted whole, else withheld whole (with the note that records why), the agent pointed to it."""
    order_id = ticket.order_id or (orders[-1].order_id if orders else None)
    date = f"{ticket.timestamp:%Y-%m-%d}"
    verdict = untrusted.check(ticket.text or "", context)
    note: GuardrailNote | None = None
    if verdict.passed:
        # One line, and no quote mark of its own: a line break or a '"' in the ticket must not end the
        # quotation and start a talking point of the ticket's making.
        said = " ".join((ticket.text or "").split()).replace('"', "'")
        text, _ = render("support.j2", kind="resolve", ticket=said, date=date, order=order_id or "")
        summary = f"ticket of {date}: {said[:120]}"
    else:
        found = sorted({f.rule for f in verdict.findings})
        why = " and ".join(_WHY_WITHHELD[r] for r in found)
        text, _ = render(
            "support.j2",
            kind="resolve",
            ticket="",
            withheld=why,
            ticket_id=ticket.id,
            date=date,
            order=order_id or "",
        )
        summary = f"ticket of {date} (not quoted: it {why})"
        note = GuardrailNote(
            kind="resolve",
            title="Resolve the reported problem",
            action="withheld",
            rules=tuple(f"untrusted:{r}" for r in found),
            detail=f"ticket {ticket.id} was kept out of the talking points whole: it {why}",
        )
    grounds: tuple[Evidence, ...] = (event_evidence(ticket, summary),)
    order = next((o for o in reversed(orders) if ticket.order_id and o.order_id == ticket.order_id), None)
    if order is not None:
        grounds += (event_evidence(order, f"order {order.order_id} on {order.timestamp:%Y-%m-%d}"),)
    suggestion = Suggestion(
        kind="resolve", title="Resolve the reported problem", talking_points=points_of(text), evidence=grounds
    )
    return suggestion, note


def ask_the_catalog(
    ask: CatalogAsk, customer_id: str, asked: str, history: Sequence[Event]
) -> list[CatalogHit]:
    """Items that answer the question and fit her (Qdrant's fused query over the question and her taste),
    each tied to the purchase of hers it is closest to; none when the question is not about products.
    Her returns are left out."""
    latest: dict[str, Event] = {}
    for order in history:
        if order.kind is EventKind.PURCHASE and order.item_id and order.id:
            latest[order.item_id] = order  # oldest first: the last one wins
    bought = sorted(latest, key=lambda i: latest[i].timestamp, reverse=True)
    leave_out = sorted({e.item_id for e in history if e.kind is EventKind.RETURN and e.item_id})
    return list(ask(customer_id, asked, bought, leave_out, WANTED))


def asked_for(
    hits: Sequence[CatalogHit], history: Sequence[Event], catalog: Mapping[str, Item], suggested: set[str]
) -> list[Suggestion]:
    """A product suggestion for each catalog hit, standing on the purchase of hers it is closest to."""
    latest: dict[str, Event] = {}
    for order in history:
        if order.kind is EventKind.PURCHASE and order.item_id and order.id:
            latest[order.item_id] = order
    out: list[Suggestion] = []
    for hit in hits:
        item, near = catalog.get(hit.item_id), latest.get(hit.near_item_id)
        if item is None or not item.in_stock or near is None or item.id in suggested:
            continue
        summary = f"close to {title_of(catalog, near.item_id)}, bought on {near.timestamp:%Y-%m-%d}"
        evidence = Evidence(
            kind="text_similarity",
            summary=summary,
            event_ids=(near.id or "",),
            item_ids=(near.item_id or "", item.id),
            weight=round(hit.near_similarity, 3),
        )
        text, _ = render(
            "support.j2", kind="product", title=item.title, price=item.price_text, reason=summary
        )
        out.append(
            Suggestion(
                kind="product",
                title=f"Suggest {item.title}",
                talking_points=points_of(text),
                evidence=(evidence,),
            )
        )
        suggested.add(item.id)
    return out


def best_sellers(
    picks: Sequence[ColdPick],
    customer: Customer,
    catalog: Mapping[str, Item],
    history: Sequence[Event],
    suggested: set[str],
) -> list[Suggestion]:
    """Best sellers in her country (``Recommender.popular``, the cold start): the fallback when her own
    recommendations are few or were all filtered out (impression cap, returns, stock)."""
    returned = {e.item_id for e in history if e.kind is EventKind.RETURN}
    out: list[Suggestion] = []
    for pick in picks:
        item = catalog.get(pick.item_id)
        if item is None or not item.in_stock or item.id in suggested or item.id in returned or not pick.why:
            continue
        evidence = tuple(Evidence(kind=kind, summary=why, item_ids=(item.id,)) for kind, why in pick.why)
        text, _ = render(
            "support.j2", kind="product", title=item.title, price=item.price_text, reason=pick.why[0][1]
        )
        out.append(
            Suggestion(
                kind="product",
                title=f"Suggest {item.title}",
                talking_points=points_of(text),
                evidence=evidence,
            )
        )
        suggested.add(item.id)
        if len(out) >= WANTED:
            break
    return out


# What a model endpoint, perhaps another company's, is never told: contact and payment details.
_NOT_TOLD = frozenset({"email_address", "phone_number", "card_number", "iban", "postal_address"})


def untold(text: str, customer: Customer, brand: BrandConfig) -> str:
    """``text`` as a model may be told it: contact and payment details redacted."""
    context = RailContext(customer=customer, catalog={}, brand=brand, purpose="support")
    return redact(text, [f for f in privacy.check(text, context).findings if f.rule in _NOT_TOLD])


def redact(text: str, findings: Sequence[Finding]) -> str:
    """``text`` with the span of each finding replaced by a marker naming its rule."""
    for f in sorted((f for f in findings if f.start >= 0), key=lambda f: -f.start):
        text = text[: f.start] + _REDACTED.format(f.rule.replace("_", " ")) + text[f.end :]
    return text


_FOREIGN = frozenset({"link_domain", "active_html", "event_handler", "tracking_image"})


def guard(suggestion: Suggestion, context: RailContext) -> tuple[Suggestion | None, GuardrailNote | None]:
    """The suggestion as it may be shown, or None; and what the rails found, if anything.

    Personal data in a quoted ticket gets its spans redacted, since the suggestion still stands on its
    evidence; a product suggestion that trips a rail is dropped instead: redacting it would leave a
    suggestion about nothing. Instruction-like text (the injection rail's one policy, under which a real
    product's name is a name) drops the suggestion whole: trimmed, the rest would still carry it. So does a
    link off the allowed domains or active markup (the output rail), from a catalog title or anywhere else:
    only the retailer's own links may reach a talking point."""
    rules: list[str] = []
    missing: list[str] = []  # findings with no span to redact
    instructed = False

    def clean(text: str) -> str:
        nonlocal instructed
        blocking = injection.check(text, context).blocking
        if blocking:
            instructed = True
            rules.extend(f"injection:{f.rule}" for f in blocking)
            text, _ = defuse(text)
        # Links and markup only: "data:" in plain words ("my data: …") is no script URL in a talking point.
        unsafe = [f for f in output.check(text, context).findings if f.rule in _FOREIGN]
        if unsafe:
            instructed = True
            rules.extend(f"output:{f.rule}" for f in unsafe)
            text = redact(text, unsafe)  # so not even the note repeats the link
        verdict = privacy.check(text, context)
        if verdict.passed:
            return text
        rules.extend(f"privacy:{f.rule}" for f in verdict.findings)
        missing.extend(f.rule for f in verdict.findings if f.start < 0)
        return redact(text, verdict.findings)

    points = tuple(clean(p) for p in suggestion.talking_points)
    evidence = tuple(e.model_copy(update={"summary": clean(e.summary)}) for e in suggestion.evidence)
    title = clean(suggestion.title)
    if not rules:
        return suggestion, None
    found = tuple(sorted(set(rules)))
    recheck = [privacy.check(t, context) for t in (*points, title, *(e.summary for e in evidence))]
    if suggestion.kind == "product" or instructed or missing or not all(v.passed for v in recheck):
        why = (
            "a product suggestion is not shown redacted"
            if suggestion.kind == "product"
            else "instruction-like text or a foreign link is kept out whole"
            if instructed
            else "still unsafe"
        )
        note = GuardrailNote(
            kind=suggestion.kind, title=title, action="dropped", rules=found, detail=f"dropped: {why}"
        )
        return None, note
    note = GuardrailNote(
        kind=suggestion.kind,
        title=title,
        action="redacted",
        rules=found,
        detail="the offending spans were replaced by a marker",
    )
    return Suggestion(kind=suggestion.kind, title=title, talking_points=points, evidence=evidence), note
