"""The email graph, end to end (load context → retrieve → plan → generate → check → finalize), in process.

Template writer (default): p50/p95 per email (target p95 <= 100 ms) and batch emails/s (target >= 20/s),
beside a peer measured in the same run: the recommender call alone, which every email makes once.
With ``--llm``: the same graph with the OpenAI writer against a local llama.cpp server running
SmolLM2-135M-Instruct; emails per minute, and the share of the model's parts that reached the customer
versus fell back, per guardrail.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/agent_bench.py [--store DB] [--customers 40] [--emails 200] \
        [--llm N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from agent import AgentDeps, EmailOutcome, OpenAIWriter, run_email  # noqa: E402
from retrieval.recommender import HybridRecommender  # noqa: E402
from tailor.importer import import_dir  # noqa: E402
from tailor.settings import Settings  # noqa: E402
from tailor.store import Store  # noqa: E402
from tailor.uci import convert  # noqa: E402

NOW = datetime(2011, 12, 10, 10, tzinfo=UTC)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def open_store(path: str | None, customers: int, work: Path) -> Store:
    if path:
        return Store(Path(path))
    canonical = work / "canonical"
    convert(REPO / "data" / "raw" / "online_retail.parquet", canonical, customers_limit=customers)
    store = Store(work / "tailor.db")
    import_dir(store, canonical)
    return store


async def timed(deps: AgentDeps, cid: str) -> tuple[float, EmailOutcome]:
    start = time.perf_counter()
    out = await run_email(deps, cid)
    return (time.perf_counter() - start) * 1000, out


async def template_run(deps: AgentDeps, ids: list[str], emails: int) -> None:
    for cid in ids[:3]:  # warm-up: lazy loads in the rails and the recommender's per-customer state
        await run_email(deps, cid)
    per_email: list[float] = []
    outcomes: Counter[str] = Counter()
    for n in range(emails):
        ms, out = await timed(deps, ids[n % len(ids)])
        per_email.append(ms)
        outcomes["sent" if out.email else f"refused:{out.refusal.reason if out.refusal else '?'}"] += 1
    peer: list[float] = []
    for n in range(emails):
        start = time.perf_counter()
        deps.recommender.recommend(ids[n % len(ids)], 8, now=NOW)
        peer.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    for n in range(emails):
        await run_email(deps, ids[n % len(ids)])
    rate = emails / (time.perf_counter() - start)
    p50, p95 = statistics.median(per_email), pct(per_email, 0.95)
    r50, r95 = statistics.median(peer), pct(peer, 0.95)
    print(f"template writer, {emails} emails over {len(ids)} consenting customers: {dict(outcomes)}")
    verdict = "ok" if p95 <= 100 else "MISSED"
    print(f"  per email   p50 {p50:7.1f} ms  p95 {p95:7.1f} ms   (target p95 <= 100 ms: {verdict})")
    print(f"  peer: recommend() alone  p50 {r50:7.1f} ms  p95 {r95:7.1f} ms")
    print(f"  ratio email/recommend  p50 {p50 / r50:5.2f}x  p95 {p95 / r95:5.2f}x")
    print(f"  batch: {rate:6.1f} emails/s   (target >= 20/s: {'ok' if rate >= 20 else 'MISSED'})")


def llm_run(deps: AgentDeps, ids: list[str], emails: int) -> None:
    from tests.llm_server import llm_server

    with llm_server() as server:
        settings = deps.settings.model_copy(
            update={
                "writer": "openai",
                "llm_base_url": server.base_url,
                "llm_model": server.model,
                "llm_timeout_s": 180.0,
                "llm_max_retries": 0,
                "llm_max_tokens": 200,
                "llm_json_schema": True,
            }
        )
        deps.writer = OpenAIWriter(settings)
        parts_total = 0
        fell_back: Counter[str] = Counter()
        by_rail: Counter[str] = Counter()
        sent = 0
        start = time.perf_counter()
        for n in range(emails):
            out = asyncio.run(run_email(deps, ids[n % len(ids)]))
            if out.plan is None or out.plan.action == "nothing":
                continue
            parts_total += 3 + len(out.plan.products)
            for record in out.audit:
                if record["node"] == "check":
                    for rail, findings in record.get("verdicts", {}).items():
                        by_rail[rail] += len(findings)
                if record["node"] == "generate" and record.get("error"):
                    by_rail["writer_error"] += 1
            if out.email:
                sent += 1
                fell_back["parts"] += len(out.email.fallback_parts)
        minutes = (time.perf_counter() - start) / 60
    reached = parts_total - fell_back["parts"]
    print(f"llama.cpp SmolLM2-135M, {emails} emails: {emails / minutes:5.1f} emails/minute, {sent} sent")
    if parts_total:
        print(
            f"  model parts that reached the customer: {reached}/{parts_total} ({reached / parts_total:.0%})"
        )
    print(f"  findings per guardrail (all checks, revisions included): {dict(by_rail)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", help="an imported tailor.db (default: a 40-customer slice, built here)")
    parser.add_argument("--customers", type=int, default=40)
    parser.add_argument("--emails", type=int, default=200)
    parser.add_argument(
        "--llm", type=int, default=0, help="also run N emails through the local llama.cpp model"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = open_store(args.store, args.customers, work)
        settings = Settings(data_dir=work / "data", now=NOW.isoformat())
        recommender = HybridRecommender.build(store, settings)
        deps = AgentDeps(store=store, recommender=recommender, settings=settings, now=NOW)
        ids = [c.id for c in store.customers() if c.consent.marketing_email and c.consent.personalization]
        if not ids:
            raise SystemExit("no customer in the store agreed to marketing email and personalization")
        asyncio.run(template_run(deps, ids, args.emails))
        if args.llm:
            llm_run(deps, ids, args.llm)


if __name__ == "__main__":
    main()
