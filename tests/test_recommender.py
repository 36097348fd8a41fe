"""HybridRecommender on the real slice of Online Retail, the real embedding model and a real SQLite store."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
import scipy.sparse as sp

from retrieval.embeddings import Embedder, EmbeddingCache
from retrieval.features import _rows_dot, _t64
from retrieval.ranker import Ranker
from retrieval.recommender import HybridRecommender, item_text_vectors
from retrieval.rules import ColdStart
from tailor.app.service import Tailor
from tailor.core.errors import NotFoundError
from tailor.core.models import Customer, Event, EventKind, Item
from tailor.core.settings import Settings
from tailor.data.frame import purchases_from_store
from tailor.data.store import Store

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
    bought = [e.item_id for e in copy.events(top, kinds=[EventKind.PURCHASE])]
    # A variant of what they buy lately: a new item is matched against the customer's last 50 items.
    recent = set(list(dict.fromkeys(reversed(bought)))[:50])
    favourite = Counter(i for i in bought if i in recent).most_common(1)[0][0]
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
def vectors(store: Store) -> dict[str, npt.NDArray[np.float32]]:
    return item_text_vectors(store.items(), Embedder(cache_dir=REPO / "var" / "cache"))


@pytest.fixture(scope="module")
def rec(store: Store, vectors: dict[str, npt.NDArray[np.float32]]) -> HybridRecommender:
    settings = Settings(data_dir=REPO / "var", now=NOW.isoformat())
    ranker = Ranker(max_iter=60).fit(purchases_from_store(store), vectors, now=NOW)
    return HybridRecommender(store, ranker, settings=settings, text_vectors=vectors)


def _copy_sqlite(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite file (its WAL included)."""
    a, b = sqlite3.connect(str(src)), sqlite3.connect(str(dst))
    a.backup(b)
    a.close()
    b.close()


def _service_dir(store: Store, ranker: Ranker, tmp_path: Path) -> Path:
    """A data dir for the service: a copy of the store, the fitted ranker saved where the service loads it
    from, and a copy of the embedding cache, so the catalog is not embedded again."""
    data = tmp_path / "data"
    (data / "cache").mkdir(parents=True)
    _copy_sqlite(store.path, data / "tailor.db")
    _copy_sqlite(REPO / "var" / "cache" / "embeddings.sqlite", data / "cache" / "embeddings.sqlite")
    ranker.save(data / "ranker")
    return data


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
    # Its score is its own text similarity, labelled as such, not a ranker score borrowed from a neighbour.
    assert last.sources == ("text", "new_item")
    history = [e.item_id for e in store.events(top, kinds=[EventKind.PURCHASE]) if e.item_id]
    similarity = dict(rec.cold.new_items_for(rec._taste_rows(history), rec._new_items))
    assert last.score == pytest.approx(similarity[last.item.id]) and ev.weight == pytest.approx(last.score)
    assert 0.5 <= last.score <= 1.0 and last.score != recs[-2].score
    # In a short list the ranker's picks keep every slot.
    for k in (1, 4):
        short = rec.recommend(top, k=k, now=NOW)
        assert [r.item.id for r in short] == [r.item.id for r in recs[:k]]
        assert all(r.item.id in rec.ranker.item_index and "new_item" not in r.sources for r in short)
    # NEW1 (a variant of a favourite of late) qualifies too: its best match in their recent history is close
    taste = rec._taste_rows(history)
    assert rec.cold.new_items_for(taste, ["NEW1"])[0][1] >= 0.5


def test_evict_drops_only_the_cache(rec: HybridRecommender, store: Store) -> None:
    customer = store.busiest_customers(3)[-1]
    first = [r.item.id for r in rec.recommend(customer, k=10, now=NOW)]
    assert customer in rec.cached_customers()
    assert rec.evict(customer) is True
    assert customer not in rec.cached_customers()
    # The ranker still knows them, and the store gives the same events back: the same list.
    assert customer in rec.ranker.customer_index
    assert [r.item.id for r in rec.recommend(customer, k=10, now=NOW)] == first
    assert rec.evict(customer) is True and rec.evict(customer) is False


def test_observe_updates_at_once_and_forget_drops_it(
    rec: HybridRecommender, store: Store, vectors: dict[str, npt.NDArray[np.float32]], tmp_path: Path
) -> None:
    # forget purges the fitted ranker too, so this test works on its own copies, not the shared ``rec``.
    rec.ranker.save(tmp_path / "ranker")

    def fresh() -> HybridRecommender:
        ranker = Ranker.load(tmp_path / "ranker")
        return HybridRecommender(store, ranker, settings=rec.settings, text_vectors=vectors)

    live = fresh()
    customer = store.busiest_customers(40)[-1]  # the least busy of the slice: fewest rival repeat items
    bought = {e.item_id for e in store.events(customer, kinds=[EventKind.PURCHASE])}
    target = next(
        i
        for i in live.ranker.item_ids
        if i not in bought and i in live.catalog and live.catalog[i].in_stock and i != "NEW1"
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
    assert target not in {r.item.id for r in live.recommend(customer, k=50, now=NOW)}
    assert live.observe(events) == 5
    assert live.observe(events) == 0  # the same events again change nothing
    recs = {r.item.id: r for r in live.recommend(customer, k=50, now=NOW)}
    assert target in recs
    repeat = next(e for e in recs[target].evidence if e.kind == "repeat_purchase")
    assert set(repeat.event_ids) == {e.id for e in events}
    assert customer in live.cached_customers()
    in_store = len(store.events(customer, kinds=[EventKind.PURCHASE, EventKind.RETURN]))
    dropped = live.forget(customer)
    assert dropped["cached_events"] == in_store + 5 and dropped["cached_profiles"] == 1
    assert dropped["ranker_rows"] > 0 and dropped["cold_start_rows"] > 0
    assert customer not in live.cached_customers() and customer not in live.ranker.customer_index
    # The store still has their own events (the service deletes those), so they get recommendations again:
    # exactly those of a recommender that never observed the live events and forgot them the same way.
    reference = fresh()
    reference.ranker.forget(customer)
    reference.cold.forget(customer)
    after = live.recommend(customer, k=50, now=NOW)
    assert [(r.item.id, r.score) for r in after] == [
        (r.item.id, r.score) for r in reference.recommend(customer, k=50, now=NOW)
    ]
    cited = {i for r in after for e in r.evidence for i in e.event_ids}
    assert cited and not cited & {e.id for e in events}


def test_one_customer_products_equal_the_dense_products_to_the_bit(
    rec: HybridRecommender, store: Store
) -> None:
    """A request casts only the customer's rows of the item matrices and keeps their float64 transposes;
    the scores must come out exactly as the plain dense products give them, or the ranking could move."""
    ranker = rec.ranker
    factors = ranker._require()[2].factors
    text = ranker.text_matrix
    assert text is not None
    n = len(ranker.item_ids)
    rows: list[list[int]] = []
    for customer in store.busiest_customers(8):
        bought = {e.item_id for e in store.events(customer, kinds=[EventKind.PURCHASE])}
        rows.append(sorted(ranker.item_index[i] for i in bought if i in ranker.item_index))
    weights = [np.linspace(0.1, 1.0, len(r)) for r in rows]
    one = sp.csr_matrix((weights[0], (np.zeros(len(rows[0]), dtype=np.int64), rows[0])), shape=(1, n))
    many = sp.csr_matrix(
        (
            np.concatenate(weights),
            (np.repeat(np.arange(len(rows)), [len(r) for r in rows]), np.concatenate(rows)),
        ),
        shape=(len(rows), n),
    )
    for w in (one, many):
        for m in (text, factors):
            profile = _rows_dot(w, m)
            assert np.array_equal(profile, w @ m)
            profile /= np.linalg.norm(profile, axis=1, keepdims=True)
            assert np.array_equal(profile @ _t64(m), profile @ m.T)


def test_warm_caches_change_no_recommendation(
    rec: HybridRecommender, store: Store, vectors: dict[str, npt.NDArray[np.float32]], tmp_path: Path
) -> None:
    """Items, order, scores and evidence with every cache warm (the customer's state and never-sold matches,
    the catalog-wide blocks, kept across another customer's forget) equal those computed from nothing."""
    rec.ranker.save(tmp_path / "ranker")

    def fresh() -> HybridRecommender:
        return HybridRecommender(
            store, Ranker.load(tmp_path / "ranker"), settings=rec.settings, text_vectors=vectors
        )

    customers = store.busiest_customers(12)
    gone, kept = customers[-1], customers[:-1]

    def dump(r: HybridRecommender, customer: str, k: int) -> list[dict[str, Any]]:
        return [x.model_dump() for x in r.recommend(customer, k=k, now=NOW)]

    live = fresh()
    first = {(c, k): dump(live, c, k) for c in kept for k in (10, 5)}
    assert any("new_item" in x["sources"] for out in first.values() for x in out)
    assert {(c, k): dump(live, c, k) for c in kept for k in (10, 5)} == first
    live.forget(gone)
    reference = fresh()
    reference.ranker.forget(gone)
    reference.cold.forget(gone)
    for c in kept:
        for k in (10, 5):
            assert dump(live, c, k) == dump(reference, c, k)


def test_forget_refreshes_the_never_sold_block_for_the_same_candidates() -> None:
    """The recommender asks for the same candidates on every request, so the gathered block of never-sold
    vectors is kept across a forget, unless the forgotten customer was the only buyer of a candidate."""
    day = pd.Timedelta(days=1)
    purchases = pd.DataFrame(
        [("u1", "only-u1", NOW - 3 * day), ("u2", "y", NOW - 4 * day), ("u3", "y", NOW - 5 * day)],
        columns=["customer_id", "item_id", "timestamp"],
    )
    vecs = {"only-u1": np.array([1.0, 0.0]), "y": np.array([0.0, 1.0]), "n": np.array([0.9, 0.1])}
    cold = ColdStart(purchases, dict.fromkeys(["u1", "u2", "u3"], "UK"), vecs)
    candidates = ("only-u1", "y", "n")
    taste = np.array([1.0, 0.0])
    assert [i for i, _ in cold.new_items_for(taste, candidates)] == ["n"]
    assert cold.forget("u2") == 1  # "y" still has a buyer: nothing changes
    assert [i for i, _ in cold.new_items_for(taste, candidates)] == ["n"]
    assert cold.forget("u1") == 1
    assert [i for i, _ in cold.new_items_for(taste, candidates)] == ["only-u1", "n"]


def test_category_boosts_from_settings_reach_the_ranking(
    rec: HybridRecommender, store: Store, vectors: dict[str, npt.NDArray[np.float32]]
) -> None:
    customer = store.busiest_customers(3)[1]
    plain = rec.recommend(customer, k=10, now=NOW)
    category = next(r.item.category for r in reversed(plain) if r.item.category != plain[0].item.category)
    settings = Settings(data_dir=REPO / "var", now=NOW.isoformat(), category_boosts={category: 50.0})
    boosted = HybridRecommender(store, rec.ranker, settings=settings, text_vectors=vectors)
    assert dict(boosted.rules.category_boosts) == {category: 50.0}
    top = boosted.recommend(customer, k=10, now=NOW)
    assert top[0].item.category == category and top[0].score > 40
    by_id = {r.item.id: r.score for r in plain}
    for r in top:
        if r.item.id in by_id and r.item.category == category and "new_item" not in r.sources:
            assert r.score == pytest.approx(by_id[r.item.id] + 50.0)


def test_sent_emails_are_impressions_and_the_cap_hides_their_items(
    rec: HybridRecommender, store: Store, tmp_path: Path
) -> None:
    data = _service_dir(store, rec.ranker, tmp_path)
    # No frequency cap, so that three emails can go out at the same moment.
    with Tailor.open(Settings(data_dir=data, now=NOW.isoformat(), frequency_cap_days=0)) as t:
        customer = t.demo_customers(1)[0]
        before = {r.item.id for r in t.recommend(customer, k=50)}
        preview = t.email(customer)
        assert preview.email is not None, preview.refusal
        # A look from staff and a preview show the customer nothing.
        assert t.store.impressions(customer) == []
        products = [p.item_id for p in preview.email.products]
        assert set(products) & before
        for n in range(1, 4):
            sent = t.email(customer, send=True)
            assert sent.email is not None, sent.refusal
            assert [p.item_id for p in sent.email.products] == products  # under the cap nothing changes
            assert Counter(i for i, _ in t.store.impressions(customer)) == dict.fromkeys(products, n)
        after = [r.item.id for r in t.recommend(customer, k=50)]
        assert len(after) == 50 and not set(products) & set(after)
        fourth = t.email(customer, send=True)
        assert fourth.email is not None, fourth.refusal
        assert not set(products) & {p.item_id for p in fourth.email.products}
        # A customer-facing surface counts its items as shown.
        other = t.demo_customers(2)[1]
        shown = [r.item.id for r in t.recommend(other, k=3, shown=True)]
        assert [i for i, _ in t.store.impressions(other)] == sorted(shown)


def test_forget_purges_ranker_files_embedding_cache_history_and_memory(
    rec: HybridRecommender, store: Store, tmp_path: Path
) -> None:
    data = _service_dir(store, rec.ranker, tmp_path)
    ranker_path = data / "ranker"
    first, second = store.busiest_customers(40)[-3:-1]
    canary = "The zebra-striped teapot lid arrived cracked, order canary-7731."
    with Tailor.open(Settings(data_dir=data, now=NOW.isoformat())) as t:
        ticket = Event(
            customer_id=first, kind=EventKind.SUPPORT_TICKET, text=canary, timestamp=NOW - timedelta(days=1)
        )
        assert t.ingest([ticket])["updated_customers"] == 1
        assert [h.text for h in t.search_history(first, "cracked teapot lid", 5)] == [canary]
        key = EmbeddingCache.key(t.embedder.model_id, canary)
        assert key in t.embedder.cache.get_many([key])
        assert t.recommend(first, k=10)  # the recommender and their state are in memory now
        t.store.record_contact(first, NOW)
        t.store.record_impressions(first, ["85123A", "22423"], NOW)
        purchases = len(t.store.events(first, kinds=[EventKind.PURCHASE]))
        rows = int((t.recommender.ranker._history.cust == t.recommender.ranker.customer_index[first]).sum())
        assert first in Ranker.saved_customer_ids(ranker_path)
        deleted = t.forget(first)
        assert deleted["customers"] == 1 and deleted["events"] == len(store.events(first)) + 1
        assert (deleted["contacts"], deleted["impressions"], deleted["qdrant_history"]) == (1, 2, 1)
        assert deleted["embedding_cache_entries"] == 1
        assert deleted["ranker_rows"] == rows > 0 and deleted["cold_start_rows"] == purchases
        assert deleted["cached_events"] >= purchases
        assert t.search_history(first, "cracked teapot lid", 5) == []
        assert t.embedder.cache.get_many([key]) == {}
        assert first not in Ranker.saved_customer_ids(ranker_path)
        assert f'"{first}"' not in ranker_path.with_suffix(".json").read_text()
        assert first not in set(t.recommender.cold._frame["customer_id"].astype(str))
        assert t.store.impressions(first) == [] and t.store.contacts(first) == []
        with pytest.raises(NotFoundError):
            t.recommend(first)
    reloaded = Ranker.load(ranker_path)
    assert first not in reloaded.customer_index and second in reloaded.customer_index
    # A service that never loaded the recommender purges the saved ranker all the same.
    with Tailor.open(Settings(data_dir=data, now=NOW.isoformat())) as t:
        deleted = t.forget(second)
        assert t.model.loaded is None  # never loaded
        assert deleted["ranker_rows"] > 0 and deleted["embedding_cache_entries"] == 0
    assert second not in Ranker.saved_customer_ids(ranker_path)
    assert len(Ranker.load(ranker_path).customer_ids) == len(reloaded.customer_ids) - 1


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
    # The ranker compares product names, not the search text with its shared category words.
    names = Embedder(cache_dir=REPO / "var" / "cache").encode([i.title for i in items])
    assert all(np.allclose(vecs[i.id], names[n]) for n, i in enumerate(items))
    search = Embedder(cache_dir=REPO / "var" / "cache").encode([items[0].embedding_text()])[0]
    assert not np.allclose(vecs[items[0].id], search)


def test_item_text_vectors_leave_unnamed_items_out(store: Store) -> None:
    items: list[Item] = store.items()[:4]
    coded = [i.model_copy(update={"title": f"Item {i.id}", "named": False}) for i in items[:2]]
    embedder = Embedder(cache_dir=REPO / "var" / "cache")
    vecs = item_text_vectors([*coded, *items[2:]], embedder)
    assert set(vecs) == {i.id for i in items[2:]}
    # A catalog with no name in it has no text signal at all, and the model is not asked for one.
    asked = embedder.hits + embedder.misses
    assert item_text_vectors(coded, embedder) == {}
    assert embedder.hits + embedder.misses == asked
