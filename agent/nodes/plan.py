from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record
from agent.context import AgentDeps
from agent.exploration import Exploration
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
            exploration=_exploration(deps),
            customer_id=state.customer_id,
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
        greedy=chosen.greedy,
        propensity=chosen.propensity,
        explored=chosen.explored,
        slot=chosen.slot.model_dump() if chosen.slot is not None else None,
    )
    return update


def _exploration(deps: AgentDeps) -> Exploration | None:
    """The run's exploration: the configured share, only for a decision that is logged (a job item, whose
    id keys its draws, so a retry draws the same). A one-off email (the CLI, a preview without a job) is
    the planner's own choice: an explored email nobody logs would cost the customer and teach nothing."""
    if not deps.decision_key:
        return None
    settings = deps.settings
    return Exploration(share=settings.explore_share, salt=settings.holdout_salt, key=deps.decision_key)
