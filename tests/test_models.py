from __future__ import annotations

from datetime import UTC, datetime, time

import pytest
from pydantic import ValidationError

from tailor.core.models import Customer, Event, EventKind, Item, QuietHours, format_price


def test_item_rejects_blank_title_and_names_the_field() -> None:
    with pytest.raises(ValidationError) as info:
        Item(id="A1", title="  ", category="Bags", price=1.0, url="https://example-retail.test/p/A1")
    assert info.value.errors()[0]["loc"] == ("title",)


def test_item_rejects_negative_price_and_non_https_url() -> None:
    with pytest.raises(ValidationError) as info:
        Item(id="A1", title="Bag", category="Bags", price=-1, url="http://x.test/p")
    fields = {e["loc"][0] for e in info.value.errors()}
    assert fields == {"price", "url"}


def test_price_text_is_the_one_format() -> None:
    item = Item(id="A1", title="Bag", category="Bags", price=1234.5, url="https://example-retail.test/p/A1")
    assert item.price_text == "£1,234.50"
    assert format_price(2.0, "SEK") == "2.00 SEK"


def test_event_needs_item_for_purchases_and_text_for_tickets() -> None:
    when = datetime(2011, 1, 1, tzinfo=UTC)
    with pytest.raises(ValidationError, match="needs an item_id"):
        Event(customer_id="1", kind=EventKind.PURCHASE, timestamp=when)
    with pytest.raises(ValidationError, match="needs text"):
        Event(customer_id="1", kind=EventKind.SUPPORT_TICKET, text=" ", timestamp=when)


def test_naive_timestamps_are_utc() -> None:
    event = Event(customer_id="1", kind=EventKind.VIEW, item_id="A", timestamp=datetime(2011, 1, 1, 12))
    assert event.timestamp.tzinfo is UTC


def test_customer_email_is_checked() -> None:
    with pytest.raises(ValidationError) as info:
        Customer(id="1", first_name="Ann", email="not-an-email", country="UK")
    assert info.value.errors()[0]["loc"] == ("email",)


@pytest.mark.parametrize(
    ("start", "end", "moment", "inside"),
    [(21, 8, 23, True), (21, 8, 7, True), (21, 8, 12, False), (9, 17, 12, True), (9, 17, 18, False)],
)
def test_quiet_hours_handle_overnight_windows(start: int, end: int, moment: int, inside: bool) -> None:
    assert QuietHours(start=time(start), end=time(end)).contains(time(moment)) is inside


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("quantity", 10**19),
        ("quantity", -1),
        ("value", float("inf")),
        ("value", float("nan")),
        ("value", 1e15),
    ],
)
def test_event_amounts_out_of_range_are_refused_by_name(field: str, value: float) -> None:
    with pytest.raises(ValidationError) as info:
        Event(
            customer_id="1",
            kind=EventKind.PURCHASE,
            item_id="A",
            timestamp=datetime(2011, 1, 1, tzinfo=UTC),
            **{field: value},
        )
    assert info.value.errors()[0]["loc"] == (field,)


def test_named_is_written_only_when_false() -> None:
    named = Item(id="A1", title="Bag", category="Bags", price=1.0, url="https://example-retail.test/p/A1")
    # A named item's JSON is what it was before the field existed, so its stored content hash holds.
    assert "named" not in named.model_dump_json() and named.named is True
    code = named.model_copy(update={"id": "4710085120468", "title": "Item 4710085120468", "named": False})
    doc = code.model_dump_json()
    assert '"named":false' in doc
    assert Item.model_validate_json(doc).named is False
    assert Item.model_validate_json(named.model_dump_json()).named is True
