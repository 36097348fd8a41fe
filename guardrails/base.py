"""The shared vocabulary of every rail: a context in, a verdict with findings out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol

from tailor.core.brand import BrandConfig
from tailor.core.models import Customer, Event, Evidence, Item

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
    """What a rail may look at besides the text. Built by the agent for each output.

    ``brand`` is the retailer configuration the output was written under: the rails hold the output to that
    one (footer, voice, offers, link domains), never to one they load themselves."""

    customer: Customer
    catalog: Mapping[str, Item]
    brand: BrandConfig
    plan_item_ids: Sequence[str] = ()
    now: datetime | None = None
    events: Sequence[Event] = ()  # this customer's own history (for creepiness and grounding of claims)
    other_customers: Sequence[Customer] = ()  # identifiers that must never appear (leakage canaries)
    purpose: Literal["email", "explanation", "support", "prompt_input"] = "email"
    extra: Mapping[str, str] = field(default_factory=dict)
    # What the email is for and why each product is in it: the copy-quality rail holds a subject to the
    # occasion and a reason to its product's evidence.
    action: str = ""
    product_evidence: Mapping[str, Sequence[Evidence]] = field(default_factory=dict)
    # Cosine similarity of two texts by a sentence encoder, when one is at hand (the store's embedding model
    # in the agent): a rail that needs meaning, not words, asks it; without one it is held to the words.
    similarity: Callable[[str, str], float] | None = None

    @property
    def allowed_domains(self) -> tuple[str, ...]:
        return self.brand.allowed_link_domains

    @property
    def allowed_offers(self) -> tuple[str, ...]:
        """The offers this output may make: a support answer may make the support offers, any other output
        only the marketing ones."""
        return self.brand.support_offers if self.purpose == "support" else self.brand.allowed_offers


class Rail(Protocol):
    """What the runner calls. Each rail module in this package is one (its ``name`` and its ``check``), so
    mypy holds every module to the one signature where ``runner.RAILS_BY_PART`` names it.

    ``part`` is the email part being checked (``subject``, ``reason:ITEM``, ``body_html``…) or None for a
    whole text; a rail that reads every part alike accepts it and ignores it."""

    @property
    def name(self) -> str: ...

    def check(self, text: str, context: RailContext, *, part: str | None = None) -> Verdict: ...
