"""Run-scoped dependencies of the graph (LangGraph ``context_schema``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agent.writers import TemplateWriter, Writer
from guardrails import grounding
from retrieval.base import Recommender
from tailor.core.brand import BrandConfig
from tailor.core.models import Item
from tailor.core.settings import Settings
from tailor.data.store import Store

__all__ = ["AgentDeps"]


@dataclass
class AgentDeps:
    store: Store
    recommender: Recommender
    settings: Settings
    # The retailer's configuration, loaded once by the caller: no default, so no part writes or checks an
    # email under a brand other than the one the service was configured with.
    brand: BrandConfig
    writer: Writer = field(default_factory=TemplateWriter)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    # When the customer was last sent a marketing email (for the frequency cap); none known by default.
    contacts: Callable[[str], Sequence[datetime]] | None = None
    catalog: Mapping[str, Item] = field(default_factory=dict)
    # A sentence encoder's cosine similarity (``Embedder.similarity``), for the rails that need meaning.
    similarity: Callable[[str, str], float] | None = None
    # What makes this decision's exploration draws its own (``agent.exploration``): a job's, so a retry
    # draws the same; empty (a one-off email, logged nowhere), no exploration.
    decision_key: str = ""

    def __post_init__(self) -> None:
        if not self.catalog:
            self.catalog = self.store.item_map()
        # The first check would otherwise compile the catalog's patterns inside a rail's time budget.
        grounding.warm(self.catalog)
