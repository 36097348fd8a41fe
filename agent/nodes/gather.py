from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record
from agent.support import short
from agent.support_state import SupportDeps, SupportState
from agent.support_tools import Toolbox
from tailor.core.errors import LLMError


async def gather(state: SupportState, runtime: Runtime[SupportDeps]) -> dict[str, Any]:
    """Only the facts the question needs, each through one tool over her own data (or the catalog), timed
    and counted. Offline the intent's plan picks the tools; with a model, the model picks among those its
    question allows and the plan fills in what it left out. Nothing after the store's clock is read, so
    nothing after it is ever evidence."""
    start = time.perf_counter()
    deps = runtime.context
    assert state.customer is not None and state.guess is not None  # set by understand
    box = Toolbox(deps, state.customer, state.guess, state.asked)
    planned = box.plan()
    fell_back: list[str] = []
    model_calls = 0
    if deps.model is not None:
        try:
            model_calls = deps.model.choose_tools(state.told, box.intent, box.allowed(), box.call)
        except LLMError as exc:
            fell_back.append(f"tools: {short(exc)}")
        left_out = [name for name in planned if not box.ran(name)]
        if left_out and not fell_back:
            fell_back.append("tools: the plan ran what the model left out: " + ", ".join(left_out))
    for name in planned:
        if not box.ran(name):
            box.run(name)
    return {
        "history": box.history,
        "catalog": box.catalog,
        "entities": box.entities,
        "facts": box.facts(),
        "tools": box.calls,
        "fell_back": fell_back,
        "audit": record(
            "gather",
            start,
            tools=[c.name for c in box.calls],
            found=sum(c.found for c in box.calls),
            **({"model_calls": model_calls, "refused": box.refused} if deps.model is not None else {}),
        ),
    }
