"""The support graph's typed state and its run-scoped dependencies."""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from agent.intent import Entities, IntentGuess, IntentModel
from agent.support import (
    CatalogAsk,
    GuardrailNote,
    HistorySearch,
    Suggestion,
    SupportAnswer,
    SupportModel,
    ToolCall,
)
from retrieval.base import Recommender
from retrieval.rules import ColdPick
from retrieval.search import CatalogHit
from tailor.core.brand import BrandConfig
from tailor.core.models import Customer, Event, Item, Recommendation
from tailor.data.store import Store

__all__ = ["Facts", "SupportDeps", "SupportState"]


@dataclass
class SupportDeps:
    """What a support run reads; given by the caller, never loaded from a module default."""

    store: Store
    recommender: Recommender
    brand: BrandConfig
    now: datetime | None = None
    search: HistorySearch | None = None
    ask: CatalogAsk | None = None
    # The offline intent model (the store's sentence encoder over agent/intents.toml); without one the
    # intent is read from the words that name it.
    intents: IntentModel = field(default_factory=lambda: IntentModel(None))
    # The model that picks the tools and writes the talking points; None thinks the offline way.
    model: SupportModel | None = None


@dataclass(frozen=True)
class Facts:
    """What the tools found, all of it this customer's and all of it before the clock."""

    orders: Mapping[str, tuple[Event, ...]] = field(default_factory=dict)  # the orders asked about, lines
    latest_orders: tuple[str, ...] = ()  # her newest order ids, newest first (for "no such order")
    lines: Mapping[str, tuple[Event, ...]] = field(default_factory=dict)  # every order's lines, by order
    returns: tuple[Event, ...] = ()  # returns of what was asked about, else her latest
    ticket: Event | None = None  # her ticket about this problem, if she filed one
    items: tuple[Item, ...] = ()  # catalog items the question names
    catalog_hits: tuple[CatalogHit, ...] = ()  # catalog items that answer the question and fit her
    recommendations: tuple[Recommendation, ...] = ()
    popular: tuple[ColdPick, ...] = ()  # best sellers in her country, for when her own run out
    offers: tuple[str, ...] = ()  # what the retailer's policy allows for this problem
    contacts: tuple[datetime, ...] = ()  # marketing emails sent to her, newest first


@dataclass
class SupportState:
    customer_id: str
    question: str
    asked: str = ""  # the question once instruction-like text is neutralized
    told: str = ""  # the question as a model is told it: contact and payment details redacted too
    customer: Customer | None = None
    history: Sequence[Event] = ()
    catalog: Mapping[str, Item] = field(default_factory=dict)
    guess: IntentGuess | None = None
    entities: Entities | None = None
    facts: Facts | None = None
    candidates: list[Suggestion] = field(default_factory=list)
    # The offline talking points of each candidate the model wrote for, by position: kept where the
    # model's points do not pass the rails.
    offline_points: dict[int, tuple[str, ...]] = field(default_factory=dict)
    answer: SupportAnswer | None = None
    notes: Annotated[list[GuardrailNote], operator.add] = field(default_factory=list)
    tools: Annotated[list[ToolCall], operator.add] = field(default_factory=list)
    fell_back: Annotated[list[str], operator.add] = field(default_factory=list)
    audit: Annotated[list[dict[str, Any]], operator.add] = field(default_factory=list)
