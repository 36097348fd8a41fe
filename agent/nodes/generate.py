from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record, write_fields
from agent.compose import copy_parts, other_customers, rail_context
from agent.context import AgentDeps
from agent.state import EmailState, Plan
from agent.writers import EXAMPLE_NAMES, CopyRequest, EmailCopy, ProductFacts, Screen, Writer, WriteResult
from guardrails import failed
from guardrails.runner import check_part, email_context, part_kind
from tailor.core.errors import LLMError, LLMOutputError


def copy_request(
    state: EmailState,
    plan: Plan,
    deps: AgentDeps,
    *,
    parts: tuple[str, ...] | None = None,
    hints: dict[str, tuple[str, ...]] | None = None,
) -> CopyRequest:
    assert state.customer is not None
    products = tuple(
        ProductFacts(
            item_id=p.item_id,
            title=deps.catalog[p.item_id].title,
            category=deps.catalog[p.item_id].category,
            evidence=p.evidence,
        )
        for p in plan.products
    )
    return CopyRequest(
        action=plan.action,
        first_name=state.customer.first_name,
        products=products,
        parts=parts,
        previous=state.copy if parts is not None else None,
        hints=hints or {},
    )


def part_screen(state: EmailState, plan: Plan, deps: AgentDeps, findings: Sequence[str] = ()) -> Screen:
    """A drawn part held to its own row of rails (``guardrails.runner.RAILS_BY_PART``), in the context the
    check node builds, with the parts before it as the copy stands: what lets a writer keep the first of its
    draws that would pass, instead of the first it drew. What only the assembled body shows (the subject
    held to the body) is checked after, by the check node."""
    customer = state.customer
    assert customer is not None

    def screen(part: str, text: str, copy: EmailCopy, brief: str) -> bool:
        others = other_customers(deps.store, customer, [text], deps.catalog, state.events)
        context = rail_context(
            customer,
            plan,
            deps.catalog,
            deps.brand,
            state.events,
            deps.now,
            others=others,
            instructions=brief,
            example=EXAMPLE_NAMES,
            findings=findings,
            similarity=deps.similarity,
        )
        # As the check node's ``check_email`` reads the parts; the bodies are not assembled yet.
        context = email_context(copy_parts(copy), context)
        return not failed(check_part(part_kind(part), text, context, part=part))

    return screen


def write(
    writer: Writer, request: CopyRequest, deps: AgentDeps, screen: Screen | None = None
) -> tuple[WriteResult | None, str | None]:
    """The writer's copy, or why there is none.

    An unreachable, failing or silent endpoint (the client has already retried, boundedly) is raised when
    ``llm_unavailable='defer'``: no email is made now, and the job runner tries the item again later. An
    answer that is unusable (``LLMOutputError``) means the model is up: that always falls back.
    """
    try:
        return writer.write_email(request, deps.brand, screen), None
    except LLMOutputError as exc:
        return None, str(exc)
    except LLMError as exc:
        if deps.settings.llm_unavailable == "defer":
            raise
        return None, str(exc)


async def generate(state: EmailState, runtime: Runtime[AgentDeps]) -> dict[str, Any]:
    """The writer fills the free text; an unusable model is recorded, not raised (see ``write``)."""
    start = time.perf_counter()
    deps = runtime.context
    assert state.plan is not None
    screen = part_screen(state, state.plan, deps)
    result, error = write(deps.writer, copy_request(state, state.plan, deps), deps, screen)
    return {
        "copy": result.copy if result else None,
        "writer_error": error,
        "writer": deps.writer.name,
        "brief": result.brief if result else "",
        "example": result.example if result else "",
        # A part the model gave no usable answer for was filled by the template: it is the template's.
        "fallback_parts": sorted(set(state.fallback_parts) | set(result.fallback_parts if result else ())),
        "audit": record("generate", start, writer=deps.writer.name, **write_fields(result, error)),
    }
