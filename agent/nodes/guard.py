from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record
from agent.compose import other_customers
from agent.support import WANTED, GuardrailNote, Suggestion, SupportAnswer, guard
from agent.support_state import SupportDeps, SupportState
from guardrails.base import RailContext
from guardrails.runner import check_part


def held_to_evidence(
    candidate: Suggestion,
    offline: tuple[str, ...],
    context: RailContext,
    offers: tuple[str, ...],
    question: str = "",
) -> tuple[Suggestion, GuardrailNote | None, list[str]]:
    """A model's talking points, each held to its suggestion's own evidence (the grounding and brand
    rails): those that pass stay; none passing, the offline points come back. The note and
    the rules that failed say what was done."""
    facts = " ".join(
        [
            *(e.summary for e in candidate.evidence),
            *(
                context.catalog[i].title
                for e in candidate.evidence
                for i in e.item_ids
                if i in context.catalog
            ),
            *offers,
        ]
    )
    items = tuple(dict.fromkeys(i for e in candidate.evidence for i in e.item_ids))
    own = RailContext(
        customer=context.customer,
        catalog=context.catalog,
        # The offers this suggestion may make are its problem's, and only on the suggestion that makes them.
        brand=context.brand.model_copy(update={"support_offers": offers}),
        plan_item_ids=items,
        now=context.now,
        events=context.events,
        purpose="support",
        extra={"facts": facts, "question": question},
    )
    kept: list[str] = []
    failed: list[str] = []
    for point in candidate.talking_points:
        found = [
            f"{v.rail}:{f.rule}"
            for v in check_part("support_model_point", point, own, part="support_point")
            for f in v.findings
        ]
        if found:
            failed.extend(found)
        else:
            kept.append(point)
    said = " ".join(kept).lower()
    if offers and kept and not any(o.lower() in said for o in offers):
        # Amends that do not say what the amends are are no amends: the policy's own words come back.
        failed.append("support:offer_unsaid")
        kept = []
    if not failed:
        return candidate, None, []
    rules = tuple(sorted(set(failed)))
    if kept:
        note = GuardrailNote(
            kind=candidate.kind,
            title=candidate.title,
            action="trimmed",
            rules=rules,
            detail=f"{len(candidate.talking_points) - len(kept)} of the model's talking points did not"
            " stand on the suggestion's evidence and were left out",
        )
        return candidate.model_copy(update={"talking_points": tuple(kept)}), note, failed
    note = GuardrailNote(
        kind=candidate.kind,
        title=candidate.title,
        action="replaced",
        rules=rules,
        detail="none of the model's talking points stood on the suggestion's evidence: the offline ones"
        " are shown",
    )
    back = candidate.model_copy(update={"talking_points": offline, "points_by": "template"})
    return back, note, sorted(set(failed))


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
    fell_back: list[str] = []
    offers = state.facts.offers if state.facts else ()
    for n, candidate in enumerate(state.candidates):
        if len(kept) >= WANTED:
            break
        if n in state.offline_points:
            candidate, note, failed = held_to_evidence(
                candidate,
                state.offline_points[n],
                context,
                offers if candidate.kind == "offer" else (),
                state.asked,
            )
            if note is not None:
                notes.append(note)
            if note is not None and note.action == "replaced":
                fell_back.append(f"points of {candidate.kind}: " + ", ".join(failed))
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
        thinker=deps.model.name if deps.model is not None else "offline",
        fell_back=(*state.fell_back, *fell_back),
    )
    return {
        "answer": result,
        "notes": notes,
        "audit": record("guard", start, kept=len(kept), notes=[n.action for n in notes]),
    }
