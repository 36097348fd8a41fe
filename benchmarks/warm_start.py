"""The first requests after a restart: sent as soon as the server is alive, or once ``/readyz`` says ready.

The real server (uvicorn, the real facade over a small indexed store) is started twice in one run. First,
25 support requests (recommendations, explanations, support answers, in turn) are sent as soon as
``/healthz`` answers, which is when a client was sent traffic while ``/readyz`` did not wait for the
warm-up; then, after a restart, the same 25 once ``/readyz`` says ready. Printed: p50 / p95 of each, and
how long the warm-up held readiness back.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/warm_start.py [--requests 25]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tailor.app.http import create_key  # noqa: E402
from tailor.app.service import Tailor  # noqa: E402
from tailor.core.settings import Settings  # noqa: E402
from tests.server import ServerProcess, seed_store  # noqa: E402

NOW = "2011-12-10T10:00:00+00:00"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def first_requests(
    data: Path, key: str, ids: list[str], n: int, *, wait_ready: bool
) -> tuple[list[float], float]:
    """Latencies (s) of the first ``n`` requests, and how long after ``/healthz`` readiness came."""
    proc = ServerProcess(data, {"TAILOR_NOW": NOW}, facade="real", start_timeout=180)
    headers = {"Authorization": f"Bearer {key}"}
    with proc, httpx.Client(base_url=proc.base_url, timeout=120, headers=headers) as client:
        alive = time.perf_counter()
        if wait_ready:
            while client.get("/readyz").status_code != 200:
                time.sleep(0.05)
        ready_after = time.perf_counter() - alive
        took = []
        for k in range(n):
            cid = ids[k % len(ids)]
            start = time.perf_counter()
            if k % 3 == 0:
                r = client.get(f"/v1/customers/{cid}/recommendations", params={"k": 10})
            elif k % 3 == 1:
                r = client.get(f"/v1/customers/{cid}/recommendations/I{k % 6}/why")
            else:
                r = client.post(
                    "/v1/support/suggestions", json={"customer_id": cid, "question": "What next?"}
                )
            took.append(time.perf_counter() - start)
            assert r.status_code in (200, 404, 403), r.text + proc.log()[-3000:]
    return took, ready_after


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        ids = seed_store(data, n_customers=12)
        with Tailor.open(Settings(data_dir=data, now=NOW)) as tailor:
            tailor.index()
        key = create_key(Settings(data_dir=data), "support")
        before, _ = first_requests(data, key, ids, args.requests, wait_ready=False)
        after, held = first_requests(data, key, ids, args.requests, wait_ready=True)
    for name, took in (("as soon as alive (before)", before), ("once /readyz says ready", after)):
        # Requests go recommendation, why, support in turn: the first of each kind is the cold one.
        firsts = ", ".join(
            f"{kind} {took[n] * 1000:.0f}" for n, kind in enumerate(("recommend", "why", "support"))
        )
        print(
            f"first {len(took)} requests, {name:26}: p50 {statistics.median(took) * 1000:7.1f} ms, "
            f"p95 {pct(took, 0.95) * 1000:7.1f} ms, max {max(took) * 1000:7.1f} ms; first: {firsts} ms"
        )
    print(
        f"p95 {pct(before, 0.95) / pct(after, 0.95):.1f}x lower once ready; "
        f"readiness came {held:.1f} s after the server was alive (the warm-up)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
