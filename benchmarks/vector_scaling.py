"""How item search grows with the catalog: embedded Qdrant against an in-memory numpy scan.

At 5,000 / 20,000 / 50,000 synthetic items (unit 384-d vectors, 10 categories, prices, 90 % in stock) it
times ``VectorStore.search_items`` filtered (in stock, one category, a price cap) and unfiltered, and the same
filtered top-10 as a numpy scan over the mirror from ``fetch_item_vectors`` (the ranker's hot path). Embedded
Qdrant evaluates payload filters in Python point by point, so its filtered search grows with the catalog; a
Qdrant server would use the payload indexes instead (not measured: no server binary on this machine).

Run: ``.venv/bin/python benchmarks/vector_scaling.py`` (about two minutes on 2 cores).
"""

from __future__ import annotations

import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

from retrieval.vector_store import TEXT_DIM, VectorStore
from tailor.core.models import Item

SIZES = (5_000, 20_000, 50_000)
QUERIES = 20
CATEGORIES = [f"category-{n}" for n in range(10)]
MAX_PRICE = 25.0


def items_between(lo: int, hi: int, rng: np.random.Generator) -> tuple[list[Item], npt.NDArray[np.float32]]:
    items = [
        Item(
            id=f"S{n:06d}",
            title=f"Synthetic item {n}",
            category=CATEGORIES[n % len(CATEGORIES)],
            price=float(rng.uniform(0.5, 50.0)),
            in_stock=bool(rng.random() < 0.9),
            url=f"https://example-retail.test/p/S{n:06d}",
        )
        for n in range(lo, hi)
    ]
    vectors = rng.standard_normal((hi - lo, TEXT_DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return items, vectors


def percentiles(run: Callable[[int], object], n: int) -> tuple[float, float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        run(i)
        times.append(1000.0 * (time.perf_counter() - start))
    p50, p95 = np.percentile(times, [50, 95])
    return float(p50), float(p95)


class Mirror:
    """The ranker-style in-memory copy: the vector matrix plus payload columns, filtered with numpy masks."""

    def __init__(self, ids: list[str], matrix: npt.NDArray[np.float32], items: dict[str, Item]) -> None:
        self.ids = ids
        self.matrix = matrix
        self.in_stock = np.array([items[i].in_stock for i in ids])
        self.category = np.array([items[i].category for i in ids])
        self.price = np.array([items[i].price for i in ids])

    def search(self, query: npt.NDArray[np.float32], category: str, max_price: float) -> list[str]:
        mask = self.in_stock & (self.category == category) & (self.price <= max_price)
        scores = self.matrix @ query
        scores[~mask] = -np.inf
        top = np.argpartition(-scores, 10)[:10]
        return [self.ids[i] for i in top[np.argsort(-scores[top])]]


def main() -> int:
    rng = np.random.default_rng(42)
    queries = rng.standard_normal((QUERIES, TEXT_DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    all_items: dict[str, Item] = {}
    p50s: dict[str, list[float]] = {
        "qdrant filtered": [],
        "qdrant unfiltered": [],
        "numpy": [],
        "numpy 1 thread": [],
    }
    with tempfile.TemporaryDirectory(prefix="tailor-bench-scale-") as tmp, warnings.catch_warnings():
        # Local mode warns past 20,000 points; measuring that regime is the point here.
        warnings.simplefilter("ignore", UserWarning)
        vs = VectorStore.connect(path=str(Path(tmp) / "qdrant"))
        vs.ensure_collections()
        for size in SIZES:
            items, vectors = items_between(len(all_items), size, rng)
            start = time.perf_counter()
            vs.upsert_items(items, vectors)
            upsert_s = time.perf_counter() - start
            all_items.update((i.id, i) for i in items)
            start = time.perf_counter()
            mirror = Mirror(*vs.fetch_item_vectors(), all_items)
            mirror_s = time.perf_counter() - start

            def qdrant_filtered(q: int) -> list[str]:
                cat = CATEGORIES[q % len(CATEGORIES)]
                return [
                    i for i, _ in vs.search_items(queries[q], limit=10, category=cat, max_price=MAX_PRICE)
                ]

            def qdrant_plain(q: int) -> object:
                return vs.search_items(queries[q], limit=10, in_stock_only=False)

            def numpy_filtered(q: int, mirror: Mirror = mirror) -> list[str]:
                return mirror.search(queries[q], CATEGORIES[q % len(CATEGORIES)], MAX_PRICE)

            # The two filtered searches must agree, or the timing compares different work.
            for q in range(3):
                assert numpy_filtered(q) == qdrant_filtered(q), f"numpy and Qdrant disagree at {size} items"

            qf = percentiles(qdrant_filtered, QUERIES)
            qp = percentiles(qdrant_plain, QUERIES)
            nf = percentiles(numpy_filtered, QUERIES)
            # A matrix-vector product this small is slower on several BLAS threads on a busy 2-core box.
            with threadpool_limits(limits=1, user_api="blas"):
                n1 = percentiles(numpy_filtered, QUERIES)
            for key, value in zip(p50s, (qf, qp, nf, n1), strict=True):
                p50s[key].append(value[0])
            print(
                f"{size:>6} items (upsert +{len(items)} {upsert_s:4.1f} s, mirror load {mirror_s:4.1f} s), "
                f"p50/p95 ms: qdrant filtered {qf[0]:6.1f}/{qf[1]:6.1f}"
                f"  qdrant unfiltered {qp[0]:5.1f}/{qp[1]:5.1f}"
                f"  numpy filtered {nf[0]:5.2f}/{nf[1]:5.2f}  numpy 1 BLAS thread {n1[0]:5.2f}/{n1[1]:5.2f}",
                flush=True,
            )
        vs.close()

    print(f"\np50 growth from {SIZES[0]} to {SIZES[-1]} items ({SIZES[-1] / SIZES[0]:.0f}x the catalog):")
    for key, values in p50s.items():
        print(f"  {key:<18} {values[0]:8.2f} ms -> {values[-1]:8.2f} ms  ({values[-1] / values[0]:5.1f}x)")
    ratio = p50s["qdrant filtered"][-1] / p50s["numpy 1 thread"][-1]
    print(f"  at {SIZES[-1]} items the numpy mirror (1 thread) beats embedded Qdrant {ratio:.0f}x (filtered)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
