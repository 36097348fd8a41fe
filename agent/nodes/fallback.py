from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record
from agent.context import AgentDeps
from agent.nodes.generate import copy_request
from agent.state import EmailState
from agent.writers import EmailCopy, TemplateWriter
from guardrails import Verdict, failed

_TEMPLATE = TemplateWriter()
_FREE_TEXT = ("subject", "preheader", "intro")


def _because(verdicts: list[Verdict], parts: list[str], writer_error: str | None) -> dict[str, list[str]]:
    """For each replaced part, the rails whose blocking findings replaced it (``writer_error`` when there
    was no draft). A finding on the assembled body or on no part blames every replaced part, as above."""
    if writer_error is not None:
        return {p: ["writer_error"] for p in parts}
    blamed: dict[str, set[str]] = {p: set() for p in parts}
    for v in verdicts:
        if v.passed:
            continue
        named = {f.part for f in v.blocking} or {None}  # a failed rail without blocking findings blames all
        for part in parts:
            if part in named or named & {None, "body_text", "body_html"}:
                blamed[part].add(v.rail)
    return {p: sorted(r) for p, r in blamed.items()}


async def fallback(state: EmailState, runtime: Runtime[AgentDeps]) -> dict[str, Any]:
    """Replace every failing part (or all of them, when the writer failed) with the template writer's."""
    start = time.perf_counter()
    deps = runtime.context
    assert state.plan is not None
    safe = _TEMPLATE.write_email(copy_request(state, state.plan, deps), deps.brand).copy
    draft = state.copy
    if draft is None:
        parts = [*_FREE_TEXT, *[f"reason:{k}" for k in safe.reasons]]
        merged = safe
    else:
        found = {f.part for f in failed(state.verdicts)}
        bad = {p for p in found if p and p not in ("body_text", "body_html")}
        # The assembled body repeats the free text, so a finding there is usually also found in its part;
        # when no part explains it, nothing narrower than all the free text can be trusted.
        if None in found or (found & {"body_text", "body_html"} and not bad):
            bad |= {*_FREE_TEXT, *[f"reason:{k}" for k in safe.reasons]}
        # A part the template already wrote that fails again (it repeats a model's part kept before it)
        # cannot be mended by writing it again: the whole copy is the template's, which passes every rail.
        if bad and bad <= set(state.fallback_parts):
            bad = {*_FREE_TEXT, *[f"reason:{k}" for k in safe.reasons]}
        reasons = {
            k: (safe.reasons[k] if f"reason:{k}" in bad or k not in draft.reasons else draft.reasons[k])
            for k in safe.reasons
        }
        merged = EmailCopy(
            subject=safe.subject if "subject" in bad else draft.subject,
            preheader=safe.preheader if "preheader" in bad else draft.preheader,
            intro=safe.intro if "intro" in bad else draft.intro,
            reasons=reasons,
        )
        parts = sorted(bad)
    return {
        "copy": merged,
        "fell_back": True,
        "fallback_parts": sorted(set(state.fallback_parts) | set(parts)),
        "audit": record(
            "fallback",
            start,
            parts=parts,
            writer_error=state.writer_error,
            because=_because(state.verdicts, parts, state.writer_error if draft is None else None),
        ),
    }
