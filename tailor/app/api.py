"""The HTTP service: FastAPI routes over the ``Tailor`` facade, with keys, idempotency, jobs and metrics.

Every error leaves in one shape, ``{"error": {"code", "message", "field"}}``. Work that may call the
model (emails, campaigns) is never done inside a request: it becomes a job in the ops database, answered
at once with 202 and a job id, and run by ``tailor.app.jobs.JobRunner``.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import httpx
from fastapi import Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from tailor.app.jobs import Facade, JobRunner, TriggerSpec, check_callback_url
from tailor.app.metrics import Metrics
from tailor.app.ops import ApiKey, Ops, body_hash
from tailor.core.errors import (
    BackendError,
    ConfigError,
    ConflictError,
    ConsentError,
    DataError,
    ForgottenError,
    GuardrailBlockedError,
    GuardrailError,
    NotFoundError,
    RecordError,
    TailorError,
)
from tailor.core.logs import describe, quiet_libraries
from tailor.core.models import MAX_ID_LENGTH, Consent, Customer, Event, refuse_control
from tailor.core.settings import Settings
from tailor.data.audience import Audience, select
from tailor.data.segment import from_segment, is_segment

__all__ = ["ApiError", "EventsOut", "TokenBuckets", "create_app", "create_key", "serve"]

log = logging.getLogger("tailor.app.api")

ASGIApp = Callable[
    [MutableMapping[str, Any], Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]],
    Awaitable[None],
]

_CustomerId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^/\s]+$")]


class ApiError(Exception):
    """An HTTP-level refusal (auth, role, rate limit): not a TailorError, it is about the request."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers or {}


def _error(
    status: int, code: str, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message, "field": field}}, status_code=status, headers=headers
    )


_TAILOR_STATUS: tuple[tuple[type[TailorError], int, str], ...] = (
    (ConsentError, 403, "consent_required"),
    (RecordError, 422, "invalid_record"),
    (DataError, 422, "invalid_data"),
    (ForgottenError, 410, "forgotten"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (BackendError, 503, "backend_unavailable"),
    (GuardrailError, 503, "guardrail_failed"),
    (GuardrailBlockedError, 422, "guardrail_blocked"),
)


# -- request bodies ------------------------------------------------------------------------------
class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# Free text in a request body: bounded (each field's limit is named in its 422) and free of control and
# bidirectional formatting characters, refused as in ``tailor.core.models`` (see ``refuse_control``).
_Clean = AfterValidator(refuse_control)
_Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH), _Clean]
_Url = Annotated[str, Field(max_length=2000), _Clean]


class EmailTriggerIn(_In):
    customer_id: _Id
    trigger: TriggerSpec
    callback_url: _Url | None = None


class SegmentIn(Audience):
    """A campaign's audience: ids, a filter on profile and purchase facts, or both."""


class CampaignIn(_In):
    segment: SegmentIn
    trigger: TriggerSpec = TriggerSpec(kind="campaign")
    callback_url: _Url | None = None


class SupportIn(_In):
    customer_id: _Id
    question: Annotated[str, Field(min_length=1, max_length=4000), _Clean]


class FeedbackIn(_In):
    customer_id: _Id
    signal: Literal["open", "click", "purchase", "unsubscribe", "complaint", "thumbs_up", "thumbs_down"]
    item_id: _Id | None = None
    job_id: Annotated[str, Field(max_length=100), _Clean] | None = None
    note: Annotated[str, Field(max_length=2000), _Clean] | None = None


class EventsIn(_In):
    events: list[Event] = Field(default_factory=list, max_length=10_000)
    customers: list[Customer] = Field(default_factory=list, max_length=10_000)


# -- response bodies -----------------------------------------------------------------------------
class EventsOut(BaseModel):
    ingested: dict[str, int] = Field(description="What the store wrote, as the service counts it.")
    events: int = Field(description="Events received, as mapped from the body (`ingested.events`: written).")
    duplicates: int = Field(
        0, description="Events not written again: already stored, or repeated in the body, unchanged."
    )
    customers: int = Field(description="Customer profiles created or updated.")
    accepted: int = Field(description="Segment calls (or native records) that were ingested.")
    skipped: dict[str, int] = Field(
        default_factory=dict,
        description="Well-formed Segment calls Tailor does not use, by reason: the call type (`page`, "
        "`screen`, `group`, `alias`), `track:<event name>` for an event it does not map, or "
        "`anonymous:<type>` for a call with an anonymousId only. Empty for native bodies.",
    )


# -- rate limit ----------------------------------------------------------------------------------
class TokenBuckets:
    """One bucket per API key, in memory: a restart refills them, which errs on the side of serving."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take a token; 0.0 when granted, else the seconds until one is available."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


# -- the ASGI shell: body size limit, request metrics, unexpected errors ---------------------------
class _Shell:
    """Buffers request bodies up to the limit (so chunked uploads are capped too), times requests, and
    answers an unexpected error with a 500.

    Unexpected errors end here rather than in an ``Exception`` handler: Starlette re-raises after such a
    handler has answered, and uvicorn then logs the traceback with the exception's message, which may
    quote the request (a support question, a profile), and drops the keep-alive connection. Here the log
    gets the error's type and where it was raised (``tailor.core.logs.describe``) and nothing else.
    """

    def __init__(self, app: ASGIApp, max_body: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[Any], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_box = [500]
        responded = [False]

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
                responded[0] = True
            await send(message)

        replay = receive
        body = b""
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_large = declared is not None and declared.isdigit() and int(declared) > self.max_body
        if not too_large and scope["method"] in ("POST", "PUT", "PATCH"):
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunks.append(message.get("body", b""))
                size += len(chunks[-1])
                if size > self.max_body:
                    too_large = True
                    break
                if not message.get("more_body", False):
                    break
            if not too_large:
                body = b"".join(chunks)
                sent = [False]

                async def replay_receive() -> Any:
                    if not sent[0]:
                        sent[0] = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                replay = replay_receive
        try:
            refused = None
            if too_large:
                refused = _error(413, "payload_too_large", f"request body exceeds {self.max_body} bytes")
            elif replay is not receive:
                refused = _body_problem(headers.get(b"content-type", b""), body)
            if refused is not None:
                await refused(scope, receive, send_wrapper)
            else:
                await self.app(scope, replay, send_wrapper)
        except Exception as exc:
            log.error("unexpected error on %s %s: %s", scope["method"], scope.get("path"), describe(exc))
            if not responded[0]:
                response = _error(500, "internal_error", "an unexpected error occurred; it has been logged")
                await response(scope, receive, send_wrapper)
        finally:
            # Also for requests that raised: they were answered with 500 just above.
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            labels = {"method": scope["method"], "route": template}
            self.metrics.inc("tailor_http_requests_total", {**labels, "status": str(status_box[0])})
            self.metrics.observe(
                "tailor_http_request_duration_seconds", time.perf_counter() - started, {"route": template}
            )


def _body_problem(content_type: bytes, body: bytes) -> JSONResponse | None:
    """What the JSON parser would only call "an error parsing the body", said plainly."""
    if not body:
        return None
    raw = content_type.decode("latin-1")
    media = raw.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        got = repr(raw) if raw else "none"
        message = f"send the body as JSON, with Content-Type: application/json (got {got})"
        return _error(415, "unsupported_media_type", message)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _error(400, "invalid_json", f"the body is not UTF-8 (byte {exc.start} is not valid there)")
    return None


# -- the app -------------------------------------------------------------------------------------
class _State:
    def __init__(self, settings: Settings, facade: Facade, ops: Ops, metrics: Metrics) -> None:
        self.settings = settings
        self.facade = facade
        self.ops = ops
        self.metrics = metrics
        self.runner = JobRunner(facade, ops, settings, metrics)
        self.buckets = TokenBuckets(settings.api_rate_per_s, settings.api_rate_burst)
        self.warm = threading.Event()
        self.warm_up: dict[str, Any] = {}

    def start_warm_up(self) -> None:
        """Warm the facade on a thread (``Tailor.warm_up``): the server answers ``/healthz`` at once, and
        ``/readyz`` says ready only once it is done. A failed warm-up is logged and ends the wait: the
        checks then say what is down."""
        warm = _facade_method(self.facade, "warm_up")
        if warm is None:
            self.warm.set()
            return

        def run() -> None:
            try:
                self.warm_up = {"seconds": dict(warm())}
            except Exception as exc:
                log.warning("warm-up failed: %s", describe(exc))
                self.warm_up = {"error": type(exc).__name__}
            finally:
                self.warm.set()

        threading.Thread(target=run, name="tailor-warm-up", daemon=True).start()


def _state(request: Request) -> _State:
    state: _State = request.app.state.tailor
    return state


def _require(role: str) -> Callable[..., Awaitable[ApiKey]]:
    async def check(
        request: Request,
        authorization: Annotated[str | None, Header(description="Bearer <API key>")] = None,
        x_api_key: Annotated[str | None, Header(description="The API key (instead of Authorization)")] = None,
    ) -> ApiKey:
        token = x_api_key
        if token is None and authorization is not None:
            scheme, _, value = authorization.partition(" ")
            token = value.strip() if scheme.lower() == "bearer" else None
        if not token:
            raise ApiError(
                401,
                "unauthorized",
                "an API key is required (Authorization: Bearer <key>)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        st = _state(request)
        key = st.ops.verify_key(token)
        if key is None:
            raise ApiError(
                401, "unauthorized", "the API key is not valid", headers={"WWW-Authenticate": "Bearer"}
            )
        if key.role != role:
            raise ApiError(403, "forbidden", f"a {key.role} key may not call this endpoint (needs {role})")
        wait = st.buckets.take(key.id)
        if wait > 0:
            st.metrics.inc("tailor_rate_limited_total")
            raise ApiError(
                429,
                "rate_limited",
                "too many requests for this API key",
                headers={"Retry-After": str(max(1, math.ceil(wait)))},
            )
        return key

    return check


Crm = Annotated[ApiKey, Depends(_require("crm"))]
Support = Annotated[ApiKey, Depends(_require("support"))]


def _job_links(job_id: str) -> dict[str, str]:
    return {
        "self": f"/v1/jobs/{job_id}",
        "results": f"/v1/jobs/{job_id}/results",
        "audit": f"/v1/jobs/{job_id}/audit",
    }


def create_app(settings: Settings, facade: Facade | None = None, *, run_jobs: bool = True) -> FastAPI:
    """The FastAPI app. ``facade`` defaults to ``tailor.app.service.Tailor.open(settings)`` (opened at startup
    and closed at shutdown); a given one is left open. ``run_jobs=False`` leaves jobs queued (tests)."""
    quiet_libraries()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import scipy.linalg  # noqa: F401 -- loads the BLAS the ranker uses, so the limit below reaches it
        from threadpoolctl import threadpool_limits

        # For the process, not a block: request handlers run on other threads. Measured in
        # tailor/core/settings.py.
        threadpool_limits(limits=settings.serve_blas_threads, user_api="blas")
        owned = facade is None
        if facade is None:
            from tailor.app.service import Tailor

            # torch whole before the first request: scipy looks torch up in sys.modules on array operations,
            # and a request doing one while the warm-up (or another request) is half way through importing
            # it (the embedding model's first load) failed with a 500 (AttributeError: no torch.Tensor yet).
            with contextlib.suppress(ImportError):
                await run_in_threadpool(importlib.import_module, "torch")

            opened: object = await run_in_threadpool(Tailor.open, settings)
            if not isinstance(opened, Facade):
                raise ConfigError("tailor.app.service.Tailor lacks methods the HTTP service needs")
            the_facade: Facade = opened
        else:
            the_facade = facade
        ops = Ops(settings.ops_path)
        state = _State(settings, the_facade, ops, metrics)
        app.state.tailor = state
        state.start_warm_up()
        if run_jobs:
            # Picks up whatever a previous process left pending: that is what makes jobs resumable.
            state.runner.start()
        try:
            yield
        finally:
            state.runner.stop()
            ops.close()
            if owned:
                the_facade.close()

    app = FastAPI(
        title="Tailor",
        version="1",
        lifespan=lifespan,
        description=(
            "What should this customer see next, and why. Errors always have the shape "
            '`{"error": {"code": str, "message": str, "field": str | null}}`. Authenticate with '
            "`Authorization: Bearer <key>` (`tailor keys create --role crm|support`)."
        ),
    )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.exception_handler(TailorError)
    async def _tailor_error(request: Request, exc: TailorError) -> JSONResponse:
        for kind, status, code in _TAILOR_STATUS:
            if isinstance(exc, kind):
                field = exc.field if isinstance(exc, RecordError | ForgottenError) else None
                if status >= 500:
                    log.warning("backend error on %s: %s", request.url.path, type(exc).__name__)
                if isinstance(exc, GuardrailBlockedError):
                    # The refusal's reason, as data a client can act on, beside the message.
                    body = {"code": code, "message": str(exc), "field": None, "rules": list(exc.rules)}
                    return JSONResponse({"error": body}, status_code=status)
                return _error(status, code, str(exc), field)
        log.error("unmapped error on %s: %s", request.url.path, type(exc).__name__)
        return _error(500, "internal_error", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first: dict[str, Any] = dict(errors[0]) if errors else {"loc": (), "msg": "invalid request"}
        if first.get("type") == "json_invalid":
            # The location of a JSON syntax error is a character offset, not a field.
            where = first.get("ctx", {}).get("error", "")
            return _error(422, "malformed_json", f"the body is not valid JSON ({where})".replace(" ()", ""))
        loc = [str(x) for x in first.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:]
        field = ".".join(loc) or None
        message = str(first.get("msg", "invalid request"))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return _error(422, "invalid_request", f"{field or 'body'}: {message}{more}", field)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
        return _error(
            exc.status_code,
            codes.get(exc.status_code, "http_error"),
            str(exc.detail),
            headers=dict(exc.headers or {}),
        )

    # -- probes and metrics ----------------------------------------------------------------------
    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        responses={503: {"description": "down (a backend is unreachable) or still warming up"}},
    )
    async def readyz(request: Request) -> JSONResponse:
        """``status``: ``ready``; ``degraded`` (200: the model endpoint is down and the template writer
        serves, ``mode: fallback``); ``warming`` (503: loading models before the first request); ``down``
        (503: the store or Qdrant is unreachable, or the model is and emails wait for it, ``mode: defer``)."""
        st = _state(request)
        try:
            checks = dict(await run_in_threadpool(st.facade.health))
        except Exception as exc:
            log.warning("health check failed: %s", type(exc).__name__)
            checks = {"store": False, "qdrant": False}
        if st.settings.writer == "openai" and "llm" not in checks:
            checks["llm"] = await _probe_llm(st.settings)
        body: dict[str, Any] = {"checks": checks, "warm": st.warm.is_set(), "warm_up": st.warm_up}
        if not all(ok for name, ok in checks.items() if name != "llm"):
            body["status"] = "down"
        elif not st.warm.is_set():
            body["status"] = "warming"
        elif not checks.get("llm", True):
            # The model is not needed to serve when the template writer stands in for it.
            body["mode"] = st.settings.llm_unavailable
            body["status"] = "degraded" if st.settings.llm_unavailable == "fallback" else "down"
        else:
            body["status"] = "ready"
        body["ready"] = body["status"] in ("ready", "degraded")
        return JSONResponse(body, status_code=200 if body["ready"] else 503)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics_text(request: Request) -> PlainTextResponse:
        status = _facade_method(_state(request).facade, "model_status")
        if status is not None:
            model = await run_in_threadpool(status)
            metrics.set("tailor_model_purchases_since_fit", model["purchases_since_fit"])
            metrics.set("tailor_model_forgotten_since_fit", model["forgotten_since_fit"])
            metrics.set("tailor_model_refitting", float(model["refitting"]))
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # -- CRM -------------------------------------------------------------------------------------
    @app.post("/v1/events", tags=["crm"], response_model=EventsOut)
    async def post_events(
        request: Request,
        key: Crm,
        body: Annotated[
            dict[str, Any],
            Body(
                description="Native `{events, customers}`, or a Segment call or `batch`: `identify` and the "
                "e-commerce `track` events are ingested; other well-formed calls are skipped and counted. "
                "A malformed call fails the whole batch, and nothing of it is written."
            ),
        ],
    ) -> EventsOut:
        st = _state(request)
        skipped: dict[str, int] = {}
        if is_segment(body):
            calls = body.get("batch", [body])
            # A batch that is not a list is refused by ``from_segment``, with its field named.
            calls = calls if isinstance(calls, list) else []
            ids = [str(c["userId"]) for c in calls if isinstance(c, dict) and c.get("userId") is not None]
            known = await run_in_threadpool(_known_customers, st, ids)
            mapped = from_segment(body, known)
            events, customers = mapped.events, mapped.customers
            accepted, skipped = mapped.accepted, dict(sorted(mapped.skipped.items()))
        else:
            try:
                parsed = EventsIn.model_validate(body)
            except ValidationError as exc:
                err = exc.errors()[0]
                raise RecordError(
                    err["msg"], source="body", field=".".join(str(x) for x in err["loc"])
                ) from exc
            events, customers = parsed.events, parsed.customers
            accepted = len(events) + len(customers)
        if not events and not customers:
            if skipped:
                # Only calls Tailor does not use: a success for the sender, who must not retry them.
                return EventsOut(
                    ingested={"events": 0, "duplicates": 0, "customers": 0},
                    events=0,
                    customers=0,
                    accepted=0,
                    skipped=skipped,
                )
            raise DataError("nothing to ingest: no events and no customers")
        counts = await run_in_threadpool(st.facade.ingest, events, customers)
        for cid in sorted({e.customer_id for e in events} | {c.id for c in customers}):
            st.ops.audit("ingest", key_id=key.id, customer_id=cid, detail={})
        return EventsOut(
            ingested=dict(counts),
            events=len(events),
            duplicates=counts.get("duplicates", 0),
            customers=len(customers),
            accepted=accepted,
            skipped=skipped,
        )

    @app.post("/v1/triggers/email", tags=["crm"], status_code=202)
    async def trigger_email(
        request: Request,
        key: Crm,
        body: EmailTriggerIn,
        idempotency_key: Annotated[str, Header(min_length=1, max_length=200)],
    ) -> JSONResponse:
        st = _state(request)
        if body.callback_url:
            check_callback_url(body.callback_url, st.settings.callback_hosts)
        if not await run_in_threadpool(st.facade.store.has_customer, body.customer_id):
            if await run_in_threadpool(st.ops.forgotten, [body.customer_id]):
                raise ForgottenError([body.customer_id], field="customer_id")
            raise NotFoundError("customer", body.customer_id)
        spec = body.model_dump(mode="json")
        # Scoped to the API key, as jobs are (``_own_job``): a replay never hands one key's job to another.
        created = await run_in_threadpool(
            st.ops.create_job,
            "email",
            [body.customer_id],
            spec,
            callback_url=body.callback_url,
            key_id=key.id,
            idempotency=(f"email:{key.id}", idempotency_key, body_hash(spec)),
        )
        if created.created:
            st.ops.audit(
                "trigger.email",
                key_id=key.id,
                customer_id=body.customer_id,
                detail={"job_id": created.job_id, "kind": body.trigger.kind},
            )
            st.runner.wake()
        return JSONResponse(
            {"job_id": created.job_id, "status": "queued", "links": _job_links(created.job_id)},
            status_code=202,
            headers=_job_headers(created.job_id, created.created),
        )

    @app.post("/v1/campaigns", tags=["crm"], status_code=202)
    async def post_campaign(
        request: Request,
        key: Crm,
        body: CampaignIn,
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
    ) -> JSONResponse:
        st = _state(request)
        if body.callback_url:
            check_callback_url(body.callback_url, st.settings.callback_hosts)
        await run_in_threadpool(_refuse_forgotten, st, body.segment.customer_ids or [])
        ids = await run_in_threadpool(_resolve_segment, st, body.segment)
        if not ids:
            raise RecordError("the segment matches no customer", source="body", field="segment")
        spec = body.model_dump(mode="json")
        created = await run_in_threadpool(
            st.ops.create_job,
            "campaign",
            ids,
            spec,
            callback_url=body.callback_url,
            key_id=key.id,
            idempotency=(f"campaign:{key.id}", idempotency_key, body_hash(spec)) if idempotency_key else None,
        )
        if created.created:
            st.ops.audit(
                "campaign",
                key_id=key.id,
                customer_id=None,
                detail={"job_id": created.job_id, "total": len(ids)},
            )
            st.runner.wake()
        job = st.ops.get_job(created.job_id)
        return JSONResponse(
            {"job_id": job.id, "status": "queued", "total": job.total, "links": _job_links(job.id)},
            status_code=202,
            headers=_job_headers(job.id, created.created),
        )

    @app.get("/v1/jobs/{job_id}", tags=["crm"])
    async def get_job(request: Request, key: Crm, job_id: str) -> dict[str, Any]:
        st = _state(request)
        _own_job(st, key, job_id)
        job = st.ops.get_job(job_id)
        return {**job.as_dict(), "links": _job_links(job.id)}

    @app.get("/v1/jobs/{job_id}/results", tags=["crm"], response_class=StreamingResponse)
    async def get_job_results(request: Request, key: Crm, job_id: str) -> StreamingResponse:
        st = _state(request)
        _own_job(st, key, job_id)
        items = await run_in_threadpool(st.ops.job_items, job_id)

        def lines() -> Any:
            import json

            for i in items:
                row = {
                    "customer_id": i.customer_id,
                    "status": i.status,
                    "reason": i.reason,
                    "result": i.result,
                }
                yield json.dumps(row) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/v1/jobs/{job_id}/audit", tags=["crm"])
    async def get_job_audit(request: Request, key: Crm, job_id: str) -> dict[str, Any]:
        """Each finished item's audit trace: what every agent node read, decided and cost."""
        st = _state(request)
        _own_job(st, key, job_id)
        items = await run_in_threadpool(st.ops.item_audits, job_id)
        return {"job_id": job_id, "items": items}

    @app.put("/v1/customers/{customer_id}/consent", tags=["crm"])
    async def put_consent(
        request: Request, key: Crm, customer_id: _CustomerId, body: Consent
    ) -> dict[str, Any]:
        st = _state(request)
        customer = await run_in_threadpool(_set_consent, st.facade, customer_id, body)
        st.ops.audit("consent", key_id=key.id, customer_id=customer_id, detail=body.model_dump())
        return {"customer_id": customer.id, "consent": customer.consent.model_dump()}

    @app.delete("/v1/customers/{customer_id}", tags=["crm"])
    async def delete_customer(request: Request, key: Crm, customer_id: _CustomerId) -> dict[str, Any]:
        st = _state(request)
        # The store goes first, the ops database second: a forget that died between them left the customer
        # row gone and their jobs, feedback and audit named. A retry finishes it; 404 only when neither
        # database knew the id.
        try:
            deleted = dict(await run_in_threadpool(st.facade.forget, customer_id))
            in_store = True
        except NotFoundError:
            deleted, in_store = {}, False
        in_ops = await run_in_threadpool(st.ops.forget, customer_id, only_if_found=not in_store)
        if not in_store and not any(in_ops.values()):
            raise NotFoundError("customer", customer_id)
        deleted.update(in_ops)
        # Rows, ids and vectors went above; the item-level aggregates lose the customer's share at a refit.
        start = _facade_method(st.facade, "refit_in_background")
        refit = start() if st.settings.refit_after_forget and start is not None else "off"
        # Under the tombstone: the audit says that a customer was forgotten, and by which key, not who.
        tomb = st.ops.tombstone(customer_id)
        st.ops.audit("forget", key_id=key.id, customer_id=tomb, detail={"deleted": deleted, "refit": refit})
        st.ops.checkpoint()
        return {"customer_id": customer_id, "deleted": deleted, "refit": refit}

    @app.get("/v1/model", tags=["crm"])
    async def model_status(request: Request, key: Crm) -> dict[str, Any]:
        """The fitted ranker: when, on how many customers, and what changed in the store since."""
        st = _state(request)
        status: dict[str, Any] = await run_in_threadpool(_model_call(st.facade, "model_status"))
        return status

    @app.post("/v1/model/refit", tags=["crm"], status_code=202)
    async def model_refit(request: Request, key: Crm) -> dict[str, Any]:
        """Refit the ranker on the store as it is now, in the background; poll ``GET /v1/model``."""
        st = _state(request)
        refit = await run_in_threadpool(_model_call(st.facade, "refit_in_background"))
        st.ops.audit("refit", key_id=key.id, customer_id=None, detail={"refit": refit})
        status = await run_in_threadpool(_model_call(st.facade, "model_status"))
        return {"refit": refit, "model": status}

    @app.post("/v1/feedback", tags=["crm"], status_code=201)
    async def post_feedback(request: Request, key: Crm, body: FeedbackIn) -> dict[str, Any]:
        st = _state(request)
        if not await run_in_threadpool(st.facade.store.has_customer, body.customer_id):
            raise NotFoundError("customer", body.customer_id)
        fid = await run_in_threadpool(
            lambda: st.ops.add_feedback(
                body.customer_id, body.signal, item_id=body.item_id, job_id=body.job_id, note=body.note
            )
        )
        return {"id": fid}

    # -- support ---------------------------------------------------------------------------------
    @app.get("/v1/customers/{customer_id}/recommendations", tags=["support"])
    async def recommendations(
        request: Request, key: Support, customer_id: _CustomerId, k: Annotated[int, Query(ge=1, le=100)] = 10
    ) -> dict[str, Any]:
        st = _state(request)
        recs = await run_in_threadpool(st.facade.recommend, customer_id, k)
        st.ops.audit("recommendations", key_id=key.id, customer_id=customer_id, detail={"k": k})
        return {"customer_id": customer_id, "recommendations": [r.model_dump(mode="json") for r in recs]}

    @app.get("/v1/customers/{customer_id}/recommendations/{item_id}/why", tags=["support"])
    async def why(
        request: Request,
        key: Support,
        customer_id: _CustomerId,
        item_id: Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH)],
    ) -> dict[str, Any]:
        st = _state(request)
        explanation = await run_in_threadpool(st.facade.why, customer_id, item_id)
        st.ops.audit("why", key_id=key.id, customer_id=customer_id, detail={"item_id": item_id})
        return {**explanation.model_dump(mode="json"), "text": explanation.text}

    @app.post("/v1/support/suggestions", tags=["support"])
    async def suggestions(request: Request, key: Support, body: SupportIn) -> dict[str, Any]:
        st = _state(request)
        answer = await run_in_threadpool(st.facade.support, body.customer_id, body.question)
        dumped = answer.model_dump(mode="json") if isinstance(answer, BaseModel) else dict(answer)
        # What the rails withheld, redacted, dropped or neutralized goes into the audit trace too: the
        # rules and actions only, never the text that was removed.
        notes = [
            {k: n.get(k) for k in ("kind", "action", "rules")} for n in dumped.get("guardrail_notes", ())
        ]
        st.ops.audit(
            "support", key_id=key.id, customer_id=body.customer_id, detail={"guardrail_notes": notes}
        )
        return dict(dumped)

    app.add_middleware(_Shell, max_body=settings.api_max_body_bytes, metrics=metrics)
    return app


def _set_consent(facade: Facade, customer_id: str, consent: Consent) -> Customer:
    setter = _facade_method(facade, "set_consent")
    if setter is not None:
        updated: Customer = setter(customer_id, consent)
        return updated
    # Consent is read from the store on every call, so writing it there is enough to take effect.
    customer = facade.store.get_customer(customer_id).model_copy(update={"consent": consent})
    facade.store.upsert_customers([customer])
    return customer


def _facade_method(facade: Facade, name: str) -> Callable[..., Any] | None:
    """A method the real facade has beyond the ``Facade`` protocol (a test's facade may lack it)."""
    call = getattr(facade, name, None)
    return call if callable(call) else None


def _model_call(facade: Facade, name: str) -> Callable[[], Any]:
    call = _facade_method(facade, name)
    if call is None:
        raise ApiError(501, "not_implemented", f"this service has no fitted model to manage ({name})")
    return call


def _job_headers(job_id: str, created: bool) -> dict[str, str]:
    # A replay gets the first answer again (the job's state now is behind ``Location``), marked as a replay.
    return {"Location": f"/v1/jobs/{job_id}", "Idempotent-Replayed": "false" if created else "true"}


def _own_job(st: _State, key: ApiKey, job_id: str) -> None:
    # A job is visible to the key that created it only; to others it does not exist.
    owner = st.ops.job_key(job_id)
    if owner is not None and owner != key.id:
        raise NotFoundError("job", job_id)


def _known_customers(st: _State, ids: list[str]) -> dict[str, Customer]:
    out: dict[str, Customer] = {}
    for cid in dict.fromkeys(ids):
        if st.facade.store.has_customer(cid):
            out[cid] = st.facade.store.get_customer(cid)
    return out


def _refuse_forgotten(st: _State, customer_ids: list[str]) -> None:
    """A campaign naming a forgotten customer (who is not a customer again) is refused whole: queued, it
    would store their id again, in its spec and its items."""
    unknown = [c for c in dict.fromkeys(customer_ids) if not st.facade.store.has_customer(c)]
    gone = st.ops.forgotten(unknown)
    if gone:
        raise ForgottenError(gone, field=f"segment.customer_ids.{customer_ids.index(gone[0])}")


def _resolve_segment(st: _State, segment: SegmentIn) -> list[str]:
    return select(st.facade.store, segment)


async def _probe_llm(settings: Settings) -> bool:
    if not settings.llm_base_url:
        return False
    url = settings.llm_base_url.rstrip("/") + "/models"
    try:
        async with httpx.AsyncClient(timeout=min(settings.llm_timeout_s, 3.0)) as client:
            response = await client.get(
                url, headers={"Authorization": f"Bearer {settings.llm_api_key.get_secret_value()}"}
            )
    except httpx.HTTPError:
        return False
    return response.status_code < 500


def create_key(settings: Settings, role: str, name: str = "") -> str:
    """Create an API key for ``role`` (crm or support); the token is returned once, stored hashed."""
    ops = Ops(settings.ops_path)
    try:
        return ops.create_key(role, name)
    finally:
        ops.close()


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service under uvicorn until interrupted (``tailor serve``)."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
