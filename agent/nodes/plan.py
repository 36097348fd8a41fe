from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record
from agent.context import AgentDeps
from agent.planner import plan_action, refused_plan
from agent.state import EmailState
from tailor.core.models import Refusal


async def plan(state: EmailState, runtime: Runtime[AgentDeps]) -> dict[str, Any]:
    """Pick the next-best action; "nothing" becomes a logged refusal. A run refused upstream gets its
    "nothing" plan here too, from the refusal alone: no history was read, so none is scored."""
    start = time.perf_counter()
    deps = runtime.context
    update: dict[str, Any] = {}
    if state.refusal is not None:
        chosen = refused_plan(state.refusal, state.gate.findings if state.gate else ())
    else:
        chosen = plan_action(
            trigger=state.trigger,
            events=state.events,
            recommendations=state.recommendations,
            catalog=deps.catalog,
            now=deps.now,
        )
        if chosen.action == "nothing":
            update["refusal"] = Refusal(
                customer_id=state.customer_id, reason="nothing_relevant", detail=chosen.reason
            )
    update["plan"] = chosen
    update["audit"] = record(
        "plan",
        start,
        action=chosen.action,
        score=chosen.score,
        reason=chosen.reason,
        refused=chosen.refused,
        products=[p.item_id for p in chosen.products],
        rejected={a.action: a.score for a in chosen.rejected},
    )
    return update
