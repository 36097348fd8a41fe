"""The parts of the service that need no server: Segment mapping, metrics text, the rate limiter."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agent.audit import check_fields, record, write_fields
from agent.writers import EmailCopy, ScriptedWriter, WriteResult
from guardrails.base import Finding, Verdict
from prompts import PromptRef
from retrieval.recommender import HybridRecommender
from tailor.app.http import TokenBuckets
from tailor.app.jobs import JobRunner, check_callback_url
from tailor.app.metrics import Metrics, record_outcome
from tailor.app.ops import Ops
from tailor.app.service import Tailor
from tailor.core.errors import DataError, NotFoundError, RecordError, VectorStoreError
from tailor.core.logs import describe
from tailor.core.models import Consent, Customer, Email, Event, EventKind, Refusal
from tailor.core.sends import send_token
from tailor.core.settings import Settings
from tailor.data.segment import from_segment, is_segment
from tailor.data.store import Store
from tests.openai_endpoint import chat, fail, good_part, scripted_endpoint
from tests.ops_backends import time_passes
from tests.retailers import Retailer
from tests.server import outcome, seed_store
from tests.test_api_server import ScriptedHTTP

GOOD_COPY = EmailCopy(subject="s", preheader="p", intro="i", reasons={})
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


def _viewed(user: object = "1", **extra: object) -> dict[str, object]:
    return {
        "type": "track",
        "userId": user,
        "event": "Product Viewed",
        "properties": {"product_id": "A"},
        **extra,
    }


def _order(*products: dict[str, object]) -> dict[str, object]:
    return {
        "type": "track",
        "userId": "1",
        "event": "Order Completed",
        "properties": {"products": list(products)},
    }


@pytest.mark.parametrize(
    ("call", "field", "line"),
    [
        ({"type": "track", "event": "Product Viewed", "properties": {"product_id": "A"}}, "userId", 1),
        (
            {"type": "track", "userId": "1", "event": "Product Viewed", "properties": {}},
            "properties.product_id",
            1,
        ),
        ({"type": "identify", "userId": "9", "traits": {"firstName": "X"}}, "traits.email", 1),
        ({"batch": [_viewed(), _viewed(timestamp="yesterday")]}, "batch[1].timestamp", 2),
        # A known event with bad properties, after calls that are fine or skipped: the position is exact.
        (
            {
                "batch": [
                    _viewed(),
                    {"type": "page", "userId": "1"},
                    _order({"sku": "A"}, {"sku": "B", "quantity": -2}),
                ]
            },
            "batch[2].properties.products[1].quantity",
            3,
        ),
        (_order({"product_id": "A", "quantity": 1.5}), "properties.products[0].quantity", 1),
        (_order({"product_id": "A", "price": "cheap"}), "properties.products[0].price", 1),
        (_order({"product_id": "A", "price": -1}), "properties.products[0].price", 1),
        (_order({"product_id": "A", "quantity": 10**30}), "properties.products[0].quantity", 1),
        (_order({"product_id": "A", "quantity": 10**9, "price": 1e300}), "properties.products[0].price", 1),
        (_order(), "properties.products", 1),
        (_order("A"), "properties.products[0]", 1),
        (_viewed(["1"]), "userId", 1),
        (_viewed(True), "userId", 1),
        ({**_viewed(), "properties": ["A"]}, "properties", 1),
        ({**_viewed(), "timestamp": 1322990400}, "timestamp", 1),
        ({"type": "pageview", "userId": "1"}, "type", 1),
        ({"userId": "1", "event": "Product Viewed"}, "type", 1),
        ({"type": "track", "userId": "1"}, "event", 1),
        ({"type": "track", "userId": "1", "event": 7}, "event", 1),
        ({"type": "page", "properties": {"url": "https://shop.test/"}}, "userId", 1),
        ({"type": "screen", "anonymousId": "a1", "properties": "home"}, "properties", 1),
        ({"type": "alias", "userId": "1"}, "previousId", 1),
        ({"type": "alias", "previousId": "a1"}, "userId", 1),
        ({"type": "group", "userId": "1"}, "groupId", 1),
        ({"type": "identify", "anonymousId": "a1", "traits": "Ann"}, "traits", 1),
        (
            {"type": "identify", "userId": "100", "traits": {"consent": {"marketing_email": "maybe"}}},
            "traits.consent.marketing_email",
            1,
        ),
        ({"type": "identify", "userId": "100", "traits": {"firstName": 42}}, "traits.firstName", 1),
        ({"batch": [_viewed(), "page"]}, "batch[1]", 2),
        ({"batch": []}, "batch", 1),
        ({"batch": {"type": "page"}}, "batch", 1),
    ],
)
def test_bad_segment_calls_name_the_field_and_position(
    call: dict[str, object], field: str, line: int
) -> None:
    with pytest.raises(RecordError) as info:
        from_segment(call, {"100": ANN})
    assert (info.value.field, info.value.line) == (field, line)
    assert f"segment:{line}:" in str(info.value) and field in str(info.value)


def test_calls_tailor_does_not_use_are_skipped_and_counted() -> None:
    batch = {
        "batch": [
            {"type": "page", "userId": "100", "name": "Home", "properties": {"url": "https://shop.test/"}},
            {"type": "page", "anonymousId": "a1"},
            {"type": "screen", "userId": "100", "name": "Basket"},
            {"type": "group", "userId": "100", "groupId": "g1", "traits": {"name": "Acme"}},
            {"type": "alias", "userId": "100", "previousId": "a1"},
            {
                "type": "track",
                "userId": "100",
                "event": "Product List Viewed",
                "properties": {"list_id": "x"},
            },
            {"type": "track", "anonymousId": "a1", "event": "Product Viewed", "properties": {}},
            {"type": "identify", "anonymousId": "a1", "traits": {"email": "a1@example.test"}},
            _viewed("100", messageId="m-v"),
            {"type": "identify", "userId": "100", "traits": {"country": "France"}},
        ]
    }
    out = from_segment(batch, {"100": ANN})
    assert out.accepted == 2 and sum(out.skipped.values()) == 8
    assert out.skipped == {
        "page": 2,
        "screen": 1,
        "group": 1,
        "alias": 1,
        "track:Product List Viewed": 1,
        "anonymous:track": 1,
        "anonymous:identify": 1,
    }
    assert [(e.customer_id, e.kind, e.item_id) for e in out.events] == [("100", EventKind.VIEW, "A")]
    assert [c.country for c in out.customers] == ["France"]


def test_a_skip_reason_quotes_at_most_100_characters_of_the_event_name() -> None:
    out = from_segment({"type": "track", "userId": "1", "event": "x" * 500}, {})
    assert out.skipped == {"track:" + "x" * 100: 1} and out.accepted == 0 and not out.events


def test_segment_values_are_line_totals_as_in_the_import() -> None:
    out = from_segment(
        {
            "batch": [
                _order({"product_id": "A", "quantity": 3, "price": 1.25}, {"product_id": "B", "price": 2}),
                {
                    "type": "track",
                    "userId": "1",
                    "event": "Product Added",
                    "properties": {"product_id": "C", "quantity": 2, "price": 4.5},
                },
            ]
        },
        {},
    )
    assert [(e.item_id, e.quantity, e.value) for e in out.events] == [
        ("A", 3, 3.75),
        ("B", 1, 2.0),
        ("C", 2, 9.0),
    ]


def test_ingest_writes_nothing_when_one_reference_is_unknown(tmp_path: Path) -> None:
    # The real facade: a batch with a new profile and an event it cannot take lands whole or not at all.
    data = tmp_path / "data"
    seed_store(data)
    new = Customer(id="n1", first_name="Nia", email="nia@example.test", country="France")
    at = datetime(2011, 12, 9, tzinfo=UTC)
    with Tailor(Settings(data_dir=data, now=NOW)) as tailor:
        before = tailor.store.counts()
        unknown_item = Event(customer_id="n1", kind=EventKind.VIEW, item_id="NOPE", timestamp=at)
        with pytest.raises(NotFoundError, match="NOPE"):
            tailor.ingest([unknown_item], [new])
        stranger = Event(customer_id="n2", kind=EventKind.VIEW, item_id="I1", timestamp=at)
        with pytest.raises(NotFoundError, match="n2"):
            tailor.ingest([stranger], [new])
        assert not tailor.store.has_customer("n1") and tailor.store.counts() == before


def test_is_segment() -> None:
    assert is_segment({"type": "track"}) and is_segment({"batch": []}) and not is_segment({"events": []})


def test_a_logged_error_names_its_type_and_place_but_never_its_message() -> None:
    def parse(question: str) -> None:
        raise ValueError(f"cannot parse {question!r}")

    try:
        try:
            parse("mail ann@example.com")
        except ValueError as exc:
            raise RuntimeError("while answering ann@example.com") from exc
    except RuntimeError as exc:
        text = describe(exc)
    assert "example.com" not in text and "answering" not in text
    caused, cause = text.split("; from ")
    assert caused.startswith("RuntimeError at tests/test_api_units.py:")
    assert cause.startswith("ValueError at tests/test_api_units.py:") and " in parse <- " in cause
    try:
        {}["ann@example.com"]
    except KeyError as exc:  # a KeyError's message is its key: here, personal data
        assert describe(exc, frames=0) == "KeyError"


def test_metrics_text_exposition() -> None:
    m = Metrics()
    m.inc("tailor_http_requests_total", {"route": "/v1/x", "status": "200", "method": "GET"})
    m.inc("tailor_http_requests_total", {"route": "/v1/x", "status": "200", "method": "GET"})
    m.observe("tailor_http_request_duration_seconds", 0.03, {"route": "/v1/x"})
    m.observe("tailor_http_request_duration_seconds", 3.0, {"route": "/v1/x"})
    # The trace as the agent writes it (agent.audit), from real verdicts and a real writer result.
    blocked = Verdict("brand", False, (Finding("shouting", "caps", part="subject"),))
    result = WriteResult(GOOD_COPY, (PromptRef("llm.email_copy", 1),), "m", 15, 10, 5)
    audit = [
        *record("generate", time.perf_counter(), writer="openai", **write_fields(result, None)),
        *record("check", time.perf_counter(), **check_fields([blocked, Verdict("privacy", True)])),
        *record("revise", time.perf_counter(), writer="openai", **write_fields(None, "timed out")),
    ]
    # The retailer keeps preheaders to the template (TAILOR_LLM_PARTS): not a fallback of the model's, even
    # where the model gave nothing at all (the revise above timed out).
    record_outcome(
        m, audit, ("reason:I1", "subject", "preheader"), model_parts=("subject", "intro", "reason")
    )
    text = m.render()
    assert 'tailor_http_requests_total{method="GET",route="/v1/x",status="200"} 2' in text
    assert 'tailor_http_request_duration_seconds_bucket{route="/v1/x",le="0.05"} 1' in text
    assert 'tailor_http_request_duration_seconds_bucket{route="/v1/x",le="+Inf"} 2' in text
    assert 'tailor_http_request_duration_seconds_count{route="/v1/x"} 2' in text
    assert 'tailor_guardrail_blocks_total{rail="brand"} 1' in text and 'rail="privacy"' not in text
    assert 'tailor_llm_tokens_total{kind="prompt"} 10' in text
    assert 'tailor_llm_tokens_total{kind="completion"} 5' in text
    assert 'tailor_fallbacks_total{part="reason"} 1' in text
    assert 'tailor_template_parts_kept_total{part="preheader"} 1' in text
    assert 'tailor_fallbacks_total{part="preheader"}' not in text
    assert "# TYPE tailor_http_request_duration_seconds histogram" in text


def test_token_bucket_refuses_past_the_burst_and_says_when_to_retry() -> None:
    buckets = TokenBuckets(rate=0.5, burst=2)
    assert buckets.take("k") == 0.0 and buckets.take("k") == 0.0
    wait = buckets.take("k")
    assert 1.0 < wait <= 2.0
    assert buckets.take("other") == 0.0


def _plain_email(customer_id: str) -> Email:
    return Email(
        customer_id=customer_id,
        action="browse",
        subject="s",
        preheader="",
        body_text="b",
        body_html="b",
        products=(),
        writer="template",
    )


class _ScriptedEmails:
    """Answers ``email`` from a script: an exception to raise or an outcome; running out is a failure."""

    def __init__(self, store: Store, settings: Settings, script: list[object]) -> None:
        self.store = store
        self.settings = settings
        self.script = script
        self.calls: list[str] = []

    def now(self) -> datetime:
        return datetime(2011, 12, 10, 10, tzinfo=UTC)

    def email(
        self, customer_id: str, trigger: object, *, send: bool = False, decision_key: str = ""
    ) -> object:
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
    email = _plain_email("100")
    refusal = Refusal(customer_id="200", reason="no_marketing_consent", detail="opted out")
    script: list[object] = [
        VectorStoreError("connection refused"),
        outcome(refusal=refusal),
        outcome(email=email),
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
    time_passes(ops)  # time passes
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
    # URLs no client could send to are refused when the job is asked for, not found out at delivery.
    for url in ("http://[::1/x", "http://127.0.0.1:abc/x", "http://127.0.0.1:99999/x"):
        with pytest.raises(DataError, match="is not a valid URL"):
            check_callback_url(url, ["127.0.0.1"])


def test_a_callback_that_cannot_be_sent_fails_alone(tmp_path: Path, settings: Settings) -> None:
    ops = Ops(tmp_path / "ops.db")
    store = Store(tmp_path / "tailor.db")
    email = _plain_email("100")
    facade = _ScriptedEmails(store, settings, [outcome(email=email), outcome(email=email)])
    runner = JobRunner(facade, ops, facade.settings)  # type: ignore[arg-type]
    sink = ScriptedHTTP(script=["ok"])
    try:
        spec = {"trigger": {"kind": "browse"}}
        # Stored before URLs were checked for their port: delivery raises httpx.InvalidURL, which is no
        # HTTPError. The runner gives up on this callback, and goes on to the next job's.
        bad = ops.create_job("email", ["100"], spec, callback_url="http://127.0.0.1:abc/x").job_id
        good = ops.create_job("email", ["100"], spec, callback_url=sink.url + "/hook").job_id
        assert runner.run_once() and runner.run_once()
        runner.deliver_callbacks()
        assert ops.get_job(bad).callback_status == "failed"
        assert ops.get_job(good).callback_status == "delivered"
        assert [p["job"]["id"] for p in sink.posts] == [good] and sink.overruns == 0
        assert ops.jobs_needing_callback() == []
    finally:
        sink.close()
        ops.close()
        store.close()


# -- the runner over the real Tailor: the agent, the store, the ops database ----------------------------

NOW = "2011-12-10T10:00:00+00:00"


class _Killed(BaseException):
    """Stands for SIGKILL at one point of the runner: nothing after it runs, nothing catches it."""


@pytest.fixture(scope="module")
def imported(slice_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A data dir with the slice imported and the ranker fitted (copied per test), and a customer who
    gets an email from the template writer."""
    data = tmp_path_factory.mktemp("runner") / "data"
    with Tailor(Settings(data_dir=data, now=NOW)) as tailor:
        tailor.import_dir(slice_dir)
        _use_recommender(tailor)
        for customer in tailor.store.customers():
            if customer.consent.marketing_email and tailor.email(customer.id).email is not None:
                return data, customer.id
    raise AssertionError("no customer of the slice gets an email")


def _use_recommender(tailor: Tailor) -> None:
    # The real recommender, fitted on the store, without text vectors: embedding the whole catalog with
    # the sentence-transformer costs minutes on a small machine and is not what these tests are about.
    tailor.recommender = HybridRecommender.build(tailor.store, tailor.settings)


@pytest.fixture
def rig(imported: tuple[Path, str], tmp_path: Path) -> Iterator[tuple[Tailor, Ops, str]]:
    import shutil

    source, cid = imported
    data = tmp_path / "data"
    shutil.copytree(source, data)
    tailor = Tailor(Settings(data_dir=data, now=NOW))
    _use_recommender(tailor)
    ops = Ops(data / "ops.db")
    yield tailor, ops, cid
    ops.close()
    tailor.close()


def _job(ops: Ops, cid: str) -> str:
    return ops.create_job("email", [cid], {"trigger": {"kind": "campaign"}}).job_id


@pytest.mark.slow
def test_runner_keeps_the_real_agents_audit_trace_and_counts_its_blocks(rig: tuple[Tailor, Ops, str]) -> None:
    tailor, ops, cid = rig
    preview = tailor.email(cid).email
    assert preview is not None
    first = preview.products[0].item_id
    reasons = {p.item_id: p.reason for p in preview.products}
    invented = EmailCopy(
        subject=preview.subject,
        preheader=preview.preheader,
        intro=preview.body_text.split("\n\n", 1)[0].replace("\n", " "),
        reasons={**reasons, first: "Now only £0.01, today only."},
    )
    tailor.writer = ScriptedWriter([invented, invented])
    runner = JobRunner(tailor, ops, tailor.settings)
    job = _job(ops, cid)
    assert runner.run_once()
    [item] = ops.job_items(job)
    assert item.status == "done" and item.result is not None
    assert item.result["email"]["fallback_parts"] == [f"reason:{first}"]
    [traced] = ops.item_audits(job)
    nodes = [a["node"] for a in traced["audit"]]
    assert nodes[:3] == ["load_context", "retrieve", "plan"] and nodes[-1] == "finalize"
    # An invented price: ungrounded, and no reason from the product's evidence either.
    both = ["copy_quality", "grounding"]
    assert [a["blocked"] for a in traced["audit"] if a["node"] == "check"] == [both, both, []]
    assert runner.metrics.value("tailor_guardrail_blocks_total", {"rail": "grounding"}) == 2
    assert runner.metrics.value("tailor_fallbacks_total", {"part": "reason"}) == 1
    assert len(tailor.store.contacts(cid)) == 1 and not ops.pending_contacts()


@pytest.mark.slow
def test_runner_defers_while_the_model_endpoint_fails_then_sends(rig: tuple[Tailor, Ops, str]) -> None:
    tailor, ops, cid = rig

    answer = good_part

    with scripted_endpoint() as ep:
        tailor.settings = tailor.settings.model_copy(
            update={
                "writer": "openai",
                "llm_base_url": ep.url,
                "llm_model": "m",
                "llm_max_retries": 1,
                "llm_timeout_s": 5,
                "llm_json_schema": True,
                "llm_unavailable": "defer",
            }
        )
        ep.script.extend([fail(500), fail(500)])
        runner = JobRunner(tailor, ops, tailor.settings.model_copy(update={"job_retry_s": 60.0}))
        job = _job(ops, cid)
        assert runner.run_once()
        state = ops.get_job(job)
        assert (state.status, state.counts["pending"], state.counts["deferred"]) == ("queued", 1, 1)
        assert len(ep.requests) == 2, "one try and one retry, then the item is deferred"
        assert not ops.job_items(job) and tailor.store.contacts(cid) == []
        assert not runner.run_once(), "not due yet: the backoff holds it"
        ep.script.extend(chat(answer, usage=(50, 20)) for _ in range(8))
        time_passes(ops)  # time passes
        assert runner.run_once()
    [item] = ops.job_items(job)
    assert item.status == "done" and item.result is not None
    email = item.result["email"]
    assert email["writer"] == "openai" and email["subject"].startswith(
        f"{tailor.store.get_customer(cid).first_name}, "
    )
    parts = 3 + len(email["products"])  # one request a part, each counted
    assert runner.metrics.value("tailor_llm_tokens_total", {"kind": "prompt"}) == 50 * parts
    assert runner.metrics.value("tailor_llm_tokens_total", {"kind": "completion"}) == 20 * parts
    assert runner.metrics.value("tailor_jobs_items_total", {"status": "deferred"}) == 1
    generate = next(a for a in ops.item_audits(job)[0]["audit"] if a["node"] == "generate")
    assert generate["prompt_tokens"] == 50 * parts and generate["error"] is None
    assert len(tailor.store.contacts(cid)) == 1


@pytest.mark.slow
def test_a_kill_between_the_email_and_its_result_does_not_lose_the_email(
    rig: tuple[Tailor, Ops, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tailor, ops, cid = rig
    job = _job(ops, cid)

    def killed(*args: object, **kwargs: object) -> bool:
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(ops, "finish_item", killed)
        with pytest.raises(_Killed):
            JobRunner(tailor, ops, tailor.settings).run_once()
    assert tailor.store.contacts(cid) == [], "the contact is recorded only with a saved result"
    restarted = JobRunner(tailor, ops, tailor.settings)
    assert restarted.run_once()  # the redo of the same item
    [item] = ops.job_items(job)
    assert item.status == "done" and item.result is not None and item.result["email"]["customer_id"] == cid
    assert len(tailor.store.contacts(cid)) == 1
    # The cap still holds for another job.
    other = _job(ops, cid)
    assert restarted.run_once()
    assert ops.job_items(other)[0].reason == "frequency_cap"
    assert len(tailor.store.contacts(cid)) == 1


@pytest.mark.slow
def test_a_kill_between_the_result_and_the_contact_record_keeps_both(
    rig: tuple[Tailor, Ops, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tailor, ops, cid = rig
    job = _job(ops, cid)

    def killed(*args: object, **kwargs: object) -> None:
        raise _Killed

    with monkeypatch.context() as patch:
        patch.setattr(tailor.store, "record_send", killed)
        with pytest.raises(_Killed):
            JobRunner(tailor, ops, tailor.settings).run_once()
    assert ops.job_items(job)[0].status == "done" and len(ops.pending_contacts()) == 1
    assert tailor.store.contacts(cid) == [] and tailor.store.impressions(cid) == []
    # Killed again, after the record but before the note is cleared: the restart must not record it twice.
    with monkeypatch.context() as patch:
        patch.setattr(ops, "contact_recorded", killed)
        with pytest.raises(_Killed):
            JobRunner(tailor, ops, tailor.settings).run_once()
    assert len(tailor.store.contacts(cid)) == 1
    assert not JobRunner(tailor, ops, tailor.settings).run_once()  # nothing to do but the note
    assert len(tailor.store.contacts(cid)) == 1 and not ops.pending_contacts()
    assert ops.job_items(job)[0].result is not None
    # The send's products were recorded once too, with its contact.
    sent = [p["item_id"] for p in ops.job_items(job)[0].result["email"]["products"]]  # type: ignore[index]
    assert sorted(i for i, _ in tailor.store.impressions(cid)) == sorted(sent) and sent


@pytest.mark.slow
def test_job_sends_count_toward_the_impression_cap_which_refuses_the_fourth(
    retail_store: Store, retailer: Retailer, tmp_path: Path
) -> None:
    """Every job's send records its products as impressions; after three identical ones, the cap
    (``max_impressions_30d=3``) keeps those products out of the fourth email. Under each retailer."""
    import sqlite3

    data = tmp_path / "data"
    data.mkdir()
    # A copy of the retailer's session store (read-only there), with what its write-ahead log holds.
    with sqlite3.connect(retail_store.path) as src, sqlite3.connect(data / "tailor.db") as dst:
        src.backup(dst)
    # No frequency cap, so that four emails in a row are allowed and the impression cap is what decides.
    settings = Settings(
        data_dir=data, now=NOW, frequency_cap_days=0, max_impressions_30d=3, brand_config=retailer.path
    )
    with Tailor(settings) as tailor:
        _use_recommender(tailor)
        cid = next(
            c.id
            for c in tailor.store.customers()
            if c.consent.marketing_email and tailor.email(c.id).email is not None
        )
        ops = Ops(data / "ops.db")
        runner = JobRunner(tailor, ops, settings)
        sent: list[set[str]] = []
        for _ in range(4):
            job = _job(ops, cid)
            assert runner.run_once()
            [item] = ops.job_items(job)
            assert item.status == "done" and item.result is not None, item
            sent.append({p["item_id"] for p in item.result["email"]["products"]})
        ops.close()
        shown = [i for i, _ in tailor.store.impressions(cid)]
        contacts = tailor.store.contacts(cid)
    assert sent[0] == sent[1] == sent[2], "the same products, three times: the cap is not reached yet"
    assert not sent[3] & sent[0], "the fourth email shows none of the products shown three times"
    assert {i: shown.count(i) for i in sent[0]} == dict.fromkeys(sent[0], 3) and len(contacts) == 4


def test_a_send_is_recorded_once_per_send_id(fresh_store: Store) -> None:
    fresh_store.upsert_customers([ANN])
    when = datetime(2011, 12, 10, 10, tzinfo=UTC)
    assert fresh_store.record_send("job:j1:100", "100", ["I1", "I2", "I1"], when)
    assert not fresh_store.record_send("job:j1:100", "100", ["I1", "I2"], when), "a replay counts nothing"
    assert fresh_store.contacts("100") == [when]
    assert sorted(i for i, _ in fresh_store.impressions("100")) == ["I1", "I2"]
    assert fresh_store.delete_customer("100")["impressions"] == 2
    # Forgotten, the send's key goes too; nothing of it is left to match.
    assert fresh_store._query("SELECT COUNT(*) FROM sends") == [(0,)]


@pytest.mark.slow
def test_a_campaign_that_explores_logs_exact_probabilities_and_the_policy_suite_judges_its_log(
    rig: tuple[Tailor, Ops, str], tmp_path: Path
) -> None:
    """The real runner on every consenting customer of the slice, 30% held out and 30% explored: each
    decision's probability is the product of the two draws, the log's within-group probability is the
    planner's, and ``tailor eval --suite policy`` judges policies on that log with the rewards that came."""
    from evals.own_log import ACTIONS
    from evals.report import Report
    from tailor.app.evaluate import run_suites

    tailor, ops, _ = rig
    tailor.settings = tailor.settings.model_copy(
        update={"holdout_share": 0.3, "explore_share": 0.3, "holdout_salt": "explore-test"}
    )
    customers = [c.id for c in tailor.store.customers() if c.consent.marketing_email]
    job = ops.create_job("campaign", customers, {"trigger": {"kind": "campaign"}}).job_id
    runner = JobRunner(tailor, ops, tailor.settings)
    while runner.run_once():
        pass
    log = ops.all_decisions()
    assert sorted(d["customer_id"] for d in log) == sorted(customers) and {d["job_id"] for d in log} == {job}
    explored = 0
    for d in log:
        detail = d["detail"]
        assert d["policy"].startswith("planner-1;holdout=0.3;explore=0.3@")
        if detail["group"] == "holdout":
            assert d["action"] == "nothing" and d["propensity"] == 0.3
            continue
        within = detail["action_propensity"]
        assert d["propensity"] == pytest.approx(0.7 * within)
        emails = [a for a in detail["options"] if a != "nothing"]
        if not emails:
            assert d["action"] == "nothing" and within == 1.0
            continue
        greedy = d["action"] == detail["greedy"]
        assert within == pytest.approx((0.7 if greedy else 0.0) + 0.3 / len(emails))
        explored += detail["explored"]
    # Purchases after the campaign by every other customer: the rewards the suite reads.
    buyers = customers[::2]
    tailor.store.add_events(
        [
            Event(
                customer_id=c,
                kind=EventKind.PURCHASE,
                item_id=tailor.store.items()[0].id,
                quantity=1,
                value=5.0,
                timestamp=datetime(2011, 12, 12, 9, tzinfo=UTC),
                order_id=f"after-{c}",
            )
            for c in buyers
        ]
        # A later purchase, outside every window: the data reach past the 7 days, so every window is closed.
        + [
            Event(
                customer_id=customers[0],
                kind=EventKind.PURCHASE,
                item_id=tailor.store.items()[0].id,
                quantity=1,
                value=5.0,
                timestamp=datetime(2011, 12, 20, 9, tzinfo=UTC),
                order_id="later",
            )
        ]
    )
    held = [d for d in log if d["detail"]["group"] == "holdout"]
    targeted = [d for d in log if d["detail"]["group"] == "targeted"]
    # One buyer got another email (a direct send) between the campaign and her purchase. Her decision is
    # still rewarded: policies are judged over whole windows, as the campaign comparison counts them (a
    # later email, which the frequency cap keeps from the emailed only, must not decide the reward).
    handed_on = next(
        d["customer_id"]
        for d in targeted
        if d["customer_id"] in buyers and d["action"] == (d["detail"]["greedy"] or "nothing")
    )
    assert tailor.store.record_send("direct:between", handed_on, [], datetime(2011, 12, 11, 9, tzinfo=UTC))
    credited = set(buyers)
    # Clicks on the emails of every other emailed customer, each naming its own send; and a click naming
    # another customer's send (a forwarded email), which is not hers.
    secret = ops.secret("send")
    emailed = [d["customer_id"] for d in targeted if d["action"] != "nothing"]
    clickers = set(emailed[::2])
    assert clickers and len(emailed) > 1
    forwarded_to = next(c for c in customers if c not in clickers and c != emailed[1])
    tailor.store.add_events(
        [
            Event(
                customer_id=c,
                kind=EventKind.EMAIL_CLICK,
                timestamp=datetime(2011, 12, 11, 9, tzinfo=UTC),
                send_id=send_token(secret, job, c),
            )
            for c in clickers
        ]
        + [
            Event(
                customer_id=forwarded_to,
                kind=EventKind.EMAIL_CLICK,
                timestamp=datetime(2011, 12, 11, 10, tzinfo=UTC),
                send_id=send_token(secret, job, emailed[1]),
            )
        ]
    )
    report: Report = run_suites(tailor.settings, ["policy"], tmp_path / "out", True)
    m = report.metrics
    assert m["policy.own.decisions"] == len(customers)
    if held:
        assert m["policy.own.send_nothing.ips"] == pytest.approx(
            sum(d["customer_id"] in credited for d in held) / len(held)
        )
    # The served policy's IPS, by hand: the targeted whose logged action was the planner's own.
    by_hand = sum(
        (d["customer_id"] in credited) / d["detail"]["action_propensity"]
        for d in targeted
        if d["action"] == (d["detail"]["greedy"] or "nothing")
    ) / len(targeted)
    assert m["policy.own.served.ips"] == pytest.approx(by_hand)
    # Rewarded by a click on the email the decision made: nothing sent, nothing clicked.
    clicked_by_hand = sum(
        (d["customer_id"] in clickers) / d["detail"]["action_propensity"]
        for d in targeted
        if d["action"] == (d["detail"]["greedy"] or "nothing") and d["action"] != "nothing"
    ) / len(targeted)
    assert m["policy.own_clicks.served.ips"] == pytest.approx(clicked_by_hand) and clicked_by_hand > 0
    assert m["policy.own_clicks.logging.value"] == pytest.approx(len(clickers) / len(customers))
    if held:
        assert m["policy.own_clicks.send_nothing.ips"] == 0.0
    assert m["policy.own_simulated.ips_coverage"] >= 0.9 and m["policy.own_simulated.dr_coverage"] >= 0.9
    assert m["policy.own.explored"] == explored
    assert all(a in ACTIONS for a in (d["action"] for d in log))


@pytest.mark.slow
def test_a_best_hour_campaign_holds_each_email_for_its_customers_hour_then_sends_it(
    rig: tuple[Tailor, Ops, str],
) -> None:
    """The real runner on the slice: each item waits, scheduled, for its customer's own best local hour (or
    their country's), never one inside their quiet hours; once the hours come, every item goes."""
    from zoneinfo import ZoneInfo

    from tailor.app.jobs import ENGAGEMENT, parse_scheduled
    from tailor.core.send_time import best_hour, hour_counts, occasions, segment_counts

    tailor, ops, _ = rig
    customers = [c for c in tailor.store.customers() if c.consent.marketing_email]
    job = ops.create_job(
        "campaign", [c.id for c in customers], {"trigger": {"kind": "campaign"}, "send_time": "best_hour"}
    ).job_id
    runner = JobRunner(tailor, ops, tailor.settings)
    before = time.time()
    while runner.run_once():
        pass
    counts = ops.get_job(job).as_dict()
    now = tailor.now()
    sources = set()
    for item in ops.job_items(job, final_only=False):
        customer = tailor.store.get_customer(item.customer_id)
        if item.status != "pending":
            continue  # its hour was now, or no hour was clear of quiet hours: sent at once
        held = parse_scheduled(item.reason)
        assert held is not None and item.attempts == 0, item.reason
        at, source = held
        local = at.astimezone(ZoneInfo(customer.timezone))
        assert at > now and at - now < timedelta(days=1)
        assert customer.quiet_hours is None or not customer.quiet_hours.contains(local.time())
        own = (
            occasions(tailor.store.events(customer.id, kinds=ENGAGEMENT, until=now, limit=500))
            if customer.consent.personalization
            else []
        )
        segment = segment_counts(
            tailor.store.utc_hours(ENGAGEMENT, until=now, country=customer.country), customer.timezone, now
        )
        expected = best_hour(
            hour_counts(own, customer.timezone),
            len(own),
            segment,
            customer.quiet_hours,
        )
        assert (local.hour, source) == (expected.hour, expected.source)
        sources.add(expected.source)
    assert counts["scheduled"] == counts["pending"] >= len(customers) // 2
    assert "own" in sources
    # Held on the queue's clock: nothing is due before its hour.
    assert ops.next_item(now=before) is None
    time_passes(ops)
    while runner.run_once():
        pass
    after = ops.get_job(job).as_dict()
    assert after["pending"] == after["scheduled"] == 0 and after["done"] >= 1
    assert after["done"] + after["refused"] + after["failed"] == len(customers)


def test_a_held_item_taken_up_past_its_hour_waits_for_the_hour_to_come_round_again(
    rig: tuple[Tailor, Ops, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workers were down: a best-hour item taken up more than an hour past its time is not sent at an
    hour nobody chose; it is held again for the next time its customer's hour comes round, and goes then."""
    from zoneinfo import ZoneInfo

    from tailor.app.jobs import LATE_AFTER, parse_scheduled

    tailor, ops, _ = rig
    customers = {c.id: c for c in tailor.store.customers() if c.consent.marketing_email}
    job = ops.create_job(
        "campaign", list(customers), {"trigger": {"kind": "campaign"}, "send_time": "best_hour"}
    ).job_id
    runner = JobRunner(tailor, ops, tailor.settings)
    while runner.run_once():
        pass
    first = {
        i.customer_id: held
        for i in ops.job_items(job, final_only=False)
        if i.status == "pending" and (held := parse_scheduled(i.reason)) is not None
    }
    assert first
    sent_before = ops.get_job(job).as_dict()["done"]
    # A day and two hours on, by the service's clock: every held item is more than an hour late.
    later = tailor.now() + timedelta(days=1, hours=2)
    monkeypatch.setattr(tailor, "now", lambda: later)
    time_passes(ops)
    while runner.run_once():
        pass
    again = {i.customer_id: i for i in ops.job_items(job, final_only=False) if i.customer_id in first}
    went = 0
    for cid, (was, source) in first.items():
        item, zone = again[cid], ZoneInfo(customers[cid].timezone)
        if later.astimezone(zone).hour == was.astimezone(zone).hour:
            # Late by a day to the hour: it is her hour again, so it goes now.
            assert parse_scheduled(item.reason) is None, item.reason
            went += item.status == "done"
            continue
        assert item.status == "pending", (cid, item.status, item.reason)
        held = parse_scheduled(item.reason)
        assert held is not None
        at, now_source = held
        # The same hour of her day, the next time it comes round after the late pick-up.
        assert at.astimezone(zone).hour == was.astimezone(zone).hour and now_source == source
        assert later < at <= later + timedelta(days=1) and at - was > LATE_AFTER
    rescheduled = [cid for cid in first if again[cid].status == "pending"]
    assert len(rescheduled) >= len(first) // 2
    # None went out at an hour nobody chose.
    assert ops.get_job(job).as_dict()["done"] == sent_before + went
    again = {cid: again[cid] for cid in rescheduled}
    # Taken up within the hour of its new time, the last of them goes (or is refused by a rail): not held.
    last = max(again, key=lambda cid: str(again[cid].reason))
    due = parse_scheduled(again[last].reason)
    assert due is not None
    monkeypatch.setattr(tailor, "now", lambda: due[0] + timedelta(minutes=30))
    time_passes(ops)
    while runner.run_once():
        pass
    [final] = [i for i in ops.job_items(job, final_only=False) if i.customer_id == last]
    assert final.status != "pending" and parse_scheduled(final.reason) is None, (final.status, final.reason)


@pytest.mark.slow
def test_the_real_service_judges_its_ranker_on_what_came_after_its_fit(rig: tuple[Tailor, Ops, str]) -> None:
    tailor, _, cid = rig
    fitted_at = tailor.recommender.ranker.fitted_at.isoformat()
    nothing = tailor.shadow_eval()
    assert nothing["customers"] == 0 and nothing["stale"] is False and nothing["recall@10"] == {}
    # Two days on, the customer bought one of the items the ranker lists first for them.
    [first] = tailor.recommender.ranker.rank([cid], k=1)
    tailor.store.add_events(
        [
            Event(
                customer_id=cid,
                kind=EventKind.PURCHASE,
                item_id=first[0],
                quantity=1,
                value=3.0,
                timestamp=datetime(2011, 12, 11, 9, tzinfo=UTC),
                order_id="after-fit",
            )
        ]
    )
    tailor.settings = tailor.settings.model_copy(update={"now": "2011-12-12T10:00:00+00:00"})
    report = tailor.shadow_eval()
    assert report["customers"] == 1 and report["purchases_in_window"] == 1
    assert report["recall@10"]["served"] == 1.0 and report["fitted_at"][:19] == fitted_at[:19]
