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
- **campaign**: emails per second through the job runner with the template writer.

Each figure on the embedded default (the store and the ops database in SQLite files), then, with
``--postgres``, all of it again with the store and the ops tables in one PostgreSQL database (a throwaway
cluster, ``tests/postgres.py``, on this machine). The vectors stay in the data dir on both; on PostgreSQL the
fitted ranker is also published in the database (``TAILOR_RANKER_STORE``'s default there), inside the index
time. Peak memory is the process's so far, so the second engine's is at least the first's.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/scale.py [--sizes 10000,100000,300000] [--postgres]
        [--engines sqlite,postgres]
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


def one_size(customers: int, work: Path, campaign: int, engines: tuple[str, ...]) -> dict[str, Any]:
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
    now = "2024-01-01T12:00:00+00:00"
    if "sqlite" in engines:
        settings = Settings(data_dir=work / "data", now=now, brand_config=brand)
        _one_engine(settings, work / "ops.db", campaign, out, "")
    if "postgres" in engines:
        from tests.postgres import postgres_cluster

        with postgres_cluster() as cluster:
            url = cluster.database("scale")
            # The same retailer with its store and its ops tables in one PostgreSQL database (the vectors
            # stay in the data dir; the fitted ranker is published in the database as well).
            settings = Settings(data_dir=work / "data-pg", now=now, brand_config=brand, database_url=url)
            _one_engine(settings, url, campaign, out, "_pg")
    out["peak_mb"] = round(_peak_mb())
    return out


def _one_engine(
    settings: Any, ops_target: str | Path, campaign: int, out: dict[str, Any], suffix: str
) -> None:
    """Import, index, recommend and a campaign on one engine; figures go to ``out`` with ``suffix``."""
    from tailor.app.jobs import JobRunner
    from tailor.app.ops import Ops
    from tailor.app.service import Tailor

    work = settings.data_dir.parent
    with Tailor(settings) as tailor:
        start = time.perf_counter()
        report = tailor.import_source([work / "canonical"])
        seconds = time.perf_counter() - start
        out[f"import_s{suffix}"] = round(seconds, 1)
        out[f"import_events_per_s{suffix}"] = round(report.events / max(seconds, 1e-9))
        marks: dict[str, float] = {}

        def progress(stage: str, done: int, total: int) -> None:
            marks.setdefault(f"{stage}:{'end' if done >= total else 'start'}", time.perf_counter())

        start = time.perf_counter()
        tailor.index(progress=progress)
        out[f"index_s{suffix}"] = round(time.perf_counter() - start, 1)
        if "fitting ranker:start" in marks and "fitting ranker:end" in marks:
            out[f"fit_s{suffix}"] = round(marks["fitting ranker:end"] - marks["fitting ranker:start"], 1)
    out[f"index_peak_mb{suffix}"] = round(_peak_mb())
    with Tailor(settings) as tailor:
        # Customers with personalization consent: the others get no recommendation at all.
        everyone = tailor.store.customers()
        ids = [c.id for c in everyone if c.consent.personalization]
        reachable = [c.id for c in everyone if c.consent.personalization and c.consent.marketing_email]
        rng = random.Random(0)
        sample = rng.sample(ids, min(300, len(ids)))
        start = time.perf_counter()
        tailor.recommend(sample[0], 10)
        out[f"recommend_cold_ms{suffix}"] = round((time.perf_counter() - start) * 1000, 1)
        warm: list[float] = []
        for cid in sample:
            start = time.perf_counter()
            tailor.recommend(cid, 10)
            warm.append((time.perf_counter() - start) * 1000)
        out[f"recommend_warm_p50_ms{suffix}"] = round(statistics.median(warm), 2)
        out[f"recommend_warm_p95_ms{suffix}"] = round(_p(warm, 0.95), 2)
        # Customers the same seed draws on either engine: each engine's store is its own.
        audience = rng.sample(reachable, min(campaign, len(reachable)))
        ops = Ops(ops_target)
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
        out[f"campaign_emails_per_s{suffix}"] = round(state.counts.get("done", 0) / seconds, 1)
        out[f"campaign_items_per_s{suffix}"] = round(state.total / seconds, 1)
        out[f"campaign_outcomes{suffix}"] = {**state.counts, **state.refusals}


_ROWS = (
    ("import_events_per_s", "import events/s"),
    ("index_s", "index s (embed + fit + histories)"),
    ("fit_s", "fit s"),
    ("index_peak_mb", "index peak MB (the process's, so far)"),
    ("recommend_cold_ms", "recommend cold ms"),
    ("recommend_warm_p50_ms", "recommend warm p50 ms"),
    ("recommend_warm_p95_ms", "recommend warm p95 ms"),
    ("campaign_emails_per_s", "campaign emails/s"),
)
# Each figure on SQLite (the store and ops files), then on PostgreSQL (both in one database) when asked.
ROWS = (
    ("events", "events"),
    *((key, f"{label}, SQLite") for key, label in _ROWS),
    *((f"{key}_pg", f"{label}, PostgreSQL") for key, label in _ROWS),
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000,300000", help="customers, comma-separated")
    parser.add_argument("--campaign", type=int, default=300, help="customers in the campaign")
    parser.add_argument(
        "--postgres", action="store_true", help="each size again with the store and ops on PostgreSQL"
    )
    parser.add_argument(
        "--engines",
        default=None,
        help="sqlite, postgres or both, comma-separated (default: sqlite; both with --postgres); one engine"
        " alone has the size's peak memory to itself",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep each size's data under this folder")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    engines = tuple(
        e.strip() for e in (args.engines or ("sqlite,postgres" if args.postgres else "sqlite")).split(",")
    )
    unknown = sorted(set(engines) - {"sqlite", "postgres"})
    if unknown or not engines:
        parser.error(
            f"--engines: unknown engine(s) {', '.join(unknown) or '(none)'}; use sqlite and/or postgres"
        )
    if args.one is not None:
        print(json.dumps(one_size(args.one, args.work, args.campaign, engines)))
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    results: list[dict[str, Any]] = []
    for size in sizes:
        with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
            work = Path(tmp)
            cmd = [sys.executable, __file__, "--one", str(size), "--work", str(work), "--campaign",
                   str(args.campaign), "--engines", ",".join(engines)]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                print(f"size {size} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                break
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"size {size}: done", file=sys.stderr)
    if not results:
        return
    head = f"{'':<48}" + "".join(f"{r['customers']:>12,}" for r in results)
    print(head)
    print(f"{'items':<48}" + "".join(f"{r['items']:>12,}" for r in results))
    for key, label in ROWS:
        if any(key in r for r in results):
            print(f"{label:<48}" + "".join(f"{r.get(key, '-'):>12}" for r in results))
    if len(results) > 1:
        first, last = results[0], results[-1]
        grew = last["customers"] / first["customers"]
        print(f"\ngrowth from {first['customers']:,} to {last['customers']:,} customers (x{grew:.0f}):")
        for base in ("import_events_per_s", "index_s", "fit_s", "index_peak_mb", "recommend_warm_p95_ms"):
            for key in (base, f"{base}_pg"):
                if not (key in first and key in last and first[key]):
                    continue
                ratio = last[key] / first[key]
                print(f"  {key:<28} x{ratio:.1f}" + ("  (more than linear)" if ratio > grew * 1.1 else ""))


if __name__ == "__main__":
    main()
