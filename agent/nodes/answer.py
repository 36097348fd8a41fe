from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record
from agent.support import WANTED, GuardrailNote, short
from agent.support_compose import compose
from agent.support_state import SupportDeps, SupportState
from guardrails import grounding
from guardrails.base import RailContext
from tailor.core.errors import LLMError, LLMOutputError


async def answer(state: SupportState, runtime: Runtime[SupportDeps]) -> dict[str, Any]:
    """Every well-founded suggestion for the question's intent, best first, from the gathered facts; with a
    model, the talking points of the first few are the model's (the guard holds them to their evidence)."""
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
    offline: dict[int, tuple[str, ...]] = {}
    fell_back: list[str] = []
    if deps.model is not None:
        # The guard holds every point the model writes to the grounding rail: its catalog index is built
        # now, not inside the rail's time budget.
        grounding.warm(state.catalog)
        for n, candidate in enumerate(candidates[:WANTED]):
            offers = state.facts.offers if candidate.kind == "offer" else ()
            try:
                points = deps.model.write_points(state.told, candidate, offers)
            except LLMOutputError as exc:
                fell_back.append(f"points of {candidate.kind}: {short(exc)}")
                continue
            except LLMError as exc:
                fell_back.append(f"points: {short(exc)}")
                break  # the endpoint is down: the rest keep their offline points without waiting on it
            offline[n] = candidate.talking_points
            candidates[n] = candidate.model_copy(update={"talking_points": points, "points_by": "model"})
    return {
        "candidates": candidates,
        "offline_points": offline,
        "notes": notes,
        "fell_back": fell_back,
        "audit": record(
            "answer",
            start,
            candidates=[c.kind for c in candidates],
            **({"model_wrote": sorted(offline)} if deps.model is not None else {}),
        ),
    }
