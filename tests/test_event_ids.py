"""An event id names one event: a re-send is a duplicate, another event under a stored id is a conflict.

The real store (SQLite on a tmp path) and the real ``Tailor`` facade over ``seed_store`` (6 items, 6
customers), with a real ranker fitted on it and the real embedding model for the customer updates.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import tailor.data.store as store_module
from retrieval.ranker import Ranker
from retrieval.recommender import HybridRecommender
from tailor.app.service import Tailor
from tailor.core.errors import ConflictError
from tailor.core.models import Customer, Event, EventKind
from tailor.core.settings import Settings
from tailor.data.frame import purchases_from_store
from tailor.data.segment import from_segment
from tailor.data.store import Store
from tests.postgres import PostgresCluster
from tests.server import seed_store, segment_view

NOW = "2011-12-10T10:00:00+00:00"
AT = datetime(2011, 12, 9, tzinfo=UTC)


def _purchase(customer_id: str, item_id: str, *, id: str | None = None, order: str = "o1") -> Event:
    return Event(
        id=id,
        customer_id=customer_id,
        kind=EventKind.PURCHASE,
        item_id=item_id,
        quantity=1,
        value=3.5,
        timestamp=AT,
        order_id=order,
    )


# -- the store -------------------------------------------------------------------------------------
@pytest.fixture
def fresh_store(any_store: Store) -> Store:
    """The store's event-id contract, on both engines: SQLite, and PostgreSQL."""
    return any_store


def test_an_unchanged_resend_is_a_duplicate_and_is_not_written_again(fresh_store: Store) -> None:
    first = fresh_store.add_batch([], [_purchase("c1", "A", id="e1")])
    assert [e.id for e in first.new] == ["e1"] and first.duplicates == 0
    again = fresh_store.add_batch([], [_purchase("c1", "A", id="e1"), _purchase("c1", "B", id="e2")])
    assert again.ids == ["e1", "e2"] and [e.id for e in again.new] == ["e2"] and again.duplicates == 1
    assert fresh_store.counts()["events"] == 2
    assert fresh_store.changes()["purchases"] == 2, "a duplicate is no change to the ranker"


def test_an_id_stored_for_another_customer_refuses_the_whole_batch(fresh_store: Store) -> None:
    fresh_store.add_events([_purchase("c1", "A", id="e1")])
    newcomer = Customer(id="c3", first_name="Cy", email="cy@example.test", country="France")
    with pytest.raises(ConflictError) as info:
        fresh_store.add_batch([newcomer], [_purchase("c2", "B", id="e2"), _purchase("c2", "A", id="e1")])
    message = str(info.value)
    assert "event 'e1' (event 2 of the batch) is already stored with a different customer_id" in message
    assert "nothing of the batch was written" in message
    # Neither the profile, nor the event before the clash, nor a change count.
    assert not fresh_store.has_customer("c3") and fresh_store.events("c2") == []
    assert fresh_store.counts()["events"] == 1 and fresh_store.changes()["purchases"] == 1
    assert [e.customer_id for e in fresh_store.get_events(["e1"])] == ["c1"]


@pytest.mark.parametrize(
    ("update", "fields"),
    [
        ({"kind": EventKind.RETURN}, "kind"),
        ({"item_id": "B"}, "item_id"),
        ({"quantity": 2, "value": 7.0}, "quantity, value"),
        ({"timestamp": AT + timedelta(seconds=1)}, "timestamp"),
        ({"order_id": "o2"}, "order_id"),
    ],
)
def test_any_other_content_under_a_stored_id_is_a_conflict_naming_the_fields(
    fresh_store: Store, update: dict[str, Any], fields: str
) -> None:
    stored = _purchase("c1", "A", id="e1")
    fresh_store.add_events([stored])
    with pytest.raises(ConflictError, match=f"already stored with a different {fields};"):
        fresh_store.add_events([stored.model_copy(update=update)])
    assert fresh_store.get_events(["e1"]) == [stored]


def test_an_id_repeated_in_a_batch_is_one_event_or_a_conflict(fresh_store: Store) -> None:
    same = fresh_store.add_batch([], [_purchase("c1", "A", id="e1"), _purchase("c1", "A", id="e1")])
    assert [e.id for e in same.new] == ["e1"] and same.duplicates == 1
    clash = [_purchase("c1", "A", id="e2"), _purchase("c1", "B", id="e3"), _purchase("c2", "A", id="e2")]
    with pytest.raises(ConflictError, match=r"'e2' \(event 3 of the batch\) repeats event 1 of the batch"):
        fresh_store.add_events(clash)
    assert fresh_store.counts()["events"] == 1


def test_the_same_instant_stored_in_another_offset_is_the_same_event(fresh_store: Store) -> None:
    # As an older writer may have stored it: the same instant, written at +01:00.
    with fresh_store.transaction() as db:
        db.execute(
            sa.text(
                "INSERT INTO events (id, customer_id, kind, item_id, quantity, value, text, ts, order_id)"
                " VALUES ('e1', 'c1', 'purchase', 'A', 1, 3.5, NULL, '2011-12-09T01:00:00+01:00', 'o1')"
            )
        )
    written = fresh_store.add_batch([], [_purchase("c1", "A", id="e1")])
    assert written.new == [] and written.duplicates == 1


def _race(
    store: Store, customer_id: str, event_id: str, start: threading.Barrier, outcome: dict[str, str]
) -> None:
    start.wait()
    try:
        store.add_events([_purchase(customer_id, "A", id=event_id)])
        outcome[customer_id] = "written"
    except ConflictError:
        outcome[customer_id] = "refused"


def test_concurrent_writers_of_one_id_keep_one_event_and_refuse_the_other(fresh_store: Store) -> None:
    # Two stores on one database, as two processes have: the check and the insert must be one step (SQLite:
    # writers take turns; PostgreSQL: an id stored meanwhile is seen by the insert itself).
    stores = [fresh_store, Store(fresh_store.target)]
    try:
        for round_ in range(20):
            event_id, start = f"race-{round_}", threading.Barrier(2)
            outcome: dict[str, str] = {}
            threads = [
                threading.Thread(target=_race, args=(store, cid, event_id, start, outcome))
                for store, cid in zip(stores, ("c1", "c2"), strict=True)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(outcome.values()) == ["refused", "written"], outcome
            (kept,) = stores[0].get_events([event_id])
            assert outcome[kept.customer_id] == "written"
    finally:
        stores[1].close()


# -- the facade ------------------------------------------------------------------------------------
@pytest.fixture
def tailor(tmp_path: Path) -> Iterator[tuple[Tailor, list[str]]]:
    data = tmp_path / "data"
    ids = seed_store(data, n_customers=6)
    with Tailor(Settings(data_dir=data, now=NOW)) as t:
        # A real ranker on the seed store (no text vectors: a second to fit), loaded as a server has it.
        ranker = Ranker().fit(purchases_from_store(t.store), None, now=t.now())
        t.recommender = HybridRecommender(t.store, ranker, settings=t.settings)
        yield t, ids


def _evidence_event_ids(t: Tailor, customer_id: str) -> set[str]:
    """Every event id the customer's recommendations cite, for all 6 items of the catalog. An explanation
    (``Tailor.why``) is one sentence per piece of this evidence, so it can cite no other event."""
    return {i for r in t.recommend(customer_id, k=6) for e in r.evidence for i in e.event_ids}


def test_ingest_refuses_another_customers_event_id_and_it_never_becomes_their_evidence(
    tailor: tuple[Tailor, list[str]],
) -> None:
    t, ids = tailor
    owner, other = ids[0], ids[2]
    theirs = t.store.events(owner)[-1]
    assert theirs.id is not None
    # Asked first, so the recommender holds the other customer's state: the batch must not reach it.
    before = _evidence_event_ids(t, other)
    assert before and theirs.id not in before
    counts, changes = t.store.counts(), t.store.changes()
    newcomer = Customer(id="n1", first_name="Nia", email="nia@example.test", country="France")
    stolen = theirs.model_copy(update={"customer_id": other})
    with pytest.raises(ConflictError) as info:
        t.ingest([_purchase(other, "I5", order="fresh"), stolen], [newcomer])
    assert (
        f"event {theirs.id!r} (event 2 of the batch) is already stored with a different customer_id"
        in str(info.value)
    )
    assert t.store.counts() == counts and t.store.changes() == changes and not t.store.has_customer("n1")
    assert t.store.get_events([theirs.id]) == [theirs]
    assert theirs.id not in {e.id for e in t.store.events(other)}
    after = _evidence_event_ids(t, other)
    assert theirs.id not in after and after == before


def test_a_segment_message_id_resent_for_another_user_is_refused(tailor: tuple[Tailor, list[str]]) -> None:
    t, ids = tailor
    owner, other = ids[0], ids[2]
    call: dict[str, Any] = {
        "type": "track",
        "userId": owner,
        "event": "Order Completed",
        "messageId": "m-42",
        "timestamp": "2011-12-05T10:00:00Z",
        "properties": {"order_id": "S1", "products": [{"product_id": "I3", "quantity": 1, "price": 5}]},
    }
    t.recommend(owner, k=6)  # their state is in memory: a new purchase is observed into it
    first = t.ingest(from_segment(call, {}).events)
    assert (first["events"], first["duplicates"], first["observed"]) == (1, 0, 1)
    (sent,) = [e for e in t.store.events(owner) if e.order_id == "S1"]
    assert sent.id is not None
    # Redelivered unchanged: accepted, counted, neither written nor observed again.
    again = t.ingest(from_segment(call, {}).events)
    assert (again["events"], again["duplicates"], again["observed"]) == (0, 1, 0)
    with pytest.raises(ConflictError, match="already stored with a different customer_id"):
        t.ingest(from_segment({**call, "userId": other}, {}).events)
    assert t.store.get_events([sent.id]) == [sent]
    assert sent.id not in _evidence_event_ids(t, other)
    assert sent.id in {i for r in t.recommend(owner, k=6) for e in r.evidence for i in e.event_ids}


def test_ingest_counts_what_it_wrote_and_what_it_had_already(tailor: tuple[Tailor, list[str]]) -> None:
    t, ids = tailor
    customer = ids[1]
    # 1,000 views that are 100 distinct events (without ids: their content is their id), and 10 purchases
    # sent 3 times.
    views = [
        Event(
            customer_id=customer,
            kind=EventKind.VIEW,
            item_id=f"I{n % 100 % 6}",
            timestamp=AT + timedelta(minutes=n % 100),
        )
        for n in range(1000)
    ]
    purchases = [_purchase(customer, f"I{n % 6}", id=f"p{n}", order=f"o{n}") for n in range(10)] * 3
    t.recommend(customer, k=3)  # their state is in memory: new purchases are observed into it, once
    report = t.ingest(views + purchases)
    assert report == {
        "events": 110,
        "duplicates": 920,
        "customers": 0,
        "updated_customers": 1,
        "observed": 10,
    }
    assert len(t.store.events(customer, since=AT)) == 110
    assert t.store.changes()["purchases"] == 2 * 6 + 10
    resent = t.ingest(views + purchases)
    assert resent == {"events": 0, "duplicates": 1030, "customers": 0, "updated_customers": 1, "observed": 0}
    assert t.store.counts()["events"] == 2 * 6 + 110


def test_an_id_sent_twice_in_one_batch_with_other_content_writes_nothing(
    tailor: tuple[Tailor, list[str]],
) -> None:
    t, ids = tailor
    counts = t.store.counts()
    batch = [_purchase(ids[0], "I1", id="dup"), _purchase(ids[1], "I1", id="dup")]
    with pytest.raises(ConflictError, match=r"'dup' \(event 2 of the batch\) repeats event 1 .* customer_id"):
        t.ingest(batch)
    assert t.store.counts() == counts


# -- Segment batches -------------------------------------------------------------------------------
def test_a_message_id_reused_in_a_segment_batch_names_both_calls() -> None:
    call = segment_view()
    with pytest.raises(ConflictError) as info:
        from_segment({"batch": [call, {**call, "userId": "2"}]}, {})
    assert "batch[1].messageId 'm-1' was used by batch[0] for an event with a different customer_id" in str(
        info.value
    )
    # The same call twice in one body is one event, even without a timestamp: the body's arrival dates both.
    untimed = {k: v for k, v in call.items() if k != "timestamp"}
    out = from_segment({"batch": [untimed, untimed]}, {})
    assert len(out.events) == 2 and out.events[0] == out.events[1]


def _upsert_at_once(
    store: Store, customers: list[Customer], event_id: str, start: threading.Barrier, errors: list[Exception]
) -> None:
    start.wait()
    try:
        store.add_batch(customers, [_purchase(customers[0].id, "A", id=event_id)])
    except Exception as exc:  # any failure is the finding
        errors.append(exc)


def test_writers_of_the_same_customers_in_opposite_orders_both_land(fresh_store: Store) -> None:
    # On PostgreSQL two transactions upserting the same rows in opposite orders used to wait on each other
    # in a circle (a deadlock, one batch refused): rows are written in id order.
    other = Store(fresh_store.target)
    customers = [
        Customer(id=f"p{n:03d}", first_name="Pat", email=f"p{n}@example.com", country="UK")
        for n in range(300)
    ]
    try:
        for round_ in range(5):
            start, errors = threading.Barrier(2), list[Exception]()
            threads = [
                threading.Thread(
                    target=_upsert_at_once, args=(store, batch, f"{tag}-{round_}", start, errors)
                )
                for store, batch, tag in ((fresh_store, customers, "up"), (other, customers[::-1], "down"))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert not errors, errors
        assert fresh_store.counts()["customers"] == 300 and fresh_store.counts()["events"] == 10
    finally:
        other.close()


def test_a_large_batch_writes_its_new_events_once_and_counts_the_rest_as_duplicates(
    fresh_store: Store,
) -> None:
    # 2,500 events: past the size PostgreSQL writes by COPY.
    stored = fresh_store.add_batch([], [_purchase("c1", "A", id=f"e{n}") for n in range(0, 2500, 5)])
    assert len(stored.new) == 500
    batch = [_purchase("c1", "A", id=f"e{n}") for n in range(2500)]
    written = fresh_store.add_batch([], batch)
    assert len(written.new) == 2000 and written.duplicates == 500
    assert {e.id for e in written.new} == {f"e{n}" for n in range(2500) if n % 5}
    assert fresh_store.counts()["events"] == 2500 and fresh_store.changes()["purchases"] == 2500
    clash = _purchase("c2", "A", id="e7")
    with pytest.raises(ConflictError, match="e7"):
        fresh_store.add_batch([], [*batch[:2100], clash])
    assert fresh_store.counts()["events"] == 2500


def test_an_id_another_writer_stored_and_a_forget_deleted_meanwhile_is_written(
    pg_cluster: PostgresCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL only: SQLite's writers take turns, so no id can come and go inside a batch there.
    fresh_store = Store(pg_cluster.database(f"vanish_{uuid.uuid4().hex[:12]}"))
    real = store_module._insert_skipping
    calls = []

    def first_skips_all(db: Any, rows: Any) -> set[str]:
        # As if another writer held these ids at the insert and a forget then deleted them.
        calls.append(len(rows))
        return set() if len(calls) == 1 else real(db, rows)

    monkeypatch.setattr(store_module, "_insert_skipping", first_skips_all)
    written = fresh_store.add_batch([], [_purchase("c1", "A", id="v1"), _purchase("c1", "B", id="v2")])
    assert calls == [2, 2] and {e.id for e in written.new} == {"v1", "v2"}
    assert fresh_store.counts()["events"] == 2
    fresh_store.close()
