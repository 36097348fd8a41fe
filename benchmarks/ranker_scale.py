"""How the ranker's fit grows with the catalog: EASE's collaborative fit, old method against new, and a whole
``Ranker.fit``, on synthetic stores (``tailor.data.synthetic.SyntheticStore``) of 5,000, 25,000 and
100,000 items.

The collaborative fit (``fit_collab``: cosine neighbours, EASE, SVD factors), measured in the same run for
- ``dense``: exact EASE on the whole catalog (a dense item×item inverse), where it fits in memory;
- ``old``: the method before local EASE (``ease_support=0``): exact EASE on the ``ease_items`` (6,000) most
  popular items, the rest of the catalog without EASE neighbours (run only above 6,000: below it is dense);
- ``local``: EASE on each item's 64 nearest items, whatever the catalog size;
- ``mixed``: exact EASE on the 6,000 most popular items and local EASE for every column, only the exact
  weight counting between two of the 6,000 (run only above 6,000).
The default (``new``) is ``dense`` up to ``ease_items`` items and ``mixed`` beyond.
Each row says how much of the catalog has EASE neighbours, and how many of the test purchases (the store's
last 30 days) are of items that can be EASE candidates at all. Then one ``Ranker.fit`` (its label windows,
the trees, the final fit) per size up to ``--ranker-max`` with the new collaborative fit, and with the old
beyond 6,000 items (below it both are exact EASE); both with the same (LightGBM) trees.

Each measurement runs in a child process of its own, so its peak memory (the child's peak resident set less
what it held before the fit) is its own. Times on a shared 2-core machine are noisy: compare the rows of one
run, not figures across runs.

    .venv/bin/python benchmarks/ranker_scale.py [--quick] [--sizes 5000,25000,100000] [--ranker-max 25000]

The default run (the collaborative fits at every size, the whole Ranker up to 25,000 items) takes about ten
minutes on 2 cores; ``--quick`` (2,000 and 8,000 items) about four; ``--ranker-max 100000`` adds the whole
fit at 100,000 items.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from retrieval.features import History, fit_collab
from retrieval.ranker import Ranker
from tailor.data.synthetic import SyntheticStore

EASE_ITEMS = 6000  # the Ranker's default ease_items: the threshold, and the old method's cap
DENSE_LIMIT_GB = 6.0  # a dense fit needing more than this (of 24 GB shared by three) is not run
TEST_DAYS = 30
MB = 1024.0 * 1024.0


def store(items: int) -> SyntheticStore:
    # As many customers as items (60k-100k at 100k items, as a big shop has), a category per 500 items.
    return SyntheticStore(customers=items, items=items, categories=max(40, items // 500), days=365, seed=0)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / MB


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _history(frame: pd.DataFrame) -> tuple[History, int, dict[str, int]]:
    items = sorted(frame["item_id"].unique())
    custs = sorted(frame["customer_id"].unique())
    index = {x: i for i, x in enumerate(items)}
    return History.from_frame(frame, {c: i for i, c in enumerate(custs)}, index), len(items), index


def _collab_child(path: str, method: str, out: Any) -> None:
    frame = pd.read_parquet(path)
    cut = frame["timestamp"].max() - pd.Timedelta(days=TEST_DAYS)
    train, test = frame[frame["timestamp"] < cut], frame[frame["timestamp"] >= cut]
    history, n_items, index = _history(train)
    options = {
        "dense": {"ease_dense_items": n_items},
        "old": {"ease_dense_items": EASE_ITEMS, "ease_support": 0},
        "local": {"ease_dense_items": 0},
        "mixed": {"ease_dense_items": EASE_ITEMS},
    }[method]
    before = _rss_mb()
    start = time.perf_counter()
    collab = fit_collab(history, n_items, **options)
    seconds = time.perf_counter() - start
    covered = np.diff(collab.ease.tocsc().indptr) > 0  # items some item points at: EASE can propose them
    tested = test["item_id"].map(index).dropna().to_numpy(np.int64)
    out.put(
        {
            "s": seconds,
            "peak_mb": _peak_mb() - before,
            "items": n_items,
            "covered": float(covered.mean()),
            "test_reachable": float(covered[tested].mean()) if len(tested) else float("nan"),
            "nnz": int(collab.ease.nnz),
        }
    )


def _ranker_child(path: str, method: str, out: Any) -> None:
    frame = pd.read_parquet(path)
    now = frame["timestamp"].max() + pd.Timedelta(days=1)
    ranker = _TimedRanker(old=method == "old")
    before = _rss_mb()
    start = time.perf_counter()
    ranker.fit(frame, None, now=now)
    seconds = time.perf_counter() - start
    out.put(
        {
            "s": seconds,
            "peak_mb": _peak_mb() - before,
            "windows": ranker.windows_used,
            "collab_s": ranker.collab_s,
            "collab_fits": ranker.collab_fits,
        }
    )


class _TimedRanker(Ranker):
    """The Ranker, timing its collaborative fits; with ``old``, the old one (EASE on the most popular
    ``ease_items`` items only)."""

    def __init__(self, *, old: bool) -> None:
        super().__init__()
        self.old = old
        self.collab_s = 0.0
        self.collab_fits = 0

    def _fit_collab(self, history: History, n_items: int) -> Any:
        start = time.perf_counter()
        if self.old:
            p = self.params
            collab = fit_collab(
                history,
                n_items,
                neighbours=p["neighbours"],
                dims=p["dims"],
                seed=p["seed"],
                ease_dense_items=p["ease_items"],
                ease_support=0,
                ease_lambda=float(p["ease_lambda"]),
            )
        else:
            collab = super()._fit_collab(history, n_items)
        self.collab_s += time.perf_counter() - start
        self.collab_fits += 1
        return collab


def _run(target: Any, path: Path, method: str) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=target, args=(str(path), method, out))
    child.start()
    result: dict[str, Any] = out.get()
    child.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 and 8,000 items")
    parser.add_argument("--sizes", default=None, help="catalog sizes, comma-separated")
    parser.add_argument(
        "--ranker-max",
        type=int,
        default=25_000,
        help="fit the whole Ranker on catalogs up to this size (100,000 items take about 15 minutes)",
    )
    args = parser.parse_args()
    sizes = (
        [int(s) for s in args.sizes.split(",")]
        if args.sizes
        else ([2_000, 8_000] if args.quick else [5_000, 25_000, 100_000])
    )
    print(f"threshold (Ranker ease_items) {EASE_ITEMS}; each row a child process; times in seconds")
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            spec = store(size)
            start = time.perf_counter()
            frame = spec.purchases()
            path = Path(tmp) / f"store-{size}.parquet"
            frame.to_parquet(path)
            print(
                f"\n{size:,} items: {frame['item_id'].nunique():,} sold to {frame['customer_id'].nunique():,}"
                f" customers in {len(frame):,} lines (drawn in {time.perf_counter() - start:.0f} s)",
                flush=True,
            )
            rows: dict[str, dict[str, Any]] = {}
            for method in ("dense", "old", "local", "mixed"):
                n = frame["item_id"].nunique()
                if method in ("old", "mixed") and n <= EASE_ITEMS:
                    continue  # the same fit as dense: the catalog is under the cap
                need_gb = 4 * n * n * 8 / 1e9  # gram, inverse, weights and the top-k argpartition
                if method == "dense" and need_gb > DENSE_LIMIT_GB:
                    print(f"  collab {method:5s}  not run: a dense {n:,}² fit needs about {need_gb:.0f} GB")
                    continue
                r = _run(_collab_child, path, method)
                rows[method] = r
                print(
                    f"  collab {method:5s} {r['s']:7.1f} s  peak {r['peak_mb']:7.0f} MB"
                    f"  EASE covers {r['covered']:6.1%} of {r['items']:,} items,"
                    f" {r['test_reachable']:6.1%} of test purchases",
                    flush=True,
                )
            picked = "mixed" if "mixed" in rows else "dense"
            default = rows.get(picked)
            for peer in ("dense", "old", "local"):
                if default is not None and peer in rows and peer != picked:
                    r = rows[peer]
                    print(
                        f"  {picked} / {peer}: time x{default['s'] / r['s']:.2f}, peak memory"
                        f" x{default['peak_mb'] / max(r['peak_mb'], 1.0):.2f}"
                    )
            items = rows["local"]["items"]
            print(f"  the default (ease_items {EASE_ITEMS}) fits {picked} on {items:,} items")
            if size > args.ranker_max:
                continue
            # Up to the threshold both Rankers fit exact EASE: the old one is measured only beyond it.
            beyond = frame["item_id"].nunique() > EASE_ITEMS
            fits: dict[str, dict[str, Any]] = {}
            for method in ("new", "old") if beyond else ("new",):
                r = fits[method] = _run(_ranker_child, path, method)
                print(
                    f"  Ranker.fit {method:3s} {r['s']:7.1f} s  peak {r['peak_mb']:7.0f} MB"
                    f"  ({r['windows']} label windows; {r['collab_fits']} collaborative fits"
                    f" {r['collab_s']:.0f} s of it)",
                    flush=True,
                )
            if "old" in fits:
                new, old = fits["new"], fits["old"]
                print(
                    f"  Ranker.fit new / old: time x{new['s'] / old['s']:.2f},"
                    f" peak memory x{new['peak_mb'] / max(old['peak_mb'], 1.0):.2f}"
                )


if __name__ == "__main__":
    main()
