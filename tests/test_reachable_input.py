"""Ids the HTTP routes can reach, and timestamps Tailor can hold, on every way in.

The rule is in the models, so the native body, Segment calls and the file import all refuse the same
input, naming the field; rows stored before the rule stay readable (and so can still be forgotten).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from tailor.app.http import create_app, create_key
from tailor.app.service import Tailor
from tailor.core.errors import DataError, RecordError
from tailor.core.models import Customer, Event, Item
from tailor.core.settings import Settings
from tailor.data.importer import import_dir
from tailor.data.segment import from_segment
from tailor.data.store import Store
from tests.server import seed_store, segment_view

AT = datetime(2011, 12, 9, tzinfo=UTC)
URL = "https://example-retail.test/p/A"
BAD_CUSTOMER_IDS = ["a/b", "a b", "tab\there", "x" * 101]
OUT_OF_RANGE = [
    "0001-01-01T00:00:00+01:00",  # year 0 in UTC: datetime cannot hold it
    "9999-12-31T23:59:59-05:00",  # year 10000 in UTC
    "1600-01-01T00:00:00Z",  # outside the ranker's nanosecond features
    "2200-01-01T00:00:00Z",
]


def _customer(**update: Any) -> dict[str, Any]:
    return {"id": "c1", "first_name": "Ann", "email": "ann@example.test", "country": "France", **update}


def _event(**update: Any) -> dict[str, Any]:
    return {
        "customer_id": "c1",
        "kind": "view",
        "item_id": "A",
        "timestamp": "2011-12-09T10:00:00Z",
        **update,
    }


def _error(model: type[Customer | Event | Item], data: dict[str, Any]) -> tuple[tuple[Any, ...], str]:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    first = info.value.errors()[0]
    return first["loc"], first["msg"]


# -- the models ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", BAD_CUSTOMER_IDS)
def test_customer_ids_the_routes_cannot_reach_are_refused_by_name(bad: str) -> None:
    loc, msg = _error(Customer, _customer(id=bad))
    assert loc == ("id",) and "HTTP routes cannot name it" in msg
    loc, msg = _error(Event, _event(customer_id=bad))
    assert loc == ("customer_id",) and "HTTP routes cannot name it" in msg


@pytest.mark.parametrize("bad", ["a/b", "x" * 101])
def test_item_ids_the_routes_cannot_reach_are_refused_by_name(bad: str) -> None:
    loc, msg = _error(Item, {"id": bad, "title": "Bag", "category": "Bags", "price": 1.0, "url": URL})
    assert loc == ("id",) and "HTTP routes cannot name it" in msg
    loc, _ = _error(Event, _event(item_id=bad))
    assert loc == ("item_id",)


def test_ids_the_routes_reach_are_kept() -> None:
    # UCI customers and stock codes, the longest id a route takes, and a space in an item id (the item
    # route takes it as %20).
    for cid in ("12346", "x" * 100, "c-1_é"):
        assert Customer.model_validate(_customer(id=cid)).id == cid
    for item_id in ("85123A", "SKU 12", "y" * 100):
        assert Event.model_validate(_event(item_id=item_id)).item_id == item_id
    assert Customer.model_validate(_customer(id="  12346 ")).id == "12346"


@pytest.mark.parametrize("stamp", OUT_OF_RANGE)
def test_timestamps_out_of_range_are_a_validation_error_naming_the_field(stamp: str) -> None:
    loc, msg = _error(Event, _event(timestamp=stamp))
    assert loc == ("timestamp",) and "out of range" in msg


def test_timestamps_at_the_bounds_are_kept_in_utc() -> None:
    first = Event.model_validate(_event(timestamp="1900-01-01T01:00:00+01:00"))
    assert first.timestamp == datetime(1900, 1, 1, tzinfo=UTC)
    last = Event.model_validate(_event(timestamp="2199-12-31T18:59:59-05:00"))
    assert last.timestamp == datetime(2199, 12, 31, 23, 59, 59, tzinfo=UTC)
    with pytest.raises(ValidationError, match="out of range"):
        Event.model_validate(_event(timestamp="1900-01-01T00:30:00+01:00"))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timezone", "Europe/Lodnon", "is not an IANA time zone"),
        ("timezone", "../etc/passwd", "is not an IANA time zone"),
        ("timezone", "", "is not an IANA time zone"),
        ("locale", "english please", "is not a language tag"),
        ("locale", "", "is not a language tag"),
    ],
)
def test_a_time_zone_or_language_nobody_can_resolve_is_refused_by_name(
    field: str, value: str, message: str
) -> None:
    # A typo'd zone used to be kept, and the customer's quiet hours silently kept in UTC instead.
    loc, msg = _error(Customer, _customer(**{field: value}))
    assert loc == (field,) and message in msg


def test_time_zones_and_language_tags_in_use_are_kept() -> None:
    for zone, tag in (
        ("America/New_York", "en-US"),
        ("Asia/Kolkata", "hi"),
        ("UTC", "pt_BR"),
        ("Etc/GMT+5", "zh-Hant-TW"),
    ):
        customer = Customer.model_validate(_customer(timezone=zone, locale=tag))
        assert (customer.timezone, customer.locale) == (zone, tag)


def test_rows_stored_before_the_rules_stay_readable_and_can_be_deleted(fresh_store: Store) -> None:
    doc = json.dumps(_customer(id="a b", timezone="Mars/Olympus", locale="?"))
    # As a store written before the rules holds them.
    with closing(sqlite3.connect(fresh_store.path)) as raw, raw:
        raw.execute("INSERT INTO customers VALUES ('a b', ?, 'France')", (doc,))
        raw.execute(
            "INSERT INTO events (id, customer_id, kind, item_id, quantity, value, text, ts, order_id)"
            " VALUES ('e1', 'a b', 'view', 'x/y', NULL, NULL, NULL,"
            " '1600-01-01T00:00:00+00:00', NULL)"
        )
    assert fresh_store.get_customer("a b").id == "a b"
    assert [c.id for c in fresh_store.customers()] == ["a b"]
    assert [(e.item_id, e.timestamp.year) for e in fresh_store.events("a b")] == [("x/y", 1600)]
    assert fresh_store.delete_customer("a b")["events"] == 1


# -- Segment ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("call", "field"),
    [
        (segment_view(userId="a/b"), "userId"),
        (segment_view(userId="x" * 101), "userId"),
        ({"type": "identify", "userId": "a b", "traits": _customer()}, "userId"),
        (segment_view(properties={"product_id": "a/b"}), "properties.product_id"),
        (segment_view(timestamp="0001-01-01T00:00:00+01:00"), "timestamp"),
        ({**segment_view(), "timestamp": None, "sentAt": "9999-12-31T23:59:59-05:00"}, "sentAt"),
    ],
)
def test_segment_calls_with_unreachable_ids_or_timestamps_name_the_callers_field(
    call: dict[str, Any], field: str
) -> None:
    with pytest.raises(RecordError) as info:
        from_segment({"batch": [segment_view(), call]}, {})
    assert (info.value.field, info.value.line) == (f"batch[1].{field}", 2)


# -- the file import -------------------------------------------------------------------------------
def _write(directory: Path, name: str, rows: list[dict[str, Any]]) -> None:
    (directory / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_import_refuses_unreachable_ids_and_bad_timestamps_by_file_line_and_field(
    tmp_path: Path, fresh_store: Store
) -> None:
    item = {"id": "A", "title": "Bag", "category": "Bags", "price": 1.0, "url": URL}
    (tmp_path / "items.csv").write_text(
        "id,title,category,price,url\nA,Bag,Bags,1.0," + URL + "\n", encoding="utf-8"
    )
    (tmp_path / "customers.csv").write_text(
        "id,first_name,email,country\nc1,Ann,ann@example.test,France\na b,Bo,bo@example.test,France\n",
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"customers\.csv:3: record 'a b' field 'id': .*HTTP routes"):
        import_dir(fresh_store, tmp_path)
    (tmp_path / "items.csv").unlink()
    (tmp_path / "customers.csv").unlink()
    _write(tmp_path, "items.jsonl", [item])
    _write(tmp_path, "customers.jsonl", [_customer()])
    _write(tmp_path, "events.jsonl", [_event(), _event(timestamp="9999-12-31T23:59:59-05:00")])
    with pytest.raises(DataError, match=r"events\.jsonl:2: record 'c1' field 'timestamp': .*out of range"):
        import_dir(fresh_store, tmp_path)
    assert fresh_store.counts() == {"items": 0, "customers": 0, "events": 0}


# -- the HTTP service ------------------------------------------------------------------------------
@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], Path]]:
    """The app in process over the real facade and store, a CRM key, the store's file. Nothing here loads
    a model: every request is refused before the customer updates that would."""
    settings = Settings(data_dir=tmp_path / "data", now="2011-12-10T10:00:00+00:00")
    seed_store(settings.data_dir)
    crm = {"Authorization": f"Bearer {create_key(settings, 'crm')}"}
    with Tailor(settings) as tailor, TestClient(create_app(settings, tailor, run_jobs=False)) as http:
        yield http, crm, settings.store_path


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customers": [_customer(id="a/b")]}, "customers.0.id"),
        ({"customers": [_customer(id="a b")]}, "customers.0.id"),
        ({"customers": [_customer(id="x" * 500)]}, "customers.0.id"),
        (
            {"events": [_event(customer_id="100", item_id="I1", timestamp=OUT_OF_RANGE[0])]},
            "events.0.timestamp",
        ),
        (
            {"events": [_event(customer_id="100", item_id="I1", timestamp=OUT_OF_RANGE[1])]},
            "events.0.timestamp",
        ),
        ({"type": "identify", "userId": "a/b", "traits": _customer()}, "userId"),
    ],
)
def test_the_events_route_answers_422_naming_the_field_not_500(
    client: tuple[TestClient, dict[str, str], Path], body: dict[str, Any], field: str
) -> None:
    http, crm, _ = client
    r = http.post("/v1/events", headers=crm, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_the_events_route_answers_409_for_another_customers_event_id(
    client: tuple[TestClient, dict[str, str], Path],
) -> None:
    http, crm, store_path = client
    view = _event(id="v1", customer_id="100", item_id="I1")
    with closing(sqlite3.connect(store_path)) as raw, raw:
        raw.execute(
            "INSERT INTO events (id, customer_id, kind, item_id, quantity, value, text, ts, order_id)"
            " VALUES ('v1', '100', 'view', 'I1', NULL, NULL, NULL,"
            " '2011-12-09T10:00:00+00:00', NULL)"
        )
    r = http.post("/v1/events", headers=crm, json={"events": [{**view, "customer_id": "101"}]})
    assert r.status_code == 409, r.text
    assert (
        r.json()["error"]["code"] == "conflict"
        and "'v1' (event 1 of the batch)" in r.json()["error"]["message"]
    )
