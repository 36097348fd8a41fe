"""Run-scoped dependencies of the graph (LangGraph ``context_schema``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agent.writers import TemplateWriter, Writer
from guardrails import grounding
from guardrails.brand_config import BrandConfig, load_brand
from retrieval.base import Recommender
from tailor.models import Item
from tailor.settings import Settings
from tailor.store import Store

__all__ = ["AgentDeps"]


@dataclass
class AgentDeps:
    store: Store
    recommender: Recommender
    settings: Settings
    writer: Writer = field(default_factory=TemplateWriter)
    brand: BrandConfig = field(default_factory=load_brand)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    # When the customer was last sent a marketing email (for the frequency cap); none known by default.
    contacts: Callable[[str], Sequence[datetime]] | None = None
    catalog: Mapping[str, Item] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.catalog:
            self.catalog = self.store.item_map()
        # The first check would otherwise compile the catalog's patterns inside a rail's time budget.
        grounding.warm(self.catalog)
