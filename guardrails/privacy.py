"""Privacy: no personal data beyond the recipient's first name and what the template adds; no sensitive
attributes; nothing creepy (a product viewed in the last 24 hours, exact browsing times)."""

from __future__ import annotations

import re
import time
from datetime import timedelta

from guardrails._text import email_spans, phrase_pattern
from guardrails.base import Finding, RailContext, Verdict
from tailor.core.models import EventKind

__all__ = ["ID_TOKEN", "check", "id_pattern", "luhn_ok", "name"]

name = "privacy"

_PHONE = re.compile(r"(?<!\w)(?:\+\d{1,3}[\s.-]?)?(?:\(?\d{2,5}\)?[\s.-]?){2,4}\d{3,4}(?!\w)")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:\s?[A-Z0-9]{4}){2,7}(?:\s?[A-Z0-9]{1,3})?\b")
_POSTCODE = re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]?\s?\d[A-Z]{2}\b")
_STREET = re.compile(
    r"\b\d{1,4}\s+(?:[A-Z][a-z]+\s){1,3}(?:Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Close|Way)\b"
)
# An identifier standing on its own: not a part of a price (£12,350.00), a decimal, a percentage, a URL
# path or an e-mail. ``ID_TOKEN`` finds candidates: letters with digits, or a number of five digits or more
# (shorter numbers are counts and sizes far more often than customer ids).
_ID_BEFORE = r"(?<![\w/£$€.,@])"
_ID_AFTER = r"(?![\w/@%]|[.,:]\d)"
# The look-aheads stop at 100 characters (the longest id the API accepts) and follow the first character's
# test: unbounded, a long run of hyphens or "a-a-a-…" is read to its end from each of its positions.
ID_TOKEN = re.compile(
    _ID_BEFORE
    + r"(?:\d{5,}|(?=[A-Za-z0-9])(?=[\w-]{0,99}\d)(?=[\w-]{0,99}[A-Za-z])[A-Za-z0-9][\w-]{2,})"
    + _ID_AFTER
)
# 24-hour times ("14:32") and 12-hour ones, with a colon or a dot, the suffix joined or not ("9:14pm",
# "9.14 a.m."). A dotted time needs its am/pm: "9.14" alone is a price or a size.
_CLOCK = re.compile(
    r"\b(?:(?:[01]?\d|2[0-3]):[0-5]\d(?:\s?[ap]\.?m\b\.?)?|(?:0?[1-9]|1[0-2])[:.][0-5]\d\s?[ap]\.?m\b\.?)"
    r"|\b(?:[01]?\d|2[0-3]):[0-5]\d\b",
    re.IGNORECASE,
)
_SENSITIVE = {
    "health": [
        "pregnant",
        "pregnancy",
        "diabetes",
        "diabetic",
        "cancer",
        "depression",
        "anxiety disorder",
        "disability",
        "disabled",
        "illness",
        "medication",
        "chemotherapy",
        "hiv",
        "mental health",
    ],
    "religion": [
        "christian",
        "muslim",
        "jewish",
        "hindu",
        "buddhist",
        "sikh",
        "atheist",
        "religion",
        "religious",
        "church",
        "mosque",
        "synagogue",
    ],
    "politics": [
        "labour voter",
        "tory",
        "conservative party",
        "liberal democrat",
        "political views",
        "your vote",
        "brexit",
    ],
    "sexual_orientation": [
        "gay",
        "lesbian",
        "bisexual",
        "lgbt",
        "lgbtq",
        "homosexual",
        "transgender",
        "sexual orientation",
    ],
    "ethnicity": ["ethnicity", "ethnic", "racial", "your race", "immigrant", "nationality"],
}
_SENSITIVE_PATTERNS = {kind: phrase_pattern(words) for kind, words in _SENSITIVE.items()}


def luhn_ok(digits: str) -> bool:
    total = 0
    for n, ch in enumerate(reversed(digits)):
        d = int(ch)
        if n % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(raw: str) -> bool:
    s = raw.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def id_pattern(ids: list[str]) -> re.Pattern[str] | None:
    """Any of the identifiers, standing on its own (see ``ID_TOKEN``), case-insensitive."""
    alternatives = sorted({re.escape(i.strip()) for i in ids if i.strip()}, key=len, reverse=True)
    if not alternatives:
        return None
    return re.compile(_ID_BEFORE + "(?:" + "|".join(alternatives) + ")" + _ID_AFTER, re.IGNORECASE)


def check(text: str, context: RailContext, *, part: str | None = None) -> Verdict:
    start = time.perf_counter()
    findings: list[Finding] = []

    def add(rule: str, message: str, m: re.Match[str]) -> None:
        findings.append(Finding(rule, message, m.start(), m.end(), part=part))

    for begin, end in email_spans(text):
        findings.append(Finding("email_address", "an e-mail address", begin, end, part=part))
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        # A catalog's own code is a product, not a card: one EAN-13 barcode in ten passes the Luhn check, and
        # a store whose products have no names shows them by their barcodes.
        if m.group() in context.catalog:
            continue
        if 13 <= len(digits) <= 19 and luhn_ok(digits):
            add("card_number", "a payment card number", m)
    for m in _IBAN.finditer(text):
        if _iban_ok(m.group()):
            add("iban", "a bank account number (IBAN)", m)
    for m in _PHONE.finditer(text):
        if len(re.sub(r"\D", "", m.group())) >= 10 and not _CARD.fullmatch(m.group().strip()):
            add("phone_number", "a phone number", m)
    for m in _POSTCODE.finditer(text):
        add("postal_address", "a postcode", m)
    for m in _STREET.finditer(text):
        add("postal_address", "a street address", m)
    for m in _CLOCK.finditer(text):
        add("exact_time", "an exact time of day (browsing timestamps are creepy)", m)
    for kind, pattern in _SENSITIVE_PATTERNS.items():
        if pattern is not None:
            for m in pattern.finditer(text):
                add(f"sensitive_{kind}", f"a sensitive attribute ({kind.replace('_', ' ')})", m)
    me = context.customer
    others = [c for c in context.other_customers if c.id != me.id]
    tokens: list[str] = []
    for other in others:
        tokens.append(other.email)
        if other.first_name.lower() != me.first_name.lower() and len(other.first_name) >= 3:
            tokens.append(other.first_name)
    for pattern in (phrase_pattern(tokens), id_pattern([o.id for o in others])):
        if pattern is not None:
            for m in pattern.finditer(text):
                add("other_customer", "another customer's identifier", m)
    if context.now is not None:
        since = context.now - timedelta(hours=24)
        recent = {
            e.item_id
            for e in context.events
            if e.kind is EventKind.VIEW and e.timestamp >= since and e.item_id
        }
        titles = [context.catalog[i].title for i in recent if i in context.catalog]
        pattern = phrase_pattern(titles)
        if pattern is not None:
            for m in pattern.finditer(text):
                add("recently_viewed", "names a product viewed in the last 24 hours", m)
    return Verdict(name, not findings, tuple(findings), (time.perf_counter() - start) * 1000)
