"""Replicas on PostgreSQL against one process on SQLite: the highest rate of recommendations each holds at
p95 < 200 ms, over loopback, measured one after another in the same run.

Three set-ups, each a real ``tailor serve`` (the real facade over an imported store: ``make demo``):

1. one process, its customer store and ops database in the data dir's SQLite files (the default);
2. one replica, its customer store and ops tables on PostgreSQL (``TAILOR_DATABASE_URL``; a throwaway
   cluster, ``tests/postgres.py``, on this machine; the store copied there as ``tailor copy-store`` does);
3. two replicas on that PostgreSQL database, the load sent round robin (what a balancer would do).

Recommendations need no vector index (the fitted ranker is loaded from the data folder, and each answer
reads the customer's history from the store), so both replicas answer them from one data folder. Embedded
Qdrant opens its folder for one process: the second replica's searches and explanations need Qdrant by URL
(``TAILOR_QDRANT_URL``), as replicas on several machines do.

The load is open-loop (``benchmarks/load.py``): requests leave at fixed times whether or not answers came
back. Each set-up ramps by doubling, then bisects; each prints the CPU seconds its server processes and
this load generator used, because on 2 cores the generator takes a share of what the replicas could use,
and that is what caps the gain of a second replica here.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/replicas.py [--data-dir var] [--step-seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from load import NOW, Phase, highest_held, run_phase  # noqa: E402

from tailor.app.http import create_key  # noqa: E402
from tailor.app.ops import Ops  # noqa: E402
from tailor.core.settings import Settings  # noqa: E402
from tailor.data.store import Store  # noqa: E402
from tests.postgres import postgres_cluster  # noqa: E402
from tests.server import ServerProcess  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a live process (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_busy_seconds() -> float:
    """CPU seconds every core of this machine spent on anything but idling (``/proc/stat``): the servers,
    PostgreSQL, the load generator and whatever else runs."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = (
        int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    )
    return (user + nice + system + irq + softirq + steal) / TICKS


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(
    name: str, procs: Sequence[ServerProcess], token: str, customers: list[str], args: argparse.Namespace
) -> dict[str, float]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    clients = [httpx.AsyncClient(base_url=p.base_url, timeout=10, limits=limits) for p in procs]
    try:
        # Only customers answered 200 (those without personalization consent get 403 by design).
        paths = []
        for c in customers:
            # A long timeout: the first answer of a replica loads its ranker.
            r = await clients[0].get(f"/v1/customers/{c}/recommendations?k=3", headers=headers, timeout=120)
            if r.status_code == 200:
                paths.append(f"/v1/customers/{c}/recommendations?k=10")
        if not paths:
            raise SystemExit("no recommendations came back; is the store imported and indexed?")
        # Warm every replica: lazy loading of the ranker is not what this measures.
        await run_phase(clients, "warmup", paths[:40], 10, 4, headers)
        pids = [p.proc.pid for p in procs if p.proc is not None]
        # CPU per step, in cores: what each server, this generator and the whole machine used at that rate.
        cores: dict[float, tuple[list[float], float, float]] = {}

        async def step(rate: float) -> Phase:
            loop = asyncio.get_running_loop()
            cpu0, own0, busy0, wall0 = (
                [cpu_seconds(pid) for pid in pids],
                own_cpu_seconds(),
                machine_busy_seconds(),
                loop.time(),
            )
            phase = await run_phase(clients, "recommendations", paths, rate, args.step_seconds, headers)
            wall = loop.time() - wall0
            cores[rate] = (
                [(cpu_seconds(pid) - c) / wall for pid, c in zip(pids, cpu0, strict=True)],
                (own_cpu_seconds() - own0) / wall,
                (machine_busy_seconds() - busy0) / wall,
            )
            return phase

        print(f"\n{name}: ramp, {args.step_seconds:.0f} s per step, target p95 < {args.target_ms:.0f} ms")
        held, failed = await highest_held(step, args, args.max_requests)
        # The busiest step says what ran out: the highest rate tried, held or not.
        servers, generator, machine = cores[max(cores)]
        bracket = f"next step {failed:.0f}/s failed" if failed is not None else "ramp limit reached"
        print(
            f"{name}: held {held:.0f} req/s ({bracket}); at {max(cores):.0f}/s the servers used "
            + " + ".join(f"{c:.2f}" for c in servers)
            + f" cores, the load generator {generator:.2f}, the machine {machine:.2f} of {os.cpu_count()}"
        )
        return {
            "held": held,
            "at": max(cores),
            "server_cores": sum(servers),
            "generator_cores": generator,
            "machine_cores": machine,
        }
    finally:
        for client in clients:
            await client.aclose()


def run_setup(
    name: str,
    data_dir: Path,
    settings: Settings,
    replicas: int,
    customers: list[str],
    args: argparse.Namespace,
) -> dict[str, float]:
    env = {"TAILOR_API_RATE_PER_S": "1000000", "TAILOR_API_RATE_BURST": "1000000", "TAILOR_NOW": NOW}
    if settings.database_url:
        env["TAILOR_DATABASE_URL"] = settings.database_url
    token = create_key(settings, "support", "replica-benchmark")
    procs = [ServerProcess(data_dir, env, facade="real", start_timeout=120) for _ in range(replicas)]
    try:
        for proc in procs:
            proc.start()
        return asyncio.run(measure(name, procs, token, customers, args))
    finally:
        for proc in procs:
            proc.stop()
        # The key existed only for this run: no live credential is left in the user's ops database.
        ops = Ops(settings.ops_database)
        try:
            ops.revoke_key(token.split("_", 2)[1])
        finally:
            ops.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=REPO / "var", help="an imported, indexed store")
    parser.add_argument("--start-rate", type=float, default=20.0)
    parser.add_argument("--max-rate", type=float, default=640.0)
    parser.add_argument("--step-seconds", type=float, default=3.0)
    parser.add_argument("--max-requests", type=int, default=8000, help="per set-up")
    parser.add_argument("--target-ms", type=float, default=200.0)
    parser.add_argument("--bisect-steps", type=int, default=3)
    args = parser.parse_args()

    data_dir: Path = args.data_dir
    if not (data_dir / "tailor.db").exists():
        print(f"no store in {data_dir}; run `make demo` or `tailor import` and `tailor index` first")
        return 1
    store = Store(data_dir / "tailor.db")
    busiest = store.busiest_customers(limit=400)
    store.close()
    customers = random.Random(7).sample(busiest, min(200, len(busiest)))
    results: dict[str, dict[str, float]] = {}
    results["SQLite, 1 process"] = run_setup(
        "SQLite, 1 process", data_dir, Settings(data_dir=data_dir), 1, customers, args
    )
    with postgres_cluster() as cluster:
        url = cluster.database(f"replicas_{uuid.uuid4().hex[:10]}")
        # The same store, moved to PostgreSQL as `tailor copy-store` moves it; the ranker and the vectors
        # stay in the data dir.
        started = time.perf_counter()
        source, dest = Store(data_dir / "tailor.db"), Store(url)
        try:
            copied = source.copy_into(dest)
        finally:
            source.close()
            dest.close()
        print(f"store copied to PostgreSQL in {time.perf_counter() - started:.0f} s: {copied}")
        settings = Settings(data_dir=data_dir, database_url=url)
        for n in (1, 2):
            name = f"PostgreSQL, {n} replica{'s' if n > 1 else ''}"
            results[name] = run_setup(name, data_dir, settings, n, customers, args)
    base = results["SQLite, 1 process"]["held"] or float("nan")
    print(f"\nhighest rate held at p95 < {args.target_ms:.0f} ms (recommendations, k=10, loopback)")
    for name, r in results.items():
        print(
            f"  {name:<24} {r['held']:6.0f} req/s  x{r['held'] / base:.2f} of SQLite  "
            f"at {r['at']:.0f}/s: servers {r['server_cores']:.2f} cores, "
            f"load generator {r['generator_cores']:.2f}, machine {r['machine_cores']:.2f}"
        )
    print(f"  (this machine: {os.cpu_count()} cores, shared by servers, PostgreSQL and load generator)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
