"""The parts of the service that need no server: Segment mapping, metrics text, the rate limiter."""

from __future__ import annotations

from pathlib import Path

import pytest

from tailor.api import TokenBuckets
from tailor.errors import DataError, RecordError, VectorStoreError
from tailor.jobs import JobRunner, check_callback_url
from tailor.metrics import Metrics, record_outcome
from tailor.models import Consent, Customer, Email, EventKind, Refusal
from tailor.ops import Ops
from tailor.segment import from_segment, is_segment
from tailor.settings import Settings
from tailor.store import Store
from tests.server import Outcome

ANN = Customer(id="100", first_name="Ann", email="ann@example.test", country="United Kingdom")


def test_track_order_completed_becomes_one_purchase_per_product() -> None:
    call = {
        "type": "track",
        "userId": 100,
        "event": "Order Completed",
        "messageId": "m-1",
        "timestamp": "2011-12-01T10:00:00Z",
        "properties": {
            "order_id": "O9",
            "products": [{"product_id": "A", "quantity": 2, "price": 1.5}, {"sku": "B"}],
        },
    }
    out = from_segment(call, {})
    assert [(e.kind, e.item_id, e.quantity, e.order_id) for e in out.events] == [
        (EventKind.PURCHASE, "A", 2, "O9"),
        (EventKind.PURCHASE, "B", 1, "O9"),
    ]
    assert out.events[0].customer_id == "100" and out.events[0].timestamp.year == 2011
    # A redelivered call maps to the same ids, so the store keeps it once.
    assert [e.id for e in from_segment(call, {}).events] == [e.id for e in out.events]


def test_identify_updates_a_known_customer_and_creates_a_new_one() -> None:
    batch = {
        "batch": [
            {"type": "identify", "userId": "100", "traits": {"address": {"country": "France"}}},
            {
                "type": "identify",
                "userId": "200",
                "traits": {
                    "firstName": "Bo",
                    "email": "bo@example.test",
                    "country": "Spain",
                    "consent": {"marketing_email": True},
                },
            },
        ]
    }
    out = from_segment(batch, {"100": ANN})
    assert out.customers[0].country == "France" and out.customers[0].first_name == "Ann"
    assert out.customers[1].consent == Consent(marketing_email=True)


@pytest.mark.parametrize(
    ("call", "field", "line"),
    [
        ({"type": "track", "userId": "1", "event": "Page Scrolled"}, "event", 1),
        ({"type": "track", "event": "Product Viewed", "properties": {"product_id": "A"}}, "userId", 1),
        (
            {"type": "track", "userId": "1", "event": "Product Viewed", "properties": {}},
            "properties.product_id",
            1,
        ),
        ({"type": "page", "userId": "1"}, "type", 1),
        ({"type": "identify", "userId": "9", "traits": {"firstName": "X"}}, "traits.email", 1),
        (
            {
                "batch": [
                    {
                        "type": "track",
                        "userId": "1",
                        "event": "Product Viewed",
                        "properties": {"product_id": "A"},
                    },
                    {
                        "type": "track",
                        "userId": "1",
                        "event": "Product Viewed",
                        "properties": {"product_id": "A"},
                        "timestamp": "yesterday",
                    },
                ]
            },
            "timestamp",
            2,
        ),
    ],
)
def test_bad_segment_calls_name_the_field_and_position(
    call: dict[str, object], field: str, line: int
) -> None:
    with pytest.raises(RecordError) as info:
        from_segment(call, {})
    assert info.value.field == field and info.value.line == line


def test_is_segment() -> None:
    assert is_segment({"type": "track"}) and is_segment({"batch": []}) and not is_segment({"events": []})


def test_metrics_text_exposition() -> None:
    m = Metrics()
    m.inc("tailor_http_requests_total", {"route": "/v1/x", "status": "200", "method": "GET"})
    m.inc("tailor_http_requests_total", {"route": "/v1/x", "status": "200", "method": "GET"})
    m.observe("tailor_http_request_duration_seconds", 0.03, {"route": "/v1/x"})
    m.observe("tailor_http_request_duration_seconds", 3.0, {"route": "/v1/x"})
    record_outcome(
        m,
        [
            {"rail": "brand", "passed": False},
            {"rail": "privacy", "passed": True},
            {"step": "generate", "usage": {"prompt_tokens": 10, "completion_tokens": 5}},
        ],
        ("reason:I1", "subject"),
    )
    text = m.render()
    assert 'tailor_http_requests_total{method="GET",route="/v1/x",status="200"} 2' in text
    assert 'tailor_http_request_duration_seconds_bucket{route="/v1/x",le="0.05"} 1' in text
    assert 'tailor_http_request_duration_seconds_bucket{route="/v1/x",le="+Inf"} 2' in text
    assert 'tailor_http_request_duration_seconds_count{route="/v1/x"} 2' in text
    assert 'tailor_guardrail_blocks_total{rail="brand"} 1' in text and 'rail="privacy"' not in text
    assert 'tailor_llm_tokens_total{kind="prompt"} 10' in text
    assert 'tailor_fallbacks_total{part="reason"} 1' in text
    assert "# TYPE tailor_http_request_duration_seconds histogram" in text


def test_token_bucket_refuses_past_the_burst_and_says_when_to_retry() -> None:
    buckets = TokenBuckets(rate=0.5, burst=2)
    assert buckets.take("k") == 0.0 and buckets.take("k") == 0.0
    wait = buckets.take("k")
    assert 1.0 < wait <= 2.0
    assert buckets.take("other") == 0.0


class _ScriptedEmails:
    """Answers ``email`` from a script: an exception to raise or an outcome; running out is a failure."""

    def __init__(self, store: Store, settings: Settings, script: list[object]) -> None:
        self.store = store
        self.settings = settings
        self.script = script
        self.calls: list[str] = []

    def email(self, customer_id: str, trigger: object, *, send: bool = False) -> object:
        self.calls.append(customer_id)
        if not self.script:
            raise AssertionError("scripted facade ran out of answers")
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        return step


def test_runner_defers_while_qdrant_is_down_then_finishes(tmp_path: Path, settings: Settings) -> None:
    ops = Ops(tmp_path / "ops.db")
    store = Store(tmp_path / "tailor.db")
    email = Email(
        customer_id="100",
        action="browse",
        subject="s",
        preheader="",
        body_text="b",
        body_html="b",
        products=(),
        writer="template",
    )
    refusal = Refusal(customer_id="200", reason="no_marketing_consent", detail="opted out")
    script: list[object] = [
        VectorStoreError("connection refused"),
        Outcome(refusal=refusal),
        Outcome(email=email),
    ]
    facade = _ScriptedEmails(store, settings.model_copy(update={"job_retry_s": 30.0}), script)
    runner = JobRunner(facade, ops, facade.settings)  # type: ignore[arg-type]
    job = ops.create_job("campaign", ["100", "200"], {"trigger": {"kind": "browse"}}).job_id
    assert runner.run_once()  # 100: Qdrant down, deferred
    state = ops.get_job(job)
    assert (state.counts["pending"], state.counts["deferred"]) == (2, 1)
    assert runner.run_once()  # 200 is due, 100 is not
    assert ops.get_job(job).refusals == {"no_marketing_consent": 1}
    assert not runner.run_once()
    ops._db.execute("UPDATE job_items SET next_attempt=0")  # time passes
    assert runner.run_once()
    assert ops.get_job(job).status == "done" and facade.calls == ["100", "200", "100"] and not script
    assert runner.metrics.value("tailor_jobs_items_total", {"status": "deferred"}) == 1
    ops.close()
    store.close()


def test_callback_urls_must_be_http_to_an_allowed_host() -> None:
    assert check_callback_url("http://127.0.0.1:9/x", ["127.0.0.1"]) == "http://127.0.0.1:9/x"
    with pytest.raises(DataError, match="not allowed"):
        check_callback_url("http://169.254.169.254/latest", ["127.0.0.1"])
    with pytest.raises(DataError, match="not an http"):
        check_callback_url("file:///etc/passwd", ["127.0.0.1"])
