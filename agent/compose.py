"""Assemble an email from copy and data: the only place names, prices, links and the footer are written."""

from __future__ import annotations

from collections.abc import Mapping

from agent.state import Plan
from agent.writers import EmailCopy
from guardrails.base import RailContext
from guardrails.brand_config import BrandConfig
from prompts import render
from tailor.models import Customer, Email, EmailProduct, Event, Item

__all__ = ["assemble", "email_parts", "rail_context"]


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
    return Email(
        customer_id=customer.id,
        action=plan.action,
        subject=copy.subject,
        preheader=copy.preheader,
        body_text=body_text,
        body_html=body_html,
        products=products,
        writer=writer,
        fallback_parts=fallback_parts,
    )


def email_parts(copy: EmailCopy, email: Email) -> dict[str, str]:
    parts = {"subject": copy.subject, "preheader": copy.preheader, "intro": copy.intro}
    parts.update({f"reason:{k}": v for k, v in copy.reasons.items()})
    parts["body_text"] = email.body_text
    parts["body_html"] = email.body_html
    return parts


def rail_context(
    customer: Customer,
    plan: Plan,
    catalog: Mapping[str, Item],
    brand: BrandConfig,
    events: list[Event],
    now: object,
    *,
    purpose: str = "email",
) -> RailContext:
    facts = " ".join(e.summary for e in plan.evidence)
    urls = " ".join([brand.unsubscribe_link(customer.id)])
    return RailContext(
        customer=customer,
        catalog=catalog,
        plan_item_ids=tuple(p.item_id for p in plan.products),
        now=now,  # type: ignore[arg-type]
        events=events,
        allowed_domains=brand.allowed_link_domains,
        allowed_offers=brand.allowed_offers,
        purpose=purpose,  # type: ignore[arg-type]
        extra={"facts": facts, "urls": urls, "footer": footer(brand, customer)},
    )
