"""The support graph: understand → (gather | refuse) → answer → guard.

``understand`` reads the question alone (its intent); ``gather`` calls only the tools that intent needs over
her own data before the clock; ``answer`` composes suggestions from those facts and the retailer's support
policy; ``guard`` passes them through the rails. Drawn in ``agent/support_graph.mmd`` (snapshot-tested).
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from langgraph.graph import END, START, StateGraph

from agent.intent import IntentModel
from agent.nodes.answer import answer
from agent.nodes.gather import gather
from agent.nodes.guard import guard_answer
from agent.nodes.refuse import refuse
from agent.nodes.understand import understand
from agent.routers import after_understand
from agent.support import CatalogAsk, HistorySearch, SupportAnswer, SupportModel
from agent.support_state import SupportDeps, SupportState
from retrieval.base import Recommender
from tailor.core.brand import BrandConfig
from tailor.data.store import Store

__all__ = ["SUPPORT_MERMAID_PATH", "build_support_graph", "support_mermaid", "support_suggestions"]

SUPPORT_MERMAID_PATH = Path(__file__).resolve().parent / "support_graph.mmd"


@lru_cache(maxsize=1)
def build_support_graph() -> Any:
    builder = StateGraph(SupportState, context_schema=SupportDeps)
    builder.add_node("understand", understand)
    builder.add_node("refuse", refuse)
    builder.add_node("gather", gather)
    builder.add_node("answer", answer)
    builder.add_node("guard", guard_answer)
    builder.add_edge(START, "understand")
    builder.add_conditional_edges("understand", after_understand)
    builder.add_edge("gather", "answer")
    builder.add_edge("answer", "guard")
    builder.add_edge("guard", END)
    builder.add_edge("refuse", END)
    return builder.compile(name="tailor-support")


def support_mermaid() -> str:
    return str(build_support_graph().get_graph().draw_mermaid())


async def run_support(
    deps: SupportDeps, customer_id: str, question: str
) -> tuple[SupportAnswer, list[dict[str, Any]]]:
    """The answer and the audit trace of every node."""
    result = await build_support_graph().ainvoke(
        SupportState(customer_id=customer_id, question=question), context=deps
    )
    answer: SupportAnswer = result["answer"]
    return answer, list(result.get("audit", []))


def support_suggestions(
    store: Store,
    recommender: Recommender,
    brand: BrandConfig,
    customer_id: str,
    question: str,
    *,
    now: datetime | None = None,
    search: HistorySearch | None = None,
    ask: CatalogAsk | None = None,
    intents: IntentModel | None = None,
    model: SupportModel | None = None,
) -> SupportAnswer:
    """Up to three suggestions that answer ``question`` about this customer, each grounded in her own data
    and passed through the rails; the intent, and the tools the answer took, come with it. With ``model``
    the model picks the tools and writes the talking points (``agent/support_model.py``)."""
    deps = SupportDeps(
        store=store, recommender=recommender, brand=brand, now=now, search=search, ask=ask, model=model
    )
    if intents is not None:
        deps.intents = intents
    answer, _ = asyncio.run(run_support(deps, customer_id, question))
    return answer
