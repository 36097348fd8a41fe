"""The background runner of email triggers and campaigns.

All state is in the ops database: a job is a set of (job, customer) items, each written once when it
finishes. The runner only ever asks "which pending item is due next?", so after a crash or SIGKILL it
simply carries on where it stopped: finished items are never redone, unfinished ones are redone (nothing
was sent for them, so that is not a duplicate).

A backend that is down (Qdrant, or the model endpoint with ``llm_unavailable='defer'``) does not fail an
item: it stays pending with a growing delay, and the job reports it as ``deferred``.

The frequency cap and the 30-day impression cap need every send in the customer store (its contact log
and impressions), which is another database. So the email is made as a preview, saved with its audit
trace and a note of the send still to record, in one transaction, and only then is the send recorded
(``Store.record_send``, the one path the CLI's ``--send`` takes too: contact and impressions in one
transaction, once per job item) and the note cleared. A kill before the save leaves no send, so the redo
is not refused as ``frequency_cap`` by its own send; a kill after it leaves the note, and the send is
recorded before the next item runs, once however often that is retried.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Annotated, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from agent import EmailOutcome
from agent.state import Trigger
from tailor.app.facade import Facade
from tailor.app.metrics import Metrics, record_outcome
from tailor.app.ops import Decision, JobItem, Ops
from tailor.core import budget
from tailor.core.errors import BackendError, DataError, NotFoundError, TailorError
from tailor.core.logs import describe
from tailor.core.models import MAX_ID_LENGTH, EventKind, JsonObject, TriggerKind, refuse_control
from tailor.core.send_time import best_hour, hour_counts, next_send, occasions, segment_counts
from tailor.core.sends import job_send_id, send_token, tag_email
from tailor.core.settings import Settings

__all__ = ["JobRunner", "TriggerSpec", "check_callback_url", "to_trigger"]

log = logging.getLogger("tailor.app.jobs")

_MAX_DELAY_S = 300.0
_CALLBACK_TRIES = 5


class TriggerSpec(BaseModel):
    """The trigger part of a request, as the CRM sends it and a job stores it (``to_trigger`` reads it)."""

    model_config = ConfigDict(extra="forbid")

    kind: TriggerKind
    campaign_id: Annotated[str, AfterValidator(refuse_control)] | None = Field(None, max_length=200)
    item_ids: list[
        Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(refuse_control)]
    ] = Field(default_factory=list, max_length=50)


def _spec_problem(exc: ValidationError | DataError) -> str:
    """What is wrong with a job's stored spec, by field and rule: never the value (it may be the input)."""
    if isinstance(exc, DataError):
        return str(exc)
    problems = "; ".join(
        ".".join(["trigger", *(str(part) for part in error["loc"])]) + f": {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    )
    return f"the job's stored trigger is no longer valid: {problems}"


# A best-hour campaign's item held until its customer's hour carries this reason (then the time and the
# source of the hour); taken up again, it goes out, unless it is taken up more than ``LATE_AFTER`` past that
# time (by the service's clock): then it is held again, for the next time her hour comes round.
SCHEDULED = "scheduled:"
LATE_AFTER = timedelta(hours=1)
# What tells a customer's hour: when they bought, opened and clicked.
ENGAGEMENT = (EventKind.PURCHASE, EventKind.EMAIL_OPEN, EventKind.EMAIL_CLICK)
_OWN_EVENTS = 500
# A store where this share of purchases or more fall in one hour of the day has dates, not times.
TIMELESS_SHARE = 0.95
_SEGMENT_TTL_S = 3600.0


def scheduled_reason(at: datetime, source: str) -> str:
    """The reason a held item carries: ``SCHEDULED``, the send time and the source of the hour."""
    return f"{SCHEDULED}{at.isoformat()} ({source})"


def parse_scheduled(reason: str | None) -> tuple[datetime, str] | None:
    """The send time and source of a ``scheduled_reason``; None for any other reason (or none)."""
    if not reason or not reason.startswith(SCHEDULED) or not reason.endswith(")") or " (" not in reason:
        return None
    at_text, source = reason[len(SCHEDULED) : -1].split(" (", 1)
    try:
        at = datetime.fromisoformat(at_text)
    except ValueError:
        return None
    return (at, source) if at.tzinfo is not None else None


def decision_key(job_id: str) -> str:
    """The key of a job's exploration draws (``agent.exploration``): a retried item and the campaign's
    preview draw what the item itself draws."""
    return f"job:{job_id}"


def to_trigger(spec: TriggerSpec) -> Trigger:
    """The agent's trigger for a request's (or a stored job's) spec."""
    return Trigger(**spec.model_dump(exclude_none=True))


def check_callback_url(url: str, allowed: Sequence[str]) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - read for its check: a port that is not a number in 0-65535 raises here
    except ValueError as exc:
        raise DataError(f"callback_url {url!r} is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DataError(f"callback_url {url!r} is not an http(s) URL")
    if parts.hostname not in allowed:
        raise DataError(
            f"callback_url host {parts.hostname!r} is not allowed",
            hint="add it to TAILOR_CALLBACK_HOSTS",
        )
    return url


def _outcome_audit(outcome: EmailOutcome) -> list[JsonObject]:
    return [dict(a) for a in outcome.audit]


def _outcome_result(outcome: EmailOutcome) -> tuple[Literal["done", "refused"], JsonObject, str | None]:
    email, refusal = outcome.email, outcome.refusal
    if email is not None:
        return "done", {"email": email.model_dump(mode="json")}, None
    if refusal is not None:
        return "refused", {"refusal": refusal.model_dump(mode="json")}, str(refusal.reason)
    raise DataError("the agent returned neither an email nor a refusal")


class JobRunner:
    """Runs job items on up to ``settings.job_concurrency`` worker threads, each under a time budget.

    A dispatcher thread hands due items to the workers (``Ops.next_item``: never two items of one
    customer at once, and a free worker goes to the job with the fewest items running, so a campaign
    cannot hold every worker while a webhook waits). Each item runs under ``settings.job_time_budget_s``
    (``tailor.core.budget``): a hanging model costs an item that long at most, so it delays a job queued
    behind it by one budget at most. ``run_once`` processes one item in the caller's thread (tests).
    """

    def __init__(self, facade: Facade, ops: Ops, settings: Settings, metrics: Metrics | None = None) -> None:
        self.facade = facade
        self.ops = ops
        self.settings = settings
        self.metrics = metrics or Metrics()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._callbacks: threading.Thread | None = None
        self._specs: dict[str, JsonObject] = {}
        self._send_secret = ops.secret("send")
        self._running: set[tuple[str, str]] = set()
        self._running_lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._model_seen: tuple[float, str] | None = None
        self._segments: dict[tuple[str, tuple[EventKind, ...]], tuple[float, dict[int, int]]] = {}
        self._purchase_hours: tuple[float, bool] | None = None

    def start(self) -> None:
        if self._thread is None:
            self._pool = ThreadPoolExecutor(self.settings.job_concurrency, thread_name_prefix="tailor-job")
            self._thread = threading.Thread(target=self._loop, name="tailor-jobs", daemon=True)
            self._thread.start()
            # Callbacks go out on their own thread: a slow or dead callback host (5 s a try, and the back-off
            # between tries) must not keep free workers from their next items.
            self._callbacks = threading.Thread(
                target=self._callback_loop, name="tailor-callbacks", daemon=True
            )
            self._callbacks.start()

    def stop(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._callbacks is not None:
            self._callbacks.join(max(deadline - time.monotonic(), 0.0))
            self._callbacks = None
        if self._pool is not None:
            # Nothing new starts; items under way get what is left of ``timeout`` to finish, before the
            # facade they use is closed. One cut off by the process ending is redone at the next start,
            # unsent (module docstring).
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.02)
        # What this runner held and did not finish goes back at once, not when its leases run out.
        with self._running_lock:
            still = frozenset(self._running)
        try:
            self.ops.release_mine(keep=still)
        except Exception as exc:  # a stop must finish even with the database gone
            log.warning("could not let go of this runner's job items: %s", describe(exc))

    def wake(self) -> None:
        self._wake.set()

    def running(self) -> int:
        with self._running_lock:
            return len(self._running)

    def _loop(self) -> None:
        orphans_at = 0.0
        while not self._stop.is_set():
            handed = 0
            try:
                if time.monotonic() >= orphans_at:
                    # Another worker of this machine that died holding items (a replica killed beside this
                    # one): its items are taken at once, not when their leases run out.
                    self.ops.release_orphans()
                    orphans_at = time.monotonic() + 5.0
                self.record_contacts()
                handed = self._dispatch()
            except Exception as exc:  # the runner must outlive any one bad item or database hiccup
                log.error("job runner iteration failed: %s", describe(exc))
            due = self.ops.next_due_in()
            if due is not None and due <= 0 and (self.running() or not handed):
                # What is due now and was not handed out waits on an item under way (its customer's, or a
                # worker), here or in another process: every item's end here wakes the loop, and another
                # process's is seen within a second. No need to ask again every 50 ms meanwhile.
                due = 1.0
            self._wake.wait(timeout=1.0 if due is None else min(max(due, 0.05), 1.0))
            self._wake.clear()

    def _callback_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.deliver_callbacks()
            except Exception as exc:  # as in _loop
                log.error("job callbacks failed: %s", describe(exc))
            self._stop.wait(0.5)

    def _dispatch(self) -> int:
        """Hand due items to free workers until either runs out; how many were handed out."""
        pool = self._pool
        assert pool is not None
        handed = 0
        while not self._stop.is_set():
            with self._running_lock:
                if len(self._running) >= self.settings.job_concurrency:
                    return handed
                item = self.ops.next_item(running=frozenset(self._running))
                if item is None:
                    return handed
                self._running.add((item.job_id, item.customer_id))
            pool.submit(self._work, item)
            handed += 1
        return handed

    def _work(self, item: JobItem) -> None:
        try:
            self._process(item)
        except Exception as exc:  # as in _loop: one item's failure must not take its worker down
            log.error("job %s customer %s: %s", item.job_id, item.customer_id, describe(exc))
        finally:
            with self._running_lock:
                self._running.discard((item.job_id, item.customer_id))
            self._wake.set()

    def _spec(self, job_id: str) -> JsonObject:
        if job_id not in self._specs:
            self._specs[job_id] = self.ops.get_job(job_id).spec
        return self._specs[job_id]

    def run_once(self) -> bool:
        """Process the next due item, if any, in this thread. True when one was processed (or deferred)."""
        # A send saved before a crash is in the contact log before the next email is capped against it.
        self.record_contacts()
        with self._running_lock:
            item = self.ops.next_item(running=frozenset(self._running))
        if item is None:
            return False
        self._process(item)
        return True

    def _process(self, item: JobItem) -> None:
        # A spec stored before the input rules changed may no longer validate: its items fail, named, and
        # are not left pending for the dispatcher to pick again and again.
        try:
            stored = self._spec(item.job_id)
            if not isinstance(stored, dict) or "trigger" not in stored:
                raise DataError("the job's stored spec has no trigger")
            spec = TriggerSpec.model_validate(stored["trigger"])
        except (ValidationError, DataError) as exc:
            self._finish(item, "failed", {"error": _spec_problem(exc)}, "invalid_spec")
            return
        held = parse_scheduled(item.reason)
        # Taken up past its hour (the workers were down, the queue backed up): sent now it would land at an
        # hour nobody chose, perhaps the middle of her night. It waits for her hour to come round again.
        late = held is not None and self.facade.now() - held[0] > LATE_AFTER
        best = stored.get("send_time") == "best_hour" and (held is None or late)
        if best and self._schedule(item):
            if late:
                assert held is not None
                log.info(
                    "job %s customer %s taken up late (due %s): held for their next hour",
                    item.job_id,
                    item.customer_id,
                    held[0].isoformat(),
                )
                self.metrics.inc("tailor_jobs_items_total", {"status": "rescheduled"})
            return
        try:
            # A preview: the runner records the send itself, after the result is saved (module docstring).
            with budget.within(self.settings.job_time_budget_s):
                outcome = self.facade.email(
                    item.customer_id, to_trigger(spec), send=False, decision_key=decision_key(item.job_id)
                )
            status, result, reason = _outcome_result(outcome)
            if status == "done":
                # Sent under this id (``record_contacts``), and every product link says so: what the customer
                # does with the email comes back tied to it (``tailor.core.sends``).
                token = send_token(self._send_secret, item.job_id, item.customer_id)
                result["send_id"] = token
                result["email"] = tag_email(result["email"], token)
            decided_at = self.facade.now().isoformat()
            # When it was decided, on the service's clock: a purchase is attributed from then on.
            result["decided_at"] = decided_at
            sent_at = decided_at if status == "done" else None
        except NotFoundError as exc:
            self._finish(
                item,
                "refused",
                {"refusal": {"reason": "unknown_customer", "detail": str(exc)}},
                "unknown_customer",
            )
            return
        except BackendError as exc:
            delay = min(self.settings.job_retry_s * 2**item.attempts, _MAX_DELAY_S)
            reason = f"deferred:{type(exc).__name__}"
            log.warning(
                "job %s customer %s deferred %.1fs: %s",
                item.job_id,
                item.customer_id,
                delay,
                type(exc).__name__,
            )
            self.ops.defer_item(item.job_id, item.customer_id, delay, reason)
            self.metrics.inc("tailor_jobs_items_total", {"status": "deferred"})
            return
        except TailorError as exc:
            self._finish(item, "failed", {"error": str(exc)}, type(exc).__name__)
            return
        except Exception as exc:
            # Not log.exception: the message of an unexpected error may quote the customer's profile.
            log.error("job %s customer %s failed: %s", item.job_id, item.customer_id, describe(exc))
            self._finish(item, "failed", {"error": type(exc).__name__}, "internal_error")
            return
        audit = _outcome_audit(outcome)
        record_outcome(
            self.metrics,
            audit,
            outcome.email.fallback_parts if outcome.email is not None else (),
            model_parts=self.settings.llm_parts,
        )
        decision = self._decision(spec, outcome, decided_at)
        if not self._finish(item, status, result, reason, audit=audit, contact_at=sent_at, decision=decision):
            return  # another worker wrote this item first (this one's lease ran out): its audit is written
        self.record_contacts()
        self.ops.audit(
            "email." + status,
            key_id=None,
            customer_id=item.customer_id,
            detail={"job_id": item.job_id, "reason": reason},
            # Not once the customer was forgotten meanwhile: the row would store their id again.
            item=(item.job_id, item.customer_id),
        )

    def _finish(
        self,
        item: JobItem,
        status: Literal["done", "refused", "failed"],
        result: JsonObject,
        reason: str | None,
        *,
        audit: list[JsonObject] | None = None,
        contact_at: str | None = None,
        decision: Decision | None = None,
    ) -> bool:
        """Write the item's result; False when it was final already (written by another worker)."""
        if self.ops.finish_item(
            item.job_id,
            item.customer_id,
            status,
            result,
            reason,
            audit=audit,
            contact_at=contact_at,
            decision=decision,
        ):
            self.metrics.inc("tailor_jobs_items_total", {"status": status})
            return True
        return False

    def _decision(self, spec: TriggerSpec, outcome: EmailOutcome, decided_at: str) -> Decision:
        """The decision log's row for an item: the plan's choice among its options, and its exact
        probability. Two draws make it: the holdout's (``tailor.core.holdout``: "nothing" with probability
        ``share``) and, for the targeted, exploration's (``agent.exploration``: the plan's ``propensity``
        among the qualified actions). ``propensity`` is their product; ``detail.action_propensity`` the
        second alone, what a policy judged within the targeted group needs (``evals.policy``)."""
        share = self.settings.holdout_share
        explore = self.settings.explore_share
        plan = outcome.plan
        held = outcome.refusal is not None and outcome.refusal.reason == "holdout"
        options: dict[str, float] = {}
        if plan is not None:
            # The qualified actions only: one scored 0 did not qualify and no policy could take it.
            options = {a.action: round(a.score, 6) for a in plan.rejected if a.score > 0}
            options[plan.action] = round(plan.score, 6)
        within = plan.propensity if plan is not None else 1.0
        salt = hashlib.sha256(self.settings.holdout_salt.encode()).hexdigest()[:8]
        return Decision(
            decided_at=decided_at,
            action=plan.action if plan is not None else ("email" if outcome.email is not None else "nothing"),
            propensity=share if held else (1.0 - share) * within,
            policy=f"planner-1;holdout={share:g};explore={explore:g}@{salt}",
            model=self._model_version(),
            detail={
                "trigger": spec.kind,
                "group": "holdout" if held else "targeted",
                "options": options,
                "greedy": plan.greedy if plan is not None else None,
                "action_propensity": 1.0 if held else within,
                "explored": bool(plan is not None and plan.explored),
                "slot": plan.slot.model_dump() if plan is not None and plan.slot is not None else None,
                "products": [p.item_id for p in plan.products] if plan is not None else [],
                "refused": outcome.refusal.reason if outcome.refusal is not None else None,
            },
        )

    def _schedule(self, item: JobItem) -> bool:
        """Hold a best-hour campaign's item until its customer's hour (``tailor.core.send_time``) and say
        True; False to go on now: it is that hour, no hour is clear of their quiet hours, the customer is not
        found or may not be emailed (the email path then says why), or their time zone cannot be read. The
        item's reason keeps when and from what. A backend that fails defers the item, as the email path
        would."""
        try:
            return self._hold(item)
        except BackendError as exc:
            delay = min(self.settings.job_retry_s * 2**item.attempts, _MAX_DELAY_S)
            self.ops.defer_item(item.job_id, item.customer_id, delay, f"deferred:{type(exc).__name__}")
            self.metrics.inc("tailor_jobs_items_total", {"status": "deferred"})
            return True
        except (ValueError, KeyError) as exc:
            # A stored zone nobody can resolve (ZoneInfoNotFoundError is a KeyError): no hour can be told,
            # so it goes now, and the consent rail judges it as it judges any other.
            log.warning("job %s customer %s: no send hour (%s)", item.job_id, item.customer_id, describe(exc))
            return False

    def _hold(self, item: JobItem) -> bool:
        store = self.facade.store
        try:
            customer = store.get_customer(item.customer_id)
        except NotFoundError:
            return False
        if not customer.consent.marketing_email:
            return False  # refused at once by the consent rail: nothing to wait for
        now = self.facade.now()
        kinds = self._engagement(now)
        # Their own history is read only with their consent to personalisation; else their country's hours.
        own = (
            occasions(store.events(customer.id, kinds=kinds, until=now, limit=_OWN_EVENTS))
            if customer.consent.personalization
            else []
        )
        chosen = best_hour(
            hour_counts(own, customer.timezone),
            len(own),
            segment_counts(self._segment(customer.country, now, kinds), customer.timezone, now),
            customer.quiet_hours,
        )
        if chosen.hour is None:
            return False
        at = next_send(now, chosen.hour, customer.timezone)
        if at <= now:
            return False
        # The queue runs on the wall clock, the service on its own (a fixed TAILOR_NOW in a demo): the wait
        # is the service clock's, from the wall clock's now.
        wait = (at - now).total_seconds()
        self.ops.schedule_item(
            item.job_id,
            item.customer_id,
            time.time() + wait,
            scheduled_reason(at, chosen.source),
        )
        self.metrics.inc("tailor_jobs_items_total", {"status": "scheduled"})
        return True

    def _segment(self, country: str, now: datetime, kinds: Sequence[EventKind]) -> dict[int, int]:
        """The country's events by UTC hour: one aggregate query per country an hour, not one per customer
        of a campaign; each customer shifts them into their own zone."""
        key = (country, tuple(kinds))
        seen = self._segments.get(key)
        if seen is None or time.monotonic() - seen[0] > _SEGMENT_TTL_S:
            seen = (time.monotonic(), self.facade.store.utc_hours(kinds, until=now, country=country))
            self._segments[key] = seen
        return seen[1]

    def _engagement(self, now: datetime) -> Sequence[EventKind]:
        """The events that tell an hour: purchases, opens and clicks; not purchases where nearly all of
        them fall in one hour of the day (``TIMELESS_SHARE``), the mark of a store whose data has dates only
        (Ta-Feng's receipts are imported at noon): that hour is the importer's, not the customer's."""
        seen = self._purchase_hours
        if seen is None or time.monotonic() - seen[0] > _SEGMENT_TTL_S:
            hours = self.facade.store.utc_hours([EventKind.PURCHASE], until=now)
            total = sum(hours.values())
            timed = total == 0 or max(hours.values()) < TIMELESS_SHARE * total
            seen = (time.monotonic(), timed)
            self._purchase_hours = seen
        return ENGAGEMENT if seen[1] else tuple(k for k in ENGAGEMENT if k is not EventKind.PURCHASE)

    def _model_version(self) -> str:
        # The ranker that served the decision, by when it was fitted; asked once a minute, not per item.
        now = time.monotonic()
        if self._model_seen is None or now - self._model_seen[0] > 60:
            try:
                fitted = self.facade.model_status().get("fitted_at")
                seen = f"ranker@{fitted}" if fitted else "unfitted"
            except Exception as exc:
                # The log names the ranker it cannot read; the item and its email go on regardless.
                log.warning("the ranker's version is unknown: %s", describe(exc))
                seen = "unknown"
            self._model_seen = (now, seen)
        return self._model_seen[1]

    def record_contacts(self) -> None:
        """Record the saved sends, contact and impressions, each once (module docstring)."""
        store = self.facade.store
        for job_id, customer_id, when in self.ops.pending_contacts():
            # Keyed by the job item: a kill between the record and clearing the note, or a worker and the
            # dispatcher both finding the note, records it once (``Store.record_send``). A customer forgotten
            # meanwhile gets nothing written: record_send looks them up in the transaction that writes.
            store.record_send(
                job_send_id(job_id, customer_id),
                customer_id,
                self.ops.sent_items(job_id, customer_id),
                datetime.fromisoformat(when),
            )
            self.ops.contact_recorded(job_id, customer_id)

    def deliver_callbacks(self) -> None:
        for job_id in self.ops.jobs_needing_callback():
            job = self.ops.get_job(job_id)
            if job.callback_url is None:
                continue
            tries = int(job.callback_status.split(":")[1]) if job.callback_status else 0
            payload = {
                "job": job.as_dict(),
                "results": [
                    {"customer_id": i.customer_id, "status": i.status, "reason": i.reason, "result": i.result}
                    for i in self.ops.job_items(job_id)
                ],
            }
            try:
                check_callback_url(job.callback_url, self.settings.callback_hosts)
                response = httpx.post(job.callback_url, json=payload, timeout=5.0)
                response.raise_for_status()
            except Exception as exc:  # one job's callback must never hold up the others'
                tries += 1
                # Only a network or HTTP failure may pass on a retry; a URL that cannot be sent to never will.
                retry = isinstance(exc, httpx.HTTPError) and tries < _CALLBACK_TRIES
                status = f"retry:{tries}" if retry else "failed"
                log.warning("callback for job %s failed (%s): %s", job_id, status, describe(exc))
                self.ops.set_callback_status(job_id, status)
                if status != "failed":
                    time.sleep(min(0.2 * 2**tries, 2.0))
                continue
            self.ops.set_callback_status(job_id, "delivered")
