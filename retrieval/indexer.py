"""Keep Qdrant in step with the store: the catalog's text vectors, customers' text history and taste vectors.

Every pass is incremental. An item is embedded again only when its content hash in the store differs from the
one stored with its vector (and even then the embedding cache answers when its text did not change); items and
events gone from the store are deleted from Qdrant, so a forgotten customer does not linger in the index.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import numpy.typing as npt

from retrieval.embeddings import Embedder
from retrieval.vector_store import VectorStore
from tailor.core.errors import NotFoundError
from tailor.core.models import Event, EventKind, Item
from tailor.data.store import Store

__all__ = [
    "HISTORY_KINDS",
    "TASTE_WEIGHTS",
    "IndexReport",
    "index_catalog",
    "index_history",
    "taste_vector",
    "update_customer",
]

Progress = Callable[[int, int], None]
FloatMatrix = npt.NDArray[np.float32]

# Kinds that carry a customer's own words. Purchases and views are the bulk of the events and carry none,
# so the full pass does not read them.
HISTORY_KINDS: tuple[EventKind, ...] = (EventKind.SUPPORT_TICKET, EventKind.RETURN, EventKind.EMAIL_CLICK)

# How much one event of each kind says about taste. A returned item says the customer did not want it, so it
# is left out of the taste altogether.
TASTE_WEIGHTS: dict[EventKind, float] = {
    EventKind.PURCHASE: 1.0,
    EventKind.ADD_TO_CART: 0.5,
    EventKind.VIEW: 0.2,
}
TASTE_HALF_LIFE_DAYS = 180.0

_CHUNK = 512


@dataclass(frozen=True)
class IndexReport:
    """What a pass did: ``embedded`` counts distinct texts the model ran on, ``upserted`` points written."""

    total: int
    upserted: int
    embedded: int
    skipped: int
    deleted: int
    seconds: float
    unnamed: int = 0  # catalog items left out of the text index: their titles are stand-ins (``Item.named``)

    def as_dict(self) -> dict[str, float]:
        return {
            "total": self.total,
            "upserted": self.upserted,
            "embedded": self.embedded,
            "skipped": self.skipped,
            "deleted": self.deleted,
            "unnamed": self.unnamed,
            "seconds": round(self.seconds, 3),
        }


class _Writer:
    """Writes one chunk to Qdrant on a thread while the next chunk is embedded (torch releases the GIL)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, work: Callable[[], object]) -> None:
        self.wait()

        def run() -> None:
            try:
                work()
            except BaseException as exc:
                self._error = exc

        self._thread = threading.Thread(target=run, name="tailor-index-writer", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def index_catalog(
    store: Store,
    vectors: VectorStore,
    embedder: Embedder,
    *,
    progress: Progress | None = None,
    force: bool = False,
) -> IndexReport:
    """Bring the ``items`` collection in step with the store's catalog; returns what it did.

    ``force`` rewrites every item's point. Vectors still come from the embedding cache when their text and
    model are unchanged: a cached vector is exactly what the model would return.

    Unnamed items (``Item.named`` False) get no point: the text vector of a stand-in title would put them
    in answers to questions they have no words for. They are counted in ``unnamed``, and an item indexed
    while it had a name loses its point when it loses the name.
    """
    start = time.perf_counter()
    vectors.ensure_collections()
    wanted = store.item_hashes()
    indexed = vectors.item_payload_hashes(embedding_model=embedder.model_id)
    every_indexed = vectors.item_ids()
    # An unnamed item is never indexed, so it shows as changed on every pass; reading it to find that out
    # costs a JSON parse, not an embedding.
    changed = sorted(i for i, h in wanted.items() if force or indexed.get(i) != h)
    loaded = store.items(changed)
    unnamed = {item.id for item in loaded if not item.named}
    gone = sorted((every_indexed - wanted.keys()) | (every_indexed & unnamed))
    embedded_before = embedder.embedded
    # Chunks of similar length pad less: the model then runs as fast as on the whole catalog in one call,
    # which sorts by length itself, while chunks still let Qdrant writes overlap with embedding.
    pending = sorted((item for item in loaded if item.named), key=lambda item: len(item.embedding_text()))
    writer = _Writer()
    done = 0
    total = len(pending)
    if progress is not None:
        progress(0, total)
    try:
        for lo in range(0, total, _CHUNK):
            items = pending[lo : lo + _CHUNK]
            text_vectors = embedder.encode([item.embedding_text() for item in items])
            hashes = [wanted[item.id] for item in items]

            def write(
                items: list[Item] = items,
                text_vectors: FloatMatrix = text_vectors,
                hashes: list[str] = hashes,
            ) -> None:
                vectors.upsert_items(
                    items, text_vectors, content_hashes=hashes, embedding_model=embedder.model_id
                )

            writer.submit(write)
            done += len(items)
            if progress is not None:
                progress(done, total)
    finally:
        writer.wait()
    vectors.delete_items(gone)
    return IndexReport(
        total=len(wanted),
        upserted=total,
        embedded=embedder.embedded - embedded_before,
        skipped=len(wanted) - total - len(unnamed),
        deleted=len(gone),
        seconds=time.perf_counter() - start,
        unnamed=len(unnamed),
    )


def _text_events(events: Iterable[Event]) -> list[Event]:
    return [e for e in events if e.id and (e.text or "").strip()]


def _index_events(vectors: VectorStore, embedder: Embedder, events: Sequence[Event]) -> int:
    """Embed and write events (any customers); returns how many texts the model ran on."""
    embedded_before = embedder.embedded
    for lo in range(0, len(events), _CHUNK):
        chunk = events[lo : lo + _CHUNK]
        matrix = embedder.encode([e.text or "" for e in chunk])
        rows: dict[str, list[int]] = {}
        for n, event in enumerate(chunk):
            rows.setdefault(event.customer_id, []).append(n)
        for customer_id, idx in rows.items():
            vectors.upsert_history(customer_id, [chunk[n] for n in idx], matrix[idx])
    return embedder.embedded - embedded_before


def index_history(
    store: Store,
    vectors: VectorStore,
    embedder: Embedder,
    customer_ids: Sequence[str] | None = None,
    *,
    force: bool = False,
) -> IndexReport:
    """Index the text-bearing events (``HISTORY_KINDS``) of some customers, or of everyone.

    Events already indexed are skipped (event ids are content-derived, so an id names one text). In a full
    pass, indexed events no longer in the store are deleted. ``force`` rewrites every event's point.
    """
    start = time.perf_counter()
    vectors.ensure_collections()
    if customer_ids is None:
        events = _text_events(store.events(kinds=HISTORY_KINDS))
        indexed = vectors.history_event_ids()
    else:
        events = []
        indexed = set()
        for customer_id in customer_ids:
            events.extend(_text_events(store.events(customer_id, kinds=HISTORY_KINDS)))
            indexed |= vectors.history_event_ids(customer_id)
    wanted = {e.id for e in events if e.id}
    new = [e for e in events if force or e.id not in indexed]
    embedded = _index_events(vectors, embedder, new)
    gone = sorted(indexed - wanted)
    vectors.delete_history_events(gone)
    return IndexReport(
        total=len(events),
        upserted=len(new),
        embedded=embedded,
        skipped=len(events) - len(new),
        deleted=len(gone),
        seconds=time.perf_counter() - start,
    )


def taste_vector(
    events: Sequence[Event], item_ids: Sequence[str], item_vectors: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32] | None:
    """A customer's taste in text space: the recency-weighted mean of what they bought, carted and viewed
    (and did not return).

    ``item_ids``/``item_vectors`` are the items' text vectors (rows match). None when nothing is known.
    """
    if not events:
        return None
    row = {item_id: n for n, item_id in enumerate(item_ids)}
    returned = {e.item_id for e in events if e.kind is EventKind.RETURN}
    newest = max(e.timestamp for e in events)
    total = np.zeros(item_vectors.shape[1], dtype=np.float64)
    for event in events:
        weight = TASTE_WEIGHTS.get(event.kind)
        if weight is None or event.item_id is None or event.item_id not in row or event.item_id in returned:
            continue
        age_days = (newest - event.timestamp).total_seconds() / 86400.0
        total += weight * math.pow(0.5, age_days / TASTE_HALF_LIFE_DAYS) * item_vectors[row[event.item_id]]
    norm = float(np.linalg.norm(total))
    if norm < 1e-9:
        return None
    return (total / norm).astype(np.float32)


def update_customer(
    store: Store,
    vectors: VectorStore,
    embedder: Embedder,
    customer_id: str,
    *,
    since: datetime | None = None,
) -> IndexReport:
    """Real-time update after a customer's new events: index their new texts and refresh their taste vector.

    Touches only this customer's points. ``since`` limits the taste to recent events (all when None).
    """
    start = time.perf_counter()
    if not store.has_customer(customer_id):
        raise NotFoundError("customer", customer_id, hint="import the customer before indexing their events")
    history = index_history(store, vectors, embedder, [customer_id])
    events = store.events(customer_id, kinds=[*TASTE_WEIGHTS, EventKind.RETURN], since=since)
    item_ids = sorted({e.item_id for e in events if e.item_id})
    ids, matrix = vectors.item_vectors(item_ids, "text")
    taste = taste_vector(events, ids, matrix)
    if taste is not None:
        vectors.upsert_taste(customer_id, taste)
    return IndexReport(
        total=history.total + 1,
        upserted=history.upserted + (taste is not None),
        embedded=history.embedded,
        skipped=history.skipped,
        deleted=history.deleted,
        seconds=time.perf_counter() - start,
    )
