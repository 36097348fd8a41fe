"""The email graph: load context → retrieve → plan → generate → check → (revise | fallback) → finalize."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from langgraph.graph import END, START, StateGraph

from agent.context import AgentDeps
from agent.nodes.check import check
from agent.nodes.fallback import fallback
from agent.nodes.finalize import finalize
from agent.nodes.generate import generate
from agent.nodes.load_context import load_context
from agent.nodes.plan import plan
from agent.nodes.retrieve import retrieve
from agent.nodes.revise import revise
from agent.routers import after_check, after_context, after_plan
from agent.state import EmailState

__all__ = ["MERMAID_PATH", "build_graph", "mermaid"]

MERMAID_PATH = Path(__file__).resolve().parent / "graph.mmd"


@lru_cache(maxsize=1)
def build_graph() -> Any:
    builder = StateGraph(EmailState, context_schema=AgentDeps)
    builder.add_node("load_context", load_context)
    builder.add_node("retrieve", retrieve)
    builder.add_node("plan", plan)
    builder.add_node("generate", generate)
    builder.add_node("check", check)
    builder.add_node("revise", revise)
    builder.add_node("fallback", fallback)
    builder.add_node("finalize", finalize)
    builder.add_edge(START, "load_context")
    builder.add_conditional_edges("load_context", after_context)
    builder.add_edge("retrieve", "plan")
    builder.add_conditional_edges("plan", after_plan)
    builder.add_edge("generate", "check")
    builder.add_conditional_edges("check", after_check)
    builder.add_edge("revise", "check")
    builder.add_edge("fallback", "check")
    builder.add_edge("finalize", END)
    return builder.compile(name="tailor-email")


def mermaid() -> str:
    return str(build_graph().get_graph().draw_mermaid())
