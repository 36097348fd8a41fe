"""Run the rails. Fail closed: a rail that raises or overruns its time budget is a failed verdict."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from guardrails import brand, consent, copy_quality, grounding, injection, output, privacy
from guardrails.base import Finding, RailContext, Verdict

__all__ = ["DEFAULT_RAILS", "check_all", "check_email", "failed", "summary"]

RailFn = Callable[..., Verdict]
DEFAULT_RAILS: tuple[tuple[str, RailFn], ...] = (
    ("grounding", grounding.check),
    ("brand", brand.check),
    ("privacy", privacy.check),
    ("consent", consent.check),
    ("injection", injection.check),
    ("output", output.check),
)
_TAKES_PART = {"brand", "privacy", "output", "copy_quality"}
_TAG = re.compile(r"<[^<>]*>")


def _run(
    name: str, fn: RailFn, text: str, context: RailContext, part: str | None, budget_ms: float
) -> Verdict:
    start = time.perf_counter()
    try:
        verdict = fn(text, context, part=part) if name in _TAKES_PART else fn(text, context)
    except Exception as exc:
        return Verdict(
            name,
            False,
            (Finding("rail_error", f"{type(exc).__name__}: {exc}", part=part),),
            (time.perf_counter() - start) * 1000,
        )
    elapsed = (time.perf_counter() - start) * 1000
    if elapsed > budget_ms:
        return Verdict(
            name,
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
    rails: Sequence[tuple[str, RailFn]] = DEFAULT_RAILS,
    *,
    part: str | None = None,
    budget_ms: float = 250.0,
) -> list[Verdict]:
    return [_run(name, fn, text, context, part, budget_ms) for name, fn in rails]


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
    """Check an email by its named parts (subject, preheader, intro, reason:ITEM, body_text, body_html).

    Free-text parts go through every text rail; the assembled plain body is checked for grounding, the
    footer and leaks (minus the template's own footer); the HTML body for its footer and safe output.
    The injection rail reads every part, the bodies included (the HTML one as its reader sees it): one
    policy for all the text, so a product title is held to the same rule in the subject as in the third
    product line. The bodies travel in ``context.extra`` (``body_text``, ``body_html``), so the subject
    can be held to what the body says. The free-text parts also go through the copy-quality rail, which
    needs them all (``part:NAME`` in ``context.extra``) to see one repeat another."""
    rails = {**dict(DEFAULT_RAILS), "copy_quality": copy_quality.check}
    bodies = {k: parts[k] for k in ("body_text", "body_html") if k in parts}
    # Every free-text part, in reading order, so the copy-quality rail can see a part repeat an earlier one.
    free = {f"part:{k}": v for k, v in parts.items() if k not in ("body_text", "body_html")}
    if bodies or free:
        context = replace(context, extra={**context.extra, **bodies, **free})
    verdicts: list[Verdict] = [_run("consent", rails["consent"], "", context, None, budget_ms)]
    for part, text in parts.items():
        if part == "body_html":
            seen = html.unescape(_TAG.sub(" ", text))
            verdicts.append(_run("brand", rails["brand"], text, context, part, budget_ms))
            verdicts.append(_run("injection", rails["injection"], seen, context, part, budget_ms))
            verdicts.append(_run("output", rails["output"], text, context, part, budget_ms))
        elif part == "body_text":
            footer = str(context.extra.get("footer", ""))
            body = text.replace(footer, "") if footer else text
            verdicts.append(_run("grounding", rails["grounding"], body, context, part, budget_ms))
            verdicts.append(_run("brand", rails["brand"], text, context, part, budget_ms))
            verdicts.append(_run("privacy", rails["privacy"], body, context, part, budget_ms))
            verdicts.append(_run("injection", rails["injection"], body, context, part, budget_ms))
            verdicts.append(_run("output", rails["output"], text, context, part, budget_ms))
        else:
            for name in ("grounding", "brand", "privacy", "injection", "output", "copy_quality"):
                verdicts.append(_run(name, rails[name], text, context, part, budget_ms))
    return _merge(verdicts)


def failed(verdicts: Sequence[Verdict]) -> list[Finding]:
    return [f for v in verdicts for f in v.blocking] + [
        Finding("rail_failed", f"rail {v.rail} failed") for v in verdicts if not v.passed and not v.blocking
    ]


def summary(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    return {v.rail: {"passed": v.passed, "findings": [f.rule for f in v.findings]} for v in verdicts}
