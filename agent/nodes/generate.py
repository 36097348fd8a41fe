from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.context import AgentDeps
from agent.nodes._audit import record
from agent.state import EmailState, Plan
from agent.writers import CopyRequest, ProductFacts, Writer, WriteResult
from tailor.errors import LLMError


def copy_request(
    state: EmailState, plan: Plan, deps: AgentDeps, findings: tuple[str, ...] = ()
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
        action=plan.action, first_name=state.customer.first_name, products=products, findings=findings
    )


def write(writer: Writer, request: CopyRequest, deps: AgentDeps) -> tuple[WriteResult | None, str | None]:
    try:
        return writer.write_email(request, deps.brand), None
    except LLMError as exc:
        return None, str(exc)


async def generate(state: EmailState, runtime: Runtime[AgentDeps]) -> dict[str, Any]:
    """The writer fills the free text; an unreachable or unusable model is recorded, not raised."""
    start = time.perf_counter()
    deps = runtime.context
    assert state.plan is not None
    result, error = write(deps.writer, copy_request(state, state.plan, deps), deps)
    return {
        "copy": result.copy if result else None,
        "writer_error": error,
        "writer": deps.writer.name,
        "audit": record(
            "generate",
            start,
            writer=deps.writer.name,
            model=result.model if result else None,
            prompts=[str(p) for p in result.prompts] if result else [],
            tokens=result.tokens if result else 0,
            error=error,
        ),
    }
