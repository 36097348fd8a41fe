"""The agent's typed state and its plan object."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.writers import EmailCopy
from guardrails.base import Verdict
from tailor.core.models import (
    TRIGGER_KINDS,
    Customer,
    Email,
    Event,
    Evidence,
    Recommendation,
    Refusal,
    TriggerKind,
)

__all__ = [
    "ACTIONS",
    "TRIGGER_KINDS",
    "Action",
    "Alternative",
    "EmailState",
    "Plan",
    "PlanFact",
    "PlannedProduct",
    "SlotDraw",
    "Trigger",
    "TriggerKind",
]

Action = Literal["recommend", "replenishment", "abandoned_cart", "win_back", "nothing"]
# Every action a plan may take, "nothing" last: a plan lists all the others among its rejected alternatives.
ACTIONS: tuple[Action, ...] = ("abandoned_cart", "replenishment", "win_back", "recommend", "nothing")


class Trigger(BaseModel):
    """Why the agent was asked: a CRM campaign, an abandoned cart, a browse, a support contact, a win-back."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: TriggerKind = "campaign"
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


class PlanFact(BaseModel):
    """Why a plan does nothing: a fact about the customer or their history that is not a product's evidence
    (a missing consent, their local time, their last contact, what their history held)."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["consent", "quiet_hours", "frequency_cap", "holdout", "unknown_customer", "history"]
    summary: str
    event_ids: tuple[str, ...] = ()
    item_ids: tuple[str, ...] = ()


class SlotDraw(BaseModel):
    """The exploration of one product slot (``agent.exploration``): the slot, the ranked items it was drawn
    among (the planner's own first), the item it holds and that item's exact probability."""

    model_config = ConfigDict(frozen=True)

    index: int
    pool: tuple[str, ...]
    item_id: str
    propensity: float
    explored: bool


class Plan(BaseModel):
    """The next-best action, its products and reasons, and what was considered and rejected.

    Every run has one, a refused run too: its action is "nothing", ``refused`` names the rule that stopped
    it (a ``Refusal`` reason), and every other action is among ``rejected``, scored 0 when it did not
    qualify, with the reason it did not."""

    model_config = ConfigDict(frozen=True)

    action: Action
    score: float
    reason: str
    products: tuple[PlannedProduct, ...] = ()
    rejected: tuple[Alternative, ...] = ()
    evidence: tuple[Evidence | PlanFact, ...] = Field(default=())
    refused: str | None = None
    # The planner's own choice, and the exact probability this action had among the qualified ones: 1
    # unless exploration is on (``agent.exploration``), where another qualified action may be drawn.
    greedy: Action | None = None
    propensity: float = 1.0
    explored: bool = False
    slot: SlotDraw | None = None


@dataclass
class EmailState:
    customer_id: str
    trigger: Trigger = field(default_factory=Trigger)
    customer: Customer | None = None
    # load_context's consent/quiet-hours/frequency verdict when it refused: the plan cites its findings.
    gate: Verdict | None = None
    events: list[Event] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)
    plan: Plan | None = None
    copy: EmailCopy | None = None
    writer: str = ""
    writer_error: str | None = None
    # What the writer was told apart from the data (its brief): the copy-quality rail holds the copy apart.
    brief: str = ""
    example: str = ""
    fell_back: bool = False
    verdicts: list[Verdict] = field(default_factory=list)
    revisions: int = 0
    fallback_parts: list[str] = field(default_factory=list)
    email: Email | None = None
    refusal: Refusal | None = None
    audit: Annotated[list[dict[str, Any]], operator.add] = field(default_factory=list)
