from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record, write_fields
from agent.context import AgentDeps
from agent.state import EmailState, Plan
from agent.writers import CopyRequest, ProductFacts, Writer, WriteResult
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


def write(writer: Writer, request: CopyRequest, deps: AgentDeps) -> tuple[WriteResult | None, str | None]:
    """The writer's copy, or why there is none.

    An unreachable, failing or silent endpoint (the client has already retried, boundedly) is raised when
    ``llm_unavailable='defer'``: no email is made now, and the job runner tries the item again later. An
    answer that is unusable (``LLMOutputError``) means the model is up: that always falls back.
    """
    try:
        return writer.write_email(request, deps.brand), None
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
    result, error = write(deps.writer, copy_request(state, state.plan, deps), deps)
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
