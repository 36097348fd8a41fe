from __future__ import annotations

import time
from typing import Any

from langgraph.runtime import Runtime

from agent.audit import record, write_fields
from agent.context import AgentDeps
from agent.nodes.generate import copy_request, write
from agent.state import EmailState
from guardrails import failed


async def revise(state: EmailState, runtime: Runtime[AgentDeps]) -> dict[str, Any]:
    """One more draft from the same writer, told exactly what the guardrails objected to."""
    start = time.perf_counter()
    deps = runtime.context
    assert state.plan is not None
    findings = tuple(f"{f.part or 'text'}: {f.message}" for f in failed(state.verdicts))[:8]
    result, error = write(deps.writer, copy_request(state, state.plan, deps, findings), deps)
    return {
        "copy": result.copy if result else state.copy,
        "writer_error": error,
        "revisions": state.revisions + 1,
        "audit": record(
            "revise", start, writer=deps.writer.name, findings=list(findings), **write_fields(result, error)
        ),
    }
