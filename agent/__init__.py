"""The agent: a LangGraph graph that turns a trigger into a checked email or a logged refusal."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from agent.context import AgentDeps
from agent.explain import explain
from agent.graph import build_graph, mermaid
from agent.state import TRIGGER_KINDS, EmailState, Plan, Trigger, TriggerKind
from agent.support import Suggestion, SupportAnswer
from agent.support_graph import support_suggestions
from agent.writers import OpenAIWriter, ScriptedWriter, TemplateWriter, Writer, make_writer
from guardrails.base import Verdict
from tailor.core.models import Email, Refusal

__all__ = [
    "TRIGGER_KINDS",
    "AgentDeps",
    "EmailOutcome",
    "OpenAIWriter",
    "Plan",
    "ScriptedWriter",
    "Suggestion",
    "SupportAnswer",
    "TemplateWriter",
    "Trigger",
    "TriggerKind",
    "Writer",
    "build_graph",
    "explain",
    "make_writer",
    "mermaid",
    "run_email",
    "run_email_sync",
    "support_suggestions",
]


@dataclass
class EmailOutcome:
    """Exactly one of ``email`` and ``refusal`` is set; ``audit`` is the trace of every node."""

    customer_id: str
    email: Email | None
    refusal: Refusal | None
    plan: Plan | None
    verdicts: list[Verdict] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    # The token a sent email's links carry (``tailor.core.sends``); None for a preview.
    send_id: str | None = None


async def run_email(deps: AgentDeps, customer_id: str, trigger: Trigger | None = None) -> EmailOutcome:
    state = EmailState(customer_id=customer_id, trigger=trigger or Trigger())
    result = await build_graph().ainvoke(state, context=deps)
    return EmailOutcome(
        customer_id=customer_id,
        email=result.get("email"),
        refusal=result.get("refusal"),
        plan=result.get("plan"),
        verdicts=result.get("verdicts", []),
        audit=result.get("audit", []),
    )


def run_email_sync(deps: AgentDeps, customer_id: str, trigger: Trigger | None = None) -> EmailOutcome:
    return asyncio.run(run_email(deps, customer_id, trigger))
