from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record
from agent.context import AgentDeps
from agent.state import EmailState

_K = 8


async def retrieve(state: EmailState, runtime: Runtime[AgentDeps]) -> dict[str, Any]:
    """Ranked candidates with their evidence, business rules already applied by the recommender."""
    start = time.perf_counter()
    recs = runtime.context.recommender.recommend(
        state.customer_id, _K, now=runtime.context.now, session_item_ids=state.trigger.item_ids
    )
    return {
        "recommendations": recs,
        "audit": record(
            "retrieve",
            start,
            items=[r.item.id for r in recs],
            sources=sorted({s for r in recs for s in r.sources}),
        ),
    }
