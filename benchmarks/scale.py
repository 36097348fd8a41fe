"""A retailer-sized benchmark: the whole service on seeded synthetic retailers of growing size, and how each
figure grows with it.

For each size (customers; the catalog grows with it, up to 50,000 items), in a child process of its own so
that its peak memory is its own:
- **generate** a seeded synthetic retailer (``tailor.data.synthetic``: power-law popularity, repeat cycles,
  seasonality, a share of one-time buyers, item texts) in the canonical format;
- **import** it (``tailor import``): events per second;
- **index** it (``tailor index``): the catalog embedded into Qdrant, the ranker fitted, histories indexed;
  the time of each and the peak resident memory of the whole run;
- **recommend**: the first answer after opening the service (cold), then p50 / p95 over a few hundred
  customers (warm);
- **campaign**: emails per second through the job runner with the template writer, the ops database on
  SQLite, and on PostgreSQL (a throwaway cluster, ``tests/postgres.py``) when ``--postgres`` is given.

The customer store itself is SQLite in this round (its PostgreSQL engine is the next step of the issue on
running past one machine), so import, index and recommendation figures are SQLite's.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/scale.py [--sizes 10000,100000,300000] [--postgres]
        [--campaign 300] [--keep DIR]

Each size runs alone; figures of one run compare, figures across runs on a shared 2-core machine do not.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MAX_ITEMS = 50_000


def _p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else 0.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_size(customers: int, work: Path, campaign: int, postgres: bool) -> dict[str, Any]:
    from tailor.app.jobs import JobRunner
    from tailor.app.ops import Ops
    from tailor.app.service import Tailor
    from tailor.core.brand import DEFAULT_BRAND
    from tailor.core.settings import Settings
    from tailor.data.synthetic import SyntheticStore, write_canonical

    items = min(MAX_ITEMS, max(2_000, customers // 6))
    spec = SyntheticStore(customers=customers, items=items, days=365, start="2023-01-01", seed=7)
    out: dict[str, Any] = {"customers": customers, "items": items}
    start = time.perf_counter()
    counts = write_canonical(spec, work / "canonical")
    out["generate_s"] = round(time.perf_counter() - start, 1)
    out["events"] = counts.get("events", 0)
    # The synthetic retailer sells on its own domain: its brand is the bundled one with that domain allowed
    # (the rails hold every link of an email to the retailer's configuration).
    brand = work / "brand.toml"
    bundled = DEFAULT_BRAND.read_text(encoding="utf-8")
    domain = urlsplit(spec.items_list()[0].url or "").hostname or "synthetic-retail.test"
    brand.write_text(
        re.sub(r"(?m)^allowed_link_domains = .*$", f'allowed_link_domains = ["{domain}"]', bundled).replace(
            "example-retail.test", domain
        ),
        encoding="utf-8",
    )
    # Noon after the store's last day: after everything it holds, and outside customers' quiet hours.
    settings = Settings(data_dir=work / "data", now="2024-01-01T12:00:00+00:00", brand_config=brand)
    with Tailor(settings) as tailor:
        start = time.perf_counter()
        report = tailor.import_source([work / "canonical"])
        seconds = time.perf_counter() - start
        out["import_s"] = round(seconds, 1)
        out["import_events_per_s"] = round(report.events / max(seconds, 1e-9))
        marks: dict[str, float] = {}

        def progress(stage: str, done: int, total: int) -> None:
            marks.setdefault(f"{stage}:{'end' if done >= total else 'start'}", time.perf_counter())

        start = time.perf_counter()
        tailor.index(progress=progress)
        out["index_s"] = round(time.perf_counter() - start, 1)
        if "fitting ranker:start" in marks and "fitting ranker:end" in marks:
            out["fit_s"] = round(marks["fitting ranker:end"] - marks["fitting ranker:start"], 1)
    out["index_peak_mb"] = round(_peak_mb())
    with Tailor(settings) as tailor:
        # Customers with personalization consent: the others get no recommendation at all.
        everyone = tailor.store.customers()
        ids = [c.id for c in everyone if c.consent.personalization]
        reachable = [c.id for c in everyone if c.consent.personalization and c.consent.marketing_email]
        rng = random.Random(0)
        sample = rng.sample(ids, min(300, len(ids)))
        start = time.perf_counter()
        tailor.recommend(sample[0], 10)
        out["recommend_cold_ms"] = round((time.perf_counter() - start) * 1000, 1)
        warm: list[float] = []
        for cid in sample:
            start = time.perf_counter()
            tailor.recommend(cid, 10)
            warm.append((time.perf_counter() - start) * 1000)
        out["recommend_warm_p50_ms"] = round(statistics.median(warm), 2)
        out["recommend_warm_p95_ms"] = round(_p(warm, 0.95), 2)
        engines: dict[str, str | Path] = {"sqlite": work / "ops.db"}
        with ExitStack() as stack:
            if postgres:
                from tests.postgres import postgres_cluster

                cluster = stack.enter_context(postgres_cluster())
                engines["postgresql"] = cluster.database("scale_ops")
            # One audience per engine: the same customers emailed twice would be refused the second time
            # (the frequency cap), which is no campaign to time.
            drawn = rng.sample(reachable, min(campaign * len(engines), len(reachable)))
            for n, (engine, target) in enumerate(engines.items()):
                audience = drawn[n * campaign : (n + 1) * campaign]
                ops = Ops(target)
                runner = JobRunner(tailor, ops, settings)
                job = ops.create_job("campaign", audience, {"trigger": {"kind": "campaign"}})
                start = time.perf_counter()
                runner.start()
                while ops.get_job(job.job_id).status != "done":
                    time.sleep(0.2)
                seconds = time.perf_counter() - start
                runner.stop()
                state = ops.get_job(job.job_id)
                ops.close()
                out[f"campaign_{engine}_emails_per_s"] = round(state.counts.get("done", 0) / seconds, 1)
                out[f"campaign_{engine}_items_per_s"] = round(state.total / seconds, 1)
                out[f"campaign_{engine}_outcomes"] = {**state.counts, **state.refusals}
    out["peak_mb"] = round(_peak_mb())
    return out


ROWS = (
    ("events", "events"),
    ("import_events_per_s", "import events/s"),
    ("index_s", "index s (embed + fit + histories)"),
    ("fit_s", "fit s"),
    ("index_peak_mb", "index peak MB"),
    ("recommend_cold_ms", "recommend cold ms"),
    ("recommend_warm_p50_ms", "recommend warm p50 ms"),
    ("recommend_warm_p95_ms", "recommend warm p95 ms"),
    ("campaign_sqlite_emails_per_s", "campaign emails/s (ops SQLite)"),
    ("campaign_postgresql_emails_per_s", "campaign emails/s (ops PostgreSQL)"),
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,300000", help="customers, comma-separated")
    parser.add_argument("--campaign", type=int, default=300, help="customers in the campaign")
    parser.add_argument("--postgres", action="store_true", help="the campaign on PostgreSQL ops too")
    parser.add_argument("--keep", type=Path, default=None, help="keep each size's data under this folder")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_size(args.one, args.work, args.campaign, args.postgres)))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results: list[dict[str, Any]] = []
    for size in sizes:
        with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
            work = Path(tmp)
            cmd = [sys.executable, __file__, "--one", str(size), "--work", str(work), "--campaign",
                   str(args.campaign), *(["--postgres"] if args.postgres else [])]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"size {size} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                break
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"size {size}: done", file=sys.stderr)
    if not results:
        return
    head = f"{'':<38}" + "".join(f"{r['customers']:>12,}" for r in results)
    print(head)
    print(f"{'items':<38}" + "".join(f"{r['items']:>12,}" for r in results))
    for key, label in ROWS:
        if any(key in r for r in results):
            print(f"{label:<38}" + "".join(f"{r.get(key, '-'):>12}" for r in results))
    if len(results) > 1:
        first, last = results[0], results[-1]
        grew = last["customers"] / first["customers"]
        print(f"\ngrowth from {first['customers']:,} to {last['customers']:,} customers (x{grew:.0f}):")
        for key in ("import_events_per_s", "index_s", "fit_s", "index_peak_mb", "recommend_warm_p95_ms"):
            if key in first and key in last and first[key]:
                ratio = last[key] / first[key]
                print(f"  {key:<28} x{ratio:.1f}" + ("  (more than linear)" if ratio > grew * 1.1 else ""))


if __name__ == "__main__":
    main()
