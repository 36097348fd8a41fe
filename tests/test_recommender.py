"""HybridRecommender on the real slice of Online Retail, the real embedding model and a real SQLite store."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from evals.protocol import purchases_from_store
from retrieval.embeddings import Embedder
from retrieval.ranker import Ranker
from retrieval.recommender import HybridRecommender, item_text_vectors
from tailor.errors import NotFoundError
from tailor.models import Customer, Event, EventKind, Item
from tailor.settings import Settings
from tailor.store import Store

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
NOW = datetime(2011, 12, 10, 10, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def store(slice_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """A writable copy of the slice, with one brand-new item and one customer without history."""
    path = tmp_path_factory.mktemp("rec") / "tailor.db"
    src = sqlite3.connect(str(slice_store.path))
    dst = sqlite3.connect(str(path))
    src.backup(dst)
    src.close()
    dst.close()
    copy = Store(path)
    top = copy.busiest_customers(1)[0]
    favourite = Counter(e.item_id for e in copy.events(top, kinds=[EventKind.PURCHASE])).most_common(1)[0][0]
    base = copy.get_item(str(favourite))
    copy.upsert_items(
        [base.model_copy(update={"id": "NEW1", "title": base.title + " Deluxe", "url": base.url + "-new"})]
    )
    copy.upsert_customers(
        [Customer(id="99999", first_name="Nova", email="nova@example.com", country="United Kingdom")]
    )
    yield copy
    copy.close()


@pytest.fixture(scope="module")
def rec(store: Store) -> HybridRecommender:
    settings = Settings(data_dir=REPO / "var", now=NOW.isoformat())
    vectors = item_text_vectors(store.items(), Embedder(cache_dir=REPO / "var" / "cache"))
    ranker = Ranker(max_iter=60).fit(purchases_from_store(store), vectors, now=NOW)
    return HybridRecommender(store, ranker, settings=settings, text_vectors=vectors)


def test_recommendations_carry_evidence_from_the_store(rec: HybridRecommender, store: Store) -> None:
    customer = store.busiest_customers(3)[2]
    recs = rec.recommend(customer, k=10, now=NOW)
    assert [r.rank for r in recs] == list(range(1, 11))
    assert [r.score for r in recs[:-1]] == sorted((r.score for r in recs[:-1]), reverse=True)
    repeat = [e for r in recs for e in r.evidence if e.kind == "repeat_purchase"]
    assert repeat, "a busy customer's top 10 holds items they buy again"
    for r in recs:
        assert r.sources and r.evidence
        for ev in r.evidence:
            if not ev.event_ids:
                continue
            found = store.get_events(list(ev.event_ids))
            assert len(found) == len(set(ev.event_ids))
            assert {e.customer_id for e in found} == {customer}
            assert {e.item_id for e in found} <= set(ev.item_ids)
    for ev in repeat:
        (item_id,) = ev.item_ids
        orders = {
            e.order_id for e in store.events(customer, kinds=[EventKind.PURCHASE]) if e.item_id == item_id
        }
        assert ev.summary.startswith(f"bought {len(orders)} time")


def test_business_rules_hold(rec: HybridRecommender, store: Store) -> None:
    with_returns = [c for c in store.customers_with(EventKind.RETURN) if c != "99999"][:3]
    assert with_returns
    for customer in with_returns:
        returned = {e.item_id for e in store.events(customer, kinds=[EventKind.RETURN])}
        recs = rec.recommend(customer, k=10, now=NOW)
        ids = [r.item.id for r in recs]
        assert not set(ids) & returned
        assert all(r.item.in_stock for r in recs)
        assert max(Counter(r.item.category for r in recs).values()) <= rec.settings.max_per_category


def test_new_item_gets_exposure_through_its_text(rec: HybridRecommender, store: Store) -> None:
    top = store.busiest_customers(1)[0]
    recs = rec.recommend(top, k=10, now=NOW)
    last = recs[-1]
    assert last.item.id not in rec.ranker.item_index, (
        "a never-sold item close to the customer's taste takes a slot"
    )
    (ev,) = last.evidence
    assert ev.kind == "text_similarity" and ev.summary.startswith("new in the catalog")
    assert ev.event_ids and {e.customer_id for e in store.get_events(list(ev.event_ids))} == {top}
    # NEW1 (a variant of their favourite) qualifies too: its best text match in their recent history is close
    history = [e.item_id for e in store.events(top, kinds=[EventKind.PURCHASE]) if e.item_id]
    taste = rec._taste_rows(history)
    assert rec.cold.new_items_for(taste, ["NEW1"])[0][1] >= 0.5


def test_observe_updates_at_once_and_forget_drops_it(rec: HybridRecommender, store: Store) -> None:
    customer = store.busiest_customers(40)[-1]  # the least busy of the slice: fewest rival repeat items
    bought = {e.item_id for e in store.events(customer, kinds=[EventKind.PURCHASE])}
    target = next(
        i
        for i in rec.ranker.item_ids
        if i not in bought and i in rec.catalog and rec.catalog[i].in_stock and i != "NEW1"
    )
    events = [
        Event(
            id=f"live-{n}",
            customer_id=customer,
            kind=EventKind.PURCHASE,
            item_id=target,
            quantity=1,
            timestamp=NOW - timedelta(days=40 - 7 * n),
            order_id=f"live-order-{n}",
        )
        for n in range(5)
    ]
    assert rec.observe(events) == 5
    assert rec.observe(events) == 0  # the same events again change nothing
    recs = {r.item.id: r for r in rec.recommend(customer, k=50, now=NOW)}
    assert target in recs
    repeat = next(e for e in recs[target].evidence if e.kind == "repeat_purchase")
    assert set(repeat.event_ids) == {e.id for e in events}
    assert customer in rec.cached_customers()
    rec.forget(customer)
    assert customer not in rec.cached_customers()
    after = {r.item.id: r for r in rec.recommend(customer, k=50, now=NOW)}
    assert all(e.kind != "repeat_purchase" for e in after[target].evidence) if target in after else True


def test_cold_start_customer_gets_context_popular_items(rec: HybridRecommender) -> None:
    recs = rec.recommend("99999", k=8, now=NOW)
    assert len(recs) == 8
    assert all("cold_start" in r.sources for r in recs)
    assert any(e.kind == "popular" and "United Kingdom" in e.summary for r in recs for e in r.evidence)
    viewed = rec.recommend("99999", k=8, now=NOW, session_item_ids=(recs[0].item.id,))
    assert any(e.kind == "recent_view" for r in viewed for e in r.evidence)


def test_unknown_customer_is_not_found(rec: HybridRecommender) -> None:
    with pytest.raises(NotFoundError):
        rec.recommend("no-such-customer", now=NOW)


def test_item_text_vectors_cover_the_catalog(store: Store) -> None:
    items: list[Item] = store.items()[:5]
    vecs = item_text_vectors(items, Embedder(cache_dir=REPO / "var" / "cache"))
    assert set(vecs) == {i.id for i in items} and all(v.shape == (384,) for v in vecs.values())
