"""One suite for ``retrieval.vector_store.VectorStore``, run against every Qdrant backend in ``BACKENDS``.

Vectors are synthetic (seeded, unit length) so that the expected neighbours are known exactly; Qdrant is real.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from retrieval.vector_store import TEXT_DIM, HistoryHit, VectorStore, content_hash, point_id
from tailor.core.errors import DataError, VectorStoreError
from tailor.core.models import Event, EventKind, Item
from tailor.core.settings import Settings
from tests.qdrant_backends import BACKENDS, free_port, qdrant_binary, qdrant_server

Matrix = npt.NDArray[np.float32]

# qdrant-client checks a server's version from a background thread; against the closed port below it warns.
pytestmark = pytest.mark.filterwarnings("ignore:Failed to obtain server version")


def unit(rng: np.random.Generator, n: int, dim: int = TEXT_DIM) -> Matrix:
    m = rng.standard_normal((n, dim)).astype(np.float32)
    out: Matrix = (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)
    return out


def make_items(n: int) -> list[Item]:
    return [
        Item(
            id=f"SKU{i:03d}",
            title=f"Thing {i}",
            category=["kitchen", "garden", "toys"][i % 3],
            price=float(i),
            in_stock=i % 5 != 0,
            url=f"https://example-retail.test/p/SKU{i:03d}",
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    binary = qdrant_binary()
    if binary is None:
        yield None
        return
    yield from qdrant_server(binary, tmp_path_factory.mktemp("qdrant-server"))


@pytest.fixture(params=BACKENDS)
def vs(request: pytest.FixtureRequest, tmp_path: Path, server_url: str | None) -> Iterator[VectorStore]:
    if request.param == "embedded":
        store = VectorStore.from_settings(Settings(data_dir=tmp_path))
    else:
        assert server_url is not None
        # A fresh prefix per test isolates tests that share one server.
        store = VectorStore.connect(url=server_url, prefix=f"t{uuid.uuid4().hex[:10]}")
    store.ensure_collections()
    yield store
    store.close()


@pytest.fixture
def catalog(vs: VectorStore) -> tuple[list[Item], Matrix]:
    items = make_items(30)
    vectors = unit(np.random.default_rng(7), len(items))
    vs.upsert_items(items, vectors)
    return items, vectors


def test_point_ids_are_deterministic_uuids() -> None:
    assert point_id("85123A") == point_id("85123A")
    assert point_id("85123A") != point_id("85123a")
    assert uuid.UUID(point_id("12346")).version == 5


def test_collections_are_created_once_and_healthy(vs: VectorStore) -> None:
    vs.ensure_collections()  # a second call changes nothing
    assert vs.health()
    names = {c.name for c in vs.client.get_collections().collections}
    assert {vs.items_collection, vs.history_collection, vs.tastes_collection} <= names
    assert vs.collab_dim is None


def test_nearest_item_is_itself_and_hashes_are_stored(
    vs: VectorStore, catalog: tuple[list[Item], Matrix]
) -> None:
    items, vectors = catalog
    hits = vs.search_items(vectors[1], limit=3)
    assert hits[0][0] == "SKU001"
    assert hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert vs.item_ids() == {i.id for i in items}
    assert vs.item_payload_hashes() == {i.id: content_hash(i) for i in items}
    assert vs.count_items() == 30


def test_filters_stock_category_price_and_exclusions(
    vs: VectorStore, catalog: tuple[list[Item], Matrix]
) -> None:
    items, vectors = catalog
    by_id = {i.id: i for i in items}
    query = vectors[0]  # SKU000 is out of stock
    in_stock = vs.search_items(query, limit=30)
    assert "SKU000" not in {i for i, _ in in_stock}
    assert all(by_id[i].in_stock for i, _ in in_stock)
    assert vs.search_items(query, limit=1, in_stock_only=False)[0][0] == "SKU000"
    garden = vs.search_items(query, limit=30, category="garden", in_stock_only=False)
    assert {i for i, _ in garden} == {i.id for i in items if i.category == "garden"}
    cheap = vs.search_items(query, limit=30, max_price=9.5, in_stock_only=False)
    assert {i for i, _ in cheap} == {f"SKU{n:03d}" for n in range(10)}
    excluded = vs.search_items(vectors[2], limit=30, exclude_ids=["SKU002", "SKU003"])
    assert {"SKU002", "SKU003"}.isdisjoint(i for i, _ in excluded)
    assert len(excluded) == len(in_stock) - 2


def test_fetch_item_vectors_mirrors_the_collection(
    vs: VectorStore, catalog: tuple[list[Item], Matrix]
) -> None:
    items, vectors = catalog
    ids, matrix = vs.fetch_item_vectors()
    assert ids == sorted(i.id for i in items)
    order = [int(i[3:]) for i in ids]
    np.testing.assert_allclose(matrix, vectors[order], atol=1e-6)
    some, rows = vs.item_vectors(["SKU005", "nope", "SKU001"])
    assert some == ["SKU005", "SKU001"]
    np.testing.assert_allclose(rows, vectors[[5, 1]], atol=1e-6)


def test_delete_items(vs: VectorStore, catalog: tuple[list[Item], Matrix]) -> None:
    _, vectors = catalog
    assert vs.delete_items(["SKU001", "SKU002"]) == 2
    assert "SKU001" not in vs.item_ids()
    assert vs.search_items(vectors[1], limit=1)[0][0] != "SKU001"
    assert vs.count_items() == 28


def test_reupsert_replaces_payload(vs: VectorStore, catalog: tuple[list[Item], Matrix]) -> None:
    items, vectors = catalog
    cheaper = items[7].model_copy(update={"price": 0.5})
    vs.upsert_items([cheaper], vectors[7:8], content_hashes=["h2"])
    assert vs.item_payload_hashes()["SKU007"] == "h2"
    assert vs.search_items(vectors[7], limit=1, max_price=1.0)[0][0] == "SKU007"
    assert vs.count_items() == 30


def test_collab_vectors_added_later_keep_text_and_survive_reembedding(
    vs: VectorStore, catalog: tuple[list[Item], Matrix]
) -> None:
    items, vectors = catalog
    vs.ensure_collections(collab_dim=8)
    assert vs.collab_dim == 8
    # Adding the collab space rebuilt the collection: text vectors and payloads must be intact.
    assert vs.search_items(vectors[4], limit=1)[0][0] == "SKU004"
    assert vs.item_ids() == {i.id for i in items}
    collab = unit(np.random.default_rng(3), len(items), 8)
    vs.set_collab_vectors([i.id for i in items], collab)
    assert vs.search_items(collab[4], using="collab", limit=1)[0][0] == "SKU004"
    # Re-embedding the text of an item must not wipe its collaborative vector.
    vs.upsert_items([items[4]], vectors[4:5])
    assert vs.search_items(collab[4], using="collab", limit=1)[0][0] == "SKU004"
    ids, matrix = vs.fetch_item_vectors("collab")
    assert len(ids) == 30 and matrix.shape == (30, 8)
    fused = vs.search_items_fused({"text": vectors[4], "collab": collab[4]}, limit=5)
    assert fused[0][0] == "SKU004"
    assert len(fused) == 5
    with pytest.raises(DataError, match="not indexed"):
        vs.set_collab_vectors(["missing"], collab[:1])


def test_items_with_collab_at_creation(vs: VectorStore) -> None:
    vs.ensure_collections(collab_dim=4)
    items = make_items(6)
    text = unit(np.random.default_rng(1), 6)
    collab = unit(np.random.default_rng(2), 6, 4)
    vs.upsert_items(items, text, collab)
    assert vs.search_items(collab[1], using="collab", limit=1)[0][0] == "SKU001"
    vs.ensure_collections()  # None leaves the collab space as it is
    assert vs.collab_dim == 4


def ticket(customer: str, text: str, day: int, kind: EventKind = EventKind.SUPPORT_TICKET) -> Event:
    return Event(
        id=f"ev-{customer}-{day}",
        customer_id=customer,
        kind=kind,
        item_id="SKU001" if kind is EventKind.RETURN else None,
        text=text,
        timestamp=datetime(2011, 11, day, 12, tzinfo=UTC),
    )


@pytest.fixture
def histories(vs: VectorStore) -> dict[str, Matrix]:
    rng = np.random.default_rng(11)
    alice = [
        ticket("12346", "mug arrived broken", 1),
        ticket("12346", "returned the lamp", 2, EventKind.RETURN),
    ]
    bob = [ticket("12347", "where is my order", 3)]
    va, vb = unit(rng, 2), unit(rng, 1)
    assert vs.upsert_history("12346", alice, va) == 2
    vs.upsert_history("12347", bob, vb)
    vs.upsert_taste("12346", unit(rng, 1)[0])
    vs.upsert_taste("12347", unit(rng, 1)[0])
    return {"12346": va, "12347": vb}


def test_history_search_is_scoped_to_the_customer(vs: VectorStore, histories: dict[str, Matrix]) -> None:
    hits = vs.search_history("12346", histories["12346"][1])
    assert hits[0].event_id == "ev-12346-2"
    assert {h.event_id for h in hits} == {"ev-12346-1", "ev-12346-2"}
    top = hits[0]
    assert isinstance(top, HistoryHit)
    assert top.kind == "return" and top.text == "returned the lamp"
    assert top.timestamp == datetime(2011, 11, 2, 12, tzinfo=UTC)
    # Bob's ticket is the exact query here, and still never shows up in Alice's search.
    assert {h.event_id for h in vs.search_history("12346", histories["12347"][0])} == {
        "ev-12346-1",
        "ev-12346-2",
    }
    assert vs.history_event_ids("12347") == {"ev-12347-3"}
    assert vs.history_event_ids() == {"ev-12346-1", "ev-12346-2", "ev-12347-3"}


def test_taste_roundtrip(vs: VectorStore) -> None:
    vec = unit(np.random.default_rng(5), 1)[0]
    assert vs.get_taste("12346") is None
    vs.upsert_taste("12346", vec)
    got = vs.get_taste("12346")
    assert got is not None
    np.testing.assert_allclose(got, vec, atol=1e-6)


def test_right_to_be_forgotten(vs: VectorStore, histories: dict[str, Matrix]) -> None:
    assert vs.delete_customer("12346") == {"history": 2, "tastes": 1}
    for query in histories["12346"]:
        assert vs.search_history("12346", query, limit=10) == []
    assert vs.get_taste("12346") is None
    assert "ev-12346-1" not in vs.history_event_ids()
    # Nobody else is touched, and forgetting twice finds nothing more.
    assert [h.event_id for h in vs.search_history("12347", histories["12347"][0])] == ["ev-12347-3"]
    assert vs.get_taste("12347") is not None
    assert vs.delete_customer("12346") == {"history": 0, "tastes": 0}


def test_forgetting_before_the_first_index_finds_nothing(tmp_path: Path) -> None:
    with VectorStore.from_settings(Settings(data_dir=tmp_path)) as fresh:
        assert fresh.delete_customer("12346") == {"history": 0, "tastes": 0}
        assert not fresh.health()  # it created no collection on the way


def test_bad_input_is_named(vs: VectorStore, catalog: tuple[list[Item], Matrix]) -> None:
    items, vectors = catalog
    with pytest.raises(DataError, match="dimension 384"):
        vs.search_items(np.ones(10, dtype=np.float32))
    with pytest.raises(DataError, match="expected 2 vectors"):
        vs.upsert_items(items[:2], vectors[:3])
    with pytest.raises(DataError, match="NaN"):
        vs.upsert_items(items[:1], np.full((1, TEXT_DIM), np.nan))
    with pytest.raises(DataError, match="limit"):
        vs.search_items(vectors[0], limit=0)
    with pytest.raises(DataError, match="unknown vector name"):
        vs.search_items(vectors[0], using="image")
    with pytest.raises(DataError, match="no collab"):
        vs.search_items(vectors[0], using="collab")
    with pytest.raises(DataError, match="belongs to"):
        vs.upsert_history("12347", [ticket("12346", "x", 1)], vectors[:1])
    with pytest.raises(DataError, match="duplicate"):
        vs.upsert_items([items[0], items[0]], vectors[:2])


def test_embedded_mode_persists_across_reopen(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    vectors = unit(np.random.default_rng(9), 3)
    with VectorStore.from_settings(settings) as vs:
        vs.ensure_collections()
        vs.upsert_items(make_items(3), vectors)
    with VectorStore.from_settings(settings) as vs:
        vs.ensure_collections()
        assert vs.item_ids() == {"SKU000", "SKU001", "SKU002"}
        assert vs.search_items(vectors[2], limit=1, in_stock_only=False)[0][0] == "SKU002"


def test_embedded_folder_in_use_is_a_clear_error(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with VectorStore.from_settings(settings), pytest.raises(VectorStoreError, match="cannot open Qdrant"):
        VectorStore.from_settings(settings)


def test_unreachable_server_is_translated(tmp_path: Path) -> None:
    # Nothing listens on this port: the server code path must fail with our error, not an httpx one.
    url = f"http://127.0.0.1:{free_port()}"
    vs = VectorStore.from_settings(Settings(data_dir=tmp_path, qdrant_url=url))
    try:
        assert vs.health() is False
        with pytest.raises(VectorStoreError, match=r"127\.0\.0\.1.*create collections"):
            vs.ensure_collections()
    finally:
        vs.close()


def test_connect_needs_exactly_one_location() -> None:
    with pytest.raises(DataError, match="exactly one"):
        VectorStore.connect()
    with pytest.raises(DataError, match="exactly one"):
        VectorStore.connect(path="x", url="http://127.0.0.1:1")


def test_history_timestamps_keep_their_zone(vs: VectorStore) -> None:
    when = datetime(2011, 12, 1, 9, tzinfo=UTC) + timedelta(minutes=5)
    event = Event(id="e1", customer_id="c1", kind=EventKind.SUPPORT_TICKET, text="hello", timestamp=when)
    vec = unit(np.random.default_rng(4), 1)
    vs.upsert_history("c1", [event], vec)
    assert vs.search_history("c1", vec[0])[0].timestamp == when


def test_embedded_mode_serves_threads(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    vs = VectorStore.from_settings(Settings(data_dir=tmp_path))
    vs.ensure_collections()
    items = make_items(200)
    vectors = unit(np.random.default_rng(8), 200)

    def write(n: int) -> int:
        return vs.upsert_items(items[n * 20 : (n + 1) * 20], vectors[n * 20 : (n + 1) * 20])

    def read(n: int) -> int:
        return len(vs.search_items(vectors[n], limit=5, in_stock_only=False))

    with ThreadPoolExecutor(max_workers=4) as pool:
        writes = [pool.submit(write, n) for n in range(10)]
        reads = [pool.submit(read, n) for n in range(40)]
        assert sum(f.result() for f in writes) == 200
        # Reads interleave with writes (so may see fewer points), and none may fail.
        assert all(0 <= f.result() <= 5 for f in reads)
    assert vs.count_items() == 200
    assert vs.search_items(vectors[123], limit=1, in_stock_only=False)[0][0] == "SKU123"
    vs.close()


def test_collab_space_added_by_another_handle_is_seen(
    vs: VectorStore, catalog: tuple[list[Item], Matrix]
) -> None:
    items, vectors = catalog
    # A second handle on the same collections (the ranker's training job) adds the collab space.
    other = VectorStore(vs.client, prefix=vs.prefix, location=vs.location)
    other.ensure_collections(collab_dim=4)
    other.set_collab_vectors([items[0].id], unit(np.random.default_rng(6), 1, 4))
    assert vs.item_vectors([items[0].id], "collab")[1].shape == (1, 4)
    # And re-embedding through the first handle keeps that vector.
    vs.upsert_items(items[:1], vectors[:1])
    assert len(vs.item_vectors([items[0].id], "collab")[0]) == 1
