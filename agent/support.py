"""Suggestions for a support agent: resolve, make amends within what the brand allows, suggest a product.
Each comes with talking points and the evidence from the customer's own history behind it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from guardrails.brand_config import BrandConfig
from guardrails.injection import neutralize
from prompts import render
from retrieval.base import Recommender
from tailor.models import EventKind, Evidence
from tailor.store import Store

__all__ = ["HistorySearch", "Suggestion", "SupportAnswer", "history_search", "support_suggestions"]

HistorySearch = Callable[[str, str, int], Sequence[Any]]  # (customer_id, question, limit) -> hits


def history_search(vectors: Any, embedder: Any) -> HistorySearch:
    """Semantic search over one customer's own text history in Qdrant (``VectorStore.search_history``)."""

    def search(customer_id: str, question: str, limit: int) -> Sequence[Any]:
        vector = embedder.encode([question])[0]
        return list(vectors.search_history(customer_id, vector, limit))

    return search


class Suggestion(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str
    title: str
    talking_points: tuple[str, ...]
    evidence: tuple[Evidence, ...]


class SupportAnswer(BaseModel):
    model_config = ConfigDict(frozen=True)

    customer_id: str
    question: str
    suggestions: tuple[Suggestion, ...]


def _points(text: str) -> tuple[str, ...]:
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def support_suggestions(
    store: Store,
    recommender: Recommender,
    brand: BrandConfig,
    customer_id: str,
    question: str,
    *,
    now: datetime | None = None,
    search: HistorySearch | None = None,
) -> SupportAnswer:
    customer = store.get_customer(customer_id)
    asked = neutralize(question)
    suggestions: list[Suggestion] = []
    hits = list(search(customer_id, asked, 3)) if search else []
    tickets = [h for h in hits if getattr(h, "kind", "") == EventKind.SUPPORT_TICKET.value]
    if not tickets:
        events = store.events(customer_id, kinds=[EventKind.SUPPORT_TICKET], until=now, limit=1)
        tickets = [type("Hit", (), {"event_id": e.id, "text": e.text, "score": 0.0})() for e in events]
    orders = store.events(customer_id, kinds=[EventKind.PURCHASE], until=now, limit=1)
    if tickets:
        ticket = tickets[0]
        text, _ = render(
            "support.j2",
            kind="resolve",
            ticket=neutralize(str(ticket.text)),
            order=orders[0].order_id if orders else "their last order",
        )
        suggestions.append(
            Suggestion(
                kind="resolve",
                title="Resolve the reported problem",
                talking_points=_points(text),
                evidence=(
                    Evidence(
                        kind="support_ticket",
                        summary=f"ticket: {neutralize(str(ticket.text))[:120]}",
                        event_ids=(str(ticket.event_id),),
                    ),
                ),
            )
        )
    elif orders:
        order = orders[0]
        text, _ = render(
            "support.j2", kind="resolve", ticket=asked[:200], order=order.order_id or "their last order"
        )
        suggestions.append(
            Suggestion(
                kind="resolve",
                title="Check their latest order",
                talking_points=_points(text),
                evidence=(
                    Evidence(
                        kind="repeat_purchase",
                        summary=f"latest order {order.order_id} on {order.timestamp:%Y-%m-%d}",
                        event_ids=(order.id or "",),
                    ),
                ),
            )
        )
    offer = brand.allowed_offers[0] if brand.allowed_offers else "a sincere apology"
    text, _ = render("support.j2", kind="offer", offer=offer)
    suggestions.append(
        Suggestion(kind="offer", title="Make amends within policy", talking_points=_points(text), evidence=())
    )
    recs = recommender.recommend(customer_id, 3, now=now) if customer.consent.personalization else []
    for rec in recs:
        if len(suggestions) >= 3:
            break
        reason = rec.evidence[0].summary if rec.evidence else "a customer favourite"
        text, _ = render(
            "support.j2", kind="product", title=rec.item.title, price=rec.item.price_text, reason=reason
        )
        suggestions.append(
            Suggestion(
                kind="product",
                title=f"Suggest {rec.item.title}",
                talking_points=_points(text),
                evidence=rec.evidence[:2],
            )
        )
    return SupportAnswer(customer_id=customer.id, question=asked, suggestions=tuple(suggestions[:3]))
