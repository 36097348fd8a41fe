"""What the rest of Tailor needs from retrieval."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from tailor.core.models import Recommendation

__all__ = ["Recommender"]


class Recommender(Protocol):
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
