"""The shared vocabulary of every rail: a context in, a verdict with findings out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from tailor.models import Customer, Event, Item

__all__ = ["Finding", "Rail", "RailContext", "Severity", "Verdict"]

Severity = Literal["block", "warn"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem, pointing at the offending span of the checked text (``start``/``end`` are offsets)."""

    rule: str
    message: str
    start: int = -1
    end: int = -1
    severity: Severity = "block"
    part: str | None = None  # which part of an email (subject, intro, reason:ITEM…) when known


@dataclass(frozen=True, slots=True)
class Verdict:
    rail: str
    passed: bool
    findings: tuple[Finding, ...] = ()
    elapsed_ms: float = 0.0

    @property
    def blocking(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "block")


@dataclass(frozen=True)
class RailContext:
    """What a rail may look at besides the text. Built by the agent for each output."""

    customer: Customer
    catalog: Mapping[str, Item]
    plan_item_ids: Sequence[str] = ()
    now: datetime | None = None
    events: Sequence[Event] = ()  # this customer's own history (for creepiness and grounding of claims)
    other_customers: Sequence[Customer] = ()  # identifiers that must never appear (leakage canaries)
    allowed_domains: Sequence[str] = ("example-retail.test",)
    allowed_offers: Sequence[str] = ()
    purpose: Literal["email", "explanation", "support", "prompt_input"] = "email"
    extra: Mapping[str, str] = field(default_factory=dict)


class Rail(Protocol):
    name: str

    def check(self, text: str, context: RailContext) -> Verdict: ...
