"""Output handling: HTML is escaped or safe, links go only to allow-listed domains, no tracking images."""

from __future__ import annotations

import re
import time

from guardrails._text import LINK, link_host
from guardrails.base import Finding, RailContext, Verdict

__all__ = ["check", "name"]

name = "output"

_SCRIPT = re.compile(r"<\s*(?:script|iframe|object|embed|form|style)\b", re.IGNORECASE)
_HANDLER = re.compile(r"<[^>]+\son\w+\s*=", re.IGNORECASE)
_JS_URL = re.compile(r"(?:javascript|vbscript|data)\s*:", re.IGNORECASE)
_REMOTE_IMG = re.compile(r"<\s*img\b[^>]*\bsrc\s*=\s*[\"']?https?://[^\"'\s>]*\?", re.IGNORECASE)


def _domain_ok(url: str, allowed: tuple[str, ...]) -> bool:
    host = link_host(url)
    return bool(host) and any(host == d or host.endswith("." + d) for d in allowed)


def check(text: str, context: RailContext, *, part: str | None = None) -> Verdict:
    start = time.perf_counter()
    findings: list[Finding] = []
    for pattern, rule, message in (
        (_SCRIPT, "active_html", "script-capable HTML"),
        (_HANDLER, "event_handler", "an HTML event handler"),
        (_JS_URL, "script_url", "a script or data URL"),
        (_REMOTE_IMG, "tracking_image", "a remote image with a query string"),
    ):
        for m in pattern.finditer(text):
            findings.append(Finding(rule, message, m.start(), m.end(), part=part))
    allowed = tuple(d.lower() for d in context.allowed_domains)
    # Links with a scheme, scheme-relative ones and bare ones ("www.shop.example", "shop.example/sale"): a
    # reader's mail client makes all of them clickable.
    for m in LINK.finditer(text):
        url = m.group().rstrip(".,;:!?")
        if not _domain_ok(url, allowed):
            findings.append(
                Finding(
                    "link_domain",
                    f"link to a domain not allow-listed: {url!r}",
                    m.start(),
                    m.start() + len(url),
                    part=part,
                )
            )
    return Verdict(name, not findings, tuple(findings), (time.perf_counter() - start) * 1000)
