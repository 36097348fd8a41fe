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
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from agent.compose import other_customers
from guardrails import injection, output, privacy, untrusted
from guardrails.base import Finding, RailContext
from guardrails.injection import defuse
from prompts import render
from retrieval.base import Recommender
from retrieval.embeddings import Embedder
from retrieval.search import CatalogHit
from retrieval.vector_store import HistoryHit, VectorStore
from tailor.core.brand import BrandConfig
from tailor.core.errors import ConsentError
from tailor.core.models import Customer, Event, EventKind, Evidence, Item
from tailor.data.store import Store

__all__ = [
    "CatalogAsk",
    "GuardrailNote",
    "HistorySearch",
    "Suggestion",
    "SupportAnswer",
    "history_search",
    "resolve_suggestion",
    "support_suggestions",
]

HistorySearch = Callable[[str, str, int], Sequence[HistoryHit]]  # (customer_id, question, limit) -> hits
# (customer_id, question, her purchases newest first, item ids to leave out, limit) -> ``CatalogHit``s
CatalogAsk = Callable[[str, str, Sequence[str], Sequence[str], int], Sequence[CatalogHit]]

_WANTED = 3
_HISTORY = 500
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


class GuardrailNote(BaseModel):
    """What a rail found before the answer was returned, and what was done: the offending spans were
    ``redacted`` (the suggestion still stands on its evidence); the suggestion was ``dropped`` and the next
    well-founded one took its place; a ticket was ``withheld`` whole from the talking points; or the
    question was ``neutralized`` before it was searched with or echoed. ``detail`` never repeats what was
    removed."""

    model_config = ConfigDict(frozen=True)

    kind: str
    title: str
    action: Literal["redacted", "dropped", "withheld", "neutralized"]
    rules: tuple[str, ...]
    detail: str


class SupportAnswer(BaseModel):
    model_config = ConfigDict(frozen=True)

    customer_id: str
    question: str
    suggestions: tuple[Suggestion, ...]
    guardrail_notes: tuple[GuardrailNote, ...] = ()


def _points(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _event_evidence(event: Event, summary: str) -> Evidence:
    kind: Literal["support_ticket", "repeat_purchase"] = (
        "support_ticket" if event.kind is EventKind.SUPPORT_TICKET else "repeat_purchase"
    )
    return Evidence(
        kind=kind,
        summary=summary,
        event_ids=(event.id or "",),
        item_ids=(event.item_id,) if event.item_id else (),
    )


def _title(catalog: Mapping[str, Item], item_id: str | None) -> str:
    item = catalog.get(item_id or "")
    return item.title if item else "an item"


def _ticket(
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
    grounds: tuple[Evidence, ...] = (_event_evidence(ticket, summary),)
    order = next((o for o in reversed(orders) if ticket.order_id and o.order_id == ticket.order_id), None)
    if order is not None:
        grounds += (_event_evidence(order, f"order {order.order_id} on {order.timestamp:%Y-%m-%d}"),)
    suggestion = Suggestion(
        kind="resolve", title="Resolve the reported problem", talking_points=_points(text), evidence=grounds
    )
    return suggestion, note


def _candidates(
    store: Store,
    recommender: Recommender,
    brand: BrandConfig,
    customer: Customer,
    asked: str,
    history: Sequence[Event],
    catalog: Mapping[str, Item],
    now: datetime | None,
    search: HistorySearch | None,
    ask: CatalogAsk | None = None,
    *,
    context: RailContext,
    notes: list[GuardrailNote],
) -> list[Suggestion]:
    """Every well-founded suggestion, best first; each carries evidence or is not made. A ticket withheld
    from the talking points adds its note to ``notes``."""
    out: list[Suggestion] = []
    orders = [e for e in history if e.kind is EventKind.PURCHASE and e.id]
    returns = [e for e in history if e.kind is EventKind.RETURN and e.id]
    ticket = _ticket(store, customer.id, asked, history, search, now)
    grounds: tuple[Evidence, ...] = ()
    if ticket is not None:
        resolve, note = resolve_suggestion(ticket, orders, context)
        if note is not None:
            notes.append(note)
        grounds = resolve.evidence
        out.append(resolve)
    elif returns or orders:
        latest = max([*returns, *orders], key=lambda e: e.timestamp)
        what = "returned" if latest.kind is EventKind.RETURN else "ordered"
        # No ticket: nothing the customer wrote to quote. The agent's own question is not her words.
        text, _ = render("support.j2", kind="resolve", ticket="", withheld="", order=latest.order_id or "")
        summary = f"{what} {_title(catalog, latest.item_id)} on {latest.timestamp:%Y-%m-%d}"
        if latest.order_id:
            summary += f" (order {latest.order_id})"
        grounds = (_event_evidence(latest, summary),)
        title = "Check their latest return" if latest.kind is EventKind.RETURN else "Check their latest order"
        out.append(Suggestion(kind="resolve", title=title, talking_points=_points(text), evidence=grounds))
    if grounds:
        # Amends are for something that happened to her: the same ticket, return or order, not a blanket gift.
        offer = brand.support_offers[0] if brand.support_offers else "a sincere apology"
        text, _ = render("support.j2", kind="offer", offer=offer)
        out.append(
            Suggestion(
                kind="offer",
                title="Make amends within policy",
                talking_points=_points(text),
                evidence=grounds[:1],
            )
        )
    suggested: set[str] = set()
    if ask is not None:
        out.extend(_asked_for(ask, customer, asked, orders, returns, catalog, suggested))
    for rec in recommender.recommend(customer.id, _WANTED, now=now):
        if not rec.evidence or rec.item.id in suggested:
            continue
        suggested.add(rec.item.id)
        text, _ = render(
            "support.j2",
            kind="product",
            title=rec.item.title,
            price=rec.item.price_text,
            reason=rec.evidence[0].summary,
        )
        out.append(
            Suggestion(
                kind="product",
                title=f"Suggest {rec.item.title}",
                talking_points=_points(text),
                evidence=rec.evidence[:2],
            )
        )
    used = {i for s in out for e in s.evidence for i in e.event_ids}
    for ret in reversed(returns):
        if ret.id in used:
            continue
        item = _title(catalog, ret.item_id)
        out.append(
            Suggestion(
                kind="service",
                title=f"Follow up on the returned {item}",
                talking_points=(
                    f"Confirm the refund or replacement for the {item} returned on {ret.timestamp:%Y-%m-%d}.",
                    "Ask whether anything about it should be passed on to the product team.",
                ),
                evidence=(_event_evidence(ret, f"returned {item} on {ret.timestamp:%Y-%m-%d}"),),
            )
        )
        break
    out.extend(_popular(recommender, customer, catalog, history, now, suggested))
    return out


def _asked_for(
    ask: CatalogAsk,
    customer: Customer,
    asked: str,
    orders: Sequence[Event],
    returns: Sequence[Event],
    catalog: Mapping[str, Item],
    suggested: set[str],
) -> list[Suggestion]:
    """Products that answer the question and fit her (Qdrant's fused query over the question and her
    taste), each standing on the purchase of hers it is closest to; none when the question is not about
    products."""
    latest: dict[str, Event] = {}
    for order in orders:
        if order.item_id:
            latest[order.item_id] = order  # orders are oldest first: the last one wins
    bought = sorted(latest, key=lambda i: latest[i].timestamp, reverse=True)
    leave_out = sorted({e.item_id for e in returns if e.item_id})
    out: list[Suggestion] = []
    for hit in ask(customer.id, asked, bought, leave_out, _WANTED):
        item, near = catalog.get(hit.item_id), latest.get(hit.near_item_id)
        if item is None or not item.in_stock or near is None or item.id in suggested:
            continue
        summary = f"close to {_title(catalog, near.item_id)}, bought on {near.timestamp:%Y-%m-%d}"
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
                talking_points=_points(text),
                evidence=(evidence,),
            )
        )
        suggested.add(item.id)
    return out


def _popular(
    recommender: Recommender,
    customer: Customer,
    catalog: Mapping[str, Item],
    history: Sequence[Event],
    now: datetime | None,
    suggested: set[str],
) -> list[Suggestion]:
    """Best sellers in her country (the recommender's cold start): the fallback when her own
    recommendations are few or were all filtered out (impression cap, returns, stock)."""
    if now is None:
        return []
    returned = {e.item_id for e in history if e.kind is EventKind.RETURN}
    out: list[Suggestion] = []
    for pick in recommender.popular(now=now, country=customer.country, k=4 * _WANTED):
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
                talking_points=_points(text),
                evidence=evidence,
            )
        )
        suggested.add(item.id)
        if len(out) >= _WANTED:
            break
    return out


def _redact(text: str, findings: Sequence[Finding]) -> str:
    for f in sorted((f for f in findings if f.start >= 0), key=lambda f: -f.start):
        text = text[: f.start] + _REDACTED.format(f.rule.replace("_", " ")) + text[f.end :]
    return text


_FOREIGN = frozenset({"link_domain", "active_html", "event_handler", "tracking_image"})


def _guard(suggestion: Suggestion, context: RailContext) -> tuple[Suggestion | None, GuardrailNote | None]:
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
            text = _redact(text, unsafe)  # so not even the note repeats the link
        verdict = privacy.check(text, context)
        if verdict.passed:
            return text
        rules.extend(f"privacy:{f.rule}" for f in verdict.findings)
        missing.extend(f.rule for f in verdict.findings if f.start < 0)
        return _redact(text, verdict.findings)

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


def support_suggestions(
    store: Store,
    recommender: Recommender,
    brand: BrandConfig,
    customer_id: str,
    question: str,
    *,
    now: datetime | None = None,
    search: HistorySearch | None = None,
    ask: CatalogAsk | None = None,
) -> SupportAnswer:
    customer = store.get_customer(customer_id)
    # Consent first, before Qdrant or the store is asked about her history. Without personalization consent
    # this refuses rather than answering with generic suggestions: every suggestion here is, by contract,
    # grounded in her own data (a ticket, an order, her recommendations), and the consent rail treats
    # support output as personalized. Generic advice without evidence would be the desk's own script
    # dressed up as Tailor's, and a clear "no consent" tells the agent exactly why there is nothing.
    if not customer.consent.personalization:
        raise ConsentError(
            f"customer {customer_id!r} has not agreed to personalization: no suggestions from their history",
            hint="help them with the standard support script; their consent can be updated with "
            "PUT /v1/customers/ID/consent",
        )
    notes: list[GuardrailNote] = []
    asked, changed = defuse(question)
    if changed:
        notes.append(
            GuardrailNote(
                kind="question",
                title="The question",
                action="neutralized",
                rules=tuple(sorted({f"injection:{f.rule}" for f in changed})),
                detail="instruction-like text in the question was replaced by a marker before it was used",
            )
        )
    history = store.events(customer.id, until=now, limit=_HISTORY)
    catalog: Mapping[str, Item] = recommender.catalog or store.item_map()
    quoting = RailContext(customer=customer, catalog=catalog, brand=brand, now=now, purpose="support")
    candidates = _candidates(
        store,
        recommender,
        brand,
        customer,
        asked,
        history,
        catalog,
        now,
        search,
        ask,
        context=quoting,
        notes=notes,
    )
    texts = [t for s in candidates for t in (*s.talking_points, *(e.summary for e in s.evidence))]
    context = RailContext(
        customer=customer,
        catalog=catalog,
        brand=brand,
        now=now,
        events=history,
        other_customers=other_customers(store, customer, [asked, *texts], catalog, history),
        purpose="support",
    )
    kept: list[Suggestion] = []
    for candidate in candidates:
        if len(kept) >= _WANTED:
            break
        safe, note = _guard(candidate, context)
        if note is not None:
            notes.append(note)
        if safe is not None:
            kept.append(safe)
    return SupportAnswer(
        customer_id=customer.id, question=asked, suggestions=tuple(kept), guardrail_notes=tuple(notes)
    )
