from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record
from agent.context import AgentDeps
from agent.planner import plan_action
from agent.state import EmailState
from tailor.models import Refusal


async def plan(state: EmailState, runtime: Runtime[AgentDeps]) -> dict[str, Any]:
    """Pick the next-best action; "nothing" becomes a logged refusal."""
    start = time.perf_counter()
    deps = runtime.context
    chosen = plan_action(
        trigger=state.trigger,
        events=state.events,
        recommendations=state.recommendations,
        catalog=deps.catalog,
        now=deps.now,
    )
    update: dict[str, Any] = {"plan": chosen}
    if chosen.action == "nothing":
        update["refusal"] = Refusal(
            customer_id=state.customer_id, reason="nothing_relevant", detail=chosen.reason
        )
    update["audit"] = record(
        "plan",
        start,
        action=chosen.action,
        score=chosen.score,
        products=[p.item_id for p in chosen.products],
        rejected={a.action: a.score for a in chosen.rejected},
    )
    return update
