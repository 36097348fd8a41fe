"""A hanging model and the job queue: how long a webhook queued behind a campaign waits.

The model endpoint is an OpenAI-compatible address on 127.0.0.1 that accepts connections and never
answers (it closes by itself after ``--max-s``). A 4-customer campaign is queued, then a webhook email
for a fifth customer; the real service facade (store, ranker, agent graph, the OpenAI writer with
``llm_unavailable=fallback``) runs them through ``tailor.app.jobs.JobRunner``. Printed per mode: how long the
webhook waited before its item started, when it finished, and when the campaign finished.

Modes, measured in the same run:
- ``serial, no budget``: one item at a time and no time budget, as the runner was before issue 25: each
  item waits the writer's timeout for each try.
- ``serial, budget``: one item at a time, each under ``TAILOR_JOB_TIME_BUDGET_S``.
- ``concurrent``: ``TAILOR_JOB_CONCURRENCY`` workers (4: the campaign takes them all, so the webhook
  waits for the first one free), and 8 (a worker is free at once).

Target (issue 25): a hanging model delays a webhook queued behind a campaign by at most one time budget.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/slow_model_jobs.py [--timeout-s 2] [--budget-s 2.5]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from retrieval.recommender import HybridRecommender  # noqa: E402
from tailor.app.jobs import JobRunner  # noqa: E402
from tailor.app.ops import Ops  # noqa: E402
from tailor.app.service import Tailor  # noqa: E402
from tailor.core.settings import Settings  # noqa: E402
from tests.server import seed_store  # noqa: E402

NOW = "2011-12-10T10:00:00+00:00"


class HangingEndpoint:
    """Accepts every connection and reads what is sent, never answering; closes itself after ``max_s``."""

    def __init__(self, max_s: float) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.deadline = time.monotonic() + max_s
        self.accepted = 0
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while time.monotonic() < self.deadline:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            self.accepted += 1
            self._held.append(conn)  # never read to the end, never answered
        self.close()

    def close(self) -> None:
        self.deadline = 0.0
        for conn in self._held:
            conn.close()
        self._held.clear()
        self.sock.close()


class TimedTailor(Tailor):
    """The real facade, noting when each customer's email starts."""

    started: dict[str, float]

    def email(self, customer_id: str, trigger: Any = "campaign", **kw: Any) -> Any:
        self.started.setdefault(customer_id, time.monotonic())
        return super().email(customer_id, trigger, **kw)


def run_mode(
    data: Path, url: str, *, concurrency: int, budget_s: float, timeout_s: float
) -> dict[str, float]:
    settings = Settings(
        data_dir=data,
        now=NOW,
        writer="openai",
        llm_base_url=url,
        llm_model="m",
        llm_timeout_s=timeout_s,
        llm_max_retries=1,
        llm_unavailable="fallback",
        frequency_cap_days=0,
        job_concurrency=concurrency,
        job_time_budget_s=budget_s,
    )
    (data / "ops.db").unlink(missing_ok=True)
    with TimedTailor(settings) as tailor:
        tailor.started = {}
        # No text vectors: this measures the queue, not the embedding model's load.
        tailor.recommender = HybridRecommender.build(tailor.store, settings)
        ops = Ops(data / "ops.db")
        runner = JobRunner(tailor, ops, settings)
        runner.start()
        try:
            t0 = time.monotonic()
            campaign = ops.create_job(
                "campaign", ["100", "102", "103", "104"], {"trigger": {"kind": "campaign"}}
            )
            runner.wake()
            time.sleep(0.3)  # the webhook arrives just after the campaign started
            queued = time.monotonic()
            webhook = ops.create_job("email", ["105"], {"trigger": {"kind": "browse"}})
            runner.wake()
            done: dict[str, float] = {}
            while len(done) < 2:
                for name, job in (("webhook", webhook.job_id), ("campaign", campaign.job_id)):
                    if name not in done and ops.get_job(job).status == "done":
                        done[name] = time.monotonic()
                time.sleep(0.02)
            items = ops.job_items(webhook.job_id) + ops.job_items(campaign.job_id)
            assert all(i.status == "done" for i in items), [
                (i.customer_id, i.status, i.reason) for i in items
            ]
            fallbacks = [i.result["email"]["writer"] for i in items if i.result]
        finally:
            runner.stop()
            ops.close()
    return {
        "webhook_wait_s": tailor.started["105"] - queued,
        "webhook_done_s": done["webhook"] - queued,
        "campaign_done_s": done["campaign"] - t0,
        "template_written": float(sum(w == "template" for w in fallbacks)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--timeout-s", type=float, default=2.0, help="TAILOR_LLM_TIMEOUT_S (one retry)")
    parser.add_argument("--budget-s", type=float, default=2.5, help="TAILOR_JOB_TIME_BUDGET_S")
    parser.add_argument("--max-s", type=float, default=90.0, help="the endpoint closes itself after this")
    args = parser.parse_args()
    endpoint = HangingEndpoint(args.max_s)
    modes = [
        ("serial, no budget (before)", 1, 1000.0),
        ("serial, budget", 1, args.budget_s),
        ("concurrent 4, budget", 4, args.budget_s),
        ("concurrent 8, budget", 8, args.budget_s),
    ]
    results: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            seed_store(data, n_customers=6)
            print(
                f"hanging endpoint {endpoint.url}; llm timeout {args.timeout_s:g} s, 1 retry; "
                f"budget {args.budget_s:g} s; campaign of 4, then a webhook",
                flush=True,
            )
            header = ("webhook waits", 14), ("webhook done", 13), ("campaign done", 14), ("template", 9)
            print(f"{'mode':28} " + " ".join(f"{h:>{w}}" for h, w in header))
            for name, concurrency, budget_s in modes:
                r = run_mode(
                    data, endpoint.url, concurrency=concurrency, budget_s=budget_s, timeout_s=args.timeout_s
                )
                results[name] = r
                print(
                    f"{name:28} {r['webhook_wait_s']:13.2f}s {r['webhook_done_s']:12.2f}s "
                    f"{r['campaign_done_s']:13.2f}s {r['template_written']:8.0f}/5",
                    flush=True,
                )
    finally:
        endpoint.close()
    before = results["serial, no budget (before)"]["webhook_wait_s"]
    after = results["concurrent 4, budget"]["webhook_wait_s"]
    print(
        f"webhook wait behind the campaign: {before:.2f} s before, {after:.2f} s with 4 workers "
        f"({before / max(after, 1e-3):.1f}x less); target <= one budget ({args.budget_s:g} s): "
        f"{'met' if after <= args.budget_s else 'NOT met'}"
    )
    print(f"endpoint connections accepted (and never answered): {endpoint.accepted}")
    return 0 if after <= args.budget_s else 1


if __name__ == "__main__":
    raise SystemExit(main())
