"""Domain models: the catalog, customers, their events, and what Tailor answers with."""

from __future__ import annotations

from datetime import UTC, datetime, time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "Consent",
    "Customer",
    "Email",
    "EmailProduct",
    "Event",
    "EventKind",
    "Evidence",
    "Explanation",
    "ExplanationSentence",
    "Item",
    "QuietHours",
    "Recommendation",
    "Refusal",
    "format_price",
]


def _non_blank(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    return value


NonBlank = Annotated[str, AfterValidator(_non_blank)]


def _aware(value: datetime) -> datetime:
    # Naive timestamps are taken as UTC so that every comparison in Tailor is between aware datetimes.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


UTCDateTime = Annotated[datetime, AfterValidator(_aware)]

_CURRENCY_SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$"}


def format_price(amount: float, currency: str) -> str:
    """The one way a price is written anywhere Tailor shows it (templates and grounding agree on it)."""
    symbol = _CURRENCY_SYMBOLS.get(currency)
    return f"{symbol}{amount:,.2f}" if symbol else f"{amount:,.2f} {currency}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Item(_Model):
    id: NonBlank
    title: NonBlank
    description: str = ""
    category: NonBlank
    price: float = Field(ge=0)
    currency: str = Field("GBP", pattern=r"^[A-Z]{3}$")
    in_stock: bool = True
    url: str = Field(pattern=r"^https://[^\s]+$")

    @property
    def price_text(self) -> str:
        return format_price(self.price, self.currency)

    def embedding_text(self) -> str:
        return f"{self.title}. {self.category}. {self.description}".strip()


class Consent(_Model):
    marketing_email: bool = False
    personalization: bool = False


class QuietHours(_Model):
    """Local hours in which no message is sent; ``start`` may be after ``end`` (overnight)."""

    start: time
    end: time

    def contains(self, moment: time) -> bool:
        if self.start <= self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end


class Customer(_Model):
    id: NonBlank
    first_name: NonBlank
    email: str = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    country: NonBlank
    consent: Consent = Consent()
    quiet_hours: QuietHours | None = None
    locale: str = "en-GB"
    timezone: str = "Europe/London"
    synthetic: bool = Field(False, description="Name, e-mail and consent were generated, not real.")


class EventKind(StrEnum):
    VIEW = "view"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    RETURN = "return"
    SUPPORT_TICKET = "support_ticket"
    EMAIL_OPEN = "email_open"
    EMAIL_CLICK = "email_click"


_ITEM_KINDS = {EventKind.VIEW, EventKind.ADD_TO_CART, EventKind.PURCHASE, EventKind.RETURN}


class Event(_Model):
    id: str | None = Field(None, description="Stable id; assigned by the store when absent.")
    customer_id: NonBlank
    kind: EventKind
    item_id: str | None = None
    # Bounded so that a typo cannot overflow SQLite's 64-bit integers (a 500) or skew every aggregate.
    quantity: int | None = Field(None, ge=0, le=1_000_000_000)
    value: float | None = Field(None, allow_inf_nan=False, ge=-1e12, le=1e12)
    text: str | None = None
    timestamp: UTCDateTime
    order_id: str | None = None

    @model_validator(mode="after")
    def _item_events_name_an_item(self) -> Event:
        if self.kind in _ITEM_KINDS and not self.item_id:
            raise ValueError(f"a {self.kind.value} event needs an item_id")
        if self.kind is EventKind.SUPPORT_TICKET and not (self.text or "").strip():
            raise ValueError("a support_ticket event needs text")
        return self


class Evidence(_Model):
    """One fact from the customer's own data (or the catalog) that supports a recommendation."""

    kind: Literal[
        "repeat_purchase",
        "similar_customers",
        "text_similarity",
        "category_affinity",
        "trending",
        "popular",
        "cart",
        "recent_view",
        "support_ticket",
    ]
    summary: str
    event_ids: tuple[str, ...] = ()
    item_ids: tuple[str, ...] = ()
    weight: float = 0.0


class Recommendation(_Model):
    item: Item
    score: float
    rank: int = Field(ge=1)
    sources: tuple[str, ...]
    evidence: tuple[Evidence, ...] = ()


class EmailProduct(_Model):
    item_id: str
    title: str
    price_text: str
    url: str
    reason: str


class Email(_Model):
    customer_id: str
    action: str
    subject: str
    preheader: str
    body_text: str
    body_html: str
    products: tuple[EmailProduct, ...]
    writer: str
    fallback_parts: tuple[str, ...] = ()


class ExplanationSentence(_Model):
    text: str
    evidence: tuple[Evidence, ...]


class Explanation(_Model):
    customer_id: str
    item_id: str
    sentences: tuple[ExplanationSentence, ...]

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.sentences)


class Refusal(_Model):
    """A deliberate, logged decision not to send or show something."""

    customer_id: str
    reason: Literal[
        "no_marketing_consent",
        "no_personalization_consent",
        "quiet_hours",
        "frequency_cap",
        "nothing_relevant",
        "guardrail_blocked",
        "unknown_customer",
    ]
    detail: str
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("detail")
    @classmethod
    def _detail_present(cls, value: str) -> str:
        return _non_blank(value)
