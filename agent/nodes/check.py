from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import check_fields, record
from agent.compose import assemble, email_parts, other_customers, rail_context
from agent.context import AgentDeps
from agent.state import EmailState
from guardrails import check_email, failed


async def check(state: EmailState, runtime: Runtime[AgentDeps]) -> dict[str, Any]:
    """Run every rail on the assembled email, part by part."""
    start = time.perf_counter()
    deps = runtime.context
    if state.copy is None:  # the writer failed: nothing to check, the router sends it to the fallback
        return {"verdicts": [], "audit": record("check", start, skipped="no draft")}
    assert state.customer is not None and state.plan is not None
    email = assemble(
        state.copy,
        state.plan,
        state.customer,
        deps.catalog,
        deps.brand,
        writer=deps.writer.name,
        fallback_parts=tuple(state.fallback_parts),
    )
    parts = email_parts(state.copy, email)
    others = other_customers(deps.store, state.customer, parts.values(), deps.catalog, state.events)
    context = rail_context(
        state.customer,
        state.plan,
        deps.catalog,
        deps.brand,
        state.events,
        deps.now,
        others=others,
        instructions=state.brief,
        example=state.example,
        # The findings the writer was last held to: written back into the copy, they are an echo.
        findings=[f.message for f in failed(state.verdicts)],
        similarity=deps.similarity,
    )
    verdicts = check_email(parts, context)
    return {
        "verdicts": verdicts,
        "email": email,
        "audit": record("check", start, **check_fields(verdicts)),
    }
