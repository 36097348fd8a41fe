"""Brand: banned phrases, tone (no shouting, few exclamation marks), honest subject lines, claims only the
brand allows, length limits and, for whole emails (plain and HTML bodies), the required footer."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from functools import lru_cache

from guardrails._text import CURRENCY_CODES, EMAIL, phrase_pattern
from guardrails.base import Finding, RailContext, Verdict
from tailor.core.brand import BrandConfig

__all__ = ["check", "name"]

name = "brand"

# Links, addresses and SKUs are not prose: "…/p/DCGSSBOY" is a product, not a raised voice.
_NOT_PROSE = re.compile(r"(?:https?://|www\.)[^\s<>\"')\]]+|" + EMAIL, re.IGNORECASE)
_SHOUT = re.compile(r"\b[A-Z]{2,}(?:[\s,-]+[A-Z]{2,}){1,}\b")
# One capitalised word of three letters or more ("WOW", "A MUST-HAVE") is already shouting.
_SHOUT_WORD = re.compile(r"\b[A-Z]{3,}\b")
_CAPS_WORD = re.compile(r"[A-Z]{2,}")
# Codes the brand writes in capitals: currencies, countries, sizes, formats. A catalog's own tokens (an
# SKU such as DCGSSBOY, "LED" in a title) come from the context.
_ACRONYMS = frozenset(
    {
        *CURRENCY_CODES,
        *("UK", "GB", "USA", "US", "EU", "UAE", "NHS", "BBC"),
        *("LED", "DIY", "OK", "XS", "XL", "XXL", "XXXL", "TV", "USB", "UV", "BBQ", "FAQ", "PDF", "VAT"),
        *("AM", "PM", "PS", "ID", "SKU"),
    }
)
# A subject that poses as a reply or forward, with or without the colon ("RE your question", "Re - …").
_FAKE_THREAD = re.compile(
    r"^\s*(?:\[\s*)?(?:(?:re|fw|fwd)(?:\s*\[\d+\])?\s*(?::|\]|\s+[-–—]\s*|\s+(?=\w))|(?:aw|wg|sv|tr|rv)\s*:)",
    re.IGNORECASE,
)
# A marketing email dressed as a transactional or account message.
_FAKE_TRANSACTIONAL = re.compile(
    r"\b(?:"
    r"(?:your |the )?(?:order|parcel|package|delivery|shipment)\b.{0,30}\b(?:has |have |was |is )?"
    r"(?:shipped|dispatched|delivered|confirmed|on (?:its|the) way|out for delivery|could not be delivered|"
    r"couldn'?t be delivered|failed|delayed|held|returned|cancell?ed)"
    r"|order (?:confirmation|#?\s?\d+|number)|(?:delivery|shipping) (?:failed|failure|attempt|notice|update)"
    r"|failed delivery|tracking (?:number|update)"
    r"|thanks? (?:you )?for your (?:order|purchase|payment)|invoice|receipt"
    r"|payment (?:received|failed|declined|due|overdue|confirmation|confirmed|reminder|required)"
    r"|refund (?:has been |was |is )?(?:processed|issued|approved|confirmed|sent)|your refund"
    r"|security (?:alert|notice|warning|update)|new (?:sign[- ]?in|log[- ]?in|device)"
    r"|unusual (?:activity|sign)"
    r"|password|verify your|confirm your (?:account|email|identity|details)|(?:account|identity) verification"
    r"|(?:account|subscription|membership) (?:is |has been |was |will be )?(?:suspended|locked|on hold|"
    r"disabled|deactivated|closed|expired|expiring|restricted|frozen)"
    r"|action required|urgent:|final notice"
    r"|you have (?:\(\d+\) |\d+ |an? )?(?:new |unread )?(?:messages?|voicemails?)"
    r"|(?:new|unread) messages?|voicemail|missed call"
    r"|following up on (?:your|our) (?:call|conversation|request|enquiry|inquiry|ticket|complaint|chat)"
    r"|your (?:ticket|case|claim) (?:#|no\.?|number|\d)"
    r")",
    re.IGNORECASE,
)
# Marketing claims that need the brand's say-so (``allowed_claims``) before they may be made.
_CLAIM = re.compile(
    r"(?<!\w)(?:"
    r"(?:the |our |britain'?s |the uk'?s |the world'?s |world'?s )(?:very )?best\b"
    r"|best[- ]?(?:sell(?:er|ers|ing)|value|price[sd]?|quality|buy|deal|in[- ]class|rated)\b"
    r"|cheapest|lowest prices?|unbeatable|unrivall?ed|unmatched"
    r"|guarantee[sd]?|risk[- ]free"
    r"|#\s?1(?!\d)|no\.\s?1(?!\d)|number one"
    r"|award[- ]winning|prize[- ]winning|top[- ]rated|highest[- ]rated|five[- ]star|5[- ]star"
    r"|clinically|proven|world[- ]famous|world[- ]class|100\s?%"
    r")(?!\w)",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"(?<![\w.,£€$])[£€$]?\d+(?:[.,]\d+)*%?\w*")
_OFFER = re.compile(
    r"\b(?:\d+\s?% off|half price|sale|discount(?:ed)?|voucher|coupon|promo(?:tion)?(?: code)?|"
    r"free (?:delivery|shipping|gift|p&p|postage)|cashback|bogof|buy one get one)\b",
    re.IGNORECASE,
)
# No "<" inside a tag: a run of "<" with no ">" would otherwise be scanned again from each of them.
_TAG = re.compile(r"<[^<>]*>")
_URGENCY = re.compile(
    r"\b(?:only \d+ left|ends (?:today|tonight)|expires (?:today|tonight)|hurry)\b", re.IGNORECASE
)


@lru_cache(maxsize=8)
def _banned(brand: BrandConfig) -> re.Pattern[str] | None:
    return phrase_pattern(brand.banned_phrases)


def _fold(s: str) -> str:
    return re.sub(r"[\s\-‐–]+", " ", s.lower()).strip()


@lru_cache(maxsize=8)
def _allowed_claims(brand: BrandConfig) -> tuple[str, ...]:
    return tuple(_fold(c) for c in brand.allowed_claims if c.strip())


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


def _mask(text: str) -> str:
    """The text with links and addresses blanked out, offsets kept."""
    return _NOT_PROSE.sub(lambda m: " " * len(m.group()), text)


def _catalog_word(word: str, context: RailContext) -> bool:
    if word in context.catalog:  # an SKU: a dictionary lookup, never a scan of the catalog
        return True
    for item_id in context.plan_item_ids:
        item = context.catalog.get(item_id)
        if item is not None and word in _CAPS_WORD.findall(item.title):
            return True
    return False


def _shouting(text: str, context: RailContext) -> Iterator[tuple[int, int, str]]:
    prose = _mask(text)
    allowed: dict[str, bool] = {}

    def ok(word: str) -> bool:
        if word not in allowed:
            allowed[word] = (
                word in _ACRONYMS or word == context.brand.currency or _catalog_word(word, context)
            )
        return allowed[word]

    covered: list[tuple[int, int]] = []
    for m in _SHOUT.finditer(prose):
        if not all(ok(w) for w in _CAPS_WORD.findall(m.group())):
            covered.append((m.start(), m.end()))
            yield m.start(), m.end(), m.group()
    for m in _SHOUT_WORD.finditer(prose):
        if any(s <= m.start() < e for s, e in covered) or ok(m.group()):
            continue
        yield m.start(), m.end(), m.group()


def _claims(text: str, brand: BrandConfig, context: RailContext) -> Iterator[re.Match[str]]:
    allowed = _allowed_claims(brand)
    for m in _CLAIM.finditer(_mask(text)):
        claim = _fold(m.group())
        if any(a in claim or claim in a for a in allowed) or _in_title(text, m, context):
            continue
        yield m


def _in_title(text: str, m: re.Match[str], context: RailContext) -> bool:
    """Whether the claim is part of a planned product's own name ("World's Best Mum Mug" is a product)."""
    lower = text.lower()
    for item_id in context.plan_item_ids:
        item = context.catalog.get(item_id)
        if item is None:
            continue
        title = item.title.lower()
        at = lower.find(title)
        while at >= 0:
            if at < m.end() and m.start() < at + len(title):  # "The Worlds Best Mum Mug": "The" is prose
                return True
            at = lower.find(title, at + 1)
    return False


def _plain_body(context: RailContext) -> str | None:
    """The email's body as the reader sees it (without the footer), when the runner passed it along."""
    body = context.extra.get("body_text")
    if not body:
        raw = context.extra.get("body_html")
        if not raw:
            return None
        body = html.unescape(_TAG.sub(" ", raw))
    footer = context.extra.get("footer", "")
    return body.replace(footer, "") if footer else body


def _unsupported(subject: str, context: RailContext) -> Iterator[tuple[int, int, str]]:
    """Numbers, prices, offers and planned products the subject names that the body does not contain."""
    body = _plain_body(context)
    if body is None:
        return
    folded = body.lower()
    for m in _NUMBER.finditer(subject):
        if m.group() == str(len(context.plan_item_ids)):  # "3 ideas for you" over three products
            continue
        if not re.search(rf"(?<![\w.,]){re.escape(m.group().lower())}(?![\w%]|[.,]\d)", folded):
            yield m.start(), m.end(), m.group()
    for m in _OFFER.finditer(subject):
        if m.group().lower() not in folded:
            yield m.start(), m.end(), m.group()
    lower = subject.lower()
    for item_id in context.plan_item_ids:
        item = context.catalog.get(item_id)
        if item is None:
            continue
        at = lower.find(item.title.lower())
        if at >= 0 and item.title.lower() not in folded:
            yield at, at + len(item.title), item.title


def _footer(text: str, context: RailContext, brand: BrandConfig, part: str) -> list[Finding]:
    findings: list[Finding] = []
    if part == "body_html":
        text = html.unescape(text)
    if brand.postal_address not in text:
        findings.append(Finding("missing_footer", "the footer lacks the postal address", part=part))
    if brand.unsubscribe_link(context.customer.id) not in text:
        findings.append(Finding("missing_unsubscribe", "the footer lacks the unsubscribe link", part=part))
    return findings


def check(text: str, context: RailContext, *, part: str | None = None) -> Verdict:
    start = time.perf_counter()
    brand = context.brand
    if part == "body_html":
        # Markup is not prose ("<!doctype" is no exclamation): the parts and the plain body carry the
        # tone checks; what the HTML body must have of its own is the footer.
        html_findings = _footer(text, context, brand, part) if context.purpose == "email" else []
        return Verdict(name, not html_findings, tuple(html_findings), (time.perf_counter() - start) * 1000)
    findings: list[Finding] = []
    pattern = _banned(brand)
    if pattern is not None:
        for m in pattern.finditer(text):
            findings.append(
                Finding("banned_phrase", f"banned phrase {m.group()!r}", m.start(), m.end(), part=part)
            )
    for s, e, shout in _shouting(text, context):
        findings.append(Finding("shouting", f"ALL CAPS {shout!r}", s, e, part=part))
    for m in _claims(text, brand, context):
        findings.append(
            Finding(
                "unallowed_claim",
                f"claim {m.group()!r} is not among the brand's allowed claims",
                m.start(),
                m.end(),
                part=part,
            )
        )
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
        if context.purpose == "email":
            for m in _FAKE_TRANSACTIONAL.finditer(text):
                findings.append(
                    Finding(
                        "dishonest_subject",
                        f"a marketing email posing as a transactional message ({m.group()!r})",
                        m.start(),
                        m.end(),
                        part=part,
                    )
                )
            for s, e, claim in _unsupported(text, context):
                findings.append(
                    Finding(
                        "unsupported_subject",
                        f"the subject names {claim!r}, which the body does not contain",
                        s,
                        e,
                        part=part,
                    )
                )
        if not text.strip():
            findings.append(Finding("missing_subject", "the subject is empty", part=part))
    if part == "body_text" and context.purpose == "email":
        findings.extend(_footer(text, context, brand, part))
    return Verdict(name, not findings, tuple(findings), (time.perf_counter() - start) * 1000)
