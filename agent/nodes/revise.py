from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record, write_fields
from agent.context import AgentDeps
from agent.nodes.generate import copy_request, part_screen, write
from agent.state import EmailState
from agent.writers import hints_for
from guardrails import Verdict, failed

_BODIES = ("body_text", "body_html")


def failing_parts(verdicts: list[Verdict], parts: tuple[str, ...]) -> dict[str, list[tuple[str, str]]]:
    """Each free-text part that failed, with the (rail, rule) pairs it failed.

    The assembled body repeats the free text, so a finding there is usually also found in its part, and
    then only that part is asked again (as the fallback node replaces only it). A finding on the body or on
    no part that no part's own finding explains could come from any part: it counts against all of them."""
    out: dict[str, list[tuple[str, str]]] = {}
    unexplained: list[tuple[str, str]] = []
    for v in verdicts:
        if v.passed:
            continue
        findings = v.blocking or ()
        if not findings:
            unexplained.append((v.rail, "rail_failed"))
        for f in findings:
            if f.part in parts:
                out.setdefault(f.part, []).append((v.rail, f.rule))
            elif f.part in (None, *_BODIES):
                unexplained.append((v.rail, f.rule))
    if unexplained and not out:
        for p in parts:
            out[p] = list(unexplained)
    return out


async def revise(state: EmailState, runtime: Runtime[AgentDeps]) -> dict[str, Any]:
    """The failing parts written once more by the same writer, each with a hint of what to do differently.

    The writer is never shown the rails' findings or its failed draft: a model writes them back into the
    copy ("Your previous draft…"). It gets one plain hint per failed rule, apart from the data, and only
    the failing parts are asked for again; the parts that passed are kept. A part that fails again falls
    back to the template's (the router sends the second failure to ``fallback``)."""
    start = time.perf_counter()
    deps = runtime.context
    assert state.plan is not None and state.copy is not None
    model_parts = tuple(
        p
        for p in ("subject", "preheader", "intro", *(f"reason:{x.item_id}" for x in state.plan.products))
        if p not in state.fallback_parts
    )
    failing = failing_parts(state.verdicts, model_parts)
    hints = {p: hints_for(rules) for p, rules in failing.items()}
    request = copy_request(state, state.plan, deps, parts=tuple(failing), hints=hints)
    # The findings the draft was held to: written back into a new draw, they are an echo.
    screen = part_screen(state, state.plan, deps, [f.message for f in failed(state.verdicts)])
    result, error = write(deps.writer, request, deps, screen)
    copy = state.copy
    if result is not None:
        # Whatever the writer answered, only the parts asked for are taken from it.
        copy = state.copy.with_parts({p: result.copy.part(p) for p in failing if result.copy.part(p)})
    return {
        "copy": copy,
        "writer_error": error,
        "revisions": state.revisions + 1,
        "brief": "\n".join(x for x in (state.brief, result.brief if result else "") if x),
        "fallback_parts": sorted(set(state.fallback_parts) | set(result.fallback_parts if result else ())),
        "audit": record(
            "revise",
            start,
            writer=deps.writer.name,
            parts=list(failing),
            hints=hints,
            **write_fields(result, error),
        ),
    }
