"""Assemble an email from copy and data: the only place names, prices, links and the footer are written."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from agent.state import Plan
from agent.writers import EmailCopy
from guardrails.base import RailContext
from guardrails.privacy import ID_TOKEN
from prompts import render
from tailor.core.brand import BrandConfig
from tailor.core.models import Customer, Email, EmailProduct, Event, Item
from tailor.data.store import Store

__all__ = ["assemble", "copy_parts", "email_parts", "other_customers", "overall_writer", "rail_context"]

_MAX_CANDIDATES = 64


def footer(brand: BrandConfig, customer: Customer) -> str:
    text, _ = render(
        "footer.txt.j2",
        brand_name=brand.name,
        unsubscribe_url=brand.unsubscribe_link(customer.id),
        postal_address=brand.postal_address,
    )
    return text.strip()


def assemble(
    copy: EmailCopy,
    plan: Plan,
    customer: Customer,
    catalog: Mapping[str, Item],
    brand: BrandConfig,
    *,
    writer: str,
    fallback_parts: tuple[str, ...] = (),
) -> Email:
    products = tuple(
        EmailProduct(
            item_id=item.id,
            title=item.title,
            price_text=item.price_text,
            url=item.url,
            reason=copy.reasons.get(item.id, ""),
        )
        for item in (catalog[p.item_id] for p in plan.products)
    )
    foot = footer(brand, customer)
    body_text, _ = render(
        "email_body.txt.j2", intro=copy.intro, products=products, sign_off=brand.sign_off, footer=foot
    )
    body_html, _ = render(
        "email_body.html.j2",
        subject=copy.subject,
        preheader=copy.preheader,
        intro=copy.intro,
        products=products,
        sign_off=brand.sign_off,
        postal_address=brand.postal_address,
        unsubscribe_url=brand.unsubscribe_link(customer.id),
    )
    parts = ["subject", "preheader", "intro", *(f"reason:{p.item_id}" for p in products)]
    part_writers = {p: TEMPLATE if p in fallback_parts else writer for p in parts}
    return Email(
        customer_id=customer.id,
        action=plan.action,
        subject=copy.subject,
        preheader=copy.preheader,
        body_text=body_text,
        body_html=body_html,
        products=products,
        writer=overall_writer(part_writers),
        part_writers=part_writers,
        fallback_parts=fallback_parts,
    )


TEMPLATE = "template"


def overall_writer(part_writers: Mapping[str, str]) -> str:
    """The email's writer, as the reader of a result needs it: the one writer of every part, or
    ``"<writer>+template"`` when the template writer stood in for some parts (a fallback). An email whose
    every part came from the template after the model failed is ``"template"``, not the model's."""
    writers = sorted(set(part_writers.values()))
    if len(writers) == 1:
        return writers[0]
    return "+".join([*(w for w in writers if w != TEMPLATE), TEMPLATE])


def copy_parts(copy: EmailCopy) -> dict[str, str]:
    """The free-text parts by name, in reading order: subject, preheader, intro, ``reason:ITEM``."""
    parts = {"subject": copy.subject, "preheader": copy.preheader, "intro": copy.intro}
    parts.update({f"reason:{k}": v for k, v in copy.reasons.items()})
    return parts


def email_parts(copy: EmailCopy, email: Email) -> dict[str, str]:
    parts = copy_parts(copy)
    parts["body_text"] = email.body_text
    parts["body_html"] = email.body_html
    return parts


def other_customers(
    store: Store,
    customer: Customer,
    texts: Iterable[str],
    catalog: Mapping[str, Item],
    events: Sequence[Event] = (),
) -> tuple[Customer, ...]:
    """The other customers whose identifiers appear in what the agent read or wrote, for the privacy rail.

    Shared data is where another customer's identity can slip in: a support ticket in this customer's
    history ("ordered for my sister, customer 12350"), and from there a draft. Every id-shaped token of the
    draft and of the history's free text is looked up in the store (a primary-key lookup each, at most
    ``_MAX_CANDIDATES``); those that are customers, other than the recipient, become leak canaries.
    Catalog ids are skipped, so a product's SKU never reads as a customer, and so are numbers inside
    prices, decimals and URLs (see ``guardrails.privacy.ID_TOKEN``)."""
    sources = [*texts, *(e.text for e in events if e.text)]
    seen: dict[str, None] = {}
    for text in sources:
        for m in ID_TOKEN.finditer(text):
            token = m.group()
            if token != customer.id and token not in catalog and token not in seen:
                seen[token] = None
                if len(seen) >= _MAX_CANDIDATES:
                    break
    found = [store.get_customer(t) for t in seen if store.has_customer(t)]
    return tuple(found)


def rail_context(
    customer: Customer,
    plan: Plan,
    catalog: Mapping[str, Item],
    brand: BrandConfig,
    events: list[Event],
    now: object,
    *,
    purpose: str = "email",
    others: Sequence[Customer] = (),
    instructions: str = "",
    example: str = "",
    findings: Sequence[str] = (),
    similarity: Callable[[str, str], float] | None = None,
) -> RailContext:
    """What the rails may look at besides the text. ``instructions`` (the writer's brief) and ``findings``
    (what it was last told to fix) let the copy-quality rail catch either written back into the copy."""
    facts = " ".join(e.summary for e in plan.evidence)
    urls = " ".join([brand.unsubscribe_link(customer.id)])
    return RailContext(
        customer=customer,
        catalog=catalog,
        brand=brand,
        plan_item_ids=tuple(p.item_id for p in plan.products),
        now=now,  # type: ignore[arg-type]
        events=events,
        other_customers=tuple(others),
        purpose=purpose,  # type: ignore[arg-type]
        extra={
            "facts": facts,
            "urls": urls,
            "footer": footer(brand, customer),
            "instructions": instructions,
            "example": example,
            "findings": " ".join(findings),
        },
        action=plan.action,
        product_evidence={p.item_id: p.evidence for p in plan.products},
        similarity=similarity,
    )
