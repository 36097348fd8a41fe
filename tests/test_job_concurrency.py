"""Concurrent jobs under time budgets: a slow model delays only its own jobs (issue 25, finding 6).

No timings here: which items finish while others are held is what is asserted; the time a webhook waits
behind a campaign on a hanging model is measured by ``benchmarks/slow_model_jobs.py``."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent import EmailOutcome
from agent.writers import CopyRequest, OpenAIWriter, ProductFacts
from tailor.app.jobs import JobRunner
from tailor.app.ops import Ops
from tailor.core import budget
from tailor.core.brand import load_brand
from tailor.core.errors import LLMTimeoutError
from tailor.core.models import Customer, Email
from tailor.core.settings import Settings
from tailor.data.store import Store
from tests.openai_endpoint import scripted_endpoint, stall
from tests.server import outcome
from tests.waiting import wait_until


def _wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    wait_until(predicate, timeout, every=0.02)


def _email(customer_id: str) -> Email:
    return Email(
        customer_id=customer_id,
        action="campaign",
        subject="s",
        preheader="",
        body_text="b",
        body_html="b",
        products=(),
        writer="template",
    )


class _HeldModel:
    """A facade whose emails for ``held`` customers wait until the test releases them: a model that hangs
    for them (and then, say, times out: which is what a time budget makes of a hanging model)."""

    def __init__(self, store: Store, settings: Settings, held: set[str]) -> None:
        self.store = store
        self.settings = settings
        self.gates = {c: threading.Event() for c in held}
        self._lock = threading.Lock()
        self.now_running: Counter[str] = Counter()
        self.most_at_once: Counter[str] = Counter()
        self.started: list[str] = []
        self.finished: list[str] = []

    def release(self, *customers: str) -> None:
        for c in customers or tuple(self.gates):
            self.gates[c].set()

    def now(self) -> datetime:
        return datetime(2011, 12, 10, 10, tzinfo=UTC)

    def email(
        self, customer_id: str, trigger: object, *, send: bool = False, decision_key: str = ""
    ) -> EmailOutcome:
        with self._lock:
            self.started.append(customer_id)
            self.now_running[customer_id] += 1
            running = self.now_running[customer_id]
            self.most_at_once[customer_id] = max(self.most_at_once[customer_id], running)
        try:
            if customer_id in self.gates:
                assert self.gates[customer_id].wait(30), "the test never released the held model"
            return outcome(email=_email(customer_id))
        finally:
            with self._lock:
                self.now_running[customer_id] -= 1
                self.finished.append(customer_id)


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    store = Store(tmp_path / "tailor.db")
    ops = Ops(tmp_path / "ops.db")
    yield store, ops
    ops.close()
    store.close()


def _runner(rig: Any, held: set[str], concurrency: int) -> tuple[JobRunner, _HeldModel, Ops]:
    store, ops = rig
    settings = Settings(data_dir=Path(store.path).parent, job_concurrency=concurrency)
    facade = _HeldModel(store, settings, held)
    return JobRunner(facade, ops, settings), facade, ops  # type: ignore[arg-type]


def test_a_webhook_behind_a_hanging_campaign_runs_on_the_first_free_worker(rig: Any) -> None:
    """Three workers, all taken by a campaign whose model hangs. When one of its items ends (its budget
    spent), the free worker goes to the webhook queued behind it, not to the campaign's next item."""
    runner, facade, ops = _runner(rig, held={"a", "b", "c", "d", "e"}, concurrency=3)
    campaign = ops.create_job("campaign", ["a", "b", "c", "d", "e"], {"trigger": {"kind": "campaign"}})
    runner.start()
    try:
        _wait(lambda: sorted(facade.started) == ["a", "b", "c"])
        webhook = ops.create_job("email", ["w"], {"trigger": {"kind": "browse"}})
        runner.wake()
        facade.release("a")
        _wait(lambda: ops.get_job(webhook.job_id).status == "done")
        # The free worker went to the webhook; the campaign's next item ("d") waits for the next one.
        assert facade.finished == ["a", "w"] and facade.started[3] == "w"
        facade.release()
        _wait(lambda: ops.get_job(campaign.job_id).status == "done")
    finally:
        facade.release()
        runner.stop()
    assert ops.get_job(campaign.job_id).counts["done"] == 5


def test_a_campaign_never_takes_the_last_free_worker_from_a_waiting_job(rig: Any) -> None:
    """Two workers, a hanging campaign: the campaign's first item takes one, the webhook gets the other
    even though it was queued after every campaign item."""
    runner, facade, ops = _runner(rig, held={"a", "b", "c"}, concurrency=2)
    campaign = ops.create_job("campaign", ["a", "b", "c"], {"trigger": {"kind": "campaign"}})
    webhook = ops.create_job("email", ["w"], {"trigger": {"kind": "browse"}})
    runner.start()
    try:
        _wait(lambda: ops.get_job(webhook.job_id).status == "done")
        assert facade.finished == ["w"] and ops.get_job(campaign.job_id).counts.get("done", 0) == 0
    finally:
        facade.release()
        runner.stop()


def test_two_items_of_one_customer_never_run_at_once(rig: Any) -> None:
    runner, facade, ops = _runner(rig, held=set(), concurrency=4)
    jobs = [ops.create_job("campaign", ["a", "b", "a2"], {"trigger": {"kind": "campaign"}}) for _ in range(3)]
    jobs += [ops.create_job("email", ["a"], {"trigger": {"kind": "browse"}}) for _ in range(3)]
    runner.start()
    try:
        _wait(lambda: all(ops.get_job(j.job_id).status == "done" for j in jobs))
    finally:
        runner.stop()
    assert Counter(facade.finished) == {"a": 6, "b": 3, "a2": 3}
    assert max(facade.most_at_once.values()) == 1


def test_with_one_worker_items_run_in_job_order(rig: Any) -> None:
    _, ops = rig
    first = ops.create_job("campaign", ["a", "b"], {})
    second = ops.create_job("email", ["w"], {})
    order = []
    while (item := ops.next_item()) is not None:
        order.append(item.customer_id)
        ops.finish_item(item.job_id, item.customer_id, "done", {})
    assert order == ["a", "b", "w"]
    assert ops.get_job(first.job_id).status == ops.get_job(second.job_id).status == "done"


def test_the_next_item_goes_to_the_job_with_the_fewest_running(rig: Any) -> None:
    _, ops = rig
    campaign = ops.create_job("campaign", ["a", "b", "c"], {})
    webhook = ops.create_job("email", ["w"], {})
    first = ops.next_item()
    assert first is not None and (first.job_id, first.customer_id) == (campaign.job_id, "a")
    second = ops.next_item(running={(campaign.job_id, "a")})
    assert second is not None and (second.job_id, second.customer_id) == (webhook.job_id, "w")
    third = ops.next_item(running={(campaign.job_id, "a"), (webhook.job_id, "w")})
    assert third is not None and third.customer_id == "b"


def _request() -> CopyRequest:
    product = ProductFacts(item_id="I1", title="Lantern", category="lighting")
    return CopyRequest(action="campaign", first_name="Ann", products=(product,))


def test_the_writer_gives_up_when_the_jobs_budget_is_spent() -> None:
    """The endpoint answers after 3 s; the writer's own timeout (20 s, one retry) would wait for it. Under
    a 0.3 s budget the writer gives up first: the job item falls back or is deferred, as on a timeout."""
    with scripted_endpoint() as ep:
        ep.script.extend([stall(3.0), stall(3.0)])
        settings = Settings(
            writer="openai", llm_base_url=ep.url, llm_model="m", llm_timeout_s=20, llm_max_retries=1
        )
        writer = OpenAIWriter(settings)
        with budget.within(0.3), pytest.raises(LLMTimeoutError, match="timed out"):
            writer.write_email(_request(), load_brand(None))
        assert len(ep.requests) == 1, "no retry that the budget cannot fit"


def test_a_spent_budget_asks_the_model_nothing() -> None:
    with scripted_endpoint() as ep:
        settings = Settings(writer="openai", llm_base_url=ep.url, llm_model="m")
        with budget.within(0.0), pytest.raises(LLMTimeoutError, match="budget was spent"):
            OpenAIWriter(settings).write_email(_request(), load_brand(None))
        assert ep.requests == []


def test_budgets_nest_and_only_shorten() -> None:
    assert budget.remaining() is None
    with budget.within(100):
        outer = budget.remaining()
        with budget.within(1000):
            inner = budget.remaining()
        assert outer is not None and inner is not None and inner <= outer <= 100
    assert budget.remaining() is None


def test_a_stored_spec_that_no_longer_validates_fails_its_items_and_the_runner_goes_on(rig: Any) -> None:
    """A job queued before the input rules were stricter (here: a trigger kind since removed, a spec with
    no trigger) fails, with the validation problem named, instead of staying pending for ever."""
    runner, facade, ops = _runner(rig, held=set(), concurrency=2)
    stale = ops.create_job("campaign", ["a", "b"], {"trigger": {"kind": "birthday"}})
    bare = ops.create_job("email", ["c"], {})
    good = ops.create_job("email", ["w"], {"trigger": {"kind": "browse"}})
    runner.start()
    try:
        _wait(lambda: all(ops.get_job(j.job_id).status == "done" for j in (stale, bare, good)), timeout=10)
    finally:
        runner.stop()
    assert facade.finished == ["w"], "no email is made from a spec that does not validate"
    items = ops.job_items(stale.job_id)
    assert [(i.status, i.reason) for i in items] == [("failed", "invalid_spec")] * 2
    assert items[0].result is not None and "trigger.kind" in items[0].result["error"]
    [bare_item] = ops.job_items(bare.job_id)
    assert (bare_item.status, bare_item.reason) == ("failed", "invalid_spec")
    assert bare_item.result is not None and "trigger" in bare_item.result["error"]


def test_a_forget_between_the_check_and_the_send_leaves_no_send_rows(
    rig: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The customer is there when asked, and forgotten before the send is written: no contact, impression
    or send row is left naming them, and the note of the send to record is cleared."""
    store, ops = rig
    store.upsert_customers([Customer(id="c1", first_name="Ann", email="a@example.test", country="UK")])
    runner, _, _ = _runner(rig, held=set(), concurrency=1)
    job = ops.create_job("email", ["c1"], {"trigger": {"kind": "browse"}})
    ops.finish_item(job.job_id, "c1", "done", {"email": {}}, contact_at="2011-12-10T10:00:00+00:00")
    store.delete_customer("c1")
    monkeypatch.setattr(store, "has_customer", lambda customer_id: True)  # what it said just before
    runner.record_contacts()
    assert ops.pending_contacts() == []
    assert store.contacts("c1") == [] and store.impressions("c1") == []
    assert store._query("SELECT COUNT(*) FROM sends")[0][0] == 0


def test_a_hanging_callback_host_does_not_hold_up_the_next_job(rig: Any) -> None:
    """A finished job's callback goes to a host that takes the connection and never answers. A webhook
    created meanwhile still runs on a free worker: callbacks go out on their own thread."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def hold() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                accepted.append(listener.accept()[0])  # read nothing, answer nothing
            except TimeoutError:
                continue

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    store, ops = rig
    settings = Settings(data_dir=Path(store.path).parent, job_concurrency=2, callback_hosts=["127.0.0.1"])
    facade = _HeldModel(store, settings, held=set())
    runner = JobRunner(facade, ops, settings)  # type: ignore[arg-type]
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    try:
        first = ops.create_job("email", ["a"], {"trigger": {"kind": "browse"}}, callback_url=url)
        runner.start()
        _wait(lambda: ops.get_job(first.job_id).status == "done" and bool(accepted))
        # The callback is now waiting on a host that never answers (5 s a try).
        webhook = ops.create_job("email", ["w"], {"trigger": {"kind": "browse"}})
        runner.wake()
        _wait(lambda: ops.get_job(webhook.job_id).status == "done")
        assert ops.get_job(first.job_id).callback_status is None  # still the first try, unanswered
    finally:
        done.set()
        runner.stop(timeout=8.0)
        for conn in accepted:
            conn.close()
        listener.close()
