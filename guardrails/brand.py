"""Brand: banned phrases, tone (no shouting, few exclamation marks), honest subject lines, length limits
and, for whole emails, the required footer."""

from __future__ import annotations

import re
import time
from functools import lru_cache

from guardrails._text import phrase_pattern
from guardrails.base import Finding, RailContext, Verdict
from guardrails.brand_config import BrandConfig, load_brand

__all__ = ["check", "name"]

name = "brand"

_SHOUT = re.compile(r"\b[A-Z]{2,}(?:[\s,]+[A-Z]{2,}){1,}\b|\b[A-Z]{6,}\b")
_ACRONYMS = {"LED", "UK", "USA", "DIY", "GBP", "EUR", "USD", "OK", "XL", "XXL"}
_FAKE_THREAD = re.compile(r"^\s*(?:re|fw|fwd)\s*:", re.IGNORECASE)
_URGENCY = re.compile(
    r"\b(?:only \d+ left|ends (?:today|tonight)|expires (?:today|tonight)|hurry)\b", re.IGNORECASE
)


@lru_cache(maxsize=8)
def _banned(brand: BrandConfig) -> re.Pattern[str] | None:
    return phrase_pattern(brand.banned_phrases)


def _limit(part: str | None, brand: BrandConfig) -> int | None:
    if part is None:
        return None
    if part == "subject":
        return brand.subject_max_chars
    if part == "preheader":
        return brand.preheader_max_chars
    if part == "intro":
        return brand.intro_max_chars
    if part.startswith("reason:"):
        return brand.reason_max_chars
    return None


def check(
    text: str, context: RailContext, *, part: str | None = None, brand: BrandConfig | None = None
) -> Verdict:
    start = time.perf_counter()
    brand = brand or load_brand()
    findings: list[Finding] = []
    pattern = _banned(brand)
    if pattern is not None:
        for m in pattern.finditer(text):
            findings.append(
                Finding("banned_phrase", f"banned phrase {m.group()!r}", m.start(), m.end(), part=part)
            )
    for m in _SHOUT.finditer(text):
        words = set(re.findall(r"[A-Z]{2,}", m.group()))
        if not words <= _ACRONYMS:
            findings.append(Finding("shouting", f"ALL CAPS {m.group()!r}", m.start(), m.end(), part=part))
    bangs = [m.start() for m in re.finditer("!", text)]
    if len(bangs) > brand.max_exclamation_marks:
        first_extra = bangs[brand.max_exclamation_marks]
        findings.append(
            Finding(
                "exclamation_marks",
                f"{len(bangs)} exclamation marks (at most {brand.max_exclamation_marks})",
                first_extra,
                first_extra + 1,
                part=part,
            )
        )
    for m in _URGENCY.finditer(text):
        findings.append(
            Finding("false_urgency", f"pressure tactic {m.group()!r}", m.start(), m.end(), part=part)
        )
    limit = _limit(part, brand)
    if limit is not None and len(text) > limit:
        findings.append(
            Finding(
                "too_long", f"{part} is {len(text)} characters (at most {limit})", limit, len(text), part=part
            )
        )
    if part == "subject":
        fake = _FAKE_THREAD.match(text)
        if fake:
            findings.append(
                Finding(
                    "dishonest_subject",
                    "subject pretends to be a reply or forward",
                    fake.start(),
                    fake.end(),
                    part=part,
                )
            )
        if not text.strip():
            findings.append(Finding("missing_subject", "the subject is empty", part=part))
    if part == "body_text" and context.purpose == "email":
        if brand.postal_address not in text:
            findings.append(Finding("missing_footer", "the footer lacks the postal address", part=part))
        if brand.unsubscribe_link(context.customer.id) not in text:
            findings.append(
                Finding("missing_unsubscribe", "the footer lacks the unsubscribe link", part=part)
            )
    return Verdict(name, not findings, tuple(findings), (time.perf_counter() - start) * 1000)
