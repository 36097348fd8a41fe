"""Products for a question in plain words, fitted to one customer: Qdrant's Query API at request time.

A support agent asks "anything for her garden party?". One ``query_points`` call prefetches the items nearest
the question and the items nearest the customer's stored taste (text, and collaborative when stored), and
fuses the lists by reciprocal rank, so an item that answers the question *and* fits her ranks first, with
Qdrant's payload filter keeping out what is out of stock, returned or already suggested.

A hit is kept only when it answers the question (cosine to the question above ``min_match``, so a question
about a late parcel brings no products) and when one of her own purchases is close to it in meaning: that
purchase is the evidence the suggestion stands on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.embeddings import Embedder
from retrieval.vector_store import VectorStore
from tailor.core.errors import DataError

__all__ = ["CatalogHit", "ask_catalog"]


@dataclass(frozen=True)
class CatalogHit:
    item_id: str
    match: float  # cosine between the question and the item's text
    near_item_id: str  # her purchase nearest the item in meaning
    near_similarity: float


def _unit(m: Any) -> Any:
    m = np.asarray(m, dtype=np.float32)
    return m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-9)


def ask_catalog(
    vectors: VectorStore,
    embedder: Embedder,
    customer_id: str,
    question: str,
    bought_item_ids: Sequence[str],
    *,
    limit: int = 3,
    exclude_ids: Sequence[str] = (),
    candidates: int = 50,
    min_match: float = 0.35,
    min_near: float = 0.3,
) -> list[CatalogHit]:
    """Up to ``limit`` in-stock items for ``question`` that fit the customer, best first, each tied to the
    purchase of hers (among ``bought_item_ids``) that it is closest to."""
    if not question.strip():
        raise DataError("the question is empty", hint="ask in plain words")
    if limit < 1:
        raise DataError(f"ask_catalog: limit must be >= 1, got {limit}")
    bought = list(dict.fromkeys(bought_item_ids))
    if not bought:
        return []
    # Her purchases with a text vector: only named items have one (``index_catalog``). With none, no hit
    # could be tied to a purchase of hers, so the question is not even embedded.
    mine, own = vectors.item_vectors(bought, "text")
    if not mine:
        return []
    asked = _unit(embedder.encode([question], keep=False)[0])
    taste = vectors.get_taste(customer_id, using="text")
    prefetch = [("text", asked)]
    if taste is not None:
        prefetch.append(("text", taste))
    if vectors.collab_dim is not None:
        collab = vectors.get_taste(customer_id, using="collab")
        if collab is not None:
            prefetch.append(("collab", collab))
    fused = vectors.search_items_fused(
        prefetch, limit=max(candidates // 2, limit), candidates=candidates, exclude_ids=exclude_ids
    )
    if not fused:
        return []
    ids, mat = vectors.item_vectors([i for i, _ in fused], "text")
    if not ids:
        return []
    items, own = _unit(mat), _unit(own)
    match = items @ asked
    near = items @ own.T
    out: list[CatalogHit] = []
    # The fused order stands; the thresholds only drop items that do not answer or do not fit.
    for n, item_id in enumerate(ids):
        if item_id in mine:
            continue
        j = int(np.argmax(near[n]))
        if float(match[n]) < min_match or float(near[n, j]) < min_near:
            continue
        out.append(CatalogHit(item_id, float(match[n]), mine[j], float(near[n, j])))
        if len(out) >= limit:
            break
    return out
