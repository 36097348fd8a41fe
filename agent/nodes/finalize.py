from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record
from agent.context import AgentDeps
from agent.state import EmailState
from guardrails import failed
from tailor.core.models import Refusal


async def finalize(state: EmailState, runtime: Runtime[AgentDeps]) -> dict[str, Any]:
    """Release the email only if every rail passed; otherwise a logged refusal. Never anything unchecked."""
    start = time.perf_counter()
    if state.refusal is not None:
        return {
            "email": None,
            "audit": record("finalize", start, outcome="refused", reason=state.refusal.reason),
        }
    blocking = failed(state.verdicts)
    if state.email is None or not state.verdicts or blocking:
        detail = "; ".join(f"{f.part or 'email'}: {f.message}" for f in blocking[:3]) or "no checked draft"
        refusal = Refusal(
            customer_id=state.customer_id,
            reason="guardrail_blocked",
            detail=detail,
            data={"rules": sorted({f.rule for f in blocking})},
        )
        return {
            "email": None,
            "refusal": refusal,
            "audit": record("finalize", start, outcome="blocked", rules=refusal.data["rules"]),
        }
    return {
        "audit": record(
            "finalize",
            start,
            outcome="sent",
            writer=state.email.writer,
            fallback_parts=state.email.fallback_parts,
            products=[p.item_id for p in state.email.products],
        )
    }
