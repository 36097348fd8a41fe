from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record
from agent.context import AgentDeps
from agent.state import EmailState
from guardrails.consent import check_send
from tailor.core.errors import NotFoundError
from tailor.core.holdout import in_holdout
from tailor.core.models import Refusal

_HISTORY = 500


async def load_context(state: EmailState, runtime: Runtime[AgentDeps]) -> dict[str, Any]:
    """Load the customer and their recent history; refuse before any profiling if consent is missing.

    A refusal still goes on to ``plan`` (which reads no history then): every run leaves with a plan."""
    start = time.perf_counter()
    deps = runtime.context
    try:
        customer = deps.store.get_customer(state.customer_id)
    except NotFoundError as exc:
        refusal = Refusal(customer_id=state.customer_id, reason="unknown_customer", detail=str(exc))
        return {"refusal": refusal, "audit": record("load_context", start, refusal=refusal.reason)}
    contacts = deps.contacts(customer.id) if deps.contacts else ()
    settings = deps.settings
    verdict = check_send(
        customer,
        deps.now,
        contacts,
        frequency_cap_days=settings.frequency_cap_days,
        holdout=in_holdout(customer.id, settings.holdout_share, settings.holdout_salt),
    )
    if not verdict.passed:
        first = verdict.findings[0]
        refusal = Refusal(
            customer_id=customer.id,
            reason=first.rule,
            detail=first.message,
            data={"all": [f.rule for f in verdict.findings]},
        )
        return {
            "customer": customer,
            "gate": verdict,
            "refusal": refusal,
            "audit": record("load_context", start, customer=customer.id, consent=False, refusal=first.rule),
        }
    events = deps.store.events(customer.id, until=deps.now, limit=_HISTORY)
    return {
        "customer": customer,
        "events": events,
        "audit": record("load_context", start, customer=customer.id, events=len(events), consent=True),
    }
