"""Who a campaign goes to: a list of customer ids, a filter on profile and purchase facts, or both.

Criteria combine by intersection: a customer is in the audience when every given criterion holds. The
facts come from ``Store.customer_facts`` in one query (the purchase aggregate only when a purchase
criterion is given), so an audience over the whole demo store (about 4,300 customers) resolves in one pass.
A list of ids alone is taken as given, unknown ids included: the campaign then reports each of them as
``unknown_customer``, which tells the CRM more than dropping them would.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from tailor.core.errors import RecordError
from tailor.core.models import MAX_ID_LENGTH, refuse_control
from tailor.data.store import CustomerFacts, Store

__all__ = ["Audience", "select"]

_Country = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(refuse_control)]
_Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(refuse_control)]


def _listed(value: object) -> object:
    return [value] if isinstance(value, str) else value


# One country or a list; held as a list so that an error names ``country`` (or ``country.2``), not a
# union member.
_Countries = Annotated[
    list[_Country],
    Field(min_length=1, max_length=300),
    BeforeValidator(_listed, json_schema_input_type=_Country | list[_Country]),
]


class Audience(BaseModel):
    """A campaign's audience. Dates are UTC days: ``last_purchase_since`` matches a last purchase on that
    day or later, ``last_purchase_before`` one before that day, so together they are a half-open range;
    a customer with no purchase matches neither."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    customer_ids: list[_Id] | None = Field(
        None, min_length=1, max_length=100_000, description="These customers (intersected with any filter)."
    )
    country: _Countries | None = Field(None, description="One country or a list, case-blind.")
    marketing_email: bool | None = Field(None, description="The customer's marketing e-mail consent.")
    min_orders: int | None = Field(None, ge=0, description="At least this many distinct orders.")
    max_orders: int | None = Field(None, ge=0, description="At most this many distinct orders.")
    min_spend: float | None = Field(None, ge=0, description="Purchases less returns, at least this much.")
    max_spend: float | None = Field(None, ge=0, description="Purchases less returns, at most this much.")
    last_purchase_since: date | None = Field(None, description="Last purchase on this day or later.")
    last_purchase_before: date | None = Field(None, description="Last purchase before this day.")
    limit: int | None = Field(
        None, ge=1, le=100_000, description="At most this many: the first by customer_ids, else by id."
    )

    @model_validator(mode="after")
    def _ranges_are_not_empty(self) -> Audience:
        pairs = (
            ("min_orders", self.min_orders, "max_orders", self.max_orders),
            ("min_spend", self.min_spend, "max_spend", self.max_spend),
        )
        for low_name, low, high_name, high in pairs:
            if low is not None and high is not None and low > high:
                raise ValueError(f"{low_name} ({low}) is above {high_name} ({high})")
        since, before = self.last_purchase_since, self.last_purchase_before
        if since is not None and before is not None and since >= before:
            raise ValueError(f"last_purchase_since ({since}) is not before last_purchase_before ({before})")
        return self

    @property
    def needs_purchases(self) -> bool:
        return any(
            v is not None
            for v in (
                self.min_orders,
                self.max_orders,
                self.min_spend,
                self.max_spend,
                self.last_purchase_since,
                self.last_purchase_before,
            )
        )

    @property
    def filters(self) -> bool:
        """Whether anything beyond the id list narrows the audience."""
        return self.needs_purchases or self.country is not None or self.marketing_email is not None

    def matches(self, facts: CustomerFacts) -> bool:
        if self.country is not None and facts.country.casefold() not in {c.casefold() for c in self.country}:
            return False
        if self.marketing_email is not None and facts.marketing_email is not self.marketing_email:
            return False
        if self.min_orders is not None and facts.orders < self.min_orders:
            return False
        if self.max_orders is not None and facts.orders > self.max_orders:
            return False
        # Spend is rounded to cents by the store, so a bound given in cents compares exactly.
        if self.min_spend is not None and facts.spend < self.min_spend:
            return False
        if self.max_spend is not None and facts.spend > self.max_spend:
            return False
        last = facts.last_purchase
        since, before = self.last_purchase_since, self.last_purchase_before
        if since is not None and (last is None or last < _midnight(since)):
            return False
        return before is None or (last is not None and last < _midnight(before))


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def select(store: Store, audience: Audience, *, field: str = "audience") -> list[str]:
    """The audience's customer ids: in the given order when ``customer_ids`` is given, else in id order;
    at most ``limit``. Raises ``RecordError`` (on ``field``, as the request named it) when nothing narrows
    it at all."""
    ids = None
    if audience.customer_ids is not None:
        ids = list(dict.fromkeys(c.strip() for c in audience.customer_ids if c.strip()))
    if not audience.filters:
        if ids is None:
            raise RecordError(
                "give customer_ids or a filter (country, marketing_email, min_orders, max_orders, min_spend,"
                " max_spend, last_purchase_since, last_purchase_before)",
                source="body",
                field=field,
            )
        chosen = ids
    else:
        matching = [
            f.id for f in store.customer_facts(purchases=audience.needs_purchases) if audience.matches(f)
        ]
        if ids is None:
            chosen = matching
        else:
            keep = set(matching)
            chosen = [c for c in ids if c in keep]
    return chosen[: audience.limit] if audience.limit else chosen
