"""Tailor's vectors in Qdrant: the catalog, customers' text history, and one taste vector per customer.

One code path for both deployments: embedded local mode on disk (``settings.qdrant_path``, the default) or a
Qdrant server (``settings.qdrant_url``). Local mode filters payloads in Python and ignores payload indexes,
which is fine for a demo-sized catalog; a server uses the indexes created here.

Embedded mode locks its folder: one ``VectorStore`` per process and data dir, shared by everything in it.

One module, over 600 lines, on purpose: it is the one seam to qdrant-client (the httpx way: every call to
the backend in one place), so that a difference between local mode and a server is handled once.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from tailor.core.errors import DataError, TailorError, VectorStoreError
from tailor.core.models import Event, Item
from tailor.core.settings import Settings

if TYPE_CHECKING:
    from qdrant_client import QdrantClient
    from qdrant_client.http import models as qm

__all__ = ["TEXT_DIM", "HistoryHit", "VectorStore", "content_hash", "point_id"]

TEXT_DIM = 384
_NAMESPACE = uuid.UUID("6b1f4c1e-3f55-4d6e-9a57-7a1f0d2c7e11")
_BATCH = 256
_PAGE = 4096

FloatMatrix = npt.NDArray[np.float32]
Distance = Literal["cosine", "dot"]


def point_id(key: str) -> str:
    """The Qdrant point id of a Tailor id (item, event or customer id): a deterministic uuid5."""
    return str(uuid.uuid5(_NAMESPACE, key))


def content_hash(item: Item) -> str:
    """The same content hash the store keeps (sha256 of the item's JSON), so the two can be compared."""
    return hashlib.sha256(item.model_dump_json().encode()).hexdigest()


@dataclass(frozen=True)
class HistoryHit:
    """One of a customer's own text events, found by meaning."""

    event_id: str
    score: float
    kind: str
    text: str
    timestamp: datetime


def _as_matrix(vectors: Any, rows: int, dim: int | None, what: str) -> FloatMatrix:
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != rows:
        raise DataError(f"{what}: expected {rows} vectors as a 2-d array, got shape {matrix.shape}")
    if dim is not None and matrix.shape[1] != dim:
        raise DataError(f"{what}: expected dimension {dim}, got {matrix.shape[1]}")
    if not np.isfinite(matrix).all():
        raise DataError(f"{what}: vectors contain NaN or infinity")
    return matrix


def _as_vector(vector: Any, dim: int | None, what: str) -> list[float]:
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1:
        raise DataError(f"{what}: expected one vector (1-d), got shape {array.shape}")
    if dim is not None and array.shape[0] != dim:
        raise DataError(f"{what}: expected dimension {dim}, got {array.shape[0]}")
    if not np.isfinite(array).all():
        raise DataError(f"{what}: the vector contains NaN or infinity")
    return [float(x) for x in array.tolist()]


class VectorStore:
    """Tailor's three collections; every Qdrant or HTTP failure becomes ``VectorStoreError``."""

    def __init__(self, client: QdrantClient, *, prefix: str = "tailor", location: str = "") -> None:
        self._client = client
        self.prefix = prefix
        self.location = location
        self.items_collection = f"{prefix}_items"
        self.history_collection = f"{prefix}_history"
        self.tastes_collection = f"{prefix}_tastes"
        self._collab_dim: int | None = None
        # Embedded mode is plain in-process Python with no locking of its own, and a service calls it from
        # several threads; a server handles concurrency itself, so it is not serialized here.
        from qdrant_client.local.qdrant_local import QdrantLocal

        embedded = isinstance(getattr(client, "_client", None), QdrantLocal)
        self._lock: AbstractContextManager[object] = threading.RLock() if embedded else nullcontext()

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: Settings) -> VectorStore:
        if settings.qdrant_url:
            key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
            return cls.connect(url=settings.qdrant_url, api_key=key, prefix=settings.qdrant_prefix)
        return cls.connect(path=str(settings.qdrant_path), prefix=settings.qdrant_prefix)

    @classmethod
    def connect(
        cls,
        *,
        path: str | None = None,
        url: str | None = None,
        api_key: str | None = None,
        prefix: str = "tailor",
        timeout: int = 30,
    ) -> VectorStore:
        """Embedded mode at ``path``, or a server at ``url``; exactly one of them."""
        if (path is None) == (url is None):
            raise DataError("give exactly one of a Qdrant path (embedded) or url (server)")
        from qdrant_client import QdrantClient

        where = url if url is not None else f"embedded:{path}"
        try:
            if url is not None:
                client = QdrantClient(url=url, api_key=api_key, timeout=timeout)
            else:
                Path(str(path)).mkdir(parents=True, exist_ok=True)
                client = QdrantClient(path=path)
        except Exception as exc:
            raise VectorStoreError(
                f"cannot open Qdrant at {where}: {exc}",
                hint="embedded mode allows one process per folder: close the other one, or use a server",
            ) from exc
        store = cls(client, prefix=prefix, location=where)
        store._tune_local_storage()
        return store

    @property
    def client(self) -> QdrantClient:
        """The raw client, for queries this class does not wrap (the caller then translates errors)."""
        return self._client

    @contextmanager
    def _qdrant(self, what: str) -> Iterator[None]:
        try:
            with self._lock:
                yield
        except TailorError:
            raise
        except Exception as exc:  # qdrant raises ValueError, RuntimeError, ApiException, httpx errors...
            raise VectorStoreError(f"Qdrant ({self.location}) failed to {what}: {exc}") from exc

    # -- collections -----------------------------------------------------------------------------
    def ensure_collections(
        self, collab_dim: int | None = None, *, collab_distance: Distance = "cosine"
    ) -> None:
        """Create the collections and payload indexes that are missing.

        ``collab_dim=None`` leaves an existing ``collab`` vector as it is (and creates ``items`` without one);
        a dimension that differs from the existing one rebuilds ``items`` and ``tastes`` keeping their text
        vectors and payloads (old collaborative vectors are dropped: they no longer fit).
        """
        from qdrant_client.http import models as qm

        if collab_dim is not None and collab_dim < 1:
            raise DataError(f"collab_dim must be >= 1, got {collab_dim}")
        dist = qm.Distance.COSINE if collab_distance == "cosine" else qm.Distance.DOT
        with self._qdrant("create collections"):
            for name, indexes in (
                (
                    self.items_collection,
                    {
                        "in_stock": qm.PayloadSchemaType.BOOL,
                        "category": qm.PayloadSchemaType.KEYWORD,
                        "price": qm.PayloadSchemaType.FLOAT,
                    },
                ),
                (self.tastes_collection, {"customer_id": qm.PayloadSchemaType.KEYWORD}),
            ):
                self._ensure_two_vector_collection(name, collab_dim, dist, indexes)
            if not self._client.collection_exists(self.history_collection):
                self._client.create_collection(
                    self.history_collection,
                    vectors_config={"text": qm.VectorParams(size=TEXT_DIM, distance=qm.Distance.COSINE)},
                )
                self._create_indexes(
                    self.history_collection,
                    {"customer_id": qm.PayloadSchemaType.KEYWORD, "kind": qm.PayloadSchemaType.KEYWORD},
                )
            self._collab_dim = self._existing_collab_dim(self.items_collection)
        self._tune_local_storage()

    def _tune_local_storage(self) -> None:
        """Let embedded mode write without an fsync per point.

        qdrant-client's local mode commits every point on its own in a rollback-journal SQLite file,
        which makes a catalog upsert cost about a millisecond a point. WAL with synchronous=NORMAL keeps
        every commit atomic and the file consistent after a crash; a power cut may lose the newest writes,
        acceptable for an index the indexer rebuilds from the store. These are private attributes:
        anything unexpected leaves the storage as it is.
        """
        import sqlite3

        local = getattr(self._client, "_client", None)
        for collection in (getattr(local, "collections", None) or {}).values():
            conn = getattr(getattr(collection, "storage", None), "storage", None)
            if isinstance(conn, sqlite3.Connection):
                try:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                except sqlite3.Error:
                    continue

    def _ensure_two_vector_collection(
        self,
        name: str,
        collab_dim: int | None,
        dist: qm.Distance,
        indexes: Mapping[str, qm.PayloadSchemaType],
    ) -> None:
        from qdrant_client.http import models as qm

        def config(dim: int | None) -> dict[str, qm.VectorParams]:
            out = {"text": qm.VectorParams(size=TEXT_DIM, distance=qm.Distance.COSINE)}
            if dim is not None:
                out["collab"] = qm.VectorParams(size=dim, distance=dist)
            return out

        if not self._client.collection_exists(name):
            self._client.create_collection(name, vectors_config=config(collab_dim))
            self._create_indexes(name, indexes)
            return
        current = self._existing_collab_dim(name)
        if collab_dim is None or current == collab_dim:
            return
        # Qdrant cannot add or resize a named vector in place: copy the points into a fresh collection.
        points = self._scroll(name, with_vectors=["text"], with_payload=True)
        self._client.delete_collection(name)
        self._client.create_collection(name, vectors_config=config(collab_dim))
        self._create_indexes(name, indexes)
        for start in range(0, len(points), _BATCH):
            chunk = points[start : start + _BATCH]
            self._client.upsert(
                name,
                points=[
                    qm.PointStruct(id=p.id, vector={"text": self._named(p.vector, "text")}, payload=p.payload)
                    for p in chunk
                    if self._named(p.vector, "text") is not None
                ],
                wait=True,
            )

    def _create_indexes(self, name: str, indexes: Mapping[str, qm.PayloadSchemaType]) -> None:
        import warnings

        with warnings.catch_warnings():
            # Local mode warns that it ignores payload indexes; a server uses them, so they are made anyway.
            warnings.simplefilter("ignore", UserWarning)
            for field, schema in indexes.items():
                self._client.create_payload_index(name, field_name=field, field_schema=schema, wait=True)

    def _existing_collab_dim(self, name: str) -> int | None:
        vectors = self._client.get_collection(name).config.params.vectors
        if isinstance(vectors, dict) and "collab" in vectors:
            return int(vectors["collab"].size)
        return None

    @property
    def collab_dim(self) -> int | None:
        """The items' ``collab`` dimension after ``ensure_collections``; None if they have none."""
        return self._collab_dim

    @staticmethod
    def _named(vector: Any, name: str) -> list[float] | None:
        if isinstance(vector, dict):
            value = vector.get(name)
            return list(value) if value is not None else None
        return None

    def _scroll(
        self,
        name: str,
        *,
        with_vectors: bool | list[str] = False,
        with_payload: bool | list[str] = True,
        scroll_filter: qm.Filter | None = None,
    ) -> list[qm.Record]:
        out: list[qm.Record] = []
        offset: Any = None
        while True:
            page, offset = self._client.scroll(
                name,
                scroll_filter=scroll_filter,
                limit=_PAGE,
                offset=offset,
                with_payload=with_payload,
                with_vectors=with_vectors,
            )
            out.extend(page)
            if offset is None:
                return out

    # -- items -----------------------------------------------------------------------------------
    def upsert_items(
        self,
        items: Sequence[Item],
        text_vectors: Any,
        collab_vectors: Any | None = None,
        *,
        content_hashes: Sequence[str] | None = None,
        embedding_model: str = "",
    ) -> int:
        """Write items with their text vectors (and collaborative vectors when given).

        Without ``collab_vectors`` an item keeps the collaborative vector it already had: re-embedding a
        changed description must not wipe what the ranker learned. Writes go in batches and are idempotent:
        after a failure part-way, running the indexer again completes the index.
        """
        from qdrant_client.http import models as qm

        text = _as_matrix(text_vectors, len(items), TEXT_DIM, "upsert_items text_vectors")
        collab = None
        if collab_vectors is not None:
            collab = _as_matrix(
                collab_vectors, len(items), self._dim_of("collab"), "upsert_items collab_vectors"
            )
        if content_hashes is not None and len(content_hashes) != len(items):
            raise DataError(f"upsert_items: {len(content_hashes)} content hashes for {len(items)} items")
        ids = [i.id for i in items]
        if len(set(ids)) != len(ids):
            raise DataError("upsert_items: duplicate item ids in one call")
        with self._qdrant(f"upsert {len(items)} items"):
            keep_collab = collab is None and self._current_collab_dim() is not None
            for start in range(0, len(items), _BATCH):
                chunk = items[start : start + _BATCH]
                kept: dict[str, list[float]] = {}
                if keep_collab:
                    kept = self._vectors_by_id(
                        self.items_collection, [point_id(i.id) for i in chunk], "collab"
                    )
                points = []
                for offset, item in enumerate(chunk):
                    row = start + offset
                    pid = point_id(item.id)
                    vector: dict[str, list[float]] = {"text": text[row].tolist()}
                    if collab is not None:
                        vector["collab"] = collab[row].tolist()
                    elif pid in kept:
                        vector["collab"] = kept[pid]
                    payload = {
                        "item_id": item.id,
                        "title": item.title,
                        "category": item.category,
                        "price": item.price,
                        "in_stock": item.in_stock,
                        "content_hash": content_hashes[row]
                        if content_hashes is not None
                        else content_hash(item),
                        "embedding_model": embedding_model,
                    }
                    points.append(qm.PointStruct(id=pid, vector=vector, payload=payload))
                self._client.upsert(self.items_collection, points=points, wait=True)
        return len(items)

    def _vectors_by_id(self, name: str, pids: Sequence[str], vector_name: str) -> dict[str, list[float]]:
        records = self._client.retrieve(name, ids=list(pids), with_payload=False, with_vectors=[vector_name])
        out: dict[str, list[float]] = {}
        for r in records:
            vec = self._named(r.vector, vector_name)
            if vec is not None:
                out[str(r.id)] = vec
        return out

    def set_collab_vectors(self, item_ids: Sequence[str], vectors: Any) -> int:
        """Attach collaborative vectors to items already indexed (their text vectors and payloads stay)."""
        from qdrant_client.http import models as qm

        matrix = _as_matrix(vectors, len(item_ids), self._dim_of("collab"), "set_collab_vectors")
        with self._qdrant(f"set {len(item_ids)} collaborative vectors"):
            known = self.item_ids()
            unknown = [i for i in item_ids if i not in known]
            if unknown:
                raise DataError(
                    f"set_collab_vectors: {len(unknown)} items are not indexed, e.g. {unknown[:3]}"
                )
            for start in range(0, len(item_ids), _BATCH):
                self._client.update_vectors(
                    self.items_collection,
                    points=[
                        qm.PointVectors(id=point_id(i), vector={"collab": matrix[start + n].tolist()})
                        for n, i in enumerate(item_ids[start : start + _BATCH])
                    ],
                    wait=True,
                )
        return len(item_ids)

    def delete_items(self, ids: Sequence[str]) -> int:
        from qdrant_client.http import models as qm

        if not ids:
            return 0
        with self._qdrant(f"delete {len(ids)} items"):
            for start in range(0, len(ids), _BATCH):
                selector = qm.PointIdsList(points=[point_id(i) for i in ids[start : start + _BATCH]])
                self._client.delete(self.items_collection, points_selector=selector, wait=True)
        return len(ids)

    def item_ids(self) -> set[str]:
        return set(self.item_payload_hashes())

    def item_payload_hashes(self, *, embedding_model: str | None = None) -> dict[str, str]:
        """Item id → content hash of every indexed item.

        With ``embedding_model``, items whose text vector came from another model are left out, so an indexer
        treats them as not indexed yet.
        """
        with self._qdrant("read item hashes"):
            records = self._scroll(
                self.items_collection, with_payload=["item_id", "content_hash", "embedding_model"]
            )
        out: dict[str, str] = {}
        for r in records:
            payload = r.payload or {}
            if embedding_model is not None and payload.get("embedding_model") != embedding_model:
                continue
            out[str(payload["item_id"])] = str(payload.get("content_hash", ""))
        return out

    def count_items(self) -> int:
        with self._qdrant("count items"):
            return int(self._client.count(self.items_collection, exact=True).count)

    def fetch_item_vectors(self, name: str = "text") -> tuple[list[str], FloatMatrix]:
        """Every item's ``name`` vector, sorted by item id (items without one are left out)."""
        dim = self._dim_of(name)
        with self._qdrant(f"read item {name} vectors"):
            records = self._scroll(self.items_collection, with_vectors=[name], with_payload=["item_id"])
        pairs = []
        for r in records:
            vec = self._named(r.vector, name)
            if vec is not None:
                pairs.append((str((r.payload or {})["item_id"]), vec))
        pairs.sort(key=lambda p: p[0])
        if not pairs:
            return [], np.zeros((0, dim), dtype=np.float32)
        return [p[0] for p in pairs], np.asarray([p[1] for p in pairs], dtype=np.float32)

    def item_vectors(self, item_ids: Sequence[str], name: str = "text") -> tuple[list[str], FloatMatrix]:
        """The ``name`` vectors of the given items, in the given order; unknown items are left out."""
        dim = self._dim_of(name)
        if not item_ids:
            return [], np.zeros((0, dim), dtype=np.float32)
        pids = [point_id(i) for i in item_ids]
        found: dict[str, list[float]] = {}
        with self._qdrant(f"read {len(pids)} item {name} vectors"):
            for start in range(0, len(pids), _PAGE):
                found.update(self._vectors_by_id(self.items_collection, pids[start : start + _PAGE], name))
        ids = [i for i, pid in zip(item_ids, pids, strict=True) if pid in found]
        if not ids:
            return [], np.zeros((0, dim), dtype=np.float32)
        return ids, np.asarray([found[point_id(i)] for i in ids], dtype=np.float32)

    def _item_filter(
        self, in_stock_only: bool, category: str | None, max_price: float | None, exclude_ids: Sequence[str]
    ) -> qm.Filter | None:
        from qdrant_client.http import models as qm

        must: list[Any] = []
        if in_stock_only:
            must.append(qm.FieldCondition(key="in_stock", match=qm.MatchValue(value=True)))
        if category is not None:
            must.append(qm.FieldCondition(key="category", match=qm.MatchValue(value=category)))
        if max_price is not None:
            must.append(qm.FieldCondition(key="price", range=qm.Range(lte=max_price)))
        must_not: list[Any] = []
        if exclude_ids:
            must_not.append(qm.HasIdCondition(has_id=[point_id(i) for i in exclude_ids]))
        if not must and not must_not:
            return None
        return qm.Filter(must=must or None, must_not=must_not or None)

    def search_items(
        self,
        vector: Any,
        *,
        using: str = "text",
        limit: int = 10,
        in_stock_only: bool = True,
        category: str | None = None,
        max_price: float | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> list[tuple[str, float]]:
        """The ``limit`` nearest items to ``vector`` in the ``using`` space, filtered, best first."""
        if limit < 1:
            raise DataError(f"search_items: limit must be >= 1, got {limit}")
        dim = self._dim_of(using)
        query = _as_vector(vector, dim, f"search_items({using!r})")
        flt = self._item_filter(in_stock_only, category, max_price, exclude_ids)
        with self._qdrant(f"search items by {using}"):
            result = self._client.query_points(
                self.items_collection,
                query=query,
                using=using,
                query_filter=flt,
                limit=limit,
                with_payload=["item_id"],
            )
        return [(str((p.payload or {})["item_id"]), float(p.score)) for p in result.points]

    def search_items_fused(
        self,
        vectors: Mapping[str, Any] | Sequence[tuple[str, Any]],
        *,
        limit: int = 10,
        candidates: int = 50,
        in_stock_only: bool = True,
        category: str | None = None,
        max_price: float | None = None,
        exclude_ids: Sequence[str] = (),
    ) -> list[tuple[str, float]]:
        """One query over several vector spaces (``text``, ``collab``), merged by reciprocal rank fusion.

        Each query contributes its ``candidates`` best items (filters applied in each); scores are RRF scores.
        ``vectors`` maps a space to its query, or lists ``(space, query)`` pairs when one space is asked
        twice (a question and a taste, both in ``text``).
        """
        from qdrant_client.http import models as qm

        queries = list(vectors.items()) if isinstance(vectors, Mapping) else list(vectors)
        if not queries:
            raise DataError("search_items_fused needs at least one named vector")
        if limit < 1 or candidates < limit:
            raise DataError(f"search_items_fused: need 1 <= limit <= candidates, got {limit}, {candidates}")
        flt = self._item_filter(in_stock_only, category, max_price, exclude_ids)
        prefetch = [
            qm.Prefetch(
                query=_as_vector(vec, self._dim_of(name), f"search_items_fused({name!r})"),
                using=name,
                filter=flt,
                limit=candidates,
            )
            for name, vec in queries
        ]
        with self._qdrant("run a fused item search"):
            result = self._client.query_points(
                self.items_collection,
                prefetch=prefetch,
                query=qm.FusionQuery(fusion=qm.Fusion.RRF),
                # Fusion only re-ranks what the prefetches found, each already filtered: a filter here
                # again would cost embedded Qdrant one more pass over every point, for nothing.
                limit=limit,
                with_payload=["item_id"],
            )
        return [(str((p.payload or {})["item_id"]), float(p.score)) for p in result.points]

    def _current_collab_dim(self) -> int | None:
        if self._collab_dim is None:
            # Another process (the ranker's training job) may have added the space since we looked.
            with self._qdrant("read the items collection config"):
                if self._client.collection_exists(self.items_collection):
                    self._collab_dim = self._existing_collab_dim(self.items_collection)
        return self._collab_dim

    def _dim_of(self, using: str) -> int:
        if using == "text":
            return TEXT_DIM
        if using == "collab":
            dim = self._current_collab_dim()
            if dim is None:
                raise DataError("no collab vectors in this index", hint="ensure_collections(collab_dim=...)")
            return dim
        raise DataError(f"unknown vector name {using!r}; expected 'text' or 'collab'")

    # -- history ---------------------------------------------------------------------------------
    def upsert_history(self, customer_id: str, events: Sequence[Event], vectors: Any) -> int:
        """Write a customer's text events (support tickets, reviews...) with their text vectors."""
        from qdrant_client.http import models as qm

        matrix = _as_matrix(vectors, len(events), TEXT_DIM, "upsert_history vectors")
        points = []
        for n, event in enumerate(events):
            if event.customer_id != customer_id:
                raise DataError(
                    f"upsert_history: event #{n} belongs to {event.customer_id!r}, not {customer_id!r}"
                )
            if not event.id:
                raise DataError(
                    f"upsert_history: event #{n} has no id", hint="store it first: Store.add_events"
                )
            if not (event.text or "").strip():
                raise DataError(f"upsert_history: event {event.id!r} has no text to index")
            points.append(
                qm.PointStruct(
                    id=point_id(event.id),
                    vector={"text": matrix[n].tolist()},
                    payload={
                        "customer_id": customer_id,
                        "event_id": event.id,
                        "kind": event.kind.value,
                        "timestamp": event.timestamp.isoformat(),
                        "text": event.text,
                    },
                )
            )
        with self._qdrant(f"upsert {len(points)} history events of customer {customer_id!r}"):
            for start in range(0, len(points), _BATCH):
                self._client.upsert(self.history_collection, points=points[start : start + _BATCH], wait=True)
        return len(points)

    @staticmethod
    def _customer_filter(customer_id: str) -> qm.Filter:
        from qdrant_client.http import models as qm

        return qm.Filter(must=[qm.FieldCondition(key="customer_id", match=qm.MatchValue(value=customer_id))])

    def history_event_ids(self, customer_id: str | None = None) -> set[str]:
        """Ids of the indexed history events, of one customer or of everyone."""
        flt = self._customer_filter(customer_id) if customer_id is not None else None
        with self._qdrant("read history event ids"):
            records = self._scroll(self.history_collection, with_payload=["event_id"], scroll_filter=flt)
        return {str((r.payload or {})["event_id"]) for r in records}

    def delete_history_events(self, event_ids: Sequence[str]) -> int:
        from qdrant_client.http import models as qm

        with self._qdrant(f"delete {len(event_ids)} history events"):
            for start in range(0, len(event_ids), _BATCH):
                selector = qm.PointIdsList(points=[point_id(e) for e in event_ids[start : start + _BATCH]])
                self._client.delete(self.history_collection, points_selector=selector, wait=True)
        return len(event_ids)

    def search_history(self, customer_id: str, vector: Any, limit: int = 5) -> list[HistoryHit]:
        """The customer's own text events nearest to ``vector``; never anyone else's."""
        if limit < 1:
            raise DataError(f"search_history: limit must be >= 1, got {limit}")
        query = _as_vector(vector, TEXT_DIM, "search_history")
        with self._qdrant(f"search the history of customer {customer_id!r}"):
            result = self._client.query_points(
                self.history_collection,
                query=query,
                using="text",
                query_filter=self._customer_filter(customer_id),
                limit=limit,
                with_payload=True,
            )
        hits = []
        for p in result.points:
            payload = p.payload or {}
            hits.append(
                HistoryHit(
                    event_id=str(payload["event_id"]),
                    score=float(p.score),
                    kind=str(payload["kind"]),
                    text=str(payload["text"]),
                    timestamp=datetime.fromisoformat(str(payload["timestamp"])),
                )
            )
        return hits

    # -- tastes ----------------------------------------------------------------------------------
    def upsert_taste(self, customer_id: str, vector: Any, collab_vector: Any | None = None) -> None:
        """Store the customer's taste vector (text space; optionally also the collaborative space)."""
        from qdrant_client.http import models as qm

        named: dict[str, list[float]] = {"text": _as_vector(vector, TEXT_DIM, "upsert_taste")}
        if collab_vector is not None:
            named["collab"] = _as_vector(collab_vector, self._dim_of("collab"), "upsert_taste collab")
        with self._qdrant(f"store the taste of customer {customer_id!r}"):
            self._client.upsert(
                self.tastes_collection,
                points=[
                    qm.PointStruct(
                        id=point_id(customer_id), vector=named, payload={"customer_id": customer_id}
                    )
                ],
                wait=True,
            )

    def get_taste(self, customer_id: str, using: str = "text") -> FloatMatrix | None:
        """The stored taste vector, or None when the customer has none (in that space)."""
        self._dim_of(using)
        with self._qdrant(f"read the taste of customer {customer_id!r}"):
            found = self._vectors_by_id(self.tastes_collection, [point_id(customer_id)], using)
        vec = found.get(point_id(customer_id))
        return np.asarray(vec, dtype=np.float32) if vec is not None else None

    # -- lifecycle -------------------------------------------------------------------------------
    def delete_customer(self, customer_id: str) -> dict[str, int]:
        """Forget a customer: every history point and their taste point. Returns how many of each went."""
        from qdrant_client.http import models as qm

        flt = self._customer_filter(customer_id)
        deleted = {"history": 0, "tastes": 0}
        with self._qdrant(f"delete customer {customer_id!r}"):
            for key, name in (("history", self.history_collection), ("tastes", self.tastes_collection)):
                # Before the first index there is no collection, and so nothing of theirs to delete.
                if not self._client.collection_exists(name):
                    continue
                deleted[key] = int(self._client.count(name, count_filter=flt, exact=True).count)
                self._client.delete(name, points_selector=qm.FilterSelector(filter=flt), wait=True)
        return deleted

    def health(self) -> bool:
        """True when Qdrant answers and the collections exist."""
        try:
            with self._lock:
                names = {c.name for c in self._client.get_collections().collections}
        except Exception:
            return False
        return {self.items_collection, self.history_collection, self.tastes_collection} <= names

    def close(self) -> None:
        with self._qdrant("close"):
            self._client.close()

    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
