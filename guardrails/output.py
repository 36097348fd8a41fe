"""Output handling: HTML is escaped or safe, links go only to allow-listed domains, no tracking images."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

from guardrails._text import LINK, link_host
from guardrails.base import Finding, RailContext, Verdict

__all__ = ["check", "name"]

name = "output"

_SCRIPT = re.compile(r"<\s*(?:script|iframe|object|embed|form|style)\b", re.IGNORECASE)
# What follows a "<", up to the next ">", that sets an event handler ("<img src=x onerror=…").
_HANDLER_IN_TAG = re.compile(r"[^>]+\son\w+\s*=", re.IGNORECASE)
_JS_URL = re.compile(r"(?:javascript|vbscript|data)\s*:", re.IGNORECASE)
_REMOTE_IMG = re.compile(r"<\s*img\b[^>]*\bsrc\s*=\s*[\"']?https?://[^\"'\s>]*\?", re.IGNORECASE)


def _event_handlers(text: str) -> Iterator[tuple[int, int]]:
    """Spans of ``<`` … ``on…=`` within one tag, as ``re.finditer(r"<[^>]+\\son\\w+\\s*=")`` gives them.

    That pattern, run as it is, reads from every ``<`` to the next ``>``: a run of ``<`` with no ``>`` costs
    time in the square of its length. A later ``<`` before the same ``>`` sees less of the tag than an earlier
    one, so it can match only if the earlier one did: each stretch is read once, from its first ``<``.
    """
    pos = 0
    while (lt := text.find("<", pos)) >= 0:
        gt = text.find(">", lt)
        end = len(text) if gt < 0 else gt
        m = _HANDLER_IN_TAG.match(text, lt + 1, end)
        if m:
            yield lt, m.end()
            pos = m.end()
        else:
            pos = end


def _domain_ok(url: str, allowed: tuple[str, ...]) -> bool:
    host = link_host(url)
    return bool(host) and any(host == d or host.endswith("." + d) for d in allowed)


def check(text: str, context: RailContext, *, part: str | None = None) -> Verdict:
    start = time.perf_counter()
    findings: list[Finding] = []
    for pattern, rule, message in (
        (_SCRIPT, "active_html", "script-capable HTML"),
        (_JS_URL, "script_url", "a script or data URL"),
        (_REMOTE_IMG, "tracking_image", "a remote image with a query string"),
    ):
        for m in pattern.finditer(text):
            findings.append(Finding(rule, message, m.start(), m.end(), part=part))
    for begin, end in _event_handlers(text):
        findings.append(Finding("event_handler", "an HTML event handler", begin, end, part=part))
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
