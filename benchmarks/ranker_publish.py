"""What sharing the fitted ranker through the database costs (``TAILOR_RANKER_STORE=database``): publishing a
save (every fit and every forget on the replica that made it) and fetching it (once per save, on every other
replica), on SQLite and on PostgreSQL (a throwaway cluster, ``tests/postgres.py``), against the peer a shared
volume gives: copying the two files.

The ranker is a real one: a saved ranker's base path (``--ranker``, e.g. the data dir's ``ranker`` after
``tailor index``); by default one is fitted here on a synthetic store of ``--customers`` customers.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ranker_publish.py [--ranker DATA_DIR/ranker]
        [--customers 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _fitted(customers: int, work: Path) -> Path:
    from retrieval.ranker import Ranker
    from tailor.data.synthetic import SyntheticStore

    spec = SyntheticStore(customers=customers, items=max(2_000, customers // 6), days=365, seed=7)
    frame = spec.purchases()
    base = work / "fitted" / "ranker"
    Ranker().fit(frame, None, now=frame["timestamp"].max()).save(base)
    return base


def _best(repeat: int, run: Callable[[int], None]) -> float:
    times = []
    for n in range(repeat):
        start = time.perf_counter()
        run(n)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(base: Path, target: str | Path, work: Path, repeat: int) -> dict[str, float]:
    from retrieval.ranker import Ranker
    from tailor.data.store import Store

    files = {"npz": base.with_suffix(".npz"), "json": base.with_suffix(".json")}
    save_id = Ranker.saved_id(base) or "unsaved"
    store = Store(target)
    try:
        publish = _best(repeat, lambda n: store.publish_ranker(f"{save_id}-{n}", files))
        latest = store.ranker_save_id() or ""
        out = {name: work / f"fetched.{name}" for name in files}
        fetch = _best(repeat, lambda n: store.fetch_ranker(latest, out))
        assert all(out[n].read_bytes() == files[n].read_bytes() for n in files), "fetched files differ"
    finally:
        store.close()
    copy = _best(repeat, lambda n: [shutil.copyfile(p, work / f"copied.{k}") for k, p in files.items()])
    return {"publish_s": publish, "fetch_s": fetch, "copy_s": copy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranker", type=Path, help="a saved ranker's base path (BASE.npz, BASE.json)")
    parser.add_argument("--customers", type=int, default=10_000, help="the store fitted when no --ranker")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from tests.postgres import postgres_cluster

    with tempfile.TemporaryDirectory(prefix="ranker-publish-") as tmp:
        work = Path(tmp)
        base = args.ranker.with_suffix("") if args.ranker else _fitted(args.customers, work)
        size = sum(base.with_suffix(s).stat().st_size for s in (".npz", ".json")) / 1e6
        print(f"ranker {base}: {size:.1f} MB (npz and json); median of {args.repeat}")
        rows = [("SQLite file", measure(base, work / "tailor.db", work, args.repeat))]
        with postgres_cluster() as cluster:
            rows.append(("PostgreSQL", measure(base, cluster.database("publish"), work, args.repeat)))
        head = ("engine", "publish s", "fetch s", "copy s", "fetch/copy", "MB/s in")
        print(f"{head[0]:<12} {head[1]:>10} {head[2]:>9} {head[3]:>8} {head[4]:>11} {head[5]:>8}")
        for name, m in rows:
            ratio = m["fetch_s"] / max(m["copy_s"], 1e-9)
            rate = size / max(m["publish_s"], 1e-9)
            print(
                f"{name:<12} {m['publish_s']:>10.3f} {m['fetch_s']:>9.3f} {m['copy_s']:>8.3f}"
                f" {ratio:>10.1f}x {rate:>8.0f}"
            )


if __name__ == "__main__":
    main()
