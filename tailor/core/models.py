"""Domain models: the catalog, customers, their events, and what Tailor answers with."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, get_args
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

__all__ = [
    "CONTROL_CHARACTERS",
    "EARLIEST",
    "FROM_STORE",
    "LATEST",
    "MAX_ID_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_TEXT_LENGTH",
    "TRIGGER_KINDS",
    "Consent",
    "Customer",
    "CustomerId",
    "Email",
    "EmailProduct",
    "Event",
    "EventKind",
    "Evidence",
    "Explanation",
    "ExplanationSentence",
    "Item",
    "ItemId",
    "JsonObject",
    "Name",
    "QuietHours",
    "Recommendation",
    "Refusal",
    "Text",
    "TriggerKind",
    "format_price",
    "refuse_control",
]


# Input bounds on free text (issue 25): a length cap on every free-text field, and no control or
# bidirectional formatting characters. Such characters are refused, never stripped: a field is stored as
# sent or not at all, and the 422 names the field, the character and where it is. Tab, newline and
# carriage return are text. The rest of C0 and C1 (NUL, BEL, ESC, which starts an ANSI escape), DEL, and
# the bidi controls (U+202E, the right-to-left override, makes a terminal or a page show text reversed)
# are not. Rows stored before the rule existed stay readable (``FROM_STORE``), and the CLI escapes what it
# prints anyway (``tailor.app.render``).
MAX_TEXT_LENGTH = 10_000  # a support ticket, a CRM note, an item description
MAX_NAME_LENGTH = 300  # a title, a name, a category, a country, an e-mail address, an order id
# What a CRM may ask for: the one list the API, the job runner, the CLI and the agent all read.
TriggerKind = Literal["campaign", "abandoned_cart", "browse", "support_contact", "win_back"]
TRIGGER_KINDS: tuple[TriggerKind, ...] = get_args(TriggerKind)

# A JSON object as Tailor stores and serves it (job specs and results, audit entries, report metadata). Any,
# not a recursive union: its shape is checked where it is read (pydantic models, the API's schemas), and a
# union would make every reader narrow each value the schema already guarantees.
JsonObject = dict[str, Any]

CONTROL_CHARACTERS = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)


def refuse_control(value: str) -> str:
    """``value``, or ValueError naming the first control or bidi character in it (see above)."""
    found = CONTROL_CHARACTERS.search(value)
    if found is not None:
        raise ValueError(
            f"contains the control character U+{ord(found.group()):04X} at position {found.start()}: "
            "control and bidirectional formatting characters are refused"
        )
    return value


def _bounded(most: int) -> Any:
    def check(value: str, info: ValidationInfo) -> str:
        if _from_store(info):
            return value
        if len(value) > most:
            raise ValueError(f"must be at most {most} characters (got {len(value)})")
        return refuse_control(value)

    return AfterValidator(check)


# Free text as it comes in: bounded, and free of control characters (the rule above).
Text = Annotated[str, _bounded(MAX_TEXT_LENGTH)]
Name = Annotated[str, _bounded(MAX_NAME_LENGTH)]


def _non_blank(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    return value


NonBlank = Annotated[str, AfterValidator(_non_blank)]
NonBlankName = Annotated[str, AfterValidator(_non_blank), _bounded(MAX_NAME_LENGTH)]


# The validation context the store reads its own rows with. The rules below on ids and timestamps are
# for what comes in: a row stored before a rule existed must stay readable, or it could not even be
# forgotten (``tailor forget`` reads the customer first).
FROM_STORE: Final[dict[str, Any]] = {"tailor_from_store": True}


def _from_store(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get("tailor_from_store"))


# What the HTTP routes that name a customer or an item accept (``tailor.app.http.schemas``:
# ``CustomerIdParam`` and ``ItemIdParam``). An id they refuse could be stored but never reached again: not
# deleted, not given consent, not explained.
MAX_ID_LENGTH = 100
_SPACE = re.compile(r"\s")


def _reachable_id(value: str, info: ValidationInfo, *, spaces: bool) -> str:
    if _from_store(info):
        return value
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(
            f"must be at most {MAX_ID_LENGTH} characters (got {len(value)}), or the HTTP routes cannot "
            "name it"
        )
    # A route's path segment ends at "/", even one sent as %2F: such an id never reaches its route.
    if "/" in value:
        raise ValueError("must not contain '/', or the HTTP routes cannot name it")
    if not spaces and _SPACE.search(value):
        raise ValueError("must not contain whitespace, or the HTTP routes cannot name it")
    return refuse_control(value)


def _customer_id(value: str, info: ValidationInfo) -> str:
    return _reachable_id(_non_blank(value), info, spaces=False)


def _item_id(value: str, info: ValidationInfo) -> str:
    # The item route has no whitespace rule (a space arrives as %20), so a catalog's "SKU 12" stays valid.
    return _reachable_id(_non_blank(value), info, spaces=True)


CustomerId = Annotated[str, AfterValidator(_customer_id)]
ItemId = Annotated[str, AfterValidator(_item_id)]

# A customer's purchases become ranker features in nanoseconds since the epoch (years 1677 to 2262): one
# purchase dated 1600 made every later recommendation for its customer fail. These bounds keep clear of
# that range, with room for date arithmetic around "now", and hold any real retail history.
EARLIEST: Final = datetime(1900, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(2200, 1, 1, tzinfo=UTC)


def _aware(value: datetime, info: ValidationInfo) -> datetime:
    # Naive timestamps are taken as UTC so that every comparison in Tailor is between aware datetimes.
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    else:
        try:
            value = value.astimezone(UTC)
        except OverflowError:
            # 0001-01-01T00:00+01:00 is in year 0 in UTC, which datetime cannot hold; pydantic would let
            # the OverflowError through as a crash, not as this field's error.
            raise ValueError(_out_of_range()) from None
    if not (EARLIEST <= value < LATEST) and not _from_store(info):
        raise ValueError(_out_of_range())
    return value


def _out_of_range() -> str:
    return (
        f"is out of range: timestamps must be from {EARLIEST:%Y-%m-%d} to before {LATEST:%Y-%m-%d} "
        "once converted to UTC"
    )


UTCDateTime = Annotated[datetime, AfterValidator(_aware)]

_CURRENCY_SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$"}


def format_price(amount: float, currency: str) -> str:
    """The one way a price is written anywhere Tailor shows it (templates and grounding agree on it)."""
    symbol = _CURRENCY_SYMBOLS.get(currency)
    return f"{symbol}{amount:,.2f}" if symbol else f"{amount:,.2f} {currency}"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Item(_Model):
    id: ItemId
    title: NonBlankName
    description: Text = ""
    category: NonBlankName
    price: float = Field(ge=0)
    currency: str = Field("GBP", pattern=r"^[A-Z]{3}$")
    in_stock: bool = True
    url: str = Field(pattern=r"^https://[^\s]+$")
    # Written out only when False: the store and Qdrant key an item's content by the sha256 of its JSON,
    # and a "named": true on every item would change every hash of an existing catalog (and re-embed it).
    named: bool = Field(
        True,
        description="False: the title is a stand-in (a product code), not a name. Signals that read text "
        "(catalog search, the ranker's text feature, taste vectors) leave such an item out.",
        exclude_if=lambda named: named is True,
    )

    @property
    def price_text(self) -> str:
        return format_price(self.price, self.currency)

    def embedding_text(self) -> str:
        """What search embeds (Qdrant's ``text`` vector): name, category and description."""
        return f"{self.title}. {self.category}. {self.description}".strip()

    def ranking_text(self) -> str:
        """What the ranker's text signal embeds: the product's name alone. The category and the other
        spellings that search wants make every item of a category look alike to the ranker.

        Only for a named item: an unnamed one's stand-in title is a code, and its vector would be noise
        (``retrieval.recommender.item_text_vectors`` leaves such items out)."""
        return self.title


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


def _known_zone(value: str, info: ValidationInfo) -> str:
    if _from_store(info):
        return value
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        # Quiet hours in a zone nobody can resolve would be kept in UTC instead: hours off, and silently.
        raise ValueError(f"{value!r} is not an IANA time zone (such as 'Europe/London')") from None
    return value


TimeZone = Annotated[str, AfterValidator(_known_zone)]
_TAG = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")


def _language_tag(value: str, info: ValidationInfo) -> str:
    if not _from_store(info) and not _TAG.fullmatch(value):
        raise ValueError(f"{value!r} is not a language tag (such as 'en-GB')")
    return value


LanguageTag = Annotated[str, AfterValidator(_language_tag)]


class Customer(_Model):
    id: CustomerId
    first_name: NonBlankName
    email: Name = Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    country: NonBlankName
    consent: Consent = Consent()
    quiet_hours: QuietHours | None = None
    locale: LanguageTag = Field("en-GB", description="A language tag (BCP 47).")
    timezone: TimeZone = Field("Europe/London", description="An IANA time zone: quiet hours are kept in it.")
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
_EMAIL_KINDS = {EventKind.EMAIL_OPEN, EventKind.EMAIL_CLICK}


class Event(_Model):
    id: Name | None = Field(None, description="Stable id; assigned by the store when absent.")
    customer_id: CustomerId
    kind: EventKind
    item_id: ItemId | None = None
    # Bounded so that a typo cannot overflow SQLite's 64-bit integers (a 500) or skew every aggregate.
    quantity: int | None = Field(None, ge=0, le=1_000_000_000)
    value: float | None = Field(None, allow_inf_nan=False, ge=-1e12, le=1e12)
    text: Text | None = None
    timestamp: UTCDateTime
    order_id: Name | None = None
    send_id: Name | None = Field(
        None,
        description="For an email_open or email_click: the send it belongs to, as Tailor's job result names"
        " it (`send_id`) and the email's product links carry it (`tailor_send=`).",
    )

    @model_validator(mode="after")
    def _item_events_name_an_item(self) -> Event:
        if self.kind in _ITEM_KINDS and not self.item_id:
            raise ValueError(f"a {self.kind.value} event needs an item_id")
        if self.send_id is not None and self.kind not in _EMAIL_KINDS:
            raise ValueError(f"a {self.kind.value} event has no send_id: only email_open and email_click do")
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
        # Support answers: an order and its lines, a return, a catalog item asked about, her profile.
        "order",
        "return",
        "catalog",
        "profile",
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
    writer: str = Field(
        description="Who wrote the free text: one writer, or '<writer>+template' when the template writer"
        " stood in for the parts in fallback_parts ('template' when it wrote them all)."
    )
    part_writers: dict[str, str] = Field(
        default_factory=dict,
        description="Each free-text part (subject, preheader, intro, reason:<item>)"
        " and the writer that wrote it.",
    )
    fallback_parts: tuple[str, ...] = ()


class ExplanationSentence(_Model):
    text: str
    evidence: tuple[Evidence, ...]
    # Who wrote the sentence: "template", or the model's writer when its sentence passed every rail.
    writer: str = "template"


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
        "holdout",
    ]
    detail: str
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("detail")
    @classmethod
    def _detail_present(cls, value: str) -> str:
        return _non_blank(value)
