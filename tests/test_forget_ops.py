"""Forgetting reaches the operational database (issue 25, finding 7), through the real server: no copy of
a forgotten customer's id is left in either database file or its write-ahead log, the rows that must stay
(job items, the audit row saying they were forgotten) hold an opaque tombstone, and a job naming the id
afterwards is refused with a typed error, storing nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tailor.app.http import create_key
from tailor.app.ops import Ops
from tailor.core.settings import Settings
from tests.server import ServerProcess, seed_store

pytestmark = pytest.mark.slow

GONE = "zq-forget-me-4242"
TICKET = "zq-my-parcel-never-came-9917"
AT = "2011-12-01T10:00:00+00:00"


def _raw(data_dir: Path) -> dict[str, bytes]:
    out = {}
    for name in ("ops.db", "ops.db-wal", "tailor.db", "tailor.db-wal"):
        path = data_dir / name
        out[name] = path.read_bytes() if path.exists() else b""
    return out


def _wait_done(client: httpx.Client, crm: dict[str, str], job_id: str) -> None:
    deadline = time.monotonic() + 30
    while client.get(f"/v1/jobs/{job_id}", headers=crm).json()["status"] != "done":
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.1)


def test_a_forgotten_customer_leaves_no_id_and_is_refused_afterwards(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    seed_store(data_dir, n_customers=3)
    crm = {"Authorization": f"Bearer {create_key(Settings(data_dir=data_dir), 'crm', 'crm')}"}
    with ServerProcess(data_dir) as proc, httpx.Client(base_url=proc.base_url, timeout=30) as client:
        person = {
            "id": GONE,
            "first_name": "Zed",
            "email": "zq-zed@example.test",
            "country": "United Kingdom",
            "consent": {"marketing_email": True, "personalization": True},
        }
        ticket = {"customer_id": GONE, "kind": "support_ticket", "text": TICKET, "timestamp": AT}
        assert client.post(
            "/v1/events", headers=crm, json={"customers": [person], "events": [ticket]}
        ).is_success
        email = client.post(
            "/v1/triggers/email",
            headers={**crm, "Idempotency-Key": f"welcome-{GONE}"},
            json={"customer_id": GONE, "trigger": {"kind": "browse"}},
        ).json()["job_id"]
        campaign = client.post(
            "/v1/campaigns", headers=crm, json={"audience": {"customer_ids": ["100", GONE]}}
        ).json()["job_id"]
        for job in (email, campaign):
            _wait_done(client, crm, job)
        assert client.post(
            "/v1/feedback", headers=crm, json={"customer_id": GONE, "signal": "click"}
        ).is_success
        assert any(GONE.encode() in raw for raw in _raw(data_dir).values()), "the id was there to forget"

        deleted = client.delete(f"/v1/customers/{GONE}", headers=crm)
        assert deleted.status_code == 200, deleted.text

        for name, raw in _raw(data_dir).items():
            for trace in (GONE, TICKET, "zq-zed@example.test"):
                assert trace.encode() not in raw, f"{trace} survives in {name}"
        # What stays names the tombstone: the job items and their results' rows.
        results = [
            json.loads(x) for x in client.get(f"/v1/jobs/{campaign}/results", headers=crm).text.splitlines()
        ]
        [theirs] = [r for r in results if r["customer_id"] != "100"]
        assert theirs["customer_id"].startswith("forgotten:") and theirs["result"] is None

        # A job naming them now is refused, typed, and stores nothing.
        later = client.post(
            "/v1/campaigns", headers=crm, json={"audience": {"customer_ids": ["100", "101", GONE]}}
        )
        assert later.status_code == 410, later.text
        error = later.json()["error"]
        assert error["code"] == "forgotten" and error["field"] == "audience.customer_ids.2"
        again = client.post(
            "/v1/triggers/email",
            headers={**crm, "Idempotency-Key": f"welcome-{GONE}"},
            json={"customer_id": GONE, "trigger": {"kind": "browse"}},
        )
        assert again.status_code == 410 and again.json()["error"]["field"] == "customer_id"
        unknown = client.post(
            "/v1/triggers/email",
            headers={**crm, "Idempotency-Key": "x"},
            json={"customer_id": "never-was", "trigger": {"kind": "browse"}},
        )
        assert unknown.status_code == 404, "an id never seen is unknown, not forgotten"
    ops = Ops(data_dir / "ops.db")
    try:
        ops.checkpoint()
    finally:
        ops.close()
    assert not any(GONE.encode() in raw for raw in _raw(data_dir).values())
