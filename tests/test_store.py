from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tailor.errors import NotFoundError
from tailor.models import Customer, Event, EventKind, Item
from tailor.store import Store


def _seed(store: Store) -> None:
    store.upsert_items(
        [Item(id="A", title="Bag", category="Bags", price=1.0, url="https://example-retail.test/p/A")]
    )
    store.upsert_customers([Customer(id="c1", first_name="Ann", email="a@example.com", country="UK")])
    store.add_events(
        [
            Event(
                customer_id="c1",
                kind=EventKind.PURCHASE,
                item_id="A",
                quantity=1,
                timestamp=datetime(2011, 1, d, tzinfo=UTC),
            )
            for d in (1, 2, 3)
        ]
    )


def test_events_filters_and_limit(fresh_store: Store) -> None:
    _seed(fresh_store)
    assert len(fresh_store.events("c1")) == 3
    newest = fresh_store.events("c1", limit=2)
    assert [e.timestamp.day for e in newest] == [2, 3]
    assert len(fresh_store.events("c1", since=datetime(2011, 1, 2, tzinfo=UTC))) == 2
    assert fresh_store.events("c1", kinds=[EventKind.VIEW]) == []


def test_adding_the_same_event_twice_keeps_one(fresh_store: Store) -> None:
    _seed(fresh_store)
    _seed(fresh_store)
    assert fresh_store.counts()["events"] == 3


def test_delete_customer_removes_profile_and_events(fresh_store: Store) -> None:
    _seed(fresh_store)
    assert fresh_store.delete_customer("c1") == {"customers": 1, "events": 3}
    with pytest.raises(NotFoundError, match="customer 'c1' not found"):
        fresh_store.get_customer("c1")
    assert fresh_store.events("c1") == []


def test_failed_transaction_writes_nothing(fresh_store: Store) -> None:
    with pytest.raises(RuntimeError), fresh_store.transaction() as db:
        db.execute("INSERT INTO meta VALUES ('k', '1')")
        raise RuntimeError("boom")
    assert fresh_store.get_meta("k") is None


def test_events_frame_has_utc_timestamps(fresh_store: Store) -> None:
    _seed(fresh_store)
    frame = fresh_store.events_frame()
    assert list(frame.customer_id.unique()) == ["c1"] and str(frame.timestamp.dt.tz) == "UTC"
