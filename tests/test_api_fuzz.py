"""Every route of the real server (uvicorn on 127.0.0.1, over httpx) with malformed, hostile and oversized
input: no answer is a 500, every refusal has the one error shape, and a refused body writes nothing.

Issue 25: "0 HTTP 500 in a fuzz of every route", and the input bounds of finding 8 as the API shows them.
The facade is ``tests.server.ScriptedTailor`` (a real store, plain rules): the input handling under test
is the service's, in front of any facade."""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tailor.app.http import create_key
from tailor.core.models import MAX_TEXT_LENGTH
from tailor.core.settings import Settings
from tailor.data.store import Store
from tests.server import ServerProcess, seed_store

pytestmark = pytest.mark.slow

AT = "2011-12-01T10:00:00+00:00"
# Valid bodies, one per route that takes one; each leaf is then replaced by every value of ``_HOSTILE``.
_BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/events"): {
        "events": [{"customer_id": "100", "kind": "support_ticket", "text": "Where is it?", "timestamp": AT}],
        "customers": [{"id": "900", "first_name": "Bo", "email": "bo@example.test", "country": "UK"}],
    },
    ("POST", "/v1/triggers/email"): {
        "customer_id": "100",
        "trigger": {"kind": "browse", "campaign_id": "c", "item_ids": ["I1"]},
        "callback_url": "http://127.0.0.1:9/cb",
    },
    ("POST", "/v1/campaigns"): {
        "audience": {"customer_ids": ["100"], "country": "France", "min_orders": 1, "limit": 5},
        "trigger": {"kind": "campaign", "campaign_id": "c"},
    },
    ("PUT", "/v1/customers/100/consent"): {"marketing_email": True, "personalization": True},
    ("POST", "/v1/feedback"): {"customer_id": "100", "signal": "click", "item_id": "I1", "note": "ok"},
    ("POST", "/v1/support/suggestions"): {"customer_id": "100", "question": "What next?"},
    ("POST", "/v1/model/refit"): {},
}
_HOSTILE: list[Any] = [
    None,
    "",
    " ",
    -1,
    10**30,
    1.5,
    True,
    [],
    {},
    "x" * 300_000,
    "\x00\x07\x1b[31m\u202e",
    "\ud800",
    "../../etc/passwd",
    "' OR 1=1 --",
    "9999-99-99T99:99:99",
    {"$gt": ""},
    json.loads("[" * 500 + "]" * 500),
]
_PATHS = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/model",
    "/v1/jobs/{x}",
    "/v1/jobs/{x}/results",
    "/v1/jobs/{x}/audit",
    "/v1/customers/{x}/recommendations",
    "/v1/customers/{x}/recommendations/{x}/why",
]
_PATH_VALUES = ["%00", "%E2%80%AE", "x" * 5000, "..%2F..", "%FF", "a%20b", "-1", "' OR 1=1", "%1b[31m"]


def _leaves(body: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(body, dict):
        for k, v in body.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(body, list):
        for n, v in enumerate(body):
            yield from _leaves(v, (*path, n))
    if path:
        yield path


def _replaced(body: Any, path: tuple[Any, ...], value: Any) -> Any:
    out = copy.deepcopy(body)
    at = out
    for key in path[:-1]:
        at = at[key]
    at[path[-1]] = value
    return out


def _raw_bodies() -> list[tuple[bytes, str]]:
    rng = random.Random(25)
    garbage = bytes(rng.randrange(256) for _ in range(4096))
    return [
        (b"", "application/json"),
        (b"{", "application/json"),
        (b"null", "application/json"),
        (b"[]", "application/json"),
        (b'"text"', "application/json"),
        (b"1e999999", "application/json"),
        (b'{"a": NaN}', "application/json"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (b'{"customer_id": "100", "customer_id": "101"}', "application/json"),
        (b"\xff\xfe{}", "application/json"),
        (garbage, "application/json"),
        (b"{}", "text/plain"),
        (b"a=b", "application/x-www-form-urlencoded"),
        (b"{}", ""),
        (b"x" * 1_100_000, "application/json"),  # past TAILOR_API_MAX_BODY_BYTES
    ]


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, httpx.Client, dict[str, str]]]:
    data_dir = tmp_path_factory.mktemp("fuzz") / "data"
    data_dir.mkdir()
    seed_store(data_dir, n_customers=4)
    settings = Settings(data_dir=data_dir)
    keys = {role: f"Bearer {create_key(settings, role, role)}" for role in ("crm", "support")}
    env = {"TAILOR_API_RATE_PER_S": "100000", "TAILOR_API_RATE_BURST": "100000"}
    with ServerProcess(data_dir, env) as proc, httpx.Client(base_url=proc.base_url, timeout=60) as client:
        yield proc, client, keys


def _check(response: httpx.Response, seen: Counter[int], where: str) -> None:
    seen[response.status_code] += 1
    assert response.status_code != 500, f"{where}: {response.text[:300]}"
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"code", "message", "field"}, where


def test_no_route_answers_500_to_malformed_hostile_or_oversized_input(
    served: tuple[ServerProcess, httpx.Client, dict[str, str]],
) -> None:
    proc, client, keys = served
    seen: Counter[int] = Counter()
    sent = 0
    for role in ("crm", "support"):
        headers = {"Authorization": keys[role], "Idempotency-Key": "fuzz"}
        for (method, url), body in _BODIES.items():
            for n, (raw, media) in enumerate(_raw_bodies()):
                r = client.request(method, url, content=raw, headers={**headers, "Content-Type": media})
                _check(r, seen, f"{method} {url} raw body {n}")
                sent += 1
            for leaf in _leaves(body):
                for value in _HOSTILE:
                    mutated = _replaced(body, leaf, value)
                    data = json.dumps(mutated, allow_nan=False).encode("utf-8", "surrogatepass")
                    key = {**headers, "Idempotency-Key": f"fuzz-{sent}", "Content-Type": "application/json"}
                    r = client.request(method, url, content=data, headers=key)
                    _check(r, seen, f"{method} {url} {leaf}={str(value)[:40]!r}")
                    sent += 1
        for template in _PATHS:
            for value in _PATH_VALUES:
                for method in ("GET", "DELETE", "PUT", "POST"):
                    url = template.replace("{x}", value)
                    r = client.request(method, url, headers={"Authorization": keys[role]})
                    _check(r, seen, f"{method} {url[:80]}")
                    sent += 1
            r = client.get(
                template.replace("{x}", "1"), params={"k": "10**30"}, headers={"Authorization": keys[role]}
            )
            _check(r, seen, template)
        for bad in ("", "Bearer", "Bearer tk_x_y", "Bearer tk__", "Bearer " + "x" * 10_000, "Basic dTpw"):
            r = client.get("/v1/model", headers={"Authorization": bad})
            _check(r, seen, f"authorization {bad[:20]!r}")
    assert sent > 1000 and seen[500] == 0
    assert seen[422] > 100 and seen[413] > 0 and seen[415] > 0, seen
    assert proc.proc is not None and proc.proc.poll() is None, "the server is still up"


def test_a_900kb_ticket_is_refused_naming_the_field_and_the_cap_and_nothing_is_written(
    served: tuple[ServerProcess, httpx.Client, dict[str, str]],
) -> None:
    proc, client, keys = served
    crm = {"Authorization": keys["crm"]}
    ok = {"customer_id": "101", "kind": "support_ticket", "text": "fine", "timestamp": AT}
    big = {**ok, "text": "x" * 900_000}
    r = client.post("/v1/events", headers=crm, json={"events": [ok, big]})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "events.1.text" and f"at most {MAX_TEXT_LENGTH} characters" in error["message"]
    store = Store(proc.data_dir / "tailor.db")
    try:
        assert all(e.text != "fine" for e in store.events("101")), "the batch was refused whole"
    finally:
        store.close()


@pytest.mark.parametrize("bad", ["\x00", "\x07", "\x1b[31m", "\u202e"])
def test_control_characters_are_refused_in_every_free_text_field(
    served: tuple[ServerProcess, httpx.Client, dict[str, str]], bad: str
) -> None:
    _, client, keys = served
    crm, support = {"Authorization": keys["crm"]}, {"Authorization": keys["support"]}
    code = f"U+{ord(bad[0]):04X}"
    ticket = {"customer_id": "101", "kind": "support_ticket", "text": "a" + bad, "timestamp": AT}
    person = {"id": "901", "first_name": bad, "email": "x@example.test", "country": "UK"}
    traits = {"firstName": "Al" + bad, "email": "a@example.test", "country": "UK"}
    cases = [
        (crm, "/v1/events", {"events": [ticket]}, "events.0.text"),
        (crm, "/v1/events", {"customers": [person]}, "customers.0.first_name"),
        (crm, "/v1/events", {"type": "identify", "userId": "902", "traits": traits}, "traits.firstName"),
        (support, "/v1/support/suggestions", {"customer_id": "100", "question": "hi" + bad}, "question"),
        (crm, "/v1/feedback", {"customer_id": "100", "signal": "click", "note": bad}, "note"),
        (crm, "/v1/campaigns", {"audience": {"customer_ids": ["10" + bad]}}, "audience.customer_ids.0"),
    ]
    for headers, url, body, field in cases:
        r = client.post(url, headers=headers, json=body)
        assert r.status_code == 422, (url, r.text)
        error = r.json()["error"]
        assert code in error["message"] and (error["field"] or "").endswith(field), (url, error)
