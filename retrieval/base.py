"""What the rest of Tailor needs from retrieval."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from retrieval.rules import ColdPick
from tailor.core.models import Item, Recommendation

__all__ = ["Recommender"]


class Recommender(Protocol):
    """What the agent (emails, explanations, support answers) asks of a recommender, and nothing more."""

    @property
    def catalog(self) -> Mapping[str, Item]:
        """The items it ranks, by id: the agent grounds product names and quotes in this catalog."""
        ...

    def recommend(
        self,
        customer_id: str,
        k: int = 10,
        *,
        now: datetime | None = None,
        session_item_ids: tuple[str, ...] = (),
    ) -> list[Recommendation]:
        """The top ``k`` items for a customer, business rules applied, each with its evidence."""
        ...

    def popular(self, *, now: datetime, country: str | None = None, k: int = 50) -> list[ColdPick]:
        """Best sellers in a country, each with why (the cold start): the support agent's fallback when a
        customer's own recommendations run out."""
        ...
