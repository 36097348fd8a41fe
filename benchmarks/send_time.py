"""Send-time optimisation on real stores: the hour chosen for each customer against the hours they bought in.

For each store, a best-hour campaign (``"send_time": "best_hour"``) goes to every customer with marketing
consent, and the job runner schedules each item (``JobRunner._schedule``, the code a worker runs), no email
written. Printed: a sample of customers with the local hours they bought in and the hour chosen, where each
hour came from (their own events, their country's, the default), how often the chosen hour is the one they
bought in most, the share of sends that land inside the customer's quiet hours (must be 0), and the time a
schedule takes.

- ``uci``: the demo store (UCI Online Retail, the demo's clock 2011-12-10 10:00 UTC);
- ``ta-feng``: Ta-Feng's busiest N customers (dates only: purchases are not read for hours).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/send_time.py [--stores uci,ta-feng] [--customers 2000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tailor.app.jobs import JobRunner, parse_scheduled  # noqa: E402
from tailor.app.ops import Ops  # noqa: E402
from tailor.app.service import Tailor  # noqa: E402
from tailor.core.models import EventKind  # noqa: E402
from tailor.core.send_time import occasions  # noqa: E402
from tailor.core.settings import Settings  # noqa: E402

TAFENG = REPO.parent / "shared" / "datasets" / "ta-feng" / "ta_feng.csv.zip"
CLOCKS = {"uci": "2011-12-10T10:00:00+00:00", "ta-feng": "2001-03-01T02:00:00+00:00"}


def run(store: str, customers: int, sample: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), now=CLOCKS[store])
        with Tailor(settings) as tailor:
            t0 = time.perf_counter()
            if store == "uci":
                tailor.import_uci(customers_limit=customers)
            else:
                tailor.import_tafeng(TAFENG, customers_limit=customers)
            imported = time.perf_counter() - t0
            people = {c.id: c for c in tailor.store.customers() if c.consent.marketing_email}
            ops = Ops(settings.ops_path)
            try:
                job = ops.create_job(
                    "campaign", sorted(people), {"trigger": {"kind": "campaign"}, "send_time": "best_hour"}
                ).job_id
                runner = JobRunner(tailor, ops, settings)
                now = tailor.now()
                at_once: list[str] = []
                t0 = time.perf_counter()
                while (item := ops.next_item()) is not None:
                    if not runner._schedule(item):
                        at_once.append(item.customer_id)
                        ops.finish_item(item.job_id, item.customer_id, "done", {}, None)
                per_item_ms = 1000 * (time.perf_counter() - t0) / max(len(people), 1)
                scheduled = {
                    i.customer_id: held
                    for i in ops.job_items(job, final_only=False)
                    if (held := parse_scheduled(i.reason)) is not None
                }
            finally:
                ops.close()
            _report(store, tailor, people, scheduled, at_once, now, imported, per_item_ms, sample)


def _report(  # type: ignore[no-untyped-def]
    store, tailor, people, scheduled, at_once, now: datetime, imported: float, per_item_ms: float, sample: int
) -> None:
    sources: Counter[str] = Counter()
    in_quiet = modal = with_own = 0
    rows = []
    for cid, customer in people.items():
        zone = ZoneInfo(customer.timezone)
        if cid in scheduled:
            at, source = scheduled[cid]
            at = at.astimezone(zone)
        else:
            at, source = now.astimezone(zone), "now"
        sources[source] += 1
        quiet = customer.quiet_hours
        in_quiet += bool(quiet is not None and quiet.contains(at.time()))
        bought = Counter(
            moment.astimezone(zone).hour
            for moment in occasions(
                tailor.store.events(cid, kinds=[EventKind.PURCHASE], until=now, limit=500)
            )
        )
        if source == "own" and bought:
            with_own += 1
            modal += at.hour == bought.most_common(1)[0][0]
        if len(rows) < sample and bought:
            top = ", ".join(f"{h:02d}h x{n}" for h, n in bought.most_common(3))
            q = f"{quiet.start:%H:%M}-{quiet.end:%H:%M}" if quiet is not None else "none"
            rows.append(
                f"  {cid:>10}  {customer.timezone:<16} {top:<28} {at.hour:02d}:00 ({source}); quiet {q}"
            )
    n = len(people)
    print(f"\n{store}: {n} customers with marketing consent (import {imported:.0f} s)")
    print(f"  {'customer':>10}  {'zone':<16} {'orders at (local), top 3':<28} chosen")
    print("\n".join(rows))
    print("  hours from: " + ", ".join(f"{k} {v} ({v / n:.0%})" for k, v in sources.most_common()))
    if with_own:
        print(f"  chosen = the hour of most of their orders: {modal} of {with_own} with an hour of their own")
    share = in_quiet / max(n, 1)
    print(f"  sends inside quiet hours: {in_quiet} of {n} ({share:.1%}); sent at once: {len(at_once)}")
    print(f"  scheduling: {per_item_ms:.2f} ms a customer (claim, read, choose, schedule)")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="uci,ta-feng")
    parser.add_argument("--customers", type=int, default=2000, help="the N busiest customers of each store")
    parser.add_argument("--sample", type=int, default=12)
    args = parser.parse_args()
    for store in (s.strip() for s in args.stores.split(",") if s.strip()):
        run(store, args.customers, args.sample)


if __name__ == "__main__":
    main()
