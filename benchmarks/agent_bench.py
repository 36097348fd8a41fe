"""The email graph, end to end (load context → retrieve → plan → generate → check → finalize), in process.

Template writer (default): p50/p95 per email (target p95 <= 100 ms) and batch emails/s (target >= 20/s),
beside two peers measured in the same run: the recommender call alone, which every email makes once, and a
plain Jinja render of the same emails (the template copy and the assembled body, no graph, no rails), so
the ratio shows what the graph and its guardrails add over rendering.
With ``--llm N``: the same graph with the OpenAI writer against a local llama.cpp server, for each model of
``--model`` (SmolLM2-135M-Instruct and Gemma 3 270M); emails per minute, the share of sent emails fully
model-written, an independent count of sent emails with a placeholder, an echo or a names-only part (the
gate: 0), the share of the model's parts that reached the customer, and per
guardrail and per part (subject, preheader, intro, reasons) the share of model-written parts that fell back
because of that rail (from the ``because`` field of the fallback audit record).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/agent_bench.py [--store DB] [--customers 40] [--emails 200] \
        [--llm N] [--model smollm2,gemma3] [--samples out/copy_samples.jsonl] [--offset K]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from agent import AgentDeps, EmailOutcome, OpenAIWriter, TemplateWriter, run_email  # noqa: E402
from agent.compose import assemble  # noqa: E402
from agent.nodes.generate import copy_request  # noqa: E402
from agent.state import EmailState, Plan  # noqa: E402
from evals.copy import BRANDS  # noqa: E402
from retrieval.embeddings import Embedder  # noqa: E402
from retrieval.recommender import HybridRecommender  # noqa: E402
from tailor.core.brand import load_brand  # noqa: E402
from tailor.core.settings import Settings  # noqa: E402
from tailor.data.importer import import_dir  # noqa: E402
from tailor.data.store import Store  # noqa: E402
from tailor.data.uci import convert  # noqa: E402

NOW = datetime(2011, 12, 10, 10, tzinfo=UTC)
PARTS = ("subject", "preheader", "intro", "reasons")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def open_store(path: str | None, customers: int, work: Path, brand: Path | None = None) -> Store:
    """An imported store, or a slice of the demo store built here; with ``brand``, its catalog sold by that
    retailer (its currency, links on its own domain), as the tests' second retailer sells it."""
    if path:
        return Store(Path(path))
    canonical = work / "canonical"
    convert(REPO / "data" / "raw" / "online_retail.parquet", canonical, customers_limit=customers)
    store = Store(work / "tailor.db")
    if brand is None:
        import_dir(store, canonical)
        return store
    from tests.retailers import Retailer, rebrand_catalog

    retailer = Retailer("bench", load_brand(brand), brand)
    import_dir(
        store,
        rebrand_catalog(canonical, work / "canonical-rebranded", retailer),
        currency=retailer.brand.currency,
    )
    return store


async def timed(deps: AgentDeps, cid: str) -> tuple[float, EmailOutcome]:
    start = time.perf_counter()
    out = await run_email(deps, cid)
    return (time.perf_counter() - start) * 1000, out


def render_plain(deps: AgentDeps, cid: str, plan: Plan) -> float:
    """Milliseconds to render the same email with Jinja alone: the template writer's copy and the assembled
    text and HTML body, from the plan the graph made (no graph, recommender or guardrails)."""
    customer = deps.store.get_customer(cid)
    request = copy_request(EmailState(customer_id=cid, customer=customer), plan, deps)
    writer = TemplateWriter()
    start = time.perf_counter()
    copy = writer.write_email(request, deps.brand).copy
    assemble(copy, plan, customer, deps.catalog, deps.brand, writer=writer.name)
    return (time.perf_counter() - start) * 1000


async def template_run(deps: AgentDeps, ids: list[str], emails: int) -> None:
    for cid in ids[:3]:  # warm-up: lazy loads in the rails and the recommender's per-customer state
        await run_email(deps, cid)
    per_email: list[float] = []
    sent_ms: list[float] = []
    sent_plans: list[tuple[str, Plan]] = []
    outcomes: Counter[str] = Counter()
    for n in range(emails):
        ms, out = await timed(deps, ids[n % len(ids)])
        per_email.append(ms)
        outcomes["sent" if out.email else f"refused:{out.refusal.reason if out.refusal else '?'}"] += 1
        if out.email is not None and out.plan is not None:
            sent_ms.append(ms)
            sent_plans.append((out.customer_id, out.plan))
    if sent_plans:
        render_plain(deps, *sent_plans[0])  # warm-up: the Jinja template cache
    plain = [render_plain(deps, cid, plan) for cid, plan in sent_plans]
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
    if plain:
        g50, g95 = statistics.median(sent_ms), pct(sent_ms, 0.95)
        j50, j95 = statistics.median(plain), pct(plain, 0.95)
        n = len(plain)
        print(f"  peer: plain Jinja render of the {n} sent emails  p50 {j50:7.2f} ms  p95 {j95:7.2f} ms")
        print(
            "  ratio graph/render (sent emails: what the graph and its guardrails add over rendering)"
            f"  p50 {g50 / j50:6.1f}x  p95 {g95 / j95:6.1f}x"
        )
    print(f"  batch: {rate:6.1f} emails/s   (target >= 20/s: {'ok' if rate >= 20 else 'MISSED'})")


# An independent look at what was sent, apart from the copy-quality rail that decided it: the stock
# placeholders and brief words the issue found in sent emails, and a part that is exactly a product's title.
_GATE = re.compile(
    r"\[[^\]]*\]|\{[^}]*\}|\byour name\b|\bproduct (?:details|name|description)\b|\bprevious draft\b"
    r"|\bcatalog title\b|\bjson\b|\bthe rules\b|\bfirst[_ ]name\b",
    re.IGNORECASE,
)


def gate_failures(out: EmailOutcome, deps: AgentDeps) -> list[str]:
    """The sent email's model-written parts with a placeholder, an echo or nothing but a product's name."""
    email = out.email
    if email is None:
        return []
    titles = {deps.catalog[p.item_id].title.lower() for p in email.products}
    parts = {"subject": email.subject, "preheader": email.preheader}
    parts.update({f"reason:{p.item_id}": p.reason for p in email.products})
    bad = []
    for name, text in parts.items():
        if email.part_writers.get(name) == "template":
            continue
        if _GATE.search(text) or text.strip(" .").lower() in titles:
            bad.append(f"{name}: {text}")
    return bad


def llm_run(
    deps: AgentDeps, ids: list[str], emails: int, model: str, samples: Path | None, draws: int = 1
) -> None:
    from tests.llm_server import llm_server

    with llm_server(model=model) as server:
        settings = deps.settings.model_copy(
            update={
                "writer": "openai",
                "llm_base_url": server.base_url,
                "llm_model": server.model,
                "llm_timeout_s": 180.0,
                "llm_max_retries": 0,
                "llm_max_tokens": 200,
                "llm_json_schema": True,
                "llm_draws": draws,
            }
        )
        deps.writer = OpenAIWriter(settings)
        outcomes: list[EmailOutcome] = []
        start = time.perf_counter()
        for n in range(emails):
            outcomes.append(asyncio.run(run_email(deps, ids[n % len(ids)])))
        minutes = (time.perf_counter() - start) / 60
    sent = [o for o in outcomes if o.email is not None]
    whole = sum(1 for o in sent if o.email is not None and o.email.writer == "openai")
    asked = sum(
        sum(r.get("draws", {}).values())
        for o in outcomes
        for r in o.audit
        if r["node"] in ("generate", "revise")
    )
    print(
        f"llama.cpp {server.model}, {emails} emails, {draws} draw(s) a part: {emails / minutes:5.1f}"
        f" emails/minute, {len(sent)} sent, {asked / max(emails, 1):.1f} model answers an email"
    )
    if sent:
        print(f"  fully model-written: {whole}/{len(sent)} sent emails ({whole / len(sent):.0%})")
    failures = [f for o in sent for f in gate_failures(o, deps)]
    print(f"  gate: sent emails with a placeholder, an echo or a names-only part: {len(failures)}")
    for f in failures[:5]:
        print(f"    {f}")
    report_fallbacks(outcomes)
    if samples is not None:
        samples.parent.mkdir(parents=True, exist_ok=True)
        with samples.open("a", encoding="utf-8") as fh:
            for o in sent:
                fh.write(json.dumps(sample_row(o, deps, server.model, draws), ensure_ascii=False) + "\n")


def sample_row(out: EmailOutcome, deps: AgentDeps, model: str, draws: int) -> dict[str, Any]:
    """A sent email as a person judges it (the fields of ``evals/data/model_emails_judged.jsonl`` but its id,
    model key and labels; the brand by its key there when it is one of the eval's): each part with who wrote
    it, and each product with the evidence its reason may draw on. The intro is the body's first paragraph,
    as the email shows it."""
    email, plan = out.email, out.plan
    assert email is not None and plan is not None
    customer = deps.store.get_customer(email.customer_id)
    evidence = {p.item_id: p.evidence for p in plan.products}
    texts = {
        "subject": email.subject,
        "preheader": email.preheader,
        "intro": email.body_text.split("\n\n")[0],
    }
    texts.update({f"reason:{p.item_id}": p.reason for p in email.products})
    return {
        "model": model,
        "draws": draws,
        "brand": next(
            (key for key, path in BRANDS.items() if load_brand(path).name == deps.brand.name), deps.brand.name
        ),
        "customer_id": email.customer_id,
        "first_name": customer.first_name,
        "action": email.action,
        "writer": email.writer,
        "fully_model_written": "template" not in email.part_writers.values(),
        "products": [
            {
                "id": p.item_id,
                "title": p.title,
                "category": deps.catalog[p.item_id].category,
                "evidence": [{"kind": e.kind, "summary": e.summary} for e in evidence.get(p.item_id, ())],
            }
            for p in email.products
        ],
        "parts": [{"part": k, "writer": email.part_writers.get(k), "text": v} for k, v in texts.items()],
        "body_text": email.body_text,
    }


def _part_type(part: str) -> str:
    return "reasons" if part.startswith("reason:") else part


def report_fallbacks(outcomes: list[EmailOutcome]) -> None:
    """Per rail and per part, the share of model-written parts that fell back because of that rail.

    The fallback node records, for each part it replaced, the rails whose blocking findings replaced it
    (``because``; ``writer_error`` when the model gave no usable draft). A part can fail several rails, so
    the rails' shares may add up to more than the overall fallback share. Parts of an email that was
    blocked outright (even the template's text failed) did not reach the customer either; they are
    counted apart."""
    written: Counter[str] = Counter()
    fell_back: Counter[str] = Counter()
    blocked: Counter[str] = Counter()
    by_rail: dict[str, Counter[str]] = {}
    for out in outcomes:
        if out.plan is None or out.plan.action == "nothing":
            continue
        mine: Counter[str] = Counter({"subject": 1, "preheader": 1, "intro": 1})
        mine["reasons"] = len(out.plan.products)
        written.update(mine)
        replaced: Counter[str] = Counter()
        for record in out.audit:
            if record["node"] != "fallback":
                continue
            because: dict[str, Any] = record.get("because", {})
            for part, rails in because.items():
                replaced[_part_type(part)] += 1
                for rail in rails:
                    by_rail.setdefault(rail, Counter())[_part_type(part)] += 1
        fell_back.update(replaced)
        if out.email is None:
            blocked.update(mine - replaced)
    total = sum(written.values())
    if not total:
        print("  no email planned anything: no model-written parts to count")
        return
    reached = total - sum(fell_back.values()) - sum(blocked.values())
    print(f"  model parts that reached the customer: {reached}/{total} ({reached / total:.0%})")

    def row(name: str, counts: Counter[str]) -> str:
        cells = [f"{counts[p] / written[p]:>11.0%}" if written[p] else f"{'-':>11}" for p in PARTS]
        return f"    {name:<16}" + "".join(cells) + f"{sum(counts.values()) / total:>11.0%}"

    print("  share of model-written parts that fell back, by the rail that failed them:")
    print(f"    {'rail':<16}" + "".join(f"{p:>11}" for p in (*PARTS, "all")))
    for rail in sorted(by_rail, key=lambda r: -sum(by_rail[r].values())):
        print(row(rail, by_rail[rail]))
    print(row("any rail", fell_back))
    print(row("email blocked", blocked))
    print(f"    {'written':<16}" + "".join(f"{written[p]:>11}" for p in PARTS) + f"{total:>11}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", help="an imported tailor.db (default: a 40-customer slice, built here)")
    parser.add_argument("--customers", type=int, default=40)
    parser.add_argument(
        "--brand",
        type=Path,
        default=None,
        help="a retailer configuration TOML (default: the bundled one); the built slice's catalog is sold"
        " in its currency, on its link domain",
    )
    parser.add_argument("--emails", type=int, default=200)
    parser.add_argument(
        "--llm", type=int, default=0, help="also run N emails through each local llama.cpp model"
    )
    parser.add_argument(
        "--model",
        default="smollm2,gemma3",
        help="the local models for --llm, comma-separated (tests/llm_server.py)",
    )
    parser.add_argument(
        "--samples", type=Path, default=None, help="append the sent model emails here (JSONL)"
    )
    parser.add_argument(
        "--offset", type=int, default=0, help="start the --llm emails at this consenting customer"
    )
    parser.add_argument(
        "--draws",
        type=int,
        default=1,
        help="answers drawn per part at each try, the first its rails pass kept (TAILOR_LLM_DRAWS)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = open_store(args.store, args.customers, work, args.brand)
        settings = Settings(data_dir=work / "data", now=NOW.isoformat())
        recommender = HybridRecommender.build(store, settings)
        deps = AgentDeps(
            store=store, recommender=recommender, settings=settings, brand=load_brand(args.brand), now=NOW
        )
        ids = [c.id for c in store.customers() if c.consent.marketing_email and c.consent.personalization]
        if not ids:
            raise SystemExit("no customer in the store agreed to marketing email and personalization")
        asyncio.run(template_run(deps, ids, args.emails))
        if args.llm:
            deps.similarity = Embedder().similarity
            later = (
                ids[args.offset :] + ids[: args.offset]
            )  # a later run's customers, not the first ones again
            for model in args.model.split(","):
                llm_run(deps, later, args.llm, model.strip(), args.samples, args.draws)


if __name__ == "__main__":
    main()
