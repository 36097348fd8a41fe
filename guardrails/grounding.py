"""Grounding: every product, SKU, price, amount, percentage, offer, date and URL in the text is a fact
from the plan and the catalog, written exactly as the catalog has it."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from functools import lru_cache

from guardrails._text import URL, phrase_pattern
from guardrails.base import Finding, RailContext, Verdict
from tailor.models import Item, format_price

__all__ = ["check", "name"]

name = "grounding"

_MONEY = re.compile(
    r"(?:[£€$]\s?\d[\d,]*(?:\.\d+)?|\b\d[\d,]*(?:\.\d+)?\s?(?:GBP|EUR|USD|pounds?|euros?)\b)", re.IGNORECASE
)
_PERCENT = re.compile(r"\b\d+(?:\.\d+)?\s?(?:%|per ?cent\b)", re.IGNORECASE)
_OFFER_WORDS = re.compile(
    r"\b(?:discount|voucher|coupon|promo(?:tion)? code|% off|half price|sale price|"
    r"free gift|free delivery|free shipping|cashback|bogof)\b",
    re.IGNORECASE,
)
# Whole month names or their abbreviations only: "Dec[a-z]*" read the product "Decoupage" as a date.
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?"
    r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_DATE = re.compile(
    rf"\b(?:\d{{4}}-\d{{2}}-\d{{2}}|\d{{1,2}}(?:st|nd|rd|th)? {_MONTH}(?: \d{{4}})?"
    rf"|{_MONTH} \d{{1,2}}(?:st|nd|rd|th)?(?:,? \d{{4}})?)\b"
)
_SKU = re.compile(r"\b\d{5}[A-Z]{0,2}\b")
# Template slots a model copied instead of filling ("[product_id]", "{{ name }}", "<customer_name>").
_PLACEHOLDER = re.compile(r"\[[A-Za-z_ ]{2,30}\]|\{\{?\s*[A-Za-z_]+\s*\}?\}|<[a-z]+_[a-z_]+>")


@lru_cache(maxsize=4)
def _title_pattern(titles: tuple[str, ...]) -> re.Pattern[str] | None:
    # One-word or very short titles are too easily ordinary words; two words and ten letters ("Daisy
    # Journal") are already a product name, and a fabricated one must not slip through.
    return phrase_pattern(t for t in titles if len(t) >= 10 and len(t.split()) >= 2)


def _catalog_titles(catalog: dict[str, Item] | object) -> tuple[str, ...]:
    values = getattr(catalog, "values", None)
    return tuple(sorted(i.title for i in values())) if values else ()


def warm(catalog: Mapping[str, Item]) -> None:
    """Compile the catalog's title pattern ahead of the first check (it takes a while on a big catalog)."""
    _title_pattern(_catalog_titles(catalog))


def check(text: str, context: RailContext) -> Verdict:
    start = time.perf_counter()
    findings: list[Finding] = []
    plan = [context.catalog[i] for i in context.plan_item_ids if i in context.catalog]
    plan_ids = {i.id for i in plan}
    prices = {format_price(i.price, i.currency).replace(" ", "") for i in plan}
    allowed_text = " ".join(context.allowed_offers).lower()
    facts = context.extra.get("facts", "")

    offer_spans = []
    for offer in context.allowed_offers:
        for m in re.finditer(re.escape(offer), text, re.IGNORECASE):
            offer_spans.append((m.start(), m.end()))

    def in_offer(m: re.Match[str]) -> bool:
        return any(a <= m.start() and m.end() <= b for a, b in offer_spans)

    for m in _MONEY.finditer(text):
        if in_offer(m):
            continue
        if m.group().replace(" ", "") not in prices:
            findings.append(
                Finding(
                    "ungrounded_price",
                    f"amount {m.group()!r} is not the price of a planned product",
                    m.start(),
                    m.end(),
                )
            )
    for m in _PERCENT.finditer(text):
        if not in_offer(m):
            findings.append(
                Finding("ungrounded_percentage", f"{m.group()!r} is not an allowed offer", m.start(), m.end())
            )
    for m in _OFFER_WORDS.finditer(text):
        if not in_offer(m) and m.group().lower() not in allowed_text:
            findings.append(
                Finding(
                    "unapproved_offer",
                    f"offer {m.group()!r} is not in the brand's allowed offers",
                    m.start(),
                    m.end(),
                )
            )
    for m in _DATE.finditer(text):
        if m.group() not in facts:
            findings.append(
                Finding(
                    "ungrounded_date",
                    f"date {m.group()!r} is not a fact of this customer",
                    m.start(),
                    m.end(),
                )
            )
    allowed_urls = {i.url for i in plan} | set(context.extra.get("urls", "").split())
    for m in URL.finditer(text):
        url = m.group().rstrip(".,;:!?")
        if url not in allowed_urls:
            findings.append(
                Finding(
                    "ungrounded_url",
                    f"link {url!r} is not a planned product's link",
                    m.start(),
                    m.start() + len(url),
                )
            )
    for m in _SKU.finditer(text):
        if m.group() in context.catalog and m.group() not in plan_ids and m.group() not in facts:
            findings.append(
                Finding("ungrounded_sku", f"SKU {m.group()!r} is not a planned product", m.start(), m.end())
            )
    plan_titles = {i.title.lower() for i in plan}
    for m in _PLACEHOLDER.finditer(text):
        findings.append(Finding("placeholder", f"unfilled placeholder {m.group()!r}", m.start(), m.end()))
    pattern = _title_pattern(_catalog_titles(context.catalog))
    if pattern is not None:
        for m in pattern.finditer(text):
            if m.group().lower() not in plan_titles and m.group().lower() not in facts.lower():
                findings.append(
                    Finding(
                        "unplanned_product", f"product {m.group()!r} is not in the plan", m.start(), m.end()
                    )
                )
    return Verdict(name, not findings, tuple(findings), (time.perf_counter() - start) * 1000)
