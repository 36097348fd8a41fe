"""The agent's typed state and its plan object."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.writers import EmailCopy
from guardrails.base import Verdict
from tailor.models import Customer, Email, Event, Evidence, Recommendation, Refusal

__all__ = ["Action", "Alternative", "EmailState", "Plan", "PlannedProduct", "Trigger"]

Action = Literal["recommend", "replenishment", "abandoned_cart", "win_back", "nothing"]


class Trigger(BaseModel):
    """Why the agent was asked: a CRM campaign, an abandoned cart, a browse, a support contact, a win-back."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["campaign", "abandoned_cart", "browse", "support_contact", "win_back"] = "campaign"
    campaign_id: str | None = None
    item_ids: tuple[str, ...] = ()


class PlannedProduct(BaseModel):
    model_config = ConfigDict(frozen=True)

    item_id: str
    score: float
    evidence: tuple[Evidence, ...] = ()


class Alternative(BaseModel):
    model_config = ConfigDict(frozen=True)

    action: Action
    score: float
    why: str


class Plan(BaseModel):
    """The next-best action, its products and reasons, and what was considered and rejected."""

    model_config = ConfigDict(frozen=True)

    action: Action
    score: float
    reason: str
    products: tuple[PlannedProduct, ...] = ()
    rejected: tuple[Alternative, ...] = ()
    evidence: tuple[Evidence, ...] = Field(default=())


@dataclass
class EmailState:
    customer_id: str
    trigger: Trigger = field(default_factory=Trigger)
    customer: Customer | None = None
    events: list[Event] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    plan: Plan | None = None
    copy: EmailCopy | None = None
    writer: str = ""
    writer_error: str | None = None
    fell_back: bool = False
    verdicts: list[Verdict] = field(default_factory=list)
    revisions: int = 0
    fallback_parts: list[str] = field(default_factory=list)
    email: Email | None = None
    refusal: Refusal | None = None
    audit: Annotated[list[dict[str, Any]], operator.add] = field(default_factory=list)
