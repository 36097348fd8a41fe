from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record
from agent.support import GuardrailNote
from agent.support_compose import compose
from agent.support_state import SupportDeps, SupportState
from guardrails.base import RailContext


async def answer(state: SupportState, runtime: Runtime[SupportDeps]) -> dict[str, Any]:
    """Every well-founded suggestion for the question's intent, best first, from the gathered facts."""
    start = time.perf_counter()
    deps = runtime.context
    assert state.customer is not None and state.guess is not None  # set by understand
    assert state.entities is not None and state.facts is not None  # set by gather
    notes: list[GuardrailNote] = []
    quoting = RailContext(
        customer=state.customer, catalog=state.catalog, brand=deps.brand, now=deps.now, purpose="support"
    )
    candidates = compose(
        state.guess.intent,
        state.entities,
        state.facts,
        customer=state.customer,
        history=state.history,
        catalog=state.catalog,
        context=quoting,
        notes=notes,
    )
    return {
        "candidates": candidates,
        "notes": notes,
        "audit": record("answer", start, candidates=[c.kind for c in candidates]),
    }
