"""Load on the real HTTP service over loopback: latency at a steady rate, and the highest rate held.

The server runs in its own process (``tests.server.ServerProcess``: uvicorn on 127.0.0.1); this process
sends requests open-loop (at fixed times, whether or not earlier answers came back, so a slow server
cannot slow the generator down and hide its own latency). ``/healthz`` is the peer measured in the same
run: the cost of the HTTP stack alone, against which recommendations and explanations are compared.

    .venv/bin/python benchmarks/load.py                      # real Tailor over an imported data dir
    .venv/bin/python benchmarks/load.py --seed 200           # real Tailor over a small seeded store
    .venv/bin/python benchmarks/load.py --facade fake        # the scripted facade (HTTP stack alone)
    .venv/bin/python benchmarks/load.py --refit              # also: latency while the ranker refits

``--refit`` asks the server for a background refit (``POST /v1/model/refit``, what a deletion starts) and
keeps the steady rate of recommendations going until it is swapped in: the fit shares the two cores with
serving. It rewrites the data dir's saved ranker (the same fit on the same data).

Bounded: every phase has a fixed duration, the ramp doubles the rate until ``--max-rate`` or the first rate
whose p95 is over the target, then bisects between the last rate held and that one; the whole run sends at
most ``--max-requests``. The key it creates is revoked when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tailor.app.http import create_key  # noqa: E402
from tailor.app.ops import Ops  # noqa: E402
from tailor.core.settings import Settings  # noqa: E402
from tailor.data.store import Store  # noqa: E402
from tests.server import ServerProcess, seed_store  # noqa: E402

NOW = "2011-12-10T10:00:00+00:00"  # the demo clock: UCI Online Retail ends on 2011-12-09


@dataclass
class Phase:
    name: str
    rate: float
    sent: int
    errors: int
    latencies_ms: list[float]

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def line(self) -> str:
        return (
            f"{self.name:<16} rate {self.rate:>6.1f}/s  n {self.sent:>5}  errors {self.errors:>3}  "
            f"p50 {self.pct(0.50):7.1f} ms  p95 {self.pct(0.95):7.1f} ms"
        )


async def run_phase(
    client: httpx.AsyncClient | Sequence[httpx.AsyncClient],
    name: str,
    paths: list[str],
    rate: float,
    seconds: float,
    headers: dict[str, str],
) -> Phase:
    """``n = rate * seconds`` requests at fixed times; with several clients (one per replica) request ``i``
    goes to client ``i mod n``: the round robin a load balancer would do."""
    clients = [client] if isinstance(client, httpx.AsyncClient) else list(client)
    n = max(1, int(rate * seconds))
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()

    async def one(i: int) -> None:
        nonlocal errors
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t0 = time.perf_counter()
        try:
            r = await clients[i % len(clients)].get(paths[i % len(paths)], headers=headers)
            ok = r.status_code == 200
        except httpx.HTTPError:
            ok = False
        latencies.append((time.perf_counter() - t0) * 1000)
        if not ok:
            errors += 1

    await asyncio.gather(*(one(i) for i in range(n)))
    return Phase(name, rate, n, errors, latencies)


async def during_refit(
    client: httpx.AsyncClient,
    rec_paths: list[str],
    support: dict[str, str],
    crm: dict[str, str],
    args: argparse.Namespace,
) -> Phase | None:
    """Recommendations at the steady rate from the refit request until the new ranker is in."""
    before = (await client.get("/v1/model", headers=crm)).json()
    asked = await client.post("/v1/model/refit", headers=crm)
    if asked.status_code != 202:
        print(f"refit refused: {asked.status_code} {asked.text[:200]}")
        return None
    started = time.perf_counter()
    merged = Phase("recs in refit", args.rate, 0, 0, [])
    while time.perf_counter() - started < args.refit_limit_s:
        # Short phases, so that few requests after the swap are counted as during the fit.
        phase = await run_phase(client, "recs in refit", rec_paths, args.rate, 1.0, support)
        merged.sent += phase.sent
        merged.errors += phase.errors
        merged.latencies_ms += phase.latencies_ms
        model = (await client.get("/v1/model", headers=crm)).json()
        if model["refits"] > before["refits"]:
            print(f"refit done in {time.perf_counter() - started:.1f} s (fit {model['fit_seconds']} s)")
            return merged
    print(f"refit still running after {args.refit_limit_s:.0f} s; stopped measuring, waiting for it to end")
    # The ramp that follows must not run beside a fit.
    while time.perf_counter() - started < args.refit_limit_s + 600:
        await asyncio.sleep(2)
        if (await client.get("/v1/model", headers=crm)).json()["refits"] > before["refits"]:
            break
    return merged


async def highest_held(
    step: Callable[[float], Awaitable[Phase]], args: argparse.Namespace, budget: int
) -> tuple[float, float | None]:
    """The highest rate whose phase (``step(rate)``) has no error and p95 under ``args.target_ms``, and the
    lowest rate seen failing (None when the ramp ran out first). Doubling from ``args.start_rate`` finds
    the bracket [held, failed); bisection then narrows it, so the figure is not off by up to a factor of
    two. No step is started that ``budget`` requests cannot pay for."""
    budget_left = budget

    async def holds(rate: float) -> bool | None:
        nonlocal budget_left
        cost = int(rate * args.step_seconds)
        if cost > budget_left:
            return None
        phase = await step(rate)
        budget_left -= phase.sent
        print(phase.line())
        return not phase.errors and phase.pct(0.95) < args.target_ms

    held, failed = 0.0, None
    rate = args.start_rate
    while rate <= args.max_rate:
        ok = await holds(rate)
        if ok is None:
            break
        if not ok:
            failed = rate
            break
        held, rate = rate, rate * 2
    for _ in range(args.bisect_steps):
        if failed is None or failed - held <= max(1.0, 0.05 * failed):
            break
        mid = (held + failed) / 2 if held else failed / 2
        ok = await holds(mid)
        if ok is None:
            break
        held, failed = (mid, failed) if ok else (held, mid)
    return held, failed


async def bench(
    base_url: str,
    support: dict[str, str],
    customers: list[str],
    args: argparse.Namespace,
    crm: dict[str, str] | None = None,
) -> int:
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(base_url=base_url, timeout=10, limits=limits) as client:
        rng = random.Random(7)
        picks = [customers[rng.randrange(len(customers))] for _ in range(200)]
        # Only customers the service answers 200 for: those without personalization consent get 403 by
        # design, and counting that as an error would make the ramp stop at a rate the server holds.
        rec_paths: list[str] = []
        why_paths: list[str] = []
        for c in dict.fromkeys(picks):
            r = await client.get(f"/v1/customers/{c}/recommendations?k=3", headers=support)
            if r.status_code != 200:
                continue
            rec_paths.append(f"/v1/customers/{c}/recommendations?k=10")
            if r.json()["recommendations"] and len(why_paths) < 40:
                why_paths.append(
                    f"/v1/customers/{c}/recommendations/{r.json()['recommendations'][0]['item']['id']}/why"
                )
        if not why_paths:
            print("no recommendations came back; is the store imported and indexed?")
            return 1
        # Warm-up: lazy model and index loading is not what this measures.
        await run_phase(client, "warmup", rec_paths[:20] + why_paths[:10], 10, 2, support)

        print(f"steady rate {args.rate}/s for {args.seconds}s each, loopback, server pid separate")
        peer = await run_phase(client, "healthz (peer)", ["/healthz"], args.rate, args.seconds, support)
        recs = await run_phase(client, "recommendations", rec_paths, args.rate, args.seconds, support)
        why = await run_phase(client, "why", why_paths, args.rate, args.seconds, support)
        for phase in (peer, recs, why):
            print(phase.line())
        print(
            f"ratio p50 vs peer: recommendations {recs.pct(0.5) / peer.pct(0.5):.1f}x, "
            f"why {why.pct(0.5) / peer.pct(0.5):.1f}x"
        )
        refit_sent = 0
        if args.refit and crm is not None:
            print(f"\nrecommendations at {args.rate}/s while the ranker refits (POST /v1/model/refit)")
            refit = await during_refit(client, rec_paths, support, crm, args)
            if refit is not None:
                refit_sent = refit.sent
                print(refit.line())
                print(f"ratio p95 during refit vs steady: {refit.pct(0.95) / recs.pct(0.95):.1f}x")

        print(f"\nramp (recommendations, {args.step_seconds}s per step, target p95 < {args.target_ms} ms)")
        sent = peer.sent + recs.sent + why.sent + refit_sent

        async def step(rate: float) -> Phase:
            return await run_phase(client, "recommendations", rec_paths, rate, args.step_seconds, support)

        held, failed = await highest_held(step, args, args.max_requests - sent)
        bracket = f" (next step {failed:.0f} req/s failed)" if failed is not None else " (ramp limit reached)"
        print(f"\nhighest rate held with p95 < {args.target_ms} ms: {held:.0f} req/s{bracket}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--facade",
        choices=["auto", "real", "fake"],
        default="real",
        help="real: Tailor over --data-dir (or --seed); fake: the scripted facade; "
        "auto: real when the store is imported, else fake (said so)",
    )
    parser.add_argument("--data-dir", type=Path, default=REPO / "var", help="imported data (real facade)")
    parser.add_argument("--seed", type=int, default=0, help="seed a store of this many customers instead")
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--start-rate", type=float, default=10.0)
    parser.add_argument("--max-rate", type=float, default=640.0)
    parser.add_argument("--step-seconds", type=float, default=3.0)
    parser.add_argument("--max-requests", type=int, default=6000)
    parser.add_argument("--target-ms", type=float, default=200.0)
    parser.add_argument("--bisect-steps", type=int, default=3, help="steps to narrow the held rate")
    parser.add_argument("--refit", action="store_true", help="measure latency during a ranker refit")
    parser.add_argument("--refit-limit-s", type=float, default=180.0, help="stop measuring the refit after")
    args = parser.parse_args()

    if os.environ.get("TAILOR_DATABASE_URL"):
        # The server would inherit it and serve another store than the one read here.
        print("load.py measures the embedded default: unset TAILOR_DATABASE_URL (benchmarks/replicas.py")
        print("measures PostgreSQL, with the store copied there)")
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="tailor-load-"))
    try:
        if args.facade == "auto" and args.seed:
            args.facade = "real"
        if args.facade == "auto":
            imported = (args.data_dir / "tailor.db").exists()
            if imported:
                store = Store(args.data_dir / "tailor.db")
                imported = store.counts()["customers"] > 0
                store.close()
            args.facade = "real" if imported else "fake"
            if not imported:
                print(f"note: {args.data_dir} holds no imported store; measuring the scripted facade")
        if args.seed:
            # The real facade over a small seeded store, indexed here: real code path, tiny catalog.
            from tailor.app.service import Tailor

            data_dir = tmp / "data"
            customers = seed_store(data_dir, n_customers=args.seed)
            if args.facade == "real":
                with Tailor.open(Settings(data_dir=data_dir, now=NOW)) as tailor:
                    tailor.index()
        elif args.facade == "fake":
            data_dir = tmp / "data"
            customers = seed_store(data_dir, n_customers=50)
        else:
            data_dir = args.data_dir
            if not (data_dir / "tailor.db").exists():
                print(f"no store in {data_dir}; run `tailor demo` or `tailor import` first (or use --seed N)")
                return 1
            store = Store(data_dir / "tailor.db")
            customers = store.busiest_customers(limit=200)
            store.close()
            if not customers:
                print(f"no customers in {data_dir}; run `tailor import` (or use --facade fake)")
                return 1
        token = create_key(Settings(data_dir=data_dir), "support", "load-benchmark")
        crm_token = create_key(Settings(data_dir=data_dir), "crm", "load-benchmark") if args.refit else None
        env = {"TAILOR_API_RATE_PER_S": "1000000", "TAILOR_API_RATE_BURST": "1000000", "TAILOR_NOW": NOW}
        try:
            with ServerProcess(data_dir, env, facade=args.facade) as proc:
                print(f"server {proc.base_url} facade={args.facade} data={data_dir}")
                auth = {"Authorization": f"Bearer {token}"}
                crm = {"Authorization": f"Bearer {crm_token}"} if crm_token else None
                return asyncio.run(bench(proc.base_url, auth, customers, args, crm))
        finally:
            # The key existed only for this run: leave no live credential behind in the user's ops.db.
            ops = Ops(Settings(data_dir=data_dir).ops_path)
            try:
                for made in (token, crm_token):
                    if made:
                        ops.revoke_key(made.split("_", 2)[1])
            finally:
                ops.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
