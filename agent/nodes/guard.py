from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record
from agent.compose import other_customers
from agent.support import GuardrailNote, Suggestion, SupportAnswer, guard
from agent.support_state import SupportDeps, SupportState
from guardrails.base import RailContext

_WANTED = 3


async def guard_answer(state: SupportState, runtime: Runtime[SupportDeps]) -> dict[str, Any]:
    """The first three suggestions that pass the rails (redacted where a span can go, dropped otherwise),
    and the answer with what the rails did, the intent and the tools it took."""
    start = time.perf_counter()
    deps = runtime.context
    assert state.customer is not None and state.guess is not None and state.entities is not None
    texts = [t for s in state.candidates for t in (*s.talking_points, *(e.summary for e in s.evidence))]
    context = RailContext(
        customer=state.customer,
        catalog=state.catalog,
        brand=deps.brand,
        now=deps.now,
        events=state.history,
        other_customers=other_customers(
            deps.store, state.customer, [state.asked, *texts], state.catalog, state.history
        ),
        purpose="support",
    )
    kept: list[Suggestion] = []
    notes: list[GuardrailNote] = []
    for candidate in state.candidates:
        if len(kept) >= _WANTED:
            break
        safe, note = guard(candidate, context)
        if note is not None:
            notes.append(note)
        if safe is not None:
            kept.append(safe)
    no_match = state.entities.unknown_order_ids if not (state.facts and state.facts.orders) else ()
    result = SupportAnswer(
        customer_id=state.customer.id,
        question=state.asked,
        suggestions=tuple(kept),
        guardrail_notes=(*state.notes, *notes),
        intent=state.guess.intent,
        confidence=round(state.guess.confidence, 3),
        no_match=tuple(no_match),
        tools=tuple(state.tools),
    )
    return {
        "answer": result,
        "notes": notes,
        "audit": record("guard", start, kept=len(kept), notes=[n.action for n in notes]),
    }
