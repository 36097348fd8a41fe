"""The console's pages on the demo store: each page's time (target p95 <= 100 ms), beside a peer measured in
the same run: the JSON API call that returns the same data, so the ratio is what the page itself costs
(rendering, the timeline, the session and CSRF checks).

A real ``tailor serve`` (the real facade over ``make demo``'s data dir) on 127.0.0.1; one client, one
request at a time, so each time is the server's own work plus loopback. Customers are a seeded sample of
those with personalization consent and purchases; each page is asked for once per customer after a warm
pass. A campaign's page is timed at its first view and at the views after it; its preview (five emails
written, none sent) is started as the campaign is made, and its own time is printed beside them.

Two keys (support, crm) are created in the data dir's ops database for the run and revoked after it.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/console_pages.py [--data-dir var] [--customers 30]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tailor.app.http import create_key  # noqa: E402
from tailor.app.ops import Ops  # noqa: E402
from tailor.core.models import EventKind  # noqa: E402
from tailor.core.settings import Settings  # noqa: E402
from tailor.data.store import Store  # noqa: E402
from tests.server import ServerProcess  # noqa: E402

NOW = "2011-12-10T10:00:00+00:00"
QUESTIONS = (
    "Where is my last order?",
    "I want to return the mug I bought, it arrived chipped.",
    "What else would go with what I bought last time?",
)


def _p(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] if xs else float("nan")


def _timed(client: httpx.Client, method: str, path: str, **kw: Any) -> float:
    started = time.perf_counter()
    response = client.request(method, path, **kw)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code >= 400:
        raise SystemExit(f"{response.request.method} {response.request.url.path}: {response.status_code}")
    return elapsed


def _login(client: httpx.Client, token: str) -> str:
    """Log in as a browser does; the session's CSRF token, read from the page."""
    client.cookies.clear()
    form = client.get("/console/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf is not None
    r = client.post("/console/login", data={"csrf": csrf.group(1), "key": token, "next": "/console"})
    assert r.status_code == 303, r.text
    page = client.get("/console").text
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=Path("var"), help="an indexed demo store")
    parser.add_argument("--customers", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    data_dir = args.data_dir.resolve()
    store = Store(data_dir / "tailor.db")
    try:
        buyers = set(store.customers_with(EventKind.PURCHASE))
        pool = [c.id for c in store.customers() if c.consent.personalization and c.id in buyers]
    finally:
        store.close()
    if len(pool) < args.customers:
        raise SystemExit(f"{data_dir}: too few customers ({len(pool)}): run `make demo`")
    customers = random.Random(args.seed).sample(sorted(pool), args.customers)
    settings = Settings(data_dir=data_dir)
    tokens = {
        "support": create_key(settings, "support", "bench"),
        "crm": create_key(settings, "crm", "bench"),
    }
    # No rate limit in the way of one client's sequence of requests.
    env = {"TAILOR_NOW": NOW, "TAILOR_API_RATE_PER_S": "10000", "TAILOR_API_RATE_BURST": "10000"}
    times: dict[str, list[float]] = {}

    def add(name: str, ms: float) -> None:
        times.setdefault(name, []).append(ms)

    try:
        with ServerProcess(data_dir, env, facade="real", start_timeout=300) as proc:
            page = httpx.Client(base_url=proc.base_url, timeout=120)
            api = httpx.Client(base_url=proc.base_url, timeout=120)
            # A customer's browser: no session, no key.
            bare = httpx.Client(base_url=proc.base_url, timeout=120)
            deadline = time.monotonic() + 300
            while page.get("/readyz").status_code != 200:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not get ready in 300 s")
                time.sleep(1)
            support = {"Authorization": f"Bearer {tokens['support']}"}
            crm = {"Authorization": f"Bearer {tokens['crm']}"}
            csrf = _login(page, tokens["support"])
            for warm, cid in [(True, c) for c in customers[:5]] + [(False, c) for c in customers]:
                recs = api.get(
                    f"/v1/customers/{cid}/recommendations", headers=support, params={"k": 5}
                ).json()
                item = recs["recommendations"][0]["item"]["id"]
                question = QUESTIONS[customers.index(cid) % len(QUESTIONS)]
                runs: dict[str, tuple[httpx.Client, str, str, dict[str, Any]]] = {
                    "customer page": (page, "GET", f"/console/customers/{cid}", {}),
                    "  peer: GET recommendations (k=5)": (
                        api, "GET", f"/v1/customers/{cid}/recommendations",
                        {"headers": support, "params": {"k": 5}},
                    ),
                    "explanation page": (page, "GET", f"/console/customers/{cid}", {"params": {"why": item}}),
                    "  peer: GET why": (
                        api, "GET", f"/v1/customers/{cid}/recommendations/{item}/why", {"headers": support}
                    ),
                    "support answer page": (
                        page, "POST", f"/console/customers/{cid}/ask",
                        {"data": {"csrf": csrf, "question": question}},
                    ),
                    "  peer: POST support/suggestions": (
                        api, "POST", "/v1/support/suggestions",
                        {"headers": support, "json": {"customer_id": cid, "question": question}},
                    ),
                }  # fmt: skip
                for name, (client, method, path, kw) in runs.items():
                    ms = _timed(client, method, path, **kw)
                    if not warm:
                        add(name, ms)
            link_page = page.get(f"/console/customers/{customers[0]}", params={"why": item}).text
            link = re.search(r'id="why-link" type="text" readonly value="([^"]+)"', link_page)
            assert link is not None
            why_path = httpx.URL(link.group(1)).path
            for n in range(args.customers):
                ms = _timed(bare, "GET", why_path)
                if n >= 3:
                    add("customer's why-link page", ms)

            csrf = _login(page, tokens["crm"])
            jobs = []
            for n in range(10):
                # As a marketer does: make a campaign, and open it (the POST answers with its page's address).
                wanted = customers[n * 3 : n * 3 + 3]
                form = {
                    "csrf": csrf,
                    "customer_ids": " ".join(wanted),
                    "kind": "campaign",
                    "approval": "required",
                }
                made_at = time.perf_counter()
                r = page.post("/console/campaigns", data=form, follow_redirects=False)
                assert r.status_code == 303, r.text
                create = (time.perf_counter() - made_at) * 1000
                job = r.headers["location"].rsplit("/", 1)[1]
                jobs.append(job)
                first = _timed(page, "GET", f"/console/campaigns/{job}")
                written = api.get(f"/v1/jobs/{job}/preview", headers=crm).json()["seconds"] * 1000
                if n >= 2:
                    add("new campaign (POST, answered with a redirect)", create)
                    add("campaign page, first view (waits for its preview)", first)
                    add("  (the preview's five emails, written from the POST on)", written)
                for _ in range(4):
                    add("campaign page, later views", _timed(page, "GET", f"/console/campaigns/{job}"))
                add(
                    "  peer: GET jobs/{id}/preview (kept)",
                    _timed(api, "GET", f"/v1/jobs/{job}/preview", headers=crm),
                )
            others: dict[str, tuple[httpx.Client, str, dict[str, Any]]] = {
                "campaigns list": (page, "/console/campaigns", {}),
                "model and quality page": (page, "/console/model", {}),
                "  peer: GET model": (api, "/v1/model", {"headers": crm}),
                "login page": (bare, "/console/login", {}),
            }
            for n in range(args.customers):
                for name, (client, path, kw) in others.items():
                    ms = _timed(client, "GET", path, **kw)
                    if n >= 3:
                        add(name, ms)
            for job in jobs:
                page.post(f"/console/campaigns/{job}/cancel", data={"csrf": csrf})
    finally:
        ops = Ops(settings.ops_database)
        try:
            for token in tokens.values():
                ops.revoke_key(token.split("_")[1])
        finally:
            ops.close()

    print(f"console pages on {data_dir} ({args.customers} customers, seed {args.seed}); ms over loopback")
    print(f"{'page':52} {'n':>4} {'p50':>8} {'p95':>8} {'max':>8}  vs peer p95")
    page_p95 = None
    for name, xs in times.items():
        p95 = _p(xs, 0.95)
        ratio = ""
        if name.startswith("  peer") and page_p95 is not None:
            ratio = f"page x{page_p95 / p95:.2f}"
        print(f"{name:52} {len(xs):4d} {statistics.median(xs):8.1f} {p95:8.1f} {max(xs):8.1f}  {ratio}")
        if not name.startswith("  "):
            page_p95 = p95
    worst = max((_p(xs, 0.95), n) for n, xs in times.items() if not n.startswith("  "))
    verdict = "meets" if worst[0] <= 100 else "misses"
    print(f"slowest page p95: {worst[0]:.1f} ms ({worst[1].strip()}): {verdict} the 100 ms target")


if __name__ == "__main__":
    main()
