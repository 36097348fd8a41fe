"""The real HTTP service, in a uvicorn subprocess on 127.0.0.1, over httpx.

The facade behind it is ``tests.server.ScriptedTailor`` (a real store, plain rules, see its docstring),
so these tests are about the service: auth, errors, idempotency, jobs, resumption, fallbacks, callbacks.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tailor.app.http import create_key
from tailor.app.ops import Ops
from tailor.core.holdout import in_holdout
from tailor.core.sends import send_of_link
from tailor.core.settings import Settings
from tailor.data.store import Store
from tests.server import ServerProcess, seed_audience_facts, seed_store
from tests.waiting import wait_until

pytestmark = pytest.mark.slow


class ScriptedHTTP:
    """A tiny HTTP server on 127.0.0.1: POST answers come from a script (``ok``, ``500``, ``slow``), in
    order; a request past the end of the script is answered 500 and recorded as an overrun, which the
    tests assert never happens. GET ``/models`` answers with ``models_status``. POST bodies are kept."""

    def __init__(self, script: list[str] | None = None, models_status: int = 200) -> None:
        self.script = list(script or [])
        self.models_status = models_status
        self.posts: list[dict[str, Any]] = []
        self.overruns = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first: that is what a "slow" step is for

            def do_GET(self) -> None:
                self._send(outer.models_status, {"data": [{"id": "m"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                outer.posts.append(body)
                if not outer.script:
                    outer.overruns += 1
                    self._send(500, {"error": "script ran out"})
                    return
                step = outer.script.pop(0)
                if step == "slow":
                    time.sleep(1.5)
                    step = "ok"
                if step == "500":
                    self._send(500, {"error": "scripted failure"})
                    return
                usage = {"prompt_tokens": 7, "completion_tokens": 3}
                self._send(200, {"choices": [{"message": {"content": "From the model"}}], "usage": usage})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    wait_until(predicate, timeout)


def _keys(data_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    settings = Settings(data_dir=data_dir)
    crm = create_key(settings, "crm", "test-crm")
    support = create_key(settings, "support", "test-support")
    return {"Authorization": f"Bearer {crm}"}, {"Authorization": f"Bearer {support}"}


def _job_done(client: httpx.Client, crm: dict[str, str], job_id: str) -> Callable[[], bool]:
    return lambda: client.get(f"/v1/jobs/{job_id}", headers=crm).json()["status"] == "done"


def _emails(data_dir: Path) -> list[str]:
    path = data_dir / "emails.log"
    return path.read_text().split() if path.exists() else []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, httpx.Client]]:
    data_dir = tmp_path_factory.mktemp("api") / "data"
    data_dir.mkdir()
    seed_store(data_dir, n_customers=6)
    with ServerProcess(data_dir) as proc, httpx.Client(base_url=proc.base_url, timeout=30) as client:
        yield proc, client


@pytest.fixture(scope="module")
def keys(server: tuple[ServerProcess, httpx.Client]) -> tuple[dict[str, str], dict[str, str]]:
    return _keys(server[0].data_dir)


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    err: dict[str, Any] = response.json()["error"]
    assert err["code"] == code and set(err) == {"code", "message", "field"}
    return err


def test_probes_docs_and_openapi(server: tuple[ServerProcess, httpx.Client]) -> None:
    _, client = server
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["store"] is True
    assert "swagger" in client.get("/docs").text.lower()
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/events", "/v1/triggers/email", "/v1/campaigns", "/v1/jobs/{job_id}/results"} <= set(paths)


def test_missing_wrong_and_misused_keys(server: tuple[ServerProcess, httpx.Client], keys: Any) -> None:
    _, client = server
    crm, support = keys
    body = {"customer_id": "100", "trigger": {"kind": "browse"}}
    _error(client.get("/v1/customers/100/recommendations"), 401, "unauthorized")
    _error(
        client.get("/v1/customers/100/recommendations", headers={"Authorization": "Bearer tk_x_y"}),
        401,
        "unauthorized",
    )
    err = _error(
        client.post("/v1/triggers/email", headers={**support, "Idempotency-Key": "s1"}, json=body),
        403,
        "forbidden",
    )
    assert "support" in err["message"]
    _error(client.get("/v1/customers/100/recommendations", headers=crm), 403, "forbidden")


def test_malformed_invalid_and_oversized_bodies(
    server: tuple[ServerProcess, httpx.Client], keys: Any
) -> None:
    _, client = server
    crm, _ = keys
    raw = {**crm, "Content-Type": "application/json"}
    _error(client.post("/v1/events", headers=raw, content=b'{"events": [}'), 422, "malformed_json")
    err = _error(
        client.post(
            "/v1/triggers/email",
            headers={**crm, "Idempotency-Key": "v1"},
            json={"customer_id": "100", "trigger": {"kind": "carrier_pigeon"}},
        ),
        422,
        "invalid_request",
    )
    assert err["field"] == "trigger.kind"
    err = _error(
        client.post(
            "/v1/triggers/email", headers=crm, json={"customer_id": "100", "trigger": {"kind": "browse"}}
        ),
        422,
        "invalid_request",
    )
    assert err["field"] == "idempotency-key"
    err = _error(
        client.post("/v1/events", headers=crm, json={"events": [{"customer_id": "100", "kind": "view"}]}),
        422,
        "invalid_record",
    )
    assert err["field"] is not None and err["field"].startswith("events.0")
    _error(
        client.post("/v1/events", headers=raw, content=b"[" + b"1," * 600_000 + b"1]"),
        413,
        "payload_too_large",
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must hold for streamed bodies too
        for _ in range(40):
            yield b" " * 50_000

    _error(client.post("/v1/events", headers=raw, content=chunks()), 413, "payload_too_large")
    # A body that is not JSON is named for what it is, not "an error parsing the body".
    events = json.dumps({"events": [], "customers": []}).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {**crm, **({"Content-Type": content_type} if content_type else {})}
        r = client.post("/v1/events", headers=headers, content=events)
        message = _error(r, 415, "unsupported_media_type")["message"]
        assert "Content-Type: application/json" in message and str(content_type or "none") in message
    err = _error(client.post("/v1/events", headers=raw, content=b'{"events": ["\xff"]}'), 400, "invalid_json")
    assert "not UTF-8" in err["message"]
    # JSON media types with parameters or a +json suffix are JSON: these reach the handler, which refuses
    # an empty batch for what it is.
    for content_type in ("application/json; charset=utf-8", "application/vnd.tailor+json"):
        headers = {**crm, "Content-Type": content_type}
        err = _error(client.post("/v1/events", headers=headers, content=events), 422, "invalid_data")
        assert "nothing to ingest" in err["message"]
    _error(
        client.put("/v1/customers/100/consent", headers=crm, json={"marketing_email": "maybe"}),
        422,
        "invalid_request",
    )


def test_support_endpoints(server: tuple[ServerProcess, httpx.Client], keys: Any) -> None:
    _, client = server
    _, support = keys
    recs = client.get("/v1/customers/100/recommendations?k=3", headers=support).json()["recommendations"]
    assert len(recs) == 3 and [r["rank"] for r in recs] == [1, 2, 3]
    item = recs[0]["item"]["id"]
    why = client.get(f"/v1/customers/100/recommendations/{item}/why", headers=support).json()
    assert why["item_id"] == item and why["text"]
    answer = client.post(
        "/v1/support/suggestions",
        headers=support,
        json={"customer_id": "100", "question": "What goes with a lantern?"},
    ).json()
    assert answer["suggestions"]
    err = _error(client.get("/v1/customers/nobody/recommendations", headers=support), 404, "not_found")
    assert "nobody" in err["message"]
    _error(client.get("/v1/customers/100/recommendations?k=0", headers=support), 422, "invalid_request")


def test_events_native_and_segment(server: tuple[ServerProcess, httpx.Client], keys: Any) -> None:
    _, client = server
    crm, support = keys
    identify = {
        "type": "identify",
        "userId": "900",
        "traits": {"firstName": "Zed", "email": "zed@example.test", "country": "Spain"},
    }
    track = {
        "type": "track",
        "userId": "900",
        "event": "Order Completed",
        "messageId": "m-9",
        "timestamp": "2011-12-05T10:00:00Z",
        "properties": {"order_id": "O900", "products": [{"product_id": "I5", "quantity": 1}]},
    }
    r = client.post("/v1/events", headers=crm, json={"batch": [identify, track]})
    assert r.status_code == 200, r.text
    assert r.json()["ingested"] == {"events": 1, "duplicates": 0, "customers": 1}
    assert (r.json()["accepted"], r.json()["skipped"]) == (2, {})
    # The purchase counts at once: I5 is no longer recommended to the new customer.
    recs = client.get("/v1/customers/900/recommendations?k=6", headers=support).json()["recommendations"]
    assert "I5" not in [x["item"]["id"] for x in recs] and recs
    native = {"events": [{"customer_id": "900", "kind": "view", "item_id": "I1", "timestamp": "2011-12-06"}]}
    r = client.post("/v1/events", headers=crm, json=native)
    assert (r.json()["events"], r.json()["accepted"], r.json()["skipped"]) == (1, 1, {})
    # Sent again unchanged: received, not written twice, and said so.
    r = client.post("/v1/events", headers=crm, json=native)
    assert r.status_code == 200 and (r.json()["ingested"]["events"], r.json()["duplicates"]) == (0, 1)
    # An event Tailor does not map is skipped, not refused; a call without an event name is malformed.
    r = client.post("/v1/events", headers=crm, json={"type": "track", "userId": "900", "event": "Nope"})
    assert r.status_code == 200, r.text
    assert r.json() == {
        "ingested": {"events": 0, "duplicates": 0, "customers": 0},
        "events": 0,
        "duplicates": 0,
        "customers": 0,
        "accepted": 0,
        "skipped": {"track:Nope": 1},
    }
    err = _error(
        client.post("/v1/events", headers=crm, json={"type": "track", "userId": "900"}), 422, "invalid_record"
    )
    assert err["field"] == "event"
    _error(client.post("/v1/events", headers=crm, json={"events": []}), 422, "invalid_data")


def test_segment_batch_skips_unused_calls_and_is_ingested_whole_or_not_at_all(
    server: tuple[ServerProcess, httpx.Client], keys: Any
) -> None:
    _, client = server
    crm, support = keys

    def identify(user: str) -> dict[str, Any]:
        traits = {"firstName": "Mo", "email": f"{user}@example.test", "country": "Spain"}
        return {"type": "identify", "userId": user, "traits": traits}

    def viewed(user: str, item: str = "I2") -> dict[str, Any]:
        return {
            "type": "track",
            "userId": user,
            "event": "Product Viewed",
            "properties": {"product_id": item},
        }

    def known(user: str) -> bool:
        r = client.get(f"/v1/customers/{user}/recommendations", headers=support)
        assert r.status_code in (200, 404), r.text
        return r.status_code == 200

    batch = [
        identify("950"),
        {"type": "page", "userId": "950", "name": "Home"},
        {"type": "track", "userId": "950", "event": "Product List Viewed", "properties": {"list_id": "l"}},
        {"type": "screen", "anonymousId": "a-1", "name": "Basket"},
        {"type": "page", "anonymousId": "a-1"},
        {"type": "alias", "userId": "950", "previousId": "a-1"},
        {
            "type": "track",
            "anonymousId": "a-1",
            "event": "Product Viewed",
            "properties": {"product_id": "I1"},
        },
        viewed("950"),
    ]
    r = client.post("/v1/events", headers=crm, json={"batch": batch})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["events"], body["customers"], body["accepted"]) == (1, 1, 2)
    assert body["skipped"] == {
        "alias": 1,
        "anonymous:track": 1,
        "page": 2,
        "screen": 1,
        "track:Product List Viewed": 1,
    }
    assert known("950")
    # A batch of calls Tailor does not use succeeds, so the sender does not retry it forever.
    r = client.post("/v1/events", headers=crm, json={"batch": batch[1:3]})
    assert r.status_code == 200 and r.json()["accepted"] == 0 and sum(r.json()["skipped"].values()) == 2
    # One malformed call fails the batch, by position and field, and nothing before it is written.
    bad_order = {
        "type": "track",
        "userId": "951",
        "event": "Order Completed",
        "properties": {"products": [{"product_id": "I1", "quantity": -1}]},
    }
    err = _error(
        client.post("/v1/events", headers=crm, json={"batch": [identify("951"), batch[1], bad_order]}),
        422,
        "invalid_record",
    )
    assert err["field"] == "batch[2].properties.products[0].quantity"
    assert "segment:3:" in err["message"] and "negative" in err["message"]
    for not_a_list in (None, 5, "calls", {}):
        r = client.post("/v1/events", headers=crm, json={"batch": not_a_list})
        err = _error(r, 422, "invalid_record")
        assert err["field"] == "batch" and "non-empty list" in err["message"]
    assert not known("951")
    # A well-formed batch that refers to a customer nobody identified: the new profile is not kept either.
    _error(
        client.post("/v1/events", headers=crm, json={"batch": [identify("952"), viewed("953")]}),
        404,
        "not_found",
    )
    assert not known("952") and not known("953")
    response = client.get("/openapi.json").json()["paths"]["/v1/events"]["post"]["responses"]["200"]
    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/EventsOut"}


def test_idempotent_trigger_under_concurrent_replays(
    server: tuple[ServerProcess, httpx.Client], keys: Any
) -> None:
    proc, client = server
    crm, _ = keys
    body = {"customer_id": "103", "trigger": {"kind": "win_back", "campaign_id": "w1"}}
    headers = {**crm, "Idempotency-Key": "replay-103"}
    before = _emails(proc.data_dir).count("103")

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=proc.base_url, timeout=30) as c:
            return c.post("/v1/triggers/email", headers=headers, json=body)

    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(send, range(12)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["job_id"] for r in responses}) == 1
    assert sorted(r.headers["Idempotent-Replayed"] for r in responses).count("false") == 1
    job_id = responses[0].json()["job_id"]
    _wait(_job_done(client, crm, job_id))
    # A replay after completion still returns the first response, and does not send again.
    again = client.post("/v1/triggers/email", headers=headers, json=body)
    assert again.status_code == 202 and again.json() == responses[0].json()
    assert _emails(proc.data_dir).count("103") == before + 1
    conflict = client.post("/v1/triggers/email", headers=headers, json={**body, "customer_id": "104"})
    _error(conflict, 409, "conflict")
    lines = client.get(f"/v1/jobs/{job_id}/results", headers=crm).text.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["result"]["email"]["customer_id"] == "103"


def test_opted_out_customer_is_refused_with_reason(
    server: tuple[ServerProcess, httpx.Client], keys: Any
) -> None:
    _, client = server
    crm, _ = keys
    r = client.post(
        "/v1/triggers/email",
        headers={**crm, "Idempotency-Key": "optout-101"},
        json={"customer_id": "101", "trigger": {"kind": "browse"}},
    )
    job_id = r.json()["job_id"]
    _wait(_job_done(client, crm, job_id))
    job = client.get(f"/v1/jobs/{job_id}", headers=crm).json()
    assert (job["refused"], job["refusal_reasons"]) == (1, {"no_marketing_consent": 1})
    _error(
        client.post(
            "/v1/triggers/email",
            headers={**crm, "Idempotency-Key": "ghost"},
            json={"customer_id": "ghost", "trigger": {"kind": "browse"}},
        ),
        404,
        "not_found",
    )


def test_callback_to_allowed_host_only(server: tuple[ServerProcess, httpx.Client], keys: Any) -> None:
    _, client = server
    crm, _ = keys
    sink = ScriptedHTTP(script=["ok"])
    try:
        r = client.post(
            "/v1/triggers/email",
            headers={**crm, "Idempotency-Key": "cb-100"},
            json={"customer_id": "100", "trigger": {"kind": "browse"}, "callback_url": sink.url + "/hook"},
        )
        assert r.status_code == 202, r.text
        _wait(lambda: len(sink.posts) == 1)
        assert sink.posts[0]["job"]["id"] == r.json()["job_id"]
        assert sink.posts[0]["results"][0]["status"] == "done"
        _wait(
            lambda: (
                client.get(f"/v1/jobs/{r.json()['job_id']}", headers=crm).json()["callback_status"]
                == "delivered"
            )
        )
        assert sink.overruns == 0
    finally:
        sink.close()
    err = _error(
        client.post(
            "/v1/triggers/email",
            headers={**crm, "Idempotency-Key": "cb-evil"},
            json={
                "customer_id": "100",
                "trigger": {"kind": "browse"},
                "callback_url": "https://evil.example/hook",
            },
        ),
        422,
        "invalid_data",
    )
    assert "evil.example" in err["message"]


def test_consent_and_forget(server: tuple[ServerProcess, httpx.Client], keys: Any) -> None:
    _, client = server
    crm, support = keys
    r = client.put(
        "/v1/customers/104/consent", headers=crm, json={"marketing_email": False, "personalization": True}
    )
    assert r.json()["consent"] == {"marketing_email": False, "personalization": True}
    answer = client.delete("/v1/customers/104", headers=crm).json()
    deleted = answer["deleted"]
    assert deleted["customers"] == 1 and deleted["events"] == 2
    # A refit is asked for, to take the customer's share out of the model; the test facade has none to fit,
    # and says so as the real one says a failed background fit.
    assert answer["refit"] == "started"
    model = client.get("/v1/model", headers=crm).json()
    assert model["fitted"] is False and model["forgotten_since_fit"] >= 1
    assert model["last_error"].startswith("DataError") and "no model to fit" in model["last_error"]
    _error(client.get("/v1/customers/104/recommendations", headers=support), 404, "not_found")
    _error(client.delete("/v1/customers/104", headers=crm), 404, "not_found")


def test_metrics_count_requests_by_route_template(
    server: tuple[ServerProcess, httpx.Client], keys: Any
) -> None:
    _, client = server
    _, support = keys
    client.get("/v1/customers/100/recommendations", headers=support)
    text = client.get("/metrics").text
    assert 'route="/v1/customers/{customer_id}/recommendations",status="200"' in text
    assert "/v1/customers/100/" not in text  # ids never become label values
    assert "tailor_http_request_duration_seconds_bucket" in text


def test_the_shadow_evaluation_is_served_to_crm_keys_and_set_as_gauges(
    server: tuple[ServerProcess, httpx.Client], keys: Any
) -> None:
    _, client = server
    crm, support = keys
    _error(client.get("/v1/model/shadow", headers=support), 403, "forbidden")
    # The scheduled one ran once the warm-up was done; a fresh one is asked for.
    _wait(lambda: "tailor_model_stale_by_shadow" in client.get("/metrics").text)
    fresh = client.get("/v1/model/shadow", headers=crm, params={"fresh": "true"}).json()
    assert fresh["customers"] == 0 and fresh["stale"] is False and fresh["at"]
    assert client.get("/v1/model/shadow", headers=crm).json()["at"] == fresh["at"]
    assert "tailor_model_stale_by_shadow 0" in client.get("/metrics").text


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    seed_store(data_dir)
    _, support = _keys(data_dir)
    env = {"TAILOR_API_RATE_PER_S": "0.2", "TAILOR_API_RATE_BURST": "3"}
    with ServerProcess(data_dir, env) as proc, httpx.Client(base_url=proc.base_url) as client:
        codes = [client.get("/v1/customers/100/recommendations", headers=support) for _ in range(4)]
        assert [r.status_code for r in codes] == [200, 200, 200, 429]
        assert int(codes[-1].headers["Retry-After"]) >= 1
        assert codes[-1].json()["error"]["code"] == "rate_limited"


def test_campaign_survives_sigkill_without_duplicates(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ids = seed_store(data_dir, n_customers=24)
    crm, _ = _keys(data_dir)
    proc = ServerProcess(data_dir, {"TAILOR_TEST_EMAIL_DELAY": "0.15"})
    proc.start()
    try:
        client = httpx.Client(base_url=proc.base_url, timeout=30)
        campaign = {"audience": {"customer_ids": ids}, "trigger": {"kind": "campaign", "campaign_id": "x"}}
        r = client.post("/v1/campaigns", headers={**crm, "Idempotency-Key": "c1"}, json=campaign)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        assert r.json()["total"] == 24

        def progressed() -> bool:
            job = client.get(f"/v1/jobs/{job_id}", headers=crm).json()
            return bool(job["done"] + job["refused"] >= 5)

        _wait(progressed)
        proc.kill()
        client.close()
        ops = Ops(data_dir / "ops.db")
        at_kill = ops.get_job(job_id)
        ops.close()
        assert at_kill.status != "done" and at_kill.counts["pending"] > 0  # the kill really was mid-campaign
        proc.start()
        client = httpx.Client(base_url=proc.base_url, timeout=30)
        _wait(_job_done(client, crm, job_id), timeout=60)
        job = client.get(f"/v1/jobs/{job_id}", headers=crm).json()
        opted_out = [c for n, c in enumerate(ids) if n == 1]
        assert (job["done"], job["refused"], job["failed"]) == (23, 1, 0)
        rows = [
            json.loads(x) for x in client.get(f"/v1/jobs/{job_id}/results", headers=crm).text.splitlines()
        ]
        assert sorted(r["customer_id"] for r in rows) == sorted(ids)
        assert [r["customer_id"] for r in rows if r["status"] == "refused"] == opted_out
        # At most the emails in flight at the kill (one per worker) are written again; none was delivered.
        written = _emails(data_dir)
        assert set(written) == set(ids) - set(opted_out)
        assert len(written) - len(set(written)) <= Settings.model_fields["job_concurrency"].default
        # A replay of the campaign is the same job: nothing runs again.
        again = client.post("/v1/campaigns", headers={**crm, "Idempotency-Key": "c1"}, json=campaign)
        assert again.json()["job_id"] == job_id and again.headers["Idempotent-Replayed"] == "true"
        client.close()
    finally:
        proc.stop()
    # Exactly once, with the caps on: every sent email is one contact and one impression per product in
    # the customer store, whatever the kill and the replay did.
    store = Store(data_dir / "tailor.db")
    try:
        for row in rows:
            contacts, shown = store.contacts(row["customer_id"]), store.impressions(row["customer_id"])
            if row["status"] == "refused":
                assert contacts == [] and shown == []
                continue
            products = [p["item_id"] for p in row["result"]["email"]["products"]]
            assert len(contacts) == 1 and products
            assert sorted(i for i, _ in shown) == sorted(products)
    finally:
        store.close()


def test_campaign_to_an_audience_by_country(server: tuple[ServerProcess, httpx.Client], keys: Any) -> None:
    _, client = server
    crm, _ = keys
    r = client.post("/v1/campaigns", headers=crm, json={"audience": {"country": "france"}})
    assert r.status_code == 202 and r.json()["total"] == 2  # customers 102 and 105, matched case-blind
    assert r.headers["Idempotent-Replayed"] == "false"
    # With an Idempotency-Key, the retry is the same campaign, and says so.
    keyed = {**crm, "Idempotency-Key": "fr-1"}
    first = client.post("/v1/campaigns", headers=keyed, json={"audience": {"country": "france"}})
    retry = client.post("/v1/campaigns", headers=keyed, json={"audience": {"country": "france"}})
    assert first.json()["job_id"] == retry.json()["job_id"] != r.json()["job_id"]
    assert (first.headers["Idempotent-Replayed"], retry.headers["Idempotent-Replayed"]) == ("false", "true")
    _error(
        client.post("/v1/campaigns", headers=crm, json={"audience": {"country": "Atlantis"}}),
        422,
        "invalid_record",
    )
    _error(client.post("/v1/campaigns", headers=crm, json={"audience": {}}), 422, "invalid_record")


def test_campaign_audience_filters_on_profile_and_purchase_facts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    seed_store(data_dir, n_customers=6)
    seed_audience_facts(data_dir)  # its table lists each customer's facts
    crm, _ = _keys(data_dir)
    with ServerProcess(data_dir) as proc, httpx.Client(base_url=proc.base_url, timeout=30) as client:

        def campaign(audience: dict[str, Any]) -> httpx.Response:
            return client.post("/v1/campaigns", headers=crm, json={"audience": audience})

        def total(audience: dict[str, Any]) -> int:
            r = campaign(audience)
            assert r.status_code == 202, r.text
            return int(r.json()["total"])

        assert total({"min_orders": 3}) == 2
        assert total({"country": ["france", "Germany"]}) == 3
        assert total({"country": "France", "min_spend": 10}) == 1
        assert total({"max_spend": 5, "marketing_email": True}) == 2
        assert total({"last_purchase_before": "2011-11-03"}) == 2
        assert total({"customer_ids": ["103", "104", "105", "nobody"], "min_orders": 3}) == 2
        r = campaign({"customer_ids": ["105", "103", "100"], "last_purchase_since": "2011-12-01"})
        assert r.status_code == 202 and r.json()["total"] == 2
        job_id = r.json()["job_id"]
        _wait(_job_done(client, crm, job_id))
        rows = [
            json.loads(x) for x in client.get(f"/v1/jobs/{job_id}/results", headers=crm).text.splitlines()
        ]
        assert sorted(row["customer_id"] for row in rows) == ["103", "105"]
        # Refused, naming the field: an unknown one, a bad value, an empty range.
        err = _error(campaign({"country": "France", "vip": True}), 422, "invalid_request")
        assert err["field"] == "audience.vip"
        assert _error(campaign({"min_spend": -1}), 422, "invalid_request")["field"] == "audience.min_spend"
        assert (
            _error(campaign({"country": ["France", ""]}), 422, "invalid_request")["field"]
            == "audience.country.1"
        )
        err = _error(campaign({"last_purchase_since": "soon"}), 422, "invalid_request")
        assert err["field"] == "audience.last_purchase_since"
        err = _error(campaign({"min_orders": 5, "max_orders": 1}), 422, "invalid_request")
        assert err["field"] == "audience" and "min_orders" in err["message"]
        err = _error(campaign({"min_orders": 4}), 422, "invalid_record")
        assert "matches no customer" in err["message"]
        assert "customer_ids" in _error(campaign({"limit": 3}), 422, "invalid_record")["message"]
        schema = client.get("/openapi.json").json()["components"]["schemas"]["Audience"]
        assert {"country", "min_orders", "max_spend", "last_purchase_since", "marketing_email"} <= set(
            schema["properties"]
        )


def test_a_campaign_still_takes_its_audience_under_the_old_name_segment(
    server: tuple[ServerProcess, httpx.Client], keys: Any
) -> None:
    """``segment`` now means Segment.com's calls only (``POST /v1/events``); a CRM written when it named a
    campaign's audience keeps working, and a retry under the new name is the same campaign."""
    _, client = server
    crm, _ = keys
    keyed = {**crm, "Idempotency-Key": "old-name-1"}
    old = client.post("/v1/campaigns", headers=keyed, json={"segment": {"country": "france"}})
    assert old.status_code == 202 and old.json()["total"] == 2, old.text
    new = client.post("/v1/campaigns", headers=keyed, json={"audience": {"country": "france"}})
    assert new.json()["job_id"] == old.json()["job_id"] and new.headers["Idempotent-Replayed"] == "true"
    # A refusal names the field as the body named it; a body may not name both.
    bad = client.post("/v1/campaigns", headers=crm, json={"segment": {"country": "France", "vip": True}})
    assert _error(bad, 422, "invalid_request")["field"] == "segment.vip"
    both = {"audience": {"country": "france"}, "segment": {"country": "france"}}
    assert (
        _error(client.post("/v1/campaigns", headers=crm, json=both), 422, "invalid_request")["field"]
        == "segment"
    )
    # Tailor's own refusals too: nothing narrows it, or nobody matches.
    empty = _error(client.post("/v1/campaigns", headers=crm, json={"segment": {}}), 422, "invalid_record")
    assert empty["field"] == "segment"
    nobody = client.post("/v1/campaigns", headers=crm, json={"segment": {"country": "Atlantis"}})
    assert nobody.status_code == 422 and nobody.json()["error"]["field"] == "segment", nobody.text
    assert "the segment matches no customer" in nobody.json()["error"]["message"]
    # The schema offers the new name only, and says that the old one is still taken.
    fields = client.get("/openapi.json").json()["components"]["schemas"]["CampaignIn"]["properties"]
    assert "segment" not in fields and "`segment` (deprecated)" in fields["audience"]["description"]
    assert "named" not in fields


def _llm_server(data_dir: Path, llm: ScriptedHTTP, mode: str) -> ServerProcess:
    env = {
        "TAILOR_WRITER": "openai",
        "TAILOR_LLM_BASE_URL": llm.url + "/v1",
        "TAILOR_LLM_TIMEOUT_S": "0.5",
        "TAILOR_LLM_UNAVAILABLE": mode,
        "TAILOR_JOB_RETRY_S": "0.3",
    }
    return ServerProcess(data_dir, env)


def test_llm_500_with_defer_keeps_the_job_until_the_model_answers(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    seed_store(data_dir)
    crm, _ = _keys(data_dir)
    llm = ScriptedHTTP(script=["500", "500", "ok"], models_status=500)
    try:
        with _llm_server(data_dir, llm, "defer") as proc, httpx.Client(base_url=proc.base_url) as client:
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["llm"] is False
            r = client.post(
                "/v1/triggers/email",
                headers={**crm, "Idempotency-Key": "d1"},
                json={"customer_id": "100", "trigger": {"kind": "browse"}},
            )
            job_id = r.json()["job_id"]
            _wait(lambda: client.get(f"/v1/jobs/{job_id}", headers=crm).json()["deferred"] == 1)
            _wait(_job_done(client, crm, job_id))
            row = json.loads(client.get(f"/v1/jobs/{job_id}/results", headers=crm).text)
            assert row["result"]["email"]["subject"] == "From the model"
            assert row["result"]["email"]["writer"] == "openai"
            assert len(llm.posts) == 3 and llm.overruns == 0
            assert 'tailor_llm_tokens_total{kind="prompt"} 7' in client.get("/metrics").text
            assert 'tailor_llm_tokens_total{kind="completion"} 3' in client.get("/metrics").text
            # The trace of the attempt that sent it is kept with the result, for its key only.
            audit = client.get(f"/v1/jobs/{job_id}/audit", headers=crm)
            assert audit.status_code == 200, audit.text
            [item] = audit.json()["items"]
            [generate] = [a for a in item["audit"] if a["node"] == "generate"]
            assert (generate["prompt_tokens"], generate["completion_tokens"]) == (7, 3)
            assert generate["error"] is None
            assert client.get(f"/v1/jobs/{job_id}", headers=crm).json()["links"]["audit"].endswith("/audit")
            llm.models_status = 200
            assert client.get("/readyz").status_code == 200
    finally:
        llm.close()


def test_llm_timeout_with_fallback_uses_the_template_writer(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    seed_store(data_dir)
    crm, _ = _keys(data_dir)
    llm = ScriptedHTTP(script=["slow"])
    try:
        with _llm_server(data_dir, llm, "fallback") as proc, httpx.Client(base_url=proc.base_url) as client:
            r = client.post(
                "/v1/triggers/email",
                headers={**crm, "Idempotency-Key": "t1"},
                json={"customer_id": "100", "trigger": {"kind": "browse"}},
            )
            job_id = r.json()["job_id"]
            _wait(_job_done(client, crm, job_id))
            email = json.loads(client.get(f"/v1/jobs/{job_id}/results", headers=crm).text)["result"]["email"]
            assert email["writer"] == "template" and email["fallback_parts"] == ["subject"]
            assert 'tailor_fallbacks_total{part="subject"} 1' in client.get("/metrics").text
            assert llm.overruns == 0 and not llm.script
    finally:
        llm.close()


def test_readiness_tells_degraded_fallback_from_down(tmp_path: Path) -> None:
    """The model endpoint is down. With the fallback, the template writer serves every email: 200,
    ``degraded``. With ``defer``, emails wait for the model: 503, ``down``. Qdrant and the store up."""
    data_dir = tmp_path / "data"
    seed_store(data_dir)
    llm = ScriptedHTTP(models_status=500)
    try:
        for mode, code, status in (("fallback", 200, "degraded"), ("defer", 503, "down")):
            with _llm_server(data_dir, llm, mode) as proc, httpx.Client(base_url=proc.base_url) as client:
                _wait(lambda: client.get("/readyz").json()["warm"])
                ready = client.get("/readyz")
                assert ready.status_code == code, ready.text
                body = ready.json()
                assert (body["status"], body["mode"], body["ready"]) == (status, mode, code == 200)
                assert body["checks"] == {"store": True, "qdrant": True, "llm": False}
                llm.models_status = 200
                assert client.get("/readyz").json()["status"] == "ready"
                llm.models_status = 500
    finally:
        llm.close()


def test_readiness_waits_for_the_warm_up(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    seed_store(data_dir)
    gate = tmp_path / "warm.go"
    with (
        ServerProcess(data_dir, {"TAILOR_TEST_WARM_GATE": str(gate)}) as proc,
        httpx.Client(base_url=proc.base_url) as client,
    ):
        assert client.get("/healthz").status_code == 200, "alive while warming"
        warming = client.get("/readyz")
        assert warming.status_code == 503 and warming.json()["status"] == "warming"
        assert warming.json()["checks"]["store"] is True
        gate.touch()
        _wait(lambda: client.get("/readyz").status_code == 200)
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready" and ready["warm_up"] == {"seconds": {"scripted": 0.0}}


def test_jobs_are_visible_to_their_key_only(server: tuple[ServerProcess, httpx.Client], keys: Any) -> None:
    proc, client = server
    crm, _ = keys
    other = {"Authorization": f"Bearer {create_key(Settings(data_dir=proc.data_dir), 'crm', 'other')}"}
    r = client.post(
        "/v1/triggers/email",
        headers={**crm, "Idempotency-Key": "mine-1"},
        json={"customer_id": "100", "trigger": {"kind": "browse"}},
    )
    job_id = r.json()["job_id"]
    assert client.get(f"/v1/jobs/{job_id}", headers=crm).status_code == 200
    _error(client.get(f"/v1/jobs/{job_id}", headers=other), 404, "not_found")
    _error(client.get(f"/v1/jobs/{job_id}/results", headers=other), 404, "not_found")
    # Idempotency keys are scoped to the API key, as jobs are: the same key from another API key is another
    # request, and never hands over the first key's job.
    same = {"customer_id": "100", "trigger": {"kind": "browse"}}
    theirs = client.post("/v1/triggers/email", headers={**other, "Idempotency-Key": "mine-1"}, json=same)
    assert theirs.status_code == 202 and theirs.headers["Idempotent-Replayed"] == "false"
    assert theirs.json()["job_id"] != job_id
    assert client.get(f"/v1/jobs/{theirs.json()['job_id']}", headers=other).status_code == 200
    # The owner's replay is the same job, marked as a replay.
    again = client.post("/v1/triggers/email", headers={**crm, "Idempotency-Key": "mine-1"}, json=same)
    assert again.json()["job_id"] == job_id and again.headers["Idempotent-Replayed"] == "true"
    _error(client.get("/v1/jobs/job_nope", headers=crm), 404, "not_found")


def test_feedback_is_recorded_for_known_customers(
    server: tuple[ServerProcess, httpx.Client], keys: Any
) -> None:
    _, client = server
    crm, _ = keys
    r = client.post(
        "/v1/feedback", headers=crm, json={"customer_id": "100", "signal": "click", "item_id": "I2"}
    )
    assert r.status_code == 201 and r.json()["id"] >= 1
    _error(
        client.post("/v1/feedback", headers=crm, json={"customer_id": "nobody", "signal": "click"}),
        404,
        "not_found",
    )
    err = _error(
        client.post("/v1/feedback", headers=crm, json={"customer_id": "100", "signal": "meh"}),
        422,
        "invalid_request",
    )
    assert err["field"] == "signal"


def test_logs_carry_customer_ids_but_no_pii(tmp_path: Path) -> None:
    """Every kind of request that carries personal data, and the error paths that are most tempted to
    quote it, at debug level: the server's whole log must name customers by id only."""
    data_dir = tmp_path / "data"
    seed_store(data_dir)
    crm, support = _keys(data_dir)
    plain, faulty = "cust-7781", "cust-7782"
    pii = {
        "email": "leaky.person@example.com",
        "phone": "+44 7700 900123",
        "first name": "Leakyname",
        "last name": "Surnameleak",
        "other email": "faulty.person@example.org",
        "other first name": "Faultyname",
        "other phone": "020 7946 0958",
        "bad email": "leakyname-at-home",
    }
    question = f"{pii['first name']} asks: mail {pii['email']} or call {pii['phone']}, what should I buy?"
    consent = {"marketing_email": True, "personalization": True}
    batch = [
        {
            "type": "identify",
            "userId": plain,
            "traits": {
                "firstName": pii["first name"],
                "lastName": pii["last name"],
                "name": f"{pii['first name']} {pii['last name']}",
                "email": pii["email"],
                "phone": pii["phone"],
                "country": "France",
                "consent": consent,
            },
        },
        {
            "type": "identify",
            "userId": faulty,
            "traits": {
                "firstName": pii["other first name"],
                "email": pii["other email"],
                "phone": pii["other phone"],
                "country": "Spain",
                "consent": consent,
            },
        },
        {"type": "track", "userId": plain, "event": "Product Viewed", "properties": {"product_id": "I1"}},
        {"type": "page", "userId": plain, "properties": {"title": pii["first name"], "email": pii["email"]}},
        {"type": "track", "userId": plain, "event": "Signed Up", "properties": {"phone": pii["phone"]}},
    ]
    llm = ScriptedHTTP(script=["500", "ok"])
    env = {
        "TAILOR_WRITER": "openai",
        "TAILOR_LLM_BASE_URL": llm.url + "/v1",
        "TAILOR_LLM_TIMEOUT_S": "5",
        "TAILOR_LLM_UNAVAILABLE": "defer",
        "TAILOR_JOB_RETRY_S": "0.3",
        "TAILOR_TEST_LOG_LEVEL": "debug",
        "TAILOR_TEST_FAULT_CUSTOMER": faulty,
    }
    try:
        with ServerProcess(data_dir, env) as proc, httpx.Client(base_url=proc.base_url, timeout=30) as client:
            r = client.post("/v1/events", headers=crm, json={"batch": batch})
            assert r.status_code == 200, r.text
            bad = {"type": "identify", "userId": "cust-7783", "traits": {**batch[0]["traits"]}}
            bad["traits"]["email"] = pii["bad email"]  # type: ignore[index]
            _error(client.post("/v1/events", headers=crm, json=bad), 422, "invalid_record")
            jobs = {}
            for cid in (plain, faulty):
                r = client.post(
                    "/v1/triggers/email",
                    headers={**crm, "Idempotency-Key": f"pii-{cid}"},
                    json={"customer_id": cid, "trigger": {"kind": "browse"}},
                )
                assert r.status_code == 202, r.text
                jobs[cid] = r.json()["job_id"]
            for job_id in jobs.values():
                _wait(_job_done(client, crm, job_id))
            assert client.get(f"/v1/jobs/{jobs[plain]}", headers=crm).json()["done"] == 1
            assert len(llm.posts) == 2  # the model failed once (the job was deferred), then answered
            assert client.get(f"/v1/jobs/{jobs[faulty]}", headers=crm).json()["failed"] == 1
            ok = client.post(
                "/v1/support/suggestions", headers=support, json={"customer_id": plain, "question": question}
            )
            assert ok.status_code == 200, ok.text
            _error(
                client.post(
                    "/v1/support/suggestions",
                    headers=support,
                    json={"customer_id": faulty, "question": question},
                ),
                500,
                "internal_error",
            )
            assert client.get(f"/v1/customers/{plain}/recommendations", headers=support).status_code == 200
            assert llm.overruns == 0 and not llm.script
    finally:
        llm.close()
    log = proc.log()
    # Not vacuous: the requests, the deferral and both failures were logged, by customer id and error type.
    assert f"/v1/customers/{plain}/recommendations" in log
    assert "LLMError" in log and plain in log
    assert any(faulty in line and "RuntimeError" in line for line in log.splitlines()), log
    assert "/v1/support/suggestions" in log
    leaks = {what: [line for line in log.splitlines() if text in line] for what, text in pii.items()}
    assert not any(leaks.values()), {what: lines for what, lines in leaks.items() if lines}


def test_a_campaign_that_needs_approval_waits_previews_and_runs_once_approved(
    server: tuple[ServerProcess, httpx.Client], keys: Any
) -> None:
    proc, client = server
    crm, support = keys
    ids = ["100", "101", "102", "103"]  # the module's other tests sent some of them emails already
    store = Store(proc.data_dir / "tailor.db")
    try:
        before = {c: len(store.contacts(c)) for c in ids}
    finally:
        store.close()
    body = {"audience": {"customer_ids": ids}, "approval": "required"}
    r = client.post("/v1/campaigns", headers=crm, json=body)
    assert r.status_code == 202 and r.json()["status"] == "awaiting_approval", r.text
    job_id = r.json()["job_id"]
    time.sleep(1.0)  # a runner that would take a waiting job's items has had the time to
    job = client.get(f"/v1/jobs/{job_id}", headers=crm).json()
    assert (job["status"], job["pending"], job["done"], job["refused"]) == ("awaiting_approval", 4, 0, 0)

    preview = client.get(f"/v1/jobs/{job_id}/preview", headers=crm, params={"n": 3})
    assert preview.status_code == 200, preview.text
    seen = preview.json()
    assert (seen["sampled"], seen["total"], seen["model"]) == (3, 4, "template")
    assert set(s["customer_id"] for s in seen["samples"]) <= set(ids)
    # The same draw every time (seeded by the job), and the refusals counted by reason.
    again = client.get(f"/v1/jobs/{job_id}/preview", headers=crm, params={"n": 3}).json()
    assert [s["customer_id"] for s in again["samples"]] == [s["customer_id"] for s in seen["samples"]]
    refused = [s for s in seen["samples"] if s["refusal"] is not None]
    assert seen["refusals"] == ({"no_marketing_consent": len(refused)} if refused else {})
    assert all(s["email"]["subject"] for s in seen["samples"] if s["email"] is not None)
    store = Store(proc.data_dir / "tailor.db")
    try:
        assert {c: len(store.contacts(c)) for c in ids} == before, "a preview sends nothing"
    finally:
        store.close()

    # Only its own crm key approves it; a support key may not, another crm key does not see it.
    assert client.post(f"/v1/jobs/{job_id}/approve", headers=support).status_code == 403
    other = {"Authorization": f"Bearer {create_key(Settings(data_dir=proc.data_dir), 'crm')}"}
    for method, path in (("GET", "preview"), ("POST", "approve"), ("POST", "cancel")):
        _error(client.request(method, f"/v1/jobs/{job_id}/{path}", headers=other), 404, "not_found")
    assert client.get(f"/v1/jobs/{job_id}", headers=crm).json()["status"] == "awaiting_approval"
    approved = client.post(f"/v1/jobs/{job_id}/approve", headers=crm)
    assert approved.status_code == 200 and approved.json()["status"] in ("queued", "running", "done")
    _error(client.post(f"/v1/jobs/{job_id}/approve", headers=crm), 409, "conflict")
    _wait(_job_done(client, crm, job_id))
    done = client.get(f"/v1/jobs/{job_id}", headers=crm).json()
    assert (done["done"], done["refused"]) == (3, 1)  # customer 101 gave no marketing consent
    ops = Ops(proc.data_dir / "ops.db")
    try:
        decisions = ops.job_decisions(job_id)
    finally:
        ops.close()
    assert [d["action"] for d in decisions] == ["campaign.approve"] and decisions[0]["key_id"]


def test_a_waiting_campaign_cancelled_makes_nothing(
    server: tuple[ServerProcess, httpx.Client], keys: Any
) -> None:
    _, client = server
    crm, _ = keys
    r = client.post(
        "/v1/campaigns", headers=crm, json={"audience": {"customer_ids": ["103"]}, "approval": "required"}
    )
    job_id = r.json()["job_id"]
    cancelled = client.post(f"/v1/jobs/{job_id}/cancel", headers=crm)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["cancelled"] == 1
    _error(client.post(f"/v1/jobs/{job_id}/approve", headers=crm), 409, "conflict")
    _error(client.post(f"/v1/jobs/{job_id}/cancel", headers=crm), 409, "conflict")
    _error(client.get("/v1/jobs/job_nothere/preview", headers=crm), 404, "not_found")
    _error(
        client.post(
            "/v1/campaigns", headers=crm, json={"audience": {"customer_ids": ["103"]}, "approval": "maybe"}
        ),
        422,
        "invalid_request",
    )
    late = client.post(
        "/v1/campaigns", headers=crm, json={"audience": {"customer_ids": ["103"]}, "send_time": "teatime"}
    )
    assert late.status_code == 422 and "send_time" in late.text
    best = client.post(
        "/v1/campaigns",
        headers=crm,
        json={"audience": {"customer_ids": ["103"]}, "send_time": "best_hour", "approval": "required"},
    )
    assert best.status_code in (200, 202)
    best_id = best.json()["job_id"]
    waiting = client.get(f"/v1/jobs/{best_id}", headers=crm).json()
    assert waiting["status"] == "awaiting_approval" and waiting["scheduled"] == 0
    assert client.post(f"/v1/jobs/{best_id}/approve", headers=crm).status_code == 200

    def taken_up() -> bool:
        job = client.get(f"/v1/jobs/{best_id}", headers=crm).json()
        return bool(job["scheduled"] + job["done"] + job["refused"] == 1)

    # Approved, its one item either waits for its customer's hour or, that hour being now, is written.
    _wait(taken_up)


def test_a_campaign_with_a_holdout_logs_its_decisions_and_measures_its_uplift(tmp_path: Path) -> None:
    """Half the customers held out (a stable draw); the targeted ones buy after the campaign, the held-out
    ones do not: the uplift is positive, its interval says so, and the decision log has every customer with
    the probability of what was chosen. A forgotten customer leaves both."""
    data_dir = tmp_path / "data"
    ids = seed_store(data_dir, n_customers=30)
    crm, _ = _keys(data_dir)
    salt, now = "test-salt", "2011-12-10T10:00:00+00:00"
    env = {"TAILOR_HOLDOUT_SHARE": "0.5", "TAILOR_HOLDOUT_SALT": salt, "TAILOR_NOW": now}
    held = {c for c in ids if in_holdout(c, 0.5, salt)}
    assert 5 <= len(held) <= 25, "the draw splits this audience"
    with ServerProcess(data_dir, env) as proc, httpx.Client(base_url=proc.base_url, timeout=30) as client:
        r = client.post("/v1/campaigns", headers=crm, json={"audience": {"customer_ids": ids}})
        job_id = r.json()["job_id"]
        _wait(_job_done(client, crm, job_id))
        job = client.get(f"/v1/jobs/{job_id}", headers=crm).json()
        assert job["refusal_reasons"]["holdout"] == len(held)
        # Every targeted customer buys two days after; no held-out one does.
        buys = [
            {"customer_id": c, "kind": "purchase", "item_id": "I1", "quantity": 1, "value": 10.0,
             "timestamp": "2011-12-12T09:00:00+00:00", "order_id": f"after-{c}"}
            for c in ids
            if c not in held
        ]  # fmt: skip
        assert client.post("/v1/events", headers=crm, json={"events": buys}).status_code == 200
        uplift = client.get(f"/v1/jobs/{job_id}/uplift", headers=crm).json()
        groups = uplift["groups"]
        assert groups["holdout"]["customers"] == len(held) and groups["holdout"]["converted"] == 0
        assert groups["targeted"] == {
            "customers": 30 - len(held),
            "converted": 30 - len(held),
            "rate": 1.0,
            "revenue": 10.0 * (30 - len(held)),
            "revenue_per_customer": 10.0,
        }
        conv = uplift["uplift"]["conversion"]
        assert conv["diff"] == 1.0 and 0 < conv["low"] <= conv["high"] <= 1.0
        assert uplift["windows_still_open"] == 30, "the service's clock is the campaign's day"
        engaged = uplift["engagement"]
        assert engaged["emailed"] == job["done"] and engaged["opened"] == engaged["clicked"] == 0

        # Each email made names its send, and every product link carries it.
        results = client.get(f"/v1/jobs/{job_id}/results", headers=crm).text.splitlines()
        rows = [json.loads(x) for x in results]
        made = [r for r in rows if r["status"] == "done"]
        assert len(made) >= 2
        for r in made:
            # An opaque token, one per send: the customer's id does not travel in the links.
            send = r["result"]["send_id"]
            assert re.fullmatch(r"s_[0-9a-f]{24}", send), send
            links = [p["url"] for p in r["result"]["email"]["products"]]
            assert links and all(send_of_link(u) == send and f"job:{job_id}:" not in u for u in links)
        assert len({r["result"]["send_id"] for r in made}) == len(made)
        # One opens hers (the CRM's own event, with the send), another clicks a link (Segment, the link's
        # own send); she also opens an email that is not this campaign's, and the first one's (forwarded):
        # neither counts.
        first, second = made[0], made[1]
        opened = [
            {"customer_id": first["customer_id"], "kind": "email_open", "send_id": first["result"]["send_id"],
             "timestamp": "2011-12-10T11:00:00+00:00"},
            {"customer_id": second["customer_id"], "kind": "email_open", "send_id": "s_another",
             "timestamp": "2011-12-10T11:00:00+00:00"},
            {"customer_id": second["customer_id"], "kind": "email_open",
             "send_id": first["result"]["send_id"], "timestamp": "2011-12-10T11:30:00+00:00"},
        ]  # fmt: skip
        assert client.post("/v1/events", headers=crm, json={"events": opened}).status_code == 200
        product = second["result"]["email"]["products"][0]
        click = {
            "type": "track", "event": "Email Link Clicked", "userId": second["customer_id"],
            "timestamp": "2011-12-10T12:00:00+00:00", "messageId": "click-1",
            "properties": {"link_url": product["url"], "product_id": product["item_id"]},
        }  # fmt: skip
        assert client.post("/v1/events", headers=crm, json=click).status_code == 200
        engaged = client.get(f"/v1/jobs/{job_id}/uplift", headers=crm).json()["engagement"]
        assert (engaged["opened"], engaged["clicked"]) == (1, 1)
        assert engaged["open_rate"] == round(1 / engaged["emailed"], 6)
        # Outside the window, nothing counts: a 1-day window closes before those purchases.
        narrow = client.get(f"/v1/jobs/{job_id}/uplift", headers=crm, params={"window_days": 1}).json()
        assert narrow["groups"]["targeted"]["converted"] == 0
        _error(
            client.get(f"/v1/jobs/{job_id}/uplift", headers=crm, params={"window_days": 0}),
            422,
            "invalid_request",
        )
        # Credit goes by the configured rule unless the request names another; an unknown one is refused.
        credit = uplift["credit"]
        assert credit["rule"] == "last_send" and credit["windows_closed_by_a_later_send"] == 0
        assert credit["emails"] == job["done"] and credit["converted"] == job["done"]
        every = client.get(f"/v1/jobs/{job_id}/uplift", headers=crm, params={"rule": "every_window"}).json()
        assert every["credit"]["rule"] == "every_window" and every["groups"] == uplift["groups"]
        _error(
            client.get(f"/v1/jobs/{job_id}/uplift", headers=crm, params={"rule": "first_touch"}),
            422,
            "invalid_request",
        )

        log = client.get(f"/v1/jobs/{job_id}/decisions", headers=crm).json()["decisions"]
        assert sorted(d["customer_id"] for d in log) == sorted(ids)
        for d in log:
            in_group = d["customer_id"] in held
            assert d["detail"]["group"] == ("holdout" if in_group else "targeted")
            assert d["propensity"] == 0.5 and d["policy"].startswith("planner-1;holdout=0.5;explore=0@")
            assert d["decided_at"] == now
        gone = sorted(held)[0]
        assert client.delete(f"/v1/customers/{gone}", headers=crm).json()["deleted"]["decisions"] == 1
        after = client.get(f"/v1/jobs/{job_id}/decisions", headers=crm).json()["decisions"]
        assert gone not in {d["customer_id"] for d in after} and len(after) == 29
        again = client.get(f"/v1/jobs/{job_id}/uplift", headers=crm).json()
        assert (
            again["left_out"] == {"forgotten": 1} and again["groups"]["holdout"]["customers"] == len(held) - 1
        )
