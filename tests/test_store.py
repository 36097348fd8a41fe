from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tailor.core.errors import DataError, NotFoundError
from tailor.core.models import Customer, Event, EventKind, Item
from tailor.data.db import Database
from tailor.data.store import Store


@pytest.fixture
def fresh_store(any_store: Store) -> Store:
    """Every contract test here runs on both engines: SQLite, and PostgreSQL."""
    return any_store


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


def test_order_counts_are_of_the_whole_history(fresh_store: Store) -> None:
    _seed(fresh_store)
    assert fresh_store.order_counts("c1") == {"orders": 0, "purchases": 3, "returns": 0}, "no order ids"
    day = datetime(2011, 2, 1, tzinfo=UTC)
    lines = [(EventKind.PURCHASE, "O1"), (EventKind.PURCHASE, "O1"), (EventKind.PURCHASE, "O2"),
             (EventKind.RETURN, "O1"), (EventKind.VIEW, None)]  # fmt: skip
    fresh_store.add_events(
        [
            Event(customer_id="c1", kind=kind, item_id="A", quantity=n, timestamp=day, order_id=order)
            for n, (kind, order) in enumerate(lines, start=1)
        ]
    )
    assert fresh_store.order_counts("c1") == {"orders": 2, "purchases": 6, "returns": 1}
    assert fresh_store.order_counts("nobody") == {"orders": 0, "purchases": 0, "returns": 0}


def test_order_lines_are_hers_of_those_orders_before_the_clock(fresh_store: Store) -> None:
    _seed(fresh_store)
    fresh_store.upsert_customers([Customer(id="c2", first_name="Bo", email="b@example.com", country="UK")])

    def line(customer: str, order: str, day: int) -> Event:
        return Event(
            customer_id=customer,
            kind=EventKind.PURCHASE,
            item_id="A",
            quantity=1,
            order_id=order,
            timestamp=datetime(2011, 2, day, tzinfo=UTC),
        )

    fresh_store.add_events(
        [line("c1", "O1", 1), line("c1", "O1", 2), line("c1", "O2", 3), line("c2", "O3", 4)]
    )
    fresh_store.add_events([line("c1", "O4", 20)])
    clock = datetime(2011, 2, 10, tzinfo=UTC)
    got = fresh_store.order_lines("c1", ["O1", "O3", "O4"], until=clock)
    assert [e.order_id for e in got] == ["O1", "O1"], (
        "another customer's order, and one after the clock, are not hers"
    )
    assert fresh_store.order_lines("c1", ["O4"]) and fresh_store.order_lines("c1", []) == []


def test_adding_the_same_event_twice_keeps_one(fresh_store: Store) -> None:
    _seed(fresh_store)
    _seed(fresh_store)
    assert fresh_store.counts()["events"] == 3


def test_delete_customer_removes_profile_events_contacts_and_impressions(fresh_store: Store) -> None:
    _seed(fresh_store)
    fresh_store.upsert_customers([Customer(id="c2", first_name="Bo", email="b@example.com", country="UK")])
    when = datetime(2011, 2, 1, tzinfo=UTC)
    fresh_store.record_contact("c1", when)
    fresh_store.record_impressions("c1", ["A", "B"], when)
    fresh_store.record_impressions("c2", ["A"], when)
    assert fresh_store.delete_customer("c1") == {
        "customers": 1,
        "events": 3,
        "contacts": 1,
        "impressions": 2,
    }
    with pytest.raises(NotFoundError, match="customer 'c1' not found"):
        fresh_store.get_customer("c1")
    assert fresh_store.events("c1") == []
    assert fresh_store.contacts("c1") == [] and fresh_store.impressions("c1") == []
    assert fresh_store.impressions("c2") == [("A", when)]


def test_a_deleted_customer_survives_nowhere_in_the_file_or_its_log(tmp_path: Path) -> None:
    gone, secret = "zq-forget-me-4242", "my-ticket-says-zq-9917"
    store = Store(tmp_path / "tailor.db")
    try:
        store.upsert_customers(
            [
                Customer(id=gone, first_name="Ann", email="zq-ann@example.test", country="UK"),
                Customer(id="c2", first_name="Bo", email="b@example.test", country="UK"),
            ]
        )
        at = datetime(2011, 2, 1, tzinfo=UTC)
        ticket = Event(customer_id=gone, kind=EventKind.SUPPORT_TICKET, text=secret * 200, timestamp=at)
        store.add_events([ticket, ticket.model_copy(update={"customer_id": "c2", "text": "fine"})])
        store.record_send("job:j:" + gone, gone, ["A"], at)
        # A checkpoint first, so the rows are in the file itself, not only in the log.
        store.checkpoint()
        store.delete_customer(gone)
        wal = tmp_path / "tailor.db-wal"
        raw = (tmp_path / "tailor.db").read_bytes() + (wal.read_bytes() if wal.exists() else b"")
        for trace in (gone, secret, "zq-ann@example.test"):
            assert trace.encode() not in raw, trace
        assert store.get_customer("c2").first_name == "Bo" and b"b@example.test" in raw
    finally:
        store.close()


def test_impressions_are_kept_per_customer_in_utc_and_filtered_by_time(fresh_store: Store) -> None:
    paris = timezone(timedelta(hours=1))
    fresh_store.record_impressions("c1", ["A", "B", "A"], datetime(2011, 3, 1, 10, tzinfo=paris))
    fresh_store.record_impressions("c1", ["B"], datetime(2011, 3, 5, 9))  # naive means UTC
    fresh_store.record_impressions("c2", ["C"], datetime(2011, 3, 5, 9, tzinfo=UTC), channel="web")
    first = datetime(2011, 3, 1, 9, tzinfo=UTC)
    later = datetime(2011, 3, 5, 9, tzinfo=UTC)
    # Repeats within one exposure count once; stamps come back in UTC whatever zone they were given in.
    assert fresh_store.impressions("c1") == [("A", first), ("B", first), ("B", later)]
    assert fresh_store.impressions("c1", since=datetime(2011, 3, 5, 10, tzinfo=paris)) == [("B", later)]
    assert fresh_store.impressions("c2") == [("C", later)]


def test_an_older_store_file_gains_the_impressions_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE contacts (customer_id TEXT NOT NULL, ts TEXT NOT NULL, channel TEXT NOT NULL)")
    db.execute("INSERT INTO contacts VALUES ('c1', '2011-01-01T00:00:00+00:00', 'email')")
    db.commit()
    db.close()
    store = Store(path)
    try:
        assert store.contacts("c1") == [datetime(2011, 1, 1, tzinfo=UTC)]
        store.record_impressions("c1", ["A"], datetime(2011, 1, 2, tzinfo=UTC))
        assert store.impressions("c1") == [("A", datetime(2011, 1, 2, tzinfo=UTC))]
    finally:
        store.close()


def test_failed_transaction_writes_nothing(fresh_store: Store) -> None:
    with pytest.raises(RuntimeError), fresh_store.transaction() as db:
        db.execute(sa.text("INSERT INTO meta (key, value) VALUES ('k', '1')"))
        raise RuntimeError("boom")
    assert fresh_store.get_meta("k") is None


def test_events_frame_has_utc_timestamps(fresh_store: Store) -> None:
    _seed(fresh_store)
    frame = fresh_store.events_frame()
    assert list(frame.customer_id.unique()) == ["c1"] and str(frame.timestamp.dt.tz) == "UTC"


def test_events_frame_of_some_customers_reads_theirs_across_batches(
    fresh_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tailor.data.store as store_module

    monkeypatch.setattr(store_module, "_IN_BATCH", 2)  # six customers asked: three IN lists
    queries: list[str] = []
    read = store_module.pd.read_sql_query

    def counting(sql: Any, *args: Any, **kwargs: Any) -> Any:
        queries.append(str(sql))
        return read(sql, *args, **kwargs)

    monkeypatch.setattr(store_module.pd, "read_sql_query", counting)
    day = datetime(2011, 3, 1, tzinfo=UTC)
    ids = [f"k{i}" for i in range(6)]
    fresh_store.upsert_customers(
        [Customer(id=c, first_name="K", email=f"{c}@example.com", country="UK") for c in ids]
    )
    fresh_store.add_events(
        [
            Event(customer_id=c, kind=kind, item_id="A", timestamp=day + timedelta(days=n))
            for n, c in enumerate(ids)
            for kind in (EventKind.PURCHASE, EventKind.VIEW)
        ]
    )
    asked = ["k5", "k0", "k3", "k4", "k1", "nobody"]
    frame = fresh_store.events_frame(customers=asked, until=day + timedelta(days=5))
    assert sorted(frame.customer_id) == ["k0", "k1", "k3", "k4"] and set(frame.kind) == {"purchase"}
    assert len(queries) == 3 and all("IN" in q for q in queries)
    assert str(frame.timestamp.dt.tz) == "UTC"
    assert fresh_store.events_frame(customers=[]).empty
    assert len(fresh_store.events_frame(kinds=list(EventKind))) == 12


def test_profiles_and_events_land_together_or_not_at_all(tmp_path: Path) -> None:
    store = Store(tmp_path / "tailor.db")
    _seed(store)
    new = Customer(id="c2", first_name="Bo", email="b@example.com", country="FR")
    when = datetime(2011, 2, 1, tzinfo=UTC)
    events = [
        Event(customer_id="c2", kind=EventKind.VIEW, item_id="A", timestamp=when),
        Event(customer_id="c2", kind=EventKind.PURCHASE, item_id="A", quantity=2, timestamp=when),
    ]
    # The database itself refuses the second event, after the profile and the first event were written
    # inside the transaction: what a crash between the writes would leave, if they were two transactions.
    raw = sqlite3.connect(tmp_path / "tailor.db")
    raw.execute(
        "CREATE TRIGGER refuse AFTER INSERT ON events WHEN NEW.kind = 'purchase' AND NEW.customer_id = 'c2'"
        " BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
    )
    raw.commit()
    raw.close()
    with pytest.raises(sa.exc.IntegrityError, match="refused by test"):
        store.add_customers_and_events([new], events)
    assert not store.has_customer("c2")
    assert store.events("c2") == [] and store.counts()["events"] == 3
    assert store.changes() == {"purchases": 3, "forgotten": 0}, "the refused batch counted nothing"
    raw = sqlite3.connect(tmp_path / "tailor.db")
    raw.execute("DROP TRIGGER refuse")
    raw.commit()
    raw.close()
    ids = store.add_customers_and_events([new], events)
    assert store.get_customer("c2").country == "FR"
    assert len(set(ids)) == 2 and {e.id for e in store.events("c2")} == set(ids)
    store.close()


def test_changes_count_new_purchases_and_forgotten_customers_only(fresh_store: Store) -> None:
    assert fresh_store.changes() == {"purchases": 0, "forgotten": 0}
    _seed(fresh_store)
    assert fresh_store.changes() == {"purchases": 3, "forgotten": 0}
    again = fresh_store.events("c1")
    fresh_store.add_events(again)  # the same ids: ignored, so not a change
    assert fresh_store.changes() == {"purchases": 3, "forgotten": 0}
    when = datetime(2011, 3, 1, tzinfo=UTC)
    viewed = Event(customer_id="c1", kind=EventKind.VIEW, item_id="A", timestamp=when)
    bought = Event(customer_id="c1", kind=EventKind.PURCHASE, item_id="A", quantity=1, timestamp=when)
    fresh_store.add_customers_and_events([], [viewed, bought, bought])
    assert fresh_store.changes() == {"purchases": 4, "forgotten": 0}, "a view is no change to the ranker"
    assert len(fresh_store.events("c1")) == 5
    fresh_store.delete_customer("nobody")
    assert fresh_store.changes()["forgotten"] == 0
    fresh_store.delete_customer("c1")
    assert fresh_store.changes() == {"purchases": 4, "forgotten": 1}


def test_a_send_for_a_customer_forgotten_meanwhile_writes_nothing(fresh_store: Store) -> None:
    """The runner checks the customer, then records the send: a forget landing between the two must not
    leave a contact, impressions or a send row for a customer who is gone. record_send checks in its own
    transaction, and says that it wrote nothing."""
    _seed(fresh_store)
    at = datetime(2011, 2, 1, tzinfo=UTC)
    fresh_store.delete_customer("c1")
    assert not fresh_store.record_send("job:j:c1", "c1", ["A"], at)
    assert fresh_store.contacts("c1") == [] and fresh_store.impressions("c1") == []
    assert fresh_store._query("SELECT COUNT(*) FROM sends WHERE customer_id='c1'") == [(0,)]
    # Back again (a new import), the same send id is not spent: it is recorded then, once.
    fresh_store.upsert_customers([Customer(id="c1", first_name="Ann", email="a@example.com", country="UK")])
    assert fresh_store.record_send("job:j:c1", "c1", ["A"], at)
    assert not fresh_store.record_send("job:j:c1", "c1", ["A"], at)


# The schema the releases before migrations wrote, as they wrote it (``CREATE ... IF NOT EXISTS`` at open).
_SCHEMA_BEFORE_MIGRATIONS = """
CREATE TABLE items (
    id TEXT PRIMARY KEY, doc TEXT NOT NULL, content_hash TEXT NOT NULL, category TEXT NOT NULL,
    in_stock INTEGER NOT NULL, price REAL NOT NULL
);
CREATE TABLE customers (id TEXT PRIMARY KEY, doc TEXT NOT NULL, country TEXT NOT NULL);
CREATE TABLE events (
    id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, kind TEXT NOT NULL, item_id TEXT,
    quantity INTEGER, value REAL, text TEXT, ts TEXT NOT NULL, order_id TEXT
);
CREATE INDEX events_customer ON events(customer_id, ts);
CREATE INDEX events_kind_ts ON events(kind, ts);
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE contacts (customer_id TEXT NOT NULL, ts TEXT NOT NULL, channel TEXT NOT NULL);
CREATE INDEX contacts_customer ON contacts(customer_id, ts);
CREATE TABLE impressions (
    customer_id TEXT NOT NULL, item_id TEXT NOT NULL, ts TEXT NOT NULL, channel TEXT NOT NULL
);
CREATE INDEX impressions_customer ON impressions(customer_id, ts);
CREATE TABLE sends (id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, ts TEXT NOT NULL, channel TEXT NOT NULL);
CREATE INDEX sends_customer ON sends(customer_id);
"""


def test_a_store_file_written_before_migrations_is_read_whole_after_the_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "tailor.db"
    item = Item(id="A", title="Bag", category="Bags", price=1.5, url="https://example-retail.test/p/A")
    ann = Customer(id="c1", first_name="Ann", email="a@example.com", country="UK")
    raw = sqlite3.connect(path)
    raw.executescript(_SCHEMA_BEFORE_MIGRATIONS)
    raw.execute("INSERT INTO items VALUES ('A', ?, 'h', 'Bags', 1, 1.5)", (item.model_dump_json(),))
    raw.execute("INSERT INTO customers VALUES ('c1', ?, 'UK')", (ann.model_dump_json(),))
    raw.execute(
        "INSERT INTO events VALUES"
        " ('e1', 'c1', 'purchase', 'A', 2, 3.0, NULL, '2011-01-01T00:00:00+00:00', 'o1')"
    )
    raw.execute("INSERT INTO meta VALUES ('changes:purchases', '1')")
    raw.execute("INSERT INTO contacts VALUES ('c1', '2011-01-02T00:00:00+00:00', 'email')")
    raw.execute("INSERT INTO impressions VALUES ('c1', 'A', '2011-01-02T00:00:00+00:00', 'email')")
    raw.execute("INSERT INTO sends VALUES ('job:j:c1', 'c1', '2011-01-02T00:00:00+00:00', 'email')")
    raw.commit()
    raw.close()
    store = Store(path)
    try:
        assert store.get_item("A") == item and store.get_customer("c1") == ann
        (event,) = store.events("c1")
        assert (event.id, event.order_id, event.quantity) == ("e1", "o1", 2)
        assert store.changes() == {"purchases": 1, "forgotten": 0}
        assert store.contacts("c1") == [datetime(2011, 1, 2, tzinfo=UTC)]
        assert store.impressions("c1") == [("A", datetime(2011, 1, 2, tzinfo=UTC))]
        assert not store.record_send("job:j:c1", "c1", ["A"], datetime(2011, 1, 2, tzinfo=UTC)), "spent"
        # Adopted, not rebuilt: now at the newest revision, and written to as before.
        assert store._query("SELECT version_num FROM alembic_version_store") == [("0003",)]
        assert store.ranker_save_id() is None  # 0003's tables, empty
        assert event.send_id is None  # 0002's column, empty for the rows before it
        store.add_events(
            [
                Event(
                    customer_id="c1",
                    kind=EventKind.VIEW,
                    item_id="A",
                    timestamp=datetime(2011, 2, 1, tzinfo=UTC),
                ),
                Event(
                    customer_id="c1",
                    kind=EventKind.EMAIL_OPEN,
                    timestamp=datetime(2011, 2, 2, tzinfo=UTC),
                    send_id="job:j:c1",
                ),
            ]
        )
        assert [e.send_id for e in store.events("c1")] == [None, None, "job:j:c1"]
    finally:
        store.close()
    # And opened again, nothing is migrated twice.
    again = Store(path)
    try:
        assert again.counts() == {"items": 1, "customers": 1, "events": 3}
    finally:
        again.close()


def test_email_events_keep_their_send_and_a_send_is_asked_for_its_opens_and_clicks(any_store: Store) -> None:
    from tailor.data.store import event_id

    any_store.upsert_customers([Customer(id="c1", first_name="Ann", email="a@example.com", country="UK")])
    at = datetime(2011, 2, 1, tzinfo=UTC)
    opened = Event(customer_id="c1", kind=EventKind.EMAIL_OPEN, timestamp=at, send_id="job:j1:c1")
    plain = Event(customer_id="c1", kind=EventKind.EMAIL_OPEN, timestamp=at)
    # The send is part of what the event is; an event without one keeps the id it always had.
    assert event_id(opened) != event_id(plain)
    assert event_id(plain) == event_id(plain.model_copy(update={"send_id": None}))
    clicks = [
        Event(customer_id="c1", kind=EventKind.EMAIL_CLICK, timestamp=at, send_id=f"job:j{n}:c1", item_id="A")
        for n in range(1, 2_100)
    ]
    # A batch this large goes to PostgreSQL by COPY: the send goes with it.
    any_store.add_events([opened, plain, *clicks])
    stored = {e.id: e for e in any_store.events("c1")}
    assert stored[event_id(opened)].send_id == "job:j1:c1" and stored[event_id(plain)].send_id is None
    assert stored[event_id(clicks[-1])].send_id == "job:j2099:c1"
    # More sends than one IN list holds: asked in batches.
    seen = any_store.email_engagement({f"job:j{n}:c1": "c1" for n in range(0, 2_101)})
    assert seen["job:j1:c1"] == {EventKind.EMAIL_OPEN, EventKind.EMAIL_CLICK}
    assert seen["job:j2099:c1"] == {EventKind.EMAIL_CLICK}
    assert "job:j0:c1" not in seen and "job:j2100:c1" not in seen and len(seen) == 2_099
    # A send that went to someone else: her events do not count for it (a forwarded email).
    assert any_store.email_engagement({"job:j1:c1": "c2"}) == {}
    # An event of another kind has no send, and the store is never asked to keep one.
    with pytest.raises(ValueError, match="a purchase event has no send_id"):
        Event(customer_id="c1", kind=EventKind.PURCHASE, item_id="A", timestamp=at, send_id="job:j1:c1")


def test_a_copied_store_is_the_same_store_and_a_full_one_is_refused(tmp_path: Path, any_store: Store) -> None:
    # Into each engine: PostgreSQL (the move a growing retailer makes, by COPY) and another SQLite file.
    source, dest = Store(tmp_path / "source.db"), any_store
    try:
        _seed(source)
        source.upsert_customers([Customer(id="c2", first_name="Bo", email="b@example.com", country="FR")])
        at = datetime(2011, 2, 1, tzinfo=UTC)
        assert source.record_send("job:j:c1", "c1", ["A"], at)
        source.delete_customer("c2")
        copied = source.copy_into(dest, chunk=2)  # chunks smaller than a table: several reads each
        assert copied == {
            "items": 1, "customers": 1, "events": 3, "meta": 2, "contacts": 1, "impressions": 1, "sends": 1,
        }  # fmt: skip
        assert dest.counts() == source.counts() and dest.changes() == {"purchases": 3, "forgotten": 1}
        assert dest.events("c1") == source.events("c1") and dest.get_customer("c1") == source.get_customer(
            "c1"
        )
        assert dest.items() == source.items() and dest.contacts("c1") == [at]
        assert dest.impressions("c1") == [("A", at)]
        assert not dest.record_send("job:j:c1", "c1", ["A"], at), "a send recorded before stays spent"
        with pytest.raises(DataError, match="is not empty"):
            source.copy_into(dest)
        assert dest.counts() == source.counts(), "the refused copy wrote nothing"
    finally:
        source.close()


def test_a_copy_into_a_store_holding_anything_is_refused(tmp_path: Path) -> None:
    source, partial = Store(tmp_path / "source.db"), Store(tmp_path / "partial.db")
    try:
        _seed(source)
        partial.record_contact("c9", datetime(2011, 1, 1, tzinfo=UTC))  # no items, customers or events
        with pytest.raises(DataError, match="is not empty"):
            source.copy_into(partial)
        assert partial.counts() == {"items": 0, "customers": 0, "events": 0}
        assert partial.contacts("c9") == [datetime(2011, 1, 1, tzinfo=UTC)]
    finally:
        source.close()
        partial.close()


def test_a_writer_of_this_process_waits_its_turn_then_is_told_the_file_is_busy(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    holder, waiter = Database(path, busy_timeout_s=0.5), Database(path, busy_timeout_s=0.5)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.transaction() as db:
            db.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            holding.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert holding.wait(10)
        with pytest.raises(DataError, match=r"busy\.db is busy"), waiter.transaction():
            pass
    finally:
        release.set()
        thread.join()
    with waiter.transaction() as db:  # its turn, once the other is done
        db.execute(sa.text("INSERT INTO t VALUES (1)"))
    holder.close()
    waiter.close()


def test_a_published_ranker_save_is_fetched_whole_and_the_next_replaces_it_whole(
    fresh_store: Store, tmp_path: Path
) -> None:
    store = fresh_store
    npz, meta = tmp_path / "ranker.npz", tmp_path / "ranker.json"
    npz.write_bytes(bytes(range(256)) * 10)  # 2,560 bytes: three chunks of 1,000
    meta.write_text('{"save_id": "s1"}')
    files = {"npz": npz, "json": meta}
    out = {"npz": tmp_path / "out.npz", "json": tmp_path / "out.json"}
    assert store.ranker_save_id() is None
    assert not store.fetch_ranker("s1", out), "nothing published: nothing fetched"
    assert store.publish_ranker("s1", files, chunk=1000)
    assert store.ranker_save_id() == "s1"
    with store.transaction() as db:
        parts = [r[0] for r in db.execute(sa.text("SELECT part FROM ranker_chunks WHERE name='npz'"))]
    assert sorted(parts) == [0, 1, 2]
    assert not store.publish_ranker("s0", files, unless_published=True), "one is published: kept"
    assert store.ranker_save_id() == "s1"
    assert store.fetch_ranker("s1", out)
    assert out["npz"].read_bytes() == npz.read_bytes() and out["json"].read_text() == '{"save_id": "s1"}'

    # The next save replaces it in one transaction: no row of the one before is left.
    npz.write_bytes(b"second save")
    meta.write_text('{"save_id": "s2"}')
    store.publish_ranker("s2", files, chunk=1000)
    assert store.ranker_save_id() == "s2"
    assert not store.fetch_ranker("s1", {"npz": tmp_path / "old.npz"}), "a replaced save is not fetched"
    with store.transaction() as db:
        left = {r[0] for r in db.execute(sa.text("SELECT save_id FROM ranker_chunks"))}
        saves = [r[0] for r in db.execute(sa.text("SELECT save_id FROM ranker_saves"))]
    assert left == {"s2"} and saves == ["s2"]
    assert not store.fetch_ranker("s2", {"trees": tmp_path / "trees"}), "a file the save lacks"
    assert store.fetch_ranker("s2", out) and out["npz"].read_bytes() == b"second save"

    # A file that cannot be read publishes nothing: the save before stands.
    with pytest.raises(DataError, match="cannot read the ranker's npz file"):
        store.publish_ranker("s3", {"json": meta, "npz": tmp_path / "missing.npz"})
    assert store.ranker_save_id() == "s2" and store.fetch_ranker("s2", out)

    # A chunk that does not add up to its record is refused by name.
    with store.transaction() as db:
        db.execute(sa.text("UPDATE ranker_chunks SET data=:d WHERE name='npz'"), {"d": b"second savE"})
    out["npz"].unlink()
    with pytest.raises(DataError, match="s2's npz file does not match its record: its SHA-256 differs"):
        store.fetch_ranker("s2", out)
    assert not out["npz"].exists(), "a file that does not add up is not left behind"
