"""The suggestions that answer a support question, by its intent, from the facts the tools gathered.

Each suggestion stands on evidence from this customer's own data (an order's lines, a return, her ticket,
her profile) or the catalog (an item she asked about, a recommendation with its own evidence). Offers come
from the retailer's support policy for that kind of problem only (``BrandConfig.offers_for``); a question
that is not about a problem gets none. An order number that is none of hers is said to be no order of hers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agent.intent import Entities, Intent
from agent.support import (
    GuardrailNote,
    Suggestion,
    asked_for,
    best_sellers,
    event_evidence,
    points_of,
    resolve_suggestion,
    title_of,
)
from agent.support_state import Facts
from guardrails.base import RailContext
from prompts import render
from tailor.core.models import Customer, Event, EventKind, Evidence, Item

__all__ = ["PROBLEMS", "compose"]

# Something went wrong for her: these get the order, the ticket and the policy's amends.
PROBLEMS: frozenset[Intent] = frozenset({"late_delivery", "damaged_item", "return_refund"})
_LINES_SHOWN = 3

_ORDER_TITLE = {
    "late_delivery": "Chase order {order}",
    "damaged_item": "Put right what arrived damaged in order {order}",
    "return_refund": "Handle the return from order {order}",
}


def _day(event: Event) -> str:
    return f"{event.timestamp:%Y-%m-%d}"


def not_found(asked: Sequence[str], facts: Facts, catalog: Mapping[str, Item]) -> Suggestion:
    """No order of hers has that number: say so, and list her latest ones so the agent can ask which."""
    newest = [o for o in facts.latest_orders[:_LINES_SHOWN] if facts.lines.get(o)]
    listed = "; ".join(
        f"{o} of {_day(facts.lines[o][0])} ({title_of(catalog, facts.lines[o][0].item_id)})" for o in newest
    )
    text, _ = render("support.j2", kind="not_found", asked=", ".join(asked), listed=listed)
    evidence = tuple(
        event_evidence(facts.lines[o][0], f"order {o} on {_day(facts.lines[o][0])}") for o in newest
    )
    return Suggestion(
        kind="not_found",
        title=f"No order {asked[0]} found",
        talking_points=points_of(text),
        evidence=evidence,
    )


def about_order(
    intent: Intent,
    order_id: str,
    lines: Sequence[Event],
    entities: Entities,
    facts: Facts,
    catalog: Mapping[str, Item],
) -> Suggestion:
    """The order the question is about: its date and lines, the line it names first, and what to do."""
    named = [e for e in lines if e.item_id in entities.item_ids]
    shown = (named or list(lines))[:_LINES_SHOWN]
    # The line the question names; none named, the agent asks which (the first line is no guess to make).
    item = title_of(catalog, named[0].item_id) if named else ""
    titles = ", ".join(title_of(catalog, e.item_id) for e in shown)
    returned = [r for r in facts.returns if r.order_id == order_id or r.item_id in {e.item_id for e in shown}]
    text, _ = render(
        "support.j2",
        kind="order",
        intent=intent,
        order=order_id,
        date=_day(lines[0]),
        count=len(lines),
        titles=titles,
        item=item,
        returned=_day(returned[-1]) if returned else "",
    )
    evidence: tuple[Evidence, ...] = (
        event_evidence(shown[0], f"order {order_id} on {_day(lines[0])}: {titles}", *shown[1:]),
    )
    if returned:
        r = returned[-1]
        evidence += (event_evidence(r, f"returned {title_of(catalog, r.item_id)} on {_day(r)}"),)
    title = _ORDER_TITLE.get(intent, "Check order {order}").format(order=order_id)
    return Suggestion(kind="resolve", title=title, talking_points=points_of(text), evidence=evidence)


def _latest(history: Sequence[Event], catalog: Mapping[str, Item]) -> Suggestion | None:
    """No ticket, no order named: her latest order or return, as before any question was understood."""
    done = [e for e in history if e.kind in (EventKind.PURCHASE, EventKind.RETURN) and e.id]
    if not done:
        return None
    latest = max(done, key=lambda e: e.timestamp)
    what = "returned" if latest.kind is EventKind.RETURN else "ordered"
    # No ticket: nothing the customer wrote to quote. The agent's own question is not her words.
    text, _ = render("support.j2", kind="resolve", ticket="", withheld="", order=latest.order_id or "")
    summary = f"{what} {title_of(catalog, latest.item_id)} on {_day(latest)}"
    if latest.order_id:
        summary += f" (order {latest.order_id})"
    title = "Check their latest return" if latest.kind is EventKind.RETURN else "Check their latest order"
    return Suggestion(
        kind="resolve",
        title=title,
        talking_points=points_of(text),
        evidence=(event_evidence(latest, summary),),
    )


def offer(offers: Sequence[str], grounds: tuple[Evidence, ...]) -> Suggestion:
    """The amends the policy allows for this problem, standing on the same order or ticket; an apology
    when it allows none."""
    text, _ = render("support.j2", kind="offer", offer=offers[0] if offers else "")
    title = "Make amends within policy" if offers else "Apologise: the policy offers nothing more here"
    return Suggestion(kind="offer", title=title, talking_points=points_of(text), evidence=grounds[:1])


def item_facts(item: Item) -> Suggestion:
    """A product she asked about, as the catalog has it: price and whether it is in stock."""
    text, _ = render(
        "support.j2", kind="item", title=item.title, price=item.price_text, in_stock=item.in_stock
    )
    evidence = Evidence(kind="catalog", summary=f"{item.title}: {item.price_text}", item_ids=(item.id,))
    return Suggestion(
        kind="product_facts",
        title=f"About {item.title}",
        talking_points=points_of(text),
        evidence=(evidence,),
    )


def email_facts(customer: Customer, facts: Facts) -> Suggestion:
    """Her marketing emails and her consent: what she was sent, and how to send her fewer or none."""
    sent = facts.contacts
    text, _ = render(
        "support.j2",
        kind="emails",
        count=len(sent),
        last=f"{sent[0]:%Y-%m-%d}" if sent else "",
        consent=customer.consent.marketing_email,
    )
    summary = f"{len(sent)} marketing email(s) sent" + (f", the last on {sent[0]:%Y-%m-%d}" if sent else "")
    summary += "; marketing consent " + ("given" if customer.consent.marketing_email else "not given")
    return Suggestion(
        kind="account",
        title="Answer about the emails she gets",
        talking_points=points_of(text),
        evidence=(Evidence(kind="profile", summary=summary),),
    )


def account_facts(customer: Customer) -> Suggestion:
    """Her consent as recorded, and what she may ask for: a change, her data, or to be forgotten."""
    text, _ = render(
        "support.j2",
        kind="account",
        marketing=customer.consent.marketing_email,
        personalization=customer.consent.personalization,
    )
    summary = (
        f"marketing emails {'allowed' if customer.consent.marketing_email else 'not allowed'}; "
        f"personalization {'allowed' if customer.consent.personalization else 'not allowed'}"
    )
    return Suggestion(
        kind="account",
        title="Answer about her account and data",
        talking_points=points_of(text),
        evidence=(Evidence(kind="profile", summary=summary),),
    )


def _recommended(facts: Facts, suggested: set[str]) -> list[Suggestion]:
    out: list[Suggestion] = []
    for rec in facts.recommendations:
        if not rec.evidence or rec.item.id in suggested:
            continue
        suggested.add(rec.item.id)
        text, _ = render(
            "support.j2", kind="product", title=rec.item.title, price=rec.item.price_text,
            reason=rec.evidence[0].summary,
        )  # fmt: skip
        out.append(
            Suggestion(
                kind="product",
                title=f"Suggest {rec.item.title}",
                talking_points=points_of(text),
                evidence=rec.evidence[:2],
            )
        )
    return out


def _follow_up_return(facts: Facts, used: set[str], catalog: Mapping[str, Item]) -> list[Suggestion]:
    for ret in reversed(facts.returns):
        if ret.id in used:
            continue
        item = title_of(catalog, ret.item_id)
        return [
            Suggestion(
                kind="service",
                title=f"Follow up on the returned {item}",
                talking_points=(
                    f"Confirm the refund or replacement for the {item} returned on {_day(ret)}.",
                    "Ask whether anything about it should be passed on to the product team.",
                ),
                evidence=(event_evidence(ret, f"returned {item} on {_day(ret)}"),),
            )
        ]
    return []


def compose(
    intent: Intent,
    entities: Entities,
    facts: Facts,
    *,
    customer: Customer,
    history: Sequence[Event],
    catalog: Mapping[str, Item],
    context: RailContext,
    notes: list[GuardrailNote],
) -> list[Suggestion]:
    """Every well-founded suggestion for this question, best first (the guard keeps the first three that
    pass the rails). A ticket withheld from the talking points adds its note to ``notes``."""
    out: list[Suggestion] = []
    orders = [e for e in history if e.kind is EventKind.PURCHASE and e.id]
    if entities.unknown_order_ids and not facts.orders:
        out.append(not_found(entities.unknown_order_ids, facts, catalog))
    grounds: tuple[Evidence, ...] = ()
    if intent in PROBLEMS or intent == "other":
        ticket = facts.ticket
        named = next(iter(facts.orders.items()), None)
        # Her own words about it, when the question does not point at an order line of its own: an order
        # named by number, or a product in it, is answered from that order's lines.
        pointed = named is not None and (
            not entities.by_reference or bool(set(entities.item_ids) & {e.item_id for e in named[1]})
        )
        if ticket is not None and not pointed:
            resolve, note = resolve_suggestion(ticket, orders, context)
            if note is not None:
                notes.append(note)
            out.append(resolve)
        elif named is not None:
            out.append(about_order(intent, named[0], named[1], entities, facts, catalog))
        elif not entities.unknown_order_ids and (latest := _latest(history, catalog)) is not None:
            out.append(latest)
        grounds = out[-1].evidence if out and out[-1].kind == "resolve" else ()
    if intent in PROBLEMS and grounds:
        # Amends are for something that happened to her: the same ticket or order, not a blanket gift.
        out.append(offer(facts.offers, grounds))
    if intent == "email_complaint":
        out.append(email_facts(customer, facts))
    if intent == "account_consent":
        out.append(account_facts(customer))
    suggested: set[str] = set()
    if intent == "product_question":
        for item in facts.items:
            out.append(item_facts(item))
            suggested.add(item.id)
    out.extend(asked_for(facts.catalog_hits, history, catalog, suggested))
    if intent in ("product_question", "gift_idea", "other"):
        out.extend(_recommended(facts, suggested))
    if intent in PROBLEMS or intent == "other":
        used = {i for s in out for e in s.evidence for i in e.event_ids}
        out.extend(_follow_up_return(facts, used, catalog))
    if intent in ("gift_idea", "other", "product_question"):
        out.extend(best_sellers(facts.popular, customer, catalog, history, suggested))
    return out
