"""The HTTP service over the real ``tailor.app.service.Tailor``: store, Qdrant, ranking and the agent.

A slice of UCI Online Retail (40 customers, see conftest) is imported into a fresh data dir; the server
runs in a uvicorn subprocess on 127.0.0.1 and is called over httpx.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tailor.app.http import create_key
from tailor.app.service import Tailor
from tailor.core.settings import Settings
from tests.retailers import RETAILERS, Retailer
from tests.server import ServerProcess, free_port, seed_store
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

NOW = "2011-12-10T10:00:00+00:00"


def _wait(predicate: Callable[[], bool], timeout: float = 120.0) -> None:
    wait_until(predicate, timeout)


def _email_job(client: httpx.Client, crm: dict[str, str], cid: str, kind: str, key: str) -> dict[str, Any]:
    """Trigger an email for ``cid``, wait for its job to finish, and return the job's one result row."""
    r = client.post(
        "/v1/triggers/email",
        headers={**crm, "Idempotency-Key": key},
        json={"customer_id": cid, "trigger": {"kind": kind}},
    )
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    _wait(lambda: client.get(f"/v1/jobs/{job_id}", headers=crm).json()["status"] == "done")
    row: dict[str, Any] = json.loads(client.get(f"/v1/jobs/{job_id}/results", headers=crm).text)
    return row


def _imported(data_dir: Path, *, index: bool = True, retailer: Retailer = RETAILERS["hearth"]) -> list[str]:
    """A small real store (see ``seed_store``) sold by ``retailer``, indexed as `tailor index` would; its
    customer ids."""
    ids = seed_store(data_dir, n_customers=12, domain=retailer.domain, currency=retailer.brand.currency)
    if index:
        with Tailor.open(Settings(data_dir=data_dir, now=NOW, brand_config=retailer.path)) as tailor:
            tailor.index()
    return ids


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory, retailer: Retailer) -> Iterator[dict[str, Any]]:
    """One real server per retailer configuration (``TAILOR_BRAND_CONFIG``) over a store it sells."""
    data_dir = tmp_path_factory.mktemp(f"real-{retailer.key}") / "data"
    busiest = _imported(data_dir, retailer=retailer)
    settings = Settings(data_dir=data_dir)
    crm = {"Authorization": f"Bearer {create_key(settings, 'crm')}"}
    support = {"Authorization": f"Bearer {create_key(settings, 'support')}"}
    env = {"TAILOR_NOW": NOW, "TAILOR_BRAND_CONFIG": str(retailer.path)}
    proc = ServerProcess(data_dir, env, facade="real", start_timeout=180)
    with proc, httpx.Client(base_url=proc.base_url, timeout=300) as client:
        yield {
            "client": client,
            "crm": crm,
            "support": support,
            "customers": busiest,
            "proc": proc,
            "retailer": retailer,
        }


def test_the_real_service_warms_up_before_it_says_ready(real: dict[str, Any]) -> None:
    """Readiness waits for the warm-up, which runs every request path once (the embedding model, Qdrant,
    the ranker, the graph, a recommendation, an explanation, a support answer, an email preview)."""
    client = real["client"]
    _wait(lambda: client.get("/readyz").json()["status"] != "warming")
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready", ready.text
    parts = ready.json()["warm_up"]["seconds"]
    assert set(parts) == {
        "embedder",
        "qdrant",
        "recommender",
        "graph",
        "recommend",
        "why",
        "support",
        "email",
    }


def test_real_recommendations_and_why(real: dict[str, Any]) -> None:
    client, support, cid = real["client"], real["support"], real["customers"][0]
    r = client.get(f"/v1/customers/{cid}/recommendations?k=5", headers=support)
    assert r.status_code == 200, r.text
    recs = r.json()["recommendations"]
    assert len(recs) == 5 and all(x["evidence"] for x in recs)
    item = recs[0]["item"]["id"]
    why = client.get(f"/v1/customers/{cid}/recommendations/{item}/why", headers=support)
    assert why.status_code == 200, why.text
    assert why.json()["item_id"] == item and why.json()["sentences"]


def test_real_email_trigger_runs_to_an_email_or_a_refusal(real: dict[str, Any]) -> None:
    client, crm, cid = real["client"], real["crm"], real["customers"][1]
    row = _email_job(client, crm, cid, "win_back", "real-1")
    assert row["status"] in ("done", "refused")
    if row["status"] == "done":
        assert row["result"]["email"]["customer_id"] == cid and row["result"]["email"]["products"]
    else:
        assert row["result"]["refusal"]["reason"]


def test_a_real_email_goes_out_under_the_configured_retailer(real: dict[str, Any]) -> None:
    """The service composes and checks the email with the one retailer configuration it was started with:
    its voice, footer and links pass its own rails (a custom brand once had every email refused)."""
    client, crm, retailer = real["client"], real["crm"], real["retailer"]
    cid = real["customers"][0]
    row = _email_job(client, crm, cid, "campaign", f"brand-{retailer.key}")
    assert row["status"] == "done", row
    email = row["result"]["email"]
    brand = retailer.brand
    assert brand.postal_address in email["body_text"] and brand.sign_off in email["body_text"]
    assert brand.unsubscribe_link(cid) in email["body_text"]
    assert all(p["url"].startswith(f"https://{retailer.domain}/") for p in email["products"])
    for other in RETAILERS.values():
        if other.key != retailer.key:
            assert other.brand.postal_address not in email["body_text"]
            assert other.brand.name not in email["body_text"]


def test_real_segment_events_update_the_customer_at_once(real: dict[str, Any]) -> None:
    client, crm = real["client"], real["crm"]
    call = {
        "type": "track",
        "userId": real["customers"][3],
        "event": "Order Completed",
        "messageId": "real-m1",
        "timestamp": "2011-12-09T09:00:00Z",
        "properties": {"order_id": "R1", "products": [{"product_id": "I4", "quantity": 2, "price": 6.5}]},
    }
    r = client.post("/v1/events", headers=crm, json=call)
    assert r.status_code == 200, r.text
    assert r.json()["ingested"]["events"] == 1 and r.json()["ingested"]["updated_customers"] == 1
    bad = client.post(
        "/v1/events", headers=crm, json={**call, "properties": {"products": [{"product_id": "NOPE"}]}}
    )
    assert bad.status_code == 404 and "NOPE" in bad.json()["error"]["message"]


def test_real_forget_removes_the_customer_everywhere(real: dict[str, Any]) -> None:
    client, crm, support, cid = real["client"], real["crm"], real["support"], real["customers"][4]
    fitted_on = client.get("/v1/model", headers=crm).json()["customers"]
    r = client.delete(f"/v1/customers/{cid}", headers=crm)
    assert r.status_code == 200, r.text
    assert r.json()["deleted"]["customers"] == 1
    # Rows and vectors went at once; a background refit takes their share out of the aggregates.
    assert r.json()["refit"] in ("started", "queued")
    assert client.get(f"/v1/customers/{cid}/recommendations", headers=support).status_code == 404

    def refitted() -> bool:
        model = client.get("/v1/model", headers=crm).json()
        return not model["refitting"] and model["forgotten_since_fit"] == 0

    _wait(refitted)
    model = client.get("/v1/model", headers=crm).json()
    assert model["customers"] == fitted_on - 1 and model["last_error"] is None
    assert "tailor_model_forgotten_since_fit 0" in client.get("/metrics").text
    still_here = real["customers"][0]
    assert client.get(f"/v1/customers/{still_here}/recommendations", headers=support).status_code == 200


def test_real_refit_on_request(real: dict[str, Any]) -> None:
    client, crm, support = real["client"], real["crm"], real["support"]
    assert client.post("/v1/model/refit", headers=support).status_code == 403
    before = client.get("/v1/model", headers=crm).json()
    r = client.post("/v1/model/refit", headers=crm)
    assert r.status_code == 202, r.text
    assert r.json()["refit"] in ("started", "queued") and "purchases_since_fit" in r.json()["model"]
    _wait(lambda: client.get("/v1/model", headers=crm).json()["refits"] > before["refits"])
    model = client.get("/v1/model", headers=crm).json()
    assert model["fitted_at"] >= before["fitted_at"] and not model["stale"] and model["last_error"] is None


def test_qdrant_down_fails_readiness(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _imported(data_dir, index=False)
    env = {
        "TAILOR_NOW": NOW,
        "TAILOR_QDRANT_URL": f"http://127.0.0.1:{free_port()}",
        "TAILOR_JOB_RETRY_S": "60",
    }
    proc = ServerProcess(data_dir, env, facade="real", start_timeout=180)
    with proc, httpx.Client(base_url=proc.base_url, timeout=120) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["qdrant"] is False
        assert ready.json()["checks"]["store"] is True
        assert client.get("/healthz").status_code == 200  # alive, just not ready


def test_real_agent_logs_carry_customer_ids_but_no_pii(tmp_path: Path) -> None:
    """The real service (store, Qdrant, embeddings, ranker, the agent graph, its prompts and the openai
    writer) at debug level, on every path that handles personal data: a profile with PII, a rejected one, an
    email whose model call fails, a support question quoting contact details, a deletion and the refit it
    starts. The server's whole log must name the customer by id only."""
    data_dir = tmp_path / "data"
    _imported(data_dir)
    settings = Settings(data_dir=data_dir)
    crm = {"Authorization": f"Bearer {create_key(settings, 'crm')}"}
    support = {"Authorization": f"Bearer {create_key(settings, 'support')}"}
    cid = "cust-9911"
    pii = {
        "email": "leaky.person@example.com",
        "phone": "+44 7700 900123",
        "first name": "Leakyname",
        "last name": "Surnameleak",
        "bad email": "leakyname-at-home",
    }
    traits = {
        "firstName": pii["first name"],
        "lastName": pii["last name"],
        "email": pii["email"],
        "phone": pii["phone"],
        "country": "France",
        "consent": {"marketing_email": True, "personalization": True},
    }
    order = {"order_id": "P1", "products": [{"product_id": "I2", "quantity": 1, "price": 4.5}]}
    batch = [
        {"type": "identify", "userId": cid, "traits": traits},
        {"type": "track", "userId": cid, "event": "Order Completed", "properties": order},
        {"type": "track", "userId": cid, "event": "Product Viewed", "properties": {"product_id": "I3"}},
    ]
    question = f"{pii['first name']} asks: mail {pii['email']} or call {pii['phone']}, what should I buy?"
    env = {
        "TAILOR_NOW": NOW,
        "TAILOR_WRITER": "openai",
        # Nothing listens there: the model call fails and the template writer's email goes out instead.
        "TAILOR_LLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "TAILOR_LLM_TIMEOUT_S": "2",
        "TAILOR_LLM_UNAVAILABLE": "fallback",
        "TAILOR_TEST_LOG_LEVEL": "debug",
    }
    proc = ServerProcess(data_dir, env, facade="real", start_timeout=180)
    with proc, httpx.Client(base_url=proc.base_url, timeout=300) as client:
        r = client.post("/v1/events", headers=crm, json={"batch": batch})
        assert r.status_code == 200, r.text
        bad = {"type": "identify", "userId": "cust-9912", "traits": {**traits, "email": pii["bad email"]}}
        assert client.post("/v1/events", headers=crm, json=bad).status_code == 422
        row = _email_job(client, crm, cid, "browse", "pii-real")
        # The email went out on the template writer's parts: the model was asked and failed.
        assert row["status"] == "done" and row["result"]["email"]["fallback_parts"], row
        asked = {"customer_id": cid, "question": question}
        r = client.post("/v1/support/suggestions", headers=support, json=asked)
        assert r.status_code == 200, r.text
        # TAILOR_WRITER=openai makes the support agent think with the model too; it is down, so the
        # offline way answered, and the answer says so.
        answer = r.json()
        assert answer["thinker"].startswith("openai:") and answer["fell_back"], answer
        assert all(s["points_by"] == "template" for s in answer["suggestions"])
        assert client.get(f"/v1/customers/{cid}/recommendations", headers=support).status_code == 200
        before = client.get("/v1/model", headers=crm).json()["refits"]
        assert client.delete(f"/v1/customers/{cid}", headers=crm).status_code == 200
        _wait(lambda: client.get("/v1/model", headers=crm).json()["refits"] > before)
    log = proc.log()
    # Not vacuous: the requests and the deletion were logged, by customer id, at debug level.
    assert f"/v1/customers/{cid}/recommendations" in log and "/v1/support/suggestions" in log
    assert any(cid in line and "DELETE" in line for line in log.splitlines()), log[-3000:]
    assert "DEBUG " in log
    leaks = {what: [line for line in log.splitlines() if text in line] for what, text in pii.items()}
    assert not any(leaks.values()), {what: lines for what, lines in leaks.items() if lines}
