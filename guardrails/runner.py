"""Run the rails. Fail closed: a rail that raises or overruns its time budget is a failed verdict.

``RAILS_BY_PART`` is the one place that says which rail runs on which part of an output, and what of that
part it reads; every rail is called through the one ``Rail`` interface (``guardrails.base``)."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from guardrails import brand, consent, copy_quality, grounding, injection, output, privacy, untrusted
from guardrails.base import Finding, Rail, RailContext, Verdict

__all__ = [
    "RAILS",
    "RAILS_BY_PART",
    "PartKind",
    "RailSpec",
    "check_all",
    "check_email",
    "check_part",
    "email_context",
    "failed",
    "part_kind",
    "summary",
]

PartKind = Literal[
    "email",
    "subject",
    "preheader",
    "intro",
    "reason",
    "other",
    "body_text",
    "body_html",
    "explanation",
    "explanation_sentence",
    "support_ticket",
    "support_point",
    "support_model_point",
]
# What of a part a rail reads: (the part's text, the context) -> the text handed to the rail.
TextView = Callable[[str, RailContext], str]
_TAG = re.compile(r"<[^<>]*>")


def _as_written(text: str, context: RailContext) -> str:
    return text


def _without_footer(text: str, context: RailContext) -> str:
    # The template's own footer is the shop's words, not the writer's: nothing in it to ground or to leak.
    footer = str(context.extra.get("footer", ""))
    return text.replace(footer, "") if footer else text


def _as_read(text: str, context: RailContext) -> str:
    # Markup is not what the reader reads: an instruction hidden between tags or behind entities is.
    return html.unescape(_TAG.sub(" ", text))


def _nothing(text: str, context: RailContext) -> str:
    # A decision about the customer, not about words: the rail is given none.
    return ""


@dataclass(frozen=True, slots=True)
class RailSpec:
    """One rail in a row of the table, and what of the part it is handed (the part as written by default)."""

    rail: Rail
    reads: TextView = _as_written


_COPY = (
    RailSpec(grounding),
    RailSpec(brand),
    RailSpec(privacy),
    RailSpec(injection),
    RailSpec(output),
    RailSpec(copy_quality),
)
_WHOLE_TEXT = (
    RailSpec(grounding),
    RailSpec(brand),
    RailSpec(privacy),
    RailSpec(consent),
    RailSpec(injection),
    RailSpec(output),
)

# Which rails run on which part, in order, and what of the part each reads. A rail module that is not here
# runs nowhere (tests/test_rails_table.py fails on one).
RAILS_BY_PART: Mapping[PartKind, tuple[RailSpec, ...]] = {
    # -- an email (check_email): consent once for the email, then each part by its kind ------------------
    "email": (RailSpec(consent, reads=_nothing),),
    # The writer's free text. The copy-quality rail sees every part (``part:NAME`` in the context), so it
    # can see one repeat another.
    "subject": _COPY,
    "preheader": _COPY,
    "intro": _COPY,
    "reason": _COPY,  # reason:ITEM, one per product
    "other": _COPY,  # free text under a name of the caller's own (the safety eval's product lines)
    # The assembled bodies: the brand rail reads each whole for its footer; the injection rail reads every
    # body, one policy for all the text, the HTML as its reader sees it.
    "body_text": (
        RailSpec(grounding, reads=_without_footer),
        RailSpec(brand),
        RailSpec(privacy, reads=_without_footer),
        RailSpec(injection, reads=_without_footer),
        RailSpec(output),
    ),
    "body_html": (
        RailSpec(brand),
        RailSpec(injection, reads=_as_read),
        RailSpec(output),
    ),
    # -- an explanation of a recommendation (agent/explain.py) -------------------------------------------
    "explanation": _WHOLE_TEXT,  # the sentences together
    "explanation_sentence": (*_WHOLE_TEXT, RailSpec(copy_quality)),  # a model's sentence, as a reason
    # -- a support answer (agent/support.py). There a finding redacts or withholds a text rather than
    # refusing the answer, so support calls these rails one by one, each to its own end; these rows are the
    # rails it calls (tests/test_rails_table.py holds them to it). ----------------------------------------
    "support_ticket": (RailSpec(untrusted),),  # the ticket's own words, quoted whole or not at all
    "support_point": (RailSpec(injection), RailSpec(output), RailSpec(privacy)),  # each talking point
    # A talking point a model wrote, held to its suggestion's evidence and to being something an agent can
    # say, before it may replace the offline one (then it goes through ``support_point`` like any other).
    "support_model_point": (RailSpec(grounding), RailSpec(brand), RailSpec(copy_quality)),
}
# Every rail the table runs, each once, in the table's order.
RAILS: tuple[Rail, ...] = tuple(dict.fromkeys(s.rail for row in RAILS_BY_PART.values() for s in row))
_NAMED_PARTS: Mapping[str, PartKind] = {
    "subject": "subject",
    "preheader": "preheader",
    "intro": "intro",
    "body_text": "body_text",
    "body_html": "body_html",
}


def part_kind(part: str) -> PartKind:
    """The table's row for an email part named ``part`` (``reason:ITEM`` is a ``reason``)."""
    return "reason" if part.startswith("reason:") else _NAMED_PARTS.get(part, "other")


def _run(rail: Rail, text: str, context: RailContext, part: str | None, budget_ms: float) -> Verdict:
    start = time.perf_counter()
    try:
        verdict = rail.check(text, context, part=part)
    except Exception as exc:
        return Verdict(
            rail.name,
            False,
            (Finding("rail_error", f"{type(exc).__name__}: {exc}", part=part),),
            (time.perf_counter() - start) * 1000,
        )
    elapsed = (time.perf_counter() - start) * 1000
    if elapsed > budget_ms:
        return Verdict(
            rail.name,
            False,
            (*verdict.findings, Finding("rail_timeout", f"took {elapsed:.0f} ms", part=part)),
            elapsed,
        )
    if part is not None:
        findings = tuple(
            f if f.part else Finding(f.rule, f.message, f.start, f.end, f.severity, part)
            for f in verdict.findings
        )
        verdict = Verdict(verdict.rail, verdict.passed, findings, elapsed)
    return verdict


def check_all(
    text: str,
    context: RailContext,
    rails: Iterable[Rail],
    *,
    part: str | None = None,
    budget_ms: float = 250.0,
) -> list[Verdict]:
    """``rails`` on ``text``, each reading it whole: for a set of rails of the caller's choosing (a bench,
    a test). What the agent checks goes through ``check_part`` or ``check_email``."""
    return [_run(rail, text, context, part, budget_ms) for rail in rails]


def check_part(
    kind: PartKind,
    text: str,
    context: RailContext,
    *,
    part: str | None = None,
    budget_ms: float = 250.0,
) -> list[Verdict]:
    """The rails of ``kind``'s row on ``text``, each on what of it the row says it reads. ``part`` is the
    name the findings are put under (``reason:ITEM``), None for a whole text."""
    return [_run(s.rail, s.reads(text, context), context, part, budget_ms) for s in RAILS_BY_PART[kind]]


def _merge(verdicts: Sequence[Verdict]) -> list[Verdict]:
    by_rail: dict[str, list[Verdict]] = {}
    for v in verdicts:
        by_rail.setdefault(v.rail, []).append(v)
    return [
        Verdict(
            rail,
            all(v.passed for v in vs),
            tuple(f for v in vs for f in v.findings),
            sum(v.elapsed_ms for v in vs),
        )
        for rail, vs in by_rail.items()
    ]


def check_email(parts: Mapping[str, str], context: RailContext, *, budget_ms: float = 250.0) -> list[Verdict]:
    """Check an email by its named parts (subject, preheader, intro, reason:ITEM, body_text, body_html),
    each by its row of ``RAILS_BY_PART``: one verdict per rail, its findings from every part.

    The bodies travel in ``context.extra`` (``body_text``, ``body_html``), so the subject can be held to
    what the body says, and so does every free-text part (``part:NAME``, in reading order), so the
    copy-quality rail can see a part repeat an earlier one."""
    context = email_context(parts, context)
    verdicts = check_part("email", "", context, budget_ms=budget_ms)
    for part, text in parts.items():
        verdicts.extend(check_part(part_kind(part), text, context, part=part, budget_ms=budget_ms))
    return _merge(verdicts)


def email_context(parts: Mapping[str, str], context: RailContext) -> RailContext:
    """``context`` with an email's parts in ``extra``, as ``check_email`` hands them to every rail: the
    bodies by name, each free-text part as ``part:NAME`` in reading order."""
    bodies = {k: parts[k] for k in ("body_text", "body_html") if k in parts}
    free = {f"part:{k}": v for k, v in parts.items() if k not in ("body_text", "body_html")}
    if not bodies and not free:
        return context
    return replace(context, extra={**context.extra, **bodies, **free})


def failed(verdicts: Sequence[Verdict]) -> list[Finding]:
    return [f for v in verdicts for f in v.blocking] + [
        Finding("rail_failed", f"rail {v.rail} failed") for v in verdicts if not v.passed and not v.blocking
    ]


def summary(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    return {v.rail: {"passed": v.passed, "findings": [f.rule for f in v.findings]} for v in verdicts}
