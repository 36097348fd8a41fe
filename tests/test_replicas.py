"""Two ``tailor serve`` replicas on one PostgreSQL database (``TAILOR_DATABASE_URL``), as real processes on
127.0.0.1 behind no balancer but the test's own round robin.

The database holds what must be shared: the customer store (the scripted facade's), and the ops tables:
jobs and their items (claimed with leases), idempotency keys, API keys and forgotten ids' tombstones. The
scripted facade's log of written emails (``emails.log``, in the data dir both replicas are given) counts
every email whichever replica wrote it. A shared Qdrant by URL is what replicas on several machines need
beside it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tailor.app.http import create_key
from tailor.app.ops import Ops
from tailor.core.settings import Settings
from tailor.data.store import Store
from tests.postgres import PostgresCluster
from tests.server import ServerProcess, WorkerProcess, seed_store
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def _wait(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    wait_until(predicate, timeout, every=0.2)


def _emails(proc: ServerProcess) -> list[str]:
    path = proc.data_dir / "emails.log"
    return path.read_text().split() if path.exists() else []


@pytest.fixture
def replicas(pg_cluster: PostgresCluster, tmp_path: Path) -> Iterator[dict[str, Any]]:
    url = pg_cluster.database(f"replicas_{tmp_path.name[-12:].lower().replace('-', '_')}")
    data_dir = tmp_path / "data"
    ids = seed_store(data_dir, n_customers=24, database_url=url)
    env = {"TAILOR_DATABASE_URL": url, "TAILOR_TEST_EMAIL_DELAY": "0.15", "TAILOR_JOB_CONCURRENCY": "2"}
    procs = [ServerProcess(data_dir, env), ServerProcess(data_dir, env)]
    # The keys live in the shared database: made once, good on both.
    settings = Settings(data_dir=data_dir, database_url=url)
    crm = {"Authorization": f"Bearer {create_key(settings, 'crm')}"}
    for proc in procs:
        proc.start()
    try:
        yield {"url": url, "procs": procs, "ids": ids, "crm": crm}
    finally:
        for proc in procs:
            proc.stop()


def test_one_key_replayed_twenty_times_across_two_replicas_is_one_job_and_one_email(
    replicas: dict[str, Any],
) -> None:
    a, b = replicas["procs"]
    crm, cid = replicas["crm"], replicas["ids"][3]
    body = {"customer_id": cid, "trigger": {"kind": "win_back", "campaign_id": "w1"}}
    headers = {**crm, "Idempotency-Key": f"replay-{cid}"}

    def send(n: int) -> httpx.Response:
        with httpx.Client(base_url=(a, b)[n % 2].base_url, timeout=30) as client:
            return client.post("/v1/triggers/email", headers=headers, json=body)

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(send, range(20)))
    assert {r.status_code for r in responses} == {202}, [r.text for r in responses if r.status_code != 202]
    assert len({r.json()["job_id"] for r in responses}) == 1
    assert [r.headers["Idempotent-Replayed"] for r in responses].count("false") == 1
    job_id = responses[0].json()["job_id"]
    with httpx.Client(base_url=b.base_url, timeout=30) as client:
        _wait(lambda: client.get(f"/v1/jobs/{job_id}", headers=crm).json()["status"] == "done")
        rows = client.get(f"/v1/jobs/{job_id}/results", headers=crm).text.splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["customer_id"] == cid
    assert _emails(a).count(cid) == 1, "one email, written by one replica"


def test_a_replica_killed_mid_campaign_leaves_the_rest_to_the_other(replicas: dict[str, Any]) -> None:
    a, b = replicas["procs"]
    crm, ids = replicas["crm"], replicas["ids"]
    campaign = {"audience": {"customer_ids": ids}, "trigger": {"kind": "campaign", "campaign_id": "x"}}
    with httpx.Client(base_url=a.base_url, timeout=30) as client:
        r = client.post("/v1/campaigns", headers={**crm, "Idempotency-Key": "c1"}, json=campaign)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        _wait(lambda: client.get(f"/v1/jobs/{job_id}", headers=crm).json()["done"] >= 4)
    a.kill()
    ops = Ops(replicas["url"])
    try:
        at_kill = ops.get_job(job_id)
        assert at_kill.status != "done" and at_kill.counts["pending"] > 0, "the kill really was mid-campaign"
    finally:
        ops.close()
    with httpx.Client(base_url=b.base_url, timeout=30) as client:
        _wait(lambda: client.get(f"/v1/jobs/{job_id}", headers=crm).json()["status"] == "done", timeout=90)
        job = client.get(f"/v1/jobs/{job_id}", headers=crm).json()
        rows = [
            json.loads(x) for x in client.get(f"/v1/jobs/{job_id}/results", headers=crm).text.splitlines()
        ]
    assert (job["done"], job["refused"], job["failed"]) == (23, 1, 0)
    assert sorted(r["customer_id"] for r in rows) == sorted(ids), "every item has one result"
    written = _emails(a)
    opted_out = {ids[1]}
    assert set(written) == set(ids) - opted_out, "no email lost"
    # Written twice at most: the emails under way on the killed replica (its workers), never delivered.
    assert len(written) - len(set(written)) <= 2
    both = {r["customer_id"] for r in rows}
    assert both == set(ids)
    _one_contact_each(replicas["url"], set(ids) - opted_out, opted_out)


def _holds_items(url: str, worker: ServerProcess) -> bool:
    """Whether ``worker``'s process holds a lease on a pending job item (its name is host:pid:start)."""
    assert worker.proc is not None
    ops = Ops(url)
    try:
        rows = ops.db.query("SELECT worker FROM job_items WHERE status='pending' AND worker IS NOT NULL")
    finally:
        ops.close()
    return any(f":{worker.proc.pid}:" in str(row[0]) for row in rows)


def _one_contact_each(url: str, emailed: set[str], not_emailed: set[str]) -> None:
    """The shared store's contact log counts each sent email once, whichever replica or worker sent it and
    whatever was killed on the way: the frequency cap reads it."""
    store = Store(url)
    try:
        _wait(lambda: all(store.contacts(cid) for cid in emailed), timeout=30)
        assert {cid: len(store.contacts(cid)) for cid in emailed} == dict.fromkeys(emailed, 1)
        assert not any(store.contacts(cid) for cid in not_emailed)
    finally:
        store.close()


def test_a_forget_sent_to_one_replica_holds_on_the_other(replicas: dict[str, Any]) -> None:
    a, b = replicas["procs"]
    crm, cid = replicas["crm"], replicas["ids"][5]
    with httpx.Client(base_url=a.base_url, timeout=30) as client:
        assert client.delete(f"/v1/customers/{cid}", headers=crm).status_code == 200
    with httpx.Client(base_url=b.base_url, timeout=30) as client:
        r = client.post(
            "/v1/triggers/email",
            headers={**crm, "Idempotency-Key": "after-forget"},
            json={"customer_id": cid, "trigger": {"kind": "browse"}},
        )
        assert r.status_code == 410 and r.json()["error"]["code"] == "forgotten", r.text
        campaign = {"audience": {"customer_ids": [cid, replicas["ids"][6]]}, "trigger": {"kind": "campaign"}}
        r = client.post("/v1/campaigns", headers={**crm, "Idempotency-Key": "c-after"}, json=campaign)
        assert r.status_code == 410 and cid in r.text, r.text


def test_workers_run_what_an_api_only_replica_queues_and_one_killed_leaves_the_rest_to_the_other(
    pg_cluster: PostgresCluster, tmp_path: Path
) -> None:
    url = pg_cluster.database(f"workers_{tmp_path.name[-12:].lower().replace('-', '_')}")
    data_dir = tmp_path / "data"
    ids = seed_store(data_dir, n_customers=24, database_url=url)
    env = {"TAILOR_DATABASE_URL": url, "TAILOR_TEST_EMAIL_DELAY": "0.4", "TAILOR_JOB_CONCURRENCY": "2"}
    api = ServerProcess(data_dir, {**env, "TAILOR_SERVE_JOBS": "false"})
    workers = [WorkerProcess(data_dir, env), WorkerProcess(data_dir, env)]
    crm = {"Authorization": f"Bearer {create_key(Settings(data_dir=data_dir, database_url=url), 'crm')}"}
    campaign = {"audience": {"customer_ids": ids}, "trigger": {"kind": "campaign", "campaign_id": "w"}}
    try:
        api.start()
        with httpx.Client(base_url=api.base_url, timeout=30) as client:
            r = client.post("/v1/campaigns", headers={**crm, "Idempotency-Key": "w1"}, json=campaign)
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            # The replica only queues: with no worker running, nothing moves.
            time.sleep(2.0)
            queued = client.get(f"/v1/jobs/{job_id}", headers=crm).json()
            assert queued["status"] == "queued" and queued["done"] == 0, queued
            assert not _emails(api)
            with ThreadPoolExecutor(max_workers=2) as pool:  # together: neither has the job to itself
                list(pool.map(lambda w: w.start(), workers))
            _wait(lambda: client.get(f"/v1/jobs/{job_id}", headers=crm).json()["done"] >= 4)
            # The worker about to be killed holds items of the campaign: the kill takes work from it.
            _wait(lambda: _holds_items(url, workers[0]), timeout=10)
            workers[0].kill()
            assert client.get(f"/v1/jobs/{job_id}", headers=crm).json()["status"] != "done"
            _wait(
                lambda: client.get(f"/v1/jobs/{job_id}", headers=crm).json()["status"] == "done", timeout=90
            )
            job = client.get(f"/v1/jobs/{job_id}", headers=crm).json()
            rows = [
                json.loads(x) for x in client.get(f"/v1/jobs/{job_id}/results", headers=crm).text.splitlines()
            ]
    finally:
        for proc in (*workers, api):
            proc.stop()
    assert (job["done"], job["refused"], job["failed"]) == (23, 1, 0)
    assert sorted(r["customer_id"] for r in rows) == sorted(ids), "every item has one result"
    written = _emails(api)
    assert set(written) == set(ids) - {ids[1]}, "no email lost"
    # Written twice at most: the emails under way on the killed worker (its two threads), never delivered.
    assert len(written) - len(set(written)) <= 2
    assert "taking jobs" in workers[1].log()
    _one_contact_each(url, set(ids) - {ids[1]}, {ids[1]})
