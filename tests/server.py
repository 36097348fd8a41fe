"""Run the real HTTP service (uvicorn, in a subprocess on 127.0.0.1) for tests, and a scripted facade.

``ServerProcess`` starts ``python -m tests.server`` on a free port with a temp data dir, waits for
``/healthz`` and stops it (SIGTERM, or SIGKILL on request). The process serves ``tailor.app.http.create_app``
over either the real ``tailor.app.service.Tailor`` (``facade="real"``) or ``ScriptedTailor`` below.

``ScriptedTailor`` implements the whole facade (``tailor.app.facade.Facade``) over a real ``Store`` with
plain rules; it exists so the HTTP layer (keys, idempotency, jobs, resumption, fallbacks) can be tested
before and apart from the agent. It has no model to fit: it ranks by popularity, counted at every call.
It logs every email it writes to ``<data_dir>/emails.log`` so tests can count them, and, when
``writer='openai'``, really calls the configured endpoint, so a dead or slow endpoint is real. Its audit
trace is built with the agent's own ``agent.audit`` functions and types, so it has the real shape.

``TAILOR_TEST_WARM_GATE`` (a file path) holds the warm-up until the file exists (the readiness tests).
Two switches for the log tests: ``TAILOR_TEST_LOG_LEVEL`` (e.g. ``debug``) sends every logger, Tailor's,
uvicorn's (access log included) and the libraries', to ``server.log`` at that level; and
``TAILOR_TEST_FAULT_CUSTOMER`` makes ``email`` and ``support`` for that customer fail the way a careless
bug does, with an exception whose message quotes the customer's profile and question.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from agent import EmailOutcome, Suggestion, SupportAnswer, Trigger
from agent.audit import record, write_fields
from agent.writers import EmailCopy, WriteResult
from prompts import PromptRef
from tailor.app.facade import Facade, ModelStatus, RefitStart
from tailor.app.llm_endpoint import llm_endpoint_up
from tailor.core.errors import LLMError, LLMTimeoutError, NotFoundError
from tailor.core.holdout import in_holdout
from tailor.core.models import (
    Consent,
    Customer,
    Email,
    EmailProduct,
    Event,
    EventKind,
    Evidence,
    Explanation,
    ExplanationSentence,
    Item,
    JsonObject,
    Recommendation,
    Refusal,
)
from tailor.core.settings import Settings
from tailor.data.store import Store
from tests.waiting import free_port

REPO = Path(__file__).resolve().parent.parent


def outcome(
    *, email: Email | None = None, refusal: Refusal | None = None, audit: list[dict[str, Any]] | None = None
) -> EmailOutcome:
    """The agent's outcome for ``email`` or ``refusal`` (give one), as a scripted model would make it."""
    made = email if email is not None else refusal
    assert made is not None, "an outcome has an email or a refusal"
    return EmailOutcome(made.customer_id, email=email, refusal=refusal, plan=None, audit=audit or [])


class ScriptedTailor:
    """The facade contract, by plain rules over a real store (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.store_database)
        self.email_delay_s = float(os.environ.get("TAILOR_TEST_EMAIL_DELAY", "0"))
        self.emails_log = settings.data_dir / "emails.log"
        self.fault_customer = os.environ.get("TAILOR_TEST_FAULT_CUSTOMER")
        self.refit_error: str | None = None

    def close(self) -> None:
        self.store.close()

    def now(self) -> datetime:
        if self.settings.now:
            moment = datetime.fromisoformat(self.settings.now)
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
        return datetime.now(UTC)

    def _customer(self, customer_id: str) -> Customer:
        return self.store.get_customer(customer_id)

    def recommend(self, customer_id: str, k: int = 10) -> list[Recommendation]:
        self._customer(customer_id)
        bought = {e.item_id for e in self.store.events(customer_id, kinds=[EventKind.PURCHASE])}
        popularity = Counter(e.item_id for e in self.store.events(kinds=[EventKind.PURCHASE]))
        items = sorted(self.store.items(), key=lambda i: (-popularity.get(i.id, 0), i.id))
        out: list[Recommendation] = []
        for item in items:
            if item.id in bought:
                continue
            evidence = Evidence(kind="popular", summary=f"bought {popularity.get(item.id, 0)} times")
            out.append(
                Recommendation(
                    item=item,
                    score=float(popularity.get(item.id, 0)),
                    rank=len(out) + 1,
                    sources=("popular",),
                    evidence=(evidence,),
                )
            )
            if len(out) == k:
                break
        return out

    def why(self, customer_id: str, item_id: str) -> Explanation:
        self._customer(customer_id)
        item = self.store.get_item(item_id)
        evidence = Evidence(kind="popular", summary="popular", item_ids=(item.id,))
        sentence = ExplanationSentence(
            text=f"{item.title} is popular with other customers.", evidence=(evidence,)
        )
        return Explanation(customer_id=customer_id, item_id=item_id, sentences=(sentence,))

    def _maybe_fail(self, customer_id: str, text: str = "") -> None:
        if customer_id == self.fault_customer:
            c = self._customer(customer_id)
            raise RuntimeError(f"cannot handle {c.first_name} <{c.email}>: {text!r}")

    def support(self, customer_id: str, question: str) -> SupportAnswer:
        self._maybe_fail(customer_id, question)
        suggestions = tuple(
            Suggestion(
                kind="popular",
                title=r.item.title,
                talking_points=(f"{r.item.title} is popular with other customers.",),
                evidence=r.evidence,
            )
            for r in self.recommend(customer_id, 3)
        )
        return SupportAnswer(customer_id=customer_id, question=question, suggestions=suggestions)

    def ingest(self, events: Sequence[Event], customers: Sequence[Customer] = ()) -> dict[str, int]:
        # Checked before anything is written, as the real facade does: a batch lands whole or not at all.
        arriving = {c.id for c in customers}
        for e in events:
            if e.customer_id not in arriving and not self.store.has_customer(e.customer_id):
                raise NotFoundError("customer", e.customer_id, hint="identify the customer first")
        written = self.store.add_batch(customers, events)
        return {"events": len(written.new), "duplicates": written.duplicates, "customers": len(customers)}

    def set_consent(self, customer_id: str, consent: Consent) -> Customer:
        customer = self._customer(customer_id).model_copy(update={"consent": consent})
        self.store.upsert_customers([customer])
        return customer

    def forget(self, customer_id: str) -> dict[str, int]:
        self._customer(customer_id)
        return self.store.delete_customer(customer_id)

    def health(self) -> dict[str, bool]:
        llm = llm_endpoint_up(self.settings) if self.settings.writer == "openai" else True
        return {"store": self.store.counts()["items"] > 0, "qdrant": True, "llm": llm}

    def shadow_eval(self) -> JsonObject:
        """What the real service says when nothing was bought since its ranker's fit."""
        return {"customers": 0, "recall@10": {}, "stale": False, "drift_psi": {}, "note": "nothing to judge"}

    def model_status(self) -> ModelStatus:
        """What the real service says of a store it has fitted no ranker on: every change is since the fit."""
        since = self.store.changes()
        return {
            "fitted": False,
            "fitted_at": None,
            "fit_seconds": None,
            "customers": None,
            "fit": None,
            "purchases_since_fit": since["purchases"],
            "forgotten_since_fit": since["forgotten"],
            "stale": True,
            "refitting": False,
            "refits": 0,
            "last_error": self.refit_error,
        }

    def refit_in_background(self) -> RefitStart:
        """Started, and failed at once, as the real service's background fit fails: ``model_status`` then
        says why, and nothing is fitted."""
        self.refit_error = "DataError: the scripted facade ranks by popularity; it has no model to fit"
        return "started"

    def warm_up(self) -> dict[str, float]:
        """Nothing to load; with ``TAILOR_TEST_WARM_GATE`` set, it lasts until that file exists, so a test
        can watch readiness while the service warms up."""
        gate = os.environ.get("TAILOR_TEST_WARM_GATE")
        while gate and not Path(gate).exists():
            time.sleep(0.05)
        return {"scripted": 0.0}

    def _llm_subject(self, customer: Customer) -> tuple[str, list[dict[str, Any]]]:
        base = (self.settings.llm_base_url or "").rstrip("/")
        start = time.perf_counter()
        try:
            response = httpx.post(
                f"{base}/chat/completions",
                json={"model": self.settings.llm_model, "messages": [{"role": "user", "content": "subject"}]},
                timeout=self.settings.llm_timeout_s,
            )
            response.raise_for_status()
            data = response.json()
        except httpx.TimeoutException as exc:
            raise LLMTimeoutError(f"model endpoint timed out: {exc}") from exc
        except httpx.HTTPError as exc:
            raise LLMError(f"model endpoint failed: {exc}") from exc
        subject = str(data["choices"][0]["message"]["content"])
        usage = data.get("usage") or {}
        prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        result = WriteResult(
            EmailCopy(subject=subject, preheader="-", intro="Hello", reasons={}),
            (PromptRef("scripted.subject", 1),),
            self.settings.llm_model,
            int(usage.get("total_tokens", 0)) or prompt + completion,
            prompt,
            completion,
        )
        return subject, record("generate", start, writer="openai", **write_fields(result, None))

    def email(
        self, customer_id: str, trigger: Trigger, *, send: bool = False, decision_key: str = ""
    ) -> EmailOutcome:
        if not self.store.has_customer(customer_id):
            raise NotFoundError("customer", customer_id)
        self._maybe_fail(customer_id)
        customer = self._customer(customer_id)
        # As the agent's consent rail does: the holdout first, whatever else holds.
        if in_holdout(customer_id, self.settings.holdout_share, self.settings.holdout_salt):
            return outcome(refusal=Refusal(customer_id=customer_id, reason="holdout", detail="held out"))
        if not customer.consent.marketing_email:
            return outcome(
                refusal=Refusal(customer_id=customer_id, reason="no_marketing_consent", detail="opted out")
            )
        time.sleep(self.email_delay_s)
        subject = f"Picked for you, {customer.first_name}"
        audit: list[dict[str, Any]] = []
        fallback: tuple[str, ...] = ()
        if self.settings.writer == "openai":
            start = time.perf_counter()
            try:
                subject, audit = self._llm_subject(customer)
            except LLMError as exc:
                if self.settings.llm_unavailable == "defer":
                    raise
                fallback = ("subject",)
                audit = record("generate", start, writer="openai", **write_fields(None, str(exc)))
        products = tuple(
            EmailProduct(
                item_id=r.item.id,
                title=r.item.title,
                price_text=r.item.price_text,
                url=r.item.url,
                reason="popular",
            )
            for r in self.recommend(customer_id, 3)
        )
        email = Email(
            customer_id=customer_id,
            action=trigger.kind,
            subject=subject,
            preheader="",
            body_text="Hello",
            body_html="<p>Hello</p>",
            products=products,
            writer="openai" if self.settings.writer == "openai" and not fallback else "template",
            fallback_parts=fallback,
        )
        with self.emails_log.open("a") as fh:
            fh.write(customer_id + "\n")
        return outcome(email=email, audit=audit)


def seed_store(
    data_dir: Path,
    n_customers: int = 3,
    *,
    domain: str = "example-retail.test",
    currency: str = "GBP",
    database_url: str | None = None,
) -> list[str]:
    """A small, real store: 6 items, ``n_customers`` customers (the second opted out), purchases. The
    items are sold at ``domain`` in ``currency`` (a retailer configuration's own). In the data dir's
    SQLite file, or in the PostgreSQL database at ``database_url`` (as ``TAILOR_DATABASE_URL`` puts it)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(database_url or data_dir / "tailor.db")
    try:
        items = [
            Item(
                id=f"I{n}",
                title=f"Lantern {n}",
                category="lighting" if n % 2 else "kitchen",
                price=2.5 + n,
                currency=currency,
                url=f"https://{domain}/p/I{n}",
            )
            for n in range(6)
        ]
        customers = [
            Customer(
                id=str(100 + n),
                first_name=f"Ann{n}",
                email=f"c{n}@example.test",
                country="France" if n % 3 == 2 else "United Kingdom",
                consent=Consent(marketing_email=n != 1, personalization=True),
            )
            for n in range(n_customers)
        ]
        # One purchase well before "now" (2011-12-10) and one within the last weeks: the real ranker fits on
        # the earlier history to predict the later one.
        times = [datetime(2011, 3, 1, tzinfo=UTC), datetime(2011, 11, 1, tzinfo=UTC)]
        events = [
            Event(
                customer_id=c.id,
                kind=EventKind.PURCHASE,
                item_id=f"I{(j + k) % 6}",
                quantity=1,
                value=3.0,
                timestamp=times[k].replace(day=1 + j % 28),
                order_id=f"O{j}-{k}",
            )
            for j, c in enumerate(customers)
            for k in range(2)
        ]
        store.import_all(items, customers, events)
    finally:
        store.close()
    return [c.id for c in customers]


def seed_audience_facts(data_dir: Path) -> None:
    """On top of ``seed_store(data_dir, n_customers=6)`` (every customer: 2 orders, spend 6.0, the last on
    2011-11-0N for customer 10N-1): purchase facts that differ, for the campaign audience filters.

    ====  ==============  =========  ======  =====  =============
    id    country         marketing  orders  spend  last purchase
    ====  ==============  =========  ======  =====  =============
    100   United Kingdom  yes        2       6.0    2011-11-01
    101   United Kingdom  no         2       6.0    2011-11-02
    102   France          yes        2       6.0    2011-11-03
    103   United Kingdom  yes        3       156.0  2011-12-05
    104   United Kingdom  yes        2       3.0    2011-11-05 (and a return of 3.0)
    105   France          yes        3       16.0   2011-12-01 (a purchase without an order id)
    106   Germany         yes        0       0.0    none
    ====  ==============  =========  ======  =====  =============
    """
    store = Store(data_dir / "tailor.db")
    try:
        at = datetime(2011, 12, 5, 9, tzinfo=UTC)
        big = [
            Event(
                customer_id="103",
                kind=EventKind.PURCHASE,
                item_id=f"I{n}",
                quantity=1,
                value=50.0,
                timestamp=at,
                order_id="BIG",
            )
            for n in range(3)
        ]
        returned = Event(
            customer_id="104",
            kind=EventKind.RETURN,
            item_id="I4",
            quantity=1,
            value=3.0,
            timestamp=datetime(2011, 11, 20, tzinfo=UTC),
            order_id="O4-1",
        )
        loose = Event(
            customer_id="105",
            kind=EventKind.PURCHASE,
            item_id="I0",
            quantity=2,
            value=10.0,
            timestamp=datetime(2011, 12, 1, tzinfo=UTC),
        )
        store.upsert_customers(
            [
                Customer(
                    id="106",
                    first_name="Gus",
                    email="gus@example.test",
                    country="Germany",
                    consent=Consent(marketing_email=True, personalization=True),
                )
            ]
        )
        store.add_events([*big, returned, loose])
    finally:
        store.close()


def segment_view(**update: Any) -> dict[str, Any]:
    """A well-formed Segment "Product Viewed" call by user "1" (messageId "m-1"), with ``update`` applied."""
    call = {
        "type": "track",
        "userId": "1",
        "event": "Product Viewed",
        "messageId": "m-1",
        "timestamp": "2011-12-05T10:00:00Z",
        "properties": {"product_id": "A"},
    }
    return {**call, **update}


class ServerProcess:
    """The real server in a subprocess. Use as a context manager; ``kill()`` is SIGKILL, ``start()`` again
    restarts it on the same port and data dir."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str] | None = None,
        facade: str = "fake",
        start_timeout: float = 60.0,
    ) -> None:
        self.start_timeout = start_timeout
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "TAILOR_DATA_DIR": str(data_dir),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "PYTHONPATH": str(REPO),
            **(env or {}),
        }
        self.facade = facade
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / "server.log"

    def start(self, timeout: float | None = None) -> ServerProcess:
        timeout = self.start_timeout if timeout is None else timeout
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.command(), cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            if self.ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not become healthy in {timeout}s:\n{self.log()}")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "tests.server", "--port", str(self.port), "--facade", self.facade]

    def ready(self) -> bool:
        try:
            return httpx.get(self.base_url + "/healthz", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class WorkerProcess(ServerProcess):
    """``tailor worker`` in a subprocess (``run_worker`` over the same facades as the server): no HTTP; it
    is ready once it says it takes jobs. Its log is its own, beside the data dir's server log."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, facade: str = "fake") -> None:
        super().__init__(data_dir, env, facade)
        self.log_path = data_dir / f"worker-{self.port}.log"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "tests.server",
            "--worker",
            "--port",
            str(self.port),
            "--facade",
            self.facade,
        ]

    def ready(self) -> bool:
        return "taking jobs" in self.log()


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    from tailor.app.http import create_app

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--facade", choices=["fake", "real"], default="fake")
    parser.add_argument("--worker", action="store_true", help="run `tailor worker` instead of the server")
    args = parser.parse_args(argv)
    settings = Settings()
    # Typed as the contract: mypy holds the test double to every member the service has.
    facade: Facade | None = ScriptedTailor(settings) if args.facade == "fake" else None
    level = os.environ.get("TAILOR_TEST_LOG_LEVEL", "warning").lower()
    if level != "warning":
        logging.basicConfig(level=level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if args.worker:
        from tailor.app.worker import run_worker

        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        run_worker(settings, facade, stop=stop, ready=lambda name: print(f"{name} taking jobs", flush=True))
        return
    uvicorn.run(create_app(settings, facade), host="127.0.0.1", port=args.port, log_level=level)


if __name__ == "__main__":
    main()
