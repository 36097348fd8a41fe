from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record
from agent.support import GuardrailNote, untold
from agent.support_state import SupportDeps, SupportState
from guardrails.injection import MARKER, defuse


async def understand(state: SupportState, runtime: Runtime[SupportDeps]) -> dict[str, Any]:
    """What the question asks (its intent), from the question alone: nothing of her history is read until
    her consent allows it (``routers.after_understand``). Instruction-like text is neutralized first, and
    never searched with."""
    start = time.perf_counter()
    deps = runtime.context
    customer = deps.store.get_customer(state.customer_id)
    asked, changed = defuse(state.question)
    notes: list[GuardrailNote] = []
    if changed:
        notes.append(
            GuardrailNote(
                kind="question",
                title="The question",
                action="neutralized",
                rules=tuple(sorted({f"injection:{f.rule}" for f in changed})),
                detail="instruction-like text in the question was replaced by a marker before it was used",
            )
        )
    # What is left once the instruction-like text is out is what the question asks.
    guess = deps.intents.guess(asked.replace(MARKER, " "))
    # An agent may paste her e-mail or phone number into the question: a model endpoint is not told them.
    told = untold(asked, customer, deps.brand) if deps.model is not None else asked
    return {
        "customer": customer,
        "asked": asked,
        "told": told,
        "guess": guess,
        "notes": notes,
        "audit": record("understand", start, intent=guess.intent, confidence=round(guess.confidence, 3)),
    }
