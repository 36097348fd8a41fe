"""Latency of ``HybridRecommender.recommend()`` for one customer, in process.

1. The real catalog: the demo store's two years of Online Retail, imported into a temporary store (or
   ``--store PATH``):
   p50/p95 per call, cold (first call for a customer: loads their events from SQLite) and warm (state cached),
   beside a peer measured in the same run: implicit ALS ``recommend()`` for one user on the same purchases;
   and the CPU time of a warm call with the machine's BLAS threads against one (what ``tailor serve`` keeps,
   ``TAILOR_SERVE_BLAS_THREADS``), since a second thread that mostly spins takes CPU other requests need.
2. Synthetic catalogs of 5k, 20k and 50k items (seeded): the same figures, and how they grow with the catalog.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/recommend_latency.py [--store DB] [--sizes 5000,50000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from retrieval.ranker import Ranker  # noqa: E402
from retrieval.recommender import HybridRecommender  # noqa: E402
from tailor.core.models import Customer, Event, EventKind, Item  # noqa: E402
from tailor.core.settings import Settings  # noqa: E402
from tailor.data.frame import purchases_from_store  # noqa: E402
from tailor.data.store import Store  # noqa: E402

NOW = datetime(2011, 12, 10, 10, 0, tzinfo=UTC)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def measure(rec: HybridRecommender, customers: list[str], repeats: int = 3) -> dict[str, float]:
    cold, warm = [], []
    for c in customers:
        rec.evict(c)  # cold: the customer's events come from SQLite again; the ranker is left as it is
        t0 = time.perf_counter()
        rec.recommend(c, k=10, now=NOW)
        cold.append(time.perf_counter() - t0)
        for _ in range(repeats):
            t0 = time.perf_counter()
            rec.recommend(c, k=10, now=NOW)
            warm.append(time.perf_counter() - t0)
    return {
        "cold_p50_ms": pct(cold, 50),
        "cold_p95_ms": pct(cold, 95),
        "warm_p50_ms": pct(warm, 50),
        "warm_p95_ms": pct(warm, 95),
    }


def cpu_per_call(rec: HybridRecommender, customers: list[str], repeats: int = 3) -> tuple[float, float]:
    """Warm calls: (wall ms, process CPU ms) per call, all threads' CPU counted."""
    for c in customers:
        rec.recommend(c, k=10, now=NOW)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        for c in customers:
            rec.recommend(c, k=10, now=NOW)
    n = repeats * len(customers)
    return (time.perf_counter() - wall) * 1000 / n, (time.process_time() - cpu) * 1000 / n


def als_peer(frame: pd.DataFrame, customers: list[str]) -> dict[str, float]:
    """implicit ALS (64 factors): per-user recommend() latency, the peer library's serving path."""
    import scipy.sparse as sp
    from implicit.als import AlternatingLeastSquares

    users = {u: i for i, u in enumerate(sorted(frame["customer_id"].unique()))}
    items = {x: i for i, x in enumerate(sorted(frame["item_id"].unique()))}
    m = sp.csr_matrix(
        (np.ones(len(frame)), (frame["customer_id"].map(users), frame["item_id"].map(items))),
        shape=(len(users), len(items)),
    )
    als = AlternatingLeastSquares(factors=64, iterations=5, random_state=0)
    als.fit(m, show_progress=False)
    times = []
    for c in customers:
        u = users[c]
        for _ in range(4):
            t0 = time.perf_counter()
            als.recommend(u, m[u], N=10)
            times.append(time.perf_counter() - t0)
    return {"p50_ms": pct(times, 50), "p95_ms": pct(times, 95)}


def real_catalog(store_path: Path | None, sample: int) -> None:
    from retrieval.embeddings import Embedder
    from retrieval.recommender import item_text_vectors

    with tempfile.TemporaryDirectory() as tmp:
        if store_path is None:
            from tailor.app.service import DEMO_SOURCE
            from tailor.data.importer import import_dir
            from tailor.data.uci import convert

            t0 = time.perf_counter()
            convert(list(DEMO_SOURCE), Path(tmp) / "canonical")
            store = Store(Path(tmp) / "tailor.db")
            import_dir(store, Path(tmp) / "canonical")
            print(f"imported the demo store (both years) in {time.perf_counter() - t0:.0f}s")
        else:
            store = Store(store_path)
        store.require_data()
        vectors = item_text_vectors(store.items(), Embedder(cache_dir=REPO / "var" / "cache"))
        frame = purchases_from_store(store, until=NOW)
        t0 = time.perf_counter()
        ranker = Ranker().fit(frame, vectors, now=NOW)
        fit_s = time.perf_counter() - t0
        print(f"ranker fit on {len(frame)} purchases, {len(ranker.item_ids)} items: {fit_s:.0f}s")
        rec = HybridRecommender(store, ranker, settings=Settings(data_dir=Path(tmp)), text_vectors=vectors)
        rng = np.random.default_rng(0)
        customers = sorted(
            rng.choice(ranker.customer_ids, size=min(sample, len(ranker.customer_ids)), replace=False)
        )
        ours = measure(rec, [str(c) for c in customers])
        peer = als_peer(frame, [str(c) for c in customers])
        print(
            f"\nreal catalog ({len(rec.catalog)} items, {len(customers)} customers sampled), recommend(k=10):"
        )
        for key, value in ours.items():
            print(f"  tailor {key:12s} {value:8.2f}")
        print(f"  peer implicit-ALS recommend p50 {peer['p50_ms']:.2f} ms  p95 {peer['p95_ms']:.2f} ms")
        print(f"  ratio tailor warm p95 / ALS p95: x{ours['warm_p95_ms'] / max(peer['p95_ms'], 1e-9):.1f}")
        print(f"  target p95 <= 50 ms: warm {'met' if ours['warm_p95_ms'] <= 50 else 'NOT met'}")
        from threadpoolctl import threadpool_limits

        sampled = [str(c) for c in customers]
        default_wall, default_cpu = cpu_per_call(rec, sampled)
        with threadpool_limits(limits=1, user_api="blas"):
            one_wall, one_cpu = cpu_per_call(rec, sampled)
        print(
            f"  warm call, BLAS threads as installed: wall {default_wall:.2f} ms, CPU {default_cpu:.2f} ms;"
            f" one BLAS thread: wall {one_wall:.2f} ms, CPU {one_cpu:.2f} ms"
            f" (CPU x{one_cpu / max(default_cpu, 1e-9):.2f}, wall x{one_wall / max(default_wall, 1e-9):.2f})"
        )
        store.close()


def synthetic(n_items: int, n_customers: int, seed: int = 0) -> tuple[Store, Ranker, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    tmp = Path(tempfile.mkdtemp())
    store = Store(tmp / "tailor.db")
    categories = ["Home Decor", "Bags", "Kitchen & Dining", "Toys & Games", "Party & Gifts", "Christmas"]
    items = [
        Item(
            id=f"S{i}",
            title=f"Synthetic item {i}",
            category=categories[i % len(categories)],
            price=1.0 + i % 20,
            url=f"https://example-retail.test/p/S{i}",
        )
        for i in range(n_items)
    ]
    customers = [
        Customer(id=f"{c}", first_name="Syn", email=f"s{c}@example.com", country="United Kingdom")
        for c in range(n_customers)
    ]
    # Zipf-like item popularity, a few favourites per customer re-bought: the shape of retail data.
    weights = 1.0 / np.arange(1, n_items + 1) ** 0.8
    weights /= weights.sum()
    events = []
    start = NOW - timedelta(days=360)
    for c in range(n_customers):
        favourites = rng.choice(n_items, size=4, p=weights)
        for o in range(int(rng.integers(3, 12))):
            when = start + timedelta(days=float(rng.uniform(0, 355)))
            basket = set(favourites[rng.random(4) < 0.5]) | set(rng.choice(n_items, size=4, p=weights))
            for it in basket:
                events.append(
                    Event(
                        id=f"e{c}-{o}-{it}",
                        customer_id=str(c),
                        kind=EventKind.PURCHASE,
                        item_id=f"S{it}",
                        quantity=1,
                        timestamp=when,
                        order_id=f"o{c}-{o}",
                    )
                )
    store.import_all(items, customers, events)
    vecs = rng.standard_normal((n_items, 384)).astype(np.float32)
    vectors = {f"S{i}": vecs[i] for i in range(n_items)}
    ranker = Ranker(max_iter=60, windows=1, label_days=60, ease_items=3000).fit(
        purchases_from_store(store), vectors, now=NOW
    )
    return store, ranker, vectors


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None, help="an imported store (default: import one)")
    parser.add_argument("--sizes", default="5000,20000,50000")
    parser.add_argument("--customers", type=int, default=1500, help="synthetic customers")
    parser.add_argument("--sample", type=int, default=60, help="customers timed per catalog")
    parser.add_argument("--skip-real", action="store_true")
    args = parser.parse_args()
    if not args.skip_real:
        real_catalog(args.store, args.sample)
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        t0 = time.perf_counter()
        store, ranker, vectors = synthetic(n, args.customers)
        build_s = time.perf_counter() - t0
        rec = HybridRecommender(
            store, ranker, settings=Settings(data_dir=store.path.parent), text_vectors=vectors
        )
        customers = [c for c in ranker.customer_ids][: args.sample]
        figures = measure(rec, customers)
        frame = purchases_from_store(store)
        peer = als_peer(frame, customers)
        rows.append((n, figures, peer, build_s))
        store.close()
    print("\nsynthetic catalogs, recommend(k=10) in ms (peer: implicit ALS recommend on the same data)")
    names = ("cold p50", "cold p95", "warm p50", "warm p95", "ALS p95", "build s")
    print(f"{'items':>7s} " + " ".join(f"{n:>9s}" for n in names))
    for n, f, peer, build_s in rows:
        print(
            f"{n:7d} {f['cold_p50_ms']:9.2f} {f['cold_p95_ms']:9.2f} {f['warm_p50_ms']:9.2f}"
            f" {f['warm_p95_ms']:9.2f} {peer['p95_ms']:8.2f} {build_s:8.0f}"
        )
    if len(rows) >= 2:
        (n0, f0, _, _), (n1, f1, _, _) = rows[0], rows[-1]
        growth = f1["warm_p95_ms"] / max(f0["warm_p95_ms"], 1e-9)
        print(f"warm p95 grows x{growth:.2f} from {n0} to {n1} items (catalog x{n1 / n0:.0f})")


if __name__ == "__main__":
    main()
