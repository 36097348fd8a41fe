"""Untrusted text: may a CRM note, a support ticket, a review or a catalog field be quoted in an output?

Text from outside is data. It may be shown to a person only as a quotation, and only when quoting it
cannot smuggle anything in: it must not read as an instruction (the injection rail's one policy, so a real
product's name is still just a name), and it must not carry what only the retailer may put in an output:
a link off the allowed domains, markup (a tracking image, a hidden link), a discount code, or an offer
that is not among the retailer's own (``RailContext.allowed_offers``). A text that fails is kept out
whole, never trimmed: what remained of it would still say what the payload wanted said.

The findings name what was found, never the payload itself, so a note that records them repeats nothing
of it.
"""

from __future__ import annotations

import re
import time

from guardrails import injection
from guardrails._text import LINK, link_host
from guardrails.base import Finding, RailContext, Verdict

__all__ = ["check", "name"]

name = "untrusted"

_MARKUP = re.compile(
    r"<\s*(?:img|a|script|iframe|object|embed|form|style|link|meta|svg)\b|!\[[^\]]*\]\(|\]\(\s*https?:",
    re.IGNORECASE,
)
# A code to type in: named as one ("code FREE70", "voucher: TWINE15", "promo code is X") or handed over
# with a verb ("use SAVE10 at checkout"). Letters and digits in capitals, as shops write them; a post code
# is an address, not a code.
_CODE = re.compile(
    r"(?<!post\s)(?<!zip\s)(?<!area\s)(?<!dialling\s)"
    r"\b(?:codes?|coupons?|vouchers?|promo(?:tion)?s?)\b\s*(?:[:#=-]\s*|is\s+|of\s+)?(?-i:[A-Z][A-Z0-9-]{2,})\b"
    r"|\b(?:use|enter|apply|redeem|quote)\s+(?-i:[A-Z0-9]*\d[A-Z0-9]*[A-Z][A-Z0-9]*|[A-Z]+\d+[A-Z0-9]*)\b",
    re.IGNORECASE,
)
# Any wording of a deal (the grounding rail's list, as a support desk reads it).
_OFFER = re.compile(
    r"\b(?:\d+(?:\.\d+)?\s?(?:%|per ?cent)\s+off|half[- ]price|discount(?:s|ed)?|vouchers?|coupons?|"
    r"promo(?:tion(?:al)?)?(?: codes?)?|(?:offer|gift) codes?|special offer|exclusive offer|money off|"
    r"free (?:gifts?|delivery|shipping|postage|p&p|returns?|samples?)|for free|free of charge|cashback|"
    r"cash back|bogof?|buy\s+(?:one|two|a|any|\d+)\b,?\s+get\b|(?:full\s+)?refund of\s+\S*\d)(?!\w)",
    re.IGNORECASE,
)


def _allowed_link(url: str, allowed: tuple[str, ...]) -> bool:
    host = link_host(url)
    return bool(host) and any(host == d or host.endswith("." + d) for d in allowed)


def _inside_allowed_offer(text: str, start: int, end: int, offers: tuple[str, ...]) -> bool:
    lower = text.lower()
    for offer in offers:
        o = offer.lower().strip()
        at = lower.find(o) if o else -1
        while at >= 0:
            if at <= start and end <= at + len(o):
                return True
            at = lower.find(o, at + 1)
    return False


def check(text: str, context: RailContext, *, part: str | None = None) -> Verdict:
    start = time.perf_counter()
    findings: list[Finding] = []
    for f in injection.check(text, context).blocking:
        findings.append(Finding("instruction", f"reads as an instruction ({f.rule})", f.start, f.end))
    allowed = tuple(d.lower() for d in context.allowed_domains)
    for m in LINK.finditer(text):
        url = m.group().rstrip(".,;:!?")
        if not _allowed_link(url, allowed):
            findings.append(Finding("link", "a link to a domain not allow-listed", m.start(), m.end()))
    for m in _MARKUP.finditer(text):
        findings.append(Finding("markup", "markup (an image, a link or a script)", m.start(), m.end()))
    for m in _CODE.finditer(text):
        findings.append(Finding("code", "a code to type in", m.start(), m.end()))
    offers = tuple(context.allowed_offers)
    for m in _OFFER.finditer(text):
        if not _inside_allowed_offer(text, m.start(), m.end(), offers):
            findings.append(Finding("offer", "an offer the retailer has not configured", m.start(), m.end()))
    findings.sort(key=lambda f: f.start)
    return Verdict(name, not findings, tuple(findings), (time.perf_counter() - start) * 1000)
