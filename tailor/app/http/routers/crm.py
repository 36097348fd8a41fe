"""For the CRM (a ``crm`` key): events in, emails and campaigns out as jobs, consent, deletion, feedback,
and the ranker's life.

Work that may call the model (emails, campaigns) is never done inside a request: it becomes a job in the
ops database, answered at once with 202 and a job id, and run by ``tailor.app.jobs.JobRunner``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Header, Query
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from tailor.app.attribution import AttributionRule, campaign_uplift
from tailor.app.facade import RefitStart
from tailor.app.http.actions import (
    PREVIEW_SIZE,
    approve_campaign,
    campaign_preview,
    cancel_campaign,
    create_campaign,
    own_job,
)
from tailor.app.http.dependencies import AppState, Crm
from tailor.app.http.schemas import (
    CampaignIn,
    CustomerIdParam,
    EmailTriggerIn,
    EventsIn,
    EventsOut,
    FeedbackIn,
)
from tailor.app.http.state import ServiceState
from tailor.app.jobs import check_callback_url
from tailor.app.ops import body_hash
from tailor.core.errors import DataError, ForgottenError, NotFoundError, RecordError
from tailor.core.models import Consent, Customer, JsonObject
from tailor.core.utc import utc_timestamp
from tailor.data.segment import from_segment, is_segment

__all__ = ["router"]

router = APIRouter(tags=["crm"])


@router.post("/v1/events", response_model=EventsOut)
async def post_events(
    st: AppState,
    key: Crm,
    body: Annotated[
        JsonObject,
        Body(
            description="Native `{events, customers}`, or a Segment call or `batch`: `identify` and the "
            "e-commerce `track` events are ingested; other well-formed calls are skipped and counted. "
            "A malformed call fails the whole batch, and nothing of it is written."
        ),
    ],
) -> EventsOut:
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
            raise RecordError(err["msg"], source="body", field=".".join(str(x) for x in err["loc"])) from exc
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


@router.post("/v1/triggers/email", status_code=202)
async def trigger_email(
    st: AppState,
    key: Crm,
    body: EmailTriggerIn,
    idempotency_key: Annotated[str, Header(min_length=1, max_length=200)],
) -> JSONResponse:
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


@router.post("/v1/campaigns", status_code=202)
async def post_campaign(
    st: AppState,
    key: Crm,
    body: CampaignIn,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
) -> JSONResponse:
    if body.callback_url:
        check_callback_url(body.callback_url, st.settings.callback_hosts)
    created = await create_campaign(st, key, body, idempotency_key)
    job = st.ops.get_job(created.job_id)
    return JSONResponse(
        {"job_id": job.id, "status": job.status, "total": job.total, "links": _job_links(job.id)},
        status_code=202,
        headers=_job_headers(job.id, created.created),
    )


@router.get("/v1/jobs/{job_id}/preview")
async def get_job_preview(
    st: AppState, key: Crm, job_id: str, n: Annotated[int, Query(ge=1, le=20)] = PREVIEW_SIZE
) -> JsonObject:
    """A seeded sample of a campaign's emails as they would be sent, none sent: subject, preheader, body,
    each rail's verdict, the writer and its fallbacks, and the sample's refusals by reason."""
    return (await campaign_preview(st, key, job_id, n)).as_dict()


@router.post("/v1/jobs/{job_id}/approve")
async def approve_job(st: AppState, key: Crm, job_id: str) -> JsonObject:
    """Let a campaign made with `"approval": "required"` run. Recorded in the audit trail, with the key."""
    await approve_campaign(st, key, job_id)
    return {**st.ops.get_job(job_id).as_dict(), "links": _job_links(job_id)}


@router.post("/v1/jobs/{job_id}/cancel")
async def cancel_job(st: AppState, key: Crm, job_id: str) -> JsonObject:
    """Stop a job: items not yet started are cancelled; those under way finish."""
    await cancel_campaign(st, key, job_id)
    return {**st.ops.get_job(job_id).as_dict(), "links": _job_links(job_id)}


@router.get("/v1/jobs/{job_id}")
async def get_job(st: AppState, key: Crm, job_id: str) -> JsonObject:
    own_job(st, key, job_id)
    job = st.ops.get_job(job_id)
    return {**job.as_dict(), "links": _job_links(job.id)}


@router.get("/v1/jobs/{job_id}/results", response_class=StreamingResponse)
async def get_job_results(st: AppState, key: Crm, job_id: str) -> StreamingResponse:
    own_job(st, key, job_id)
    items = await run_in_threadpool(st.ops.job_items, job_id)

    def lines() -> Iterator[str]:
        for i in items:
            row = {"customer_id": i.customer_id, "status": i.status, "reason": i.reason, "result": i.result}
            yield json.dumps(row) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.get("/v1/jobs/{job_id}/audit")
async def get_job_audit(st: AppState, key: Crm, job_id: str) -> JsonObject:
    """Each finished item's audit trace: what every agent node read, decided and cost."""
    own_job(st, key, job_id)
    items = await run_in_threadpool(st.ops.item_audits, job_id)
    return {"job_id": job_id, "items": items}


@router.get("/v1/jobs/{job_id}/decisions")
async def get_job_decisions(st: AppState, key: Crm, job_id: str) -> JsonObject:
    """The decision log of a job: for each customer, the action chosen among the options (with their
    scores), its probability under the logging policy, the policy and the model, and when."""
    own_job(st, key, job_id)
    return {"job_id": job_id, "decisions": await run_in_threadpool(st.ops.decisions, job_id)}


@router.get("/v1/jobs/{job_id}/uplift")
async def get_job_uplift(
    st: AppState,
    key: Crm,
    job_id: str,
    window_days: Annotated[int | None, Query(ge=1, le=90)] = None,
    rule: AttributionRule | None = None,
) -> JsonObject:
    """What the campaign did: purchases of its targeted customers against its holdout, within the window
    after each decision, with 95% intervals, and the purchases credited to its emails (the rules are in the
    answer; ``rule`` and ``window_days`` override ``TAILOR_ATTRIBUTION_RULE`` and ``TAILOR_ATTRIBUTION_DAYS``
    for this answer)."""
    own_job(st, key, job_id)
    days = window_days or st.settings.attribution_days
    return await run_in_threadpool(
        campaign_uplift,
        st.facade.store,
        st.ops,
        job_id,
        window_days=days,
        now=st.facade.now(),
        rule=rule or st.settings.attribution_rule,
    )


@router.put("/v1/customers/{customer_id}/consent")
async def put_consent(st: AppState, key: Crm, customer_id: CustomerIdParam, body: Consent) -> JsonObject:
    customer = await run_in_threadpool(st.facade.set_consent, customer_id, body)
    st.ops.audit("consent", key_id=key.id, customer_id=customer_id, detail=body.model_dump())
    return {"customer_id": customer.id, "consent": customer.consent.model_dump()}


@router.delete("/v1/customers/{customer_id}")
async def delete_customer(st: AppState, key: Crm, customer_id: CustomerIdParam) -> JsonObject:
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
    refit: RefitStart | Literal["off"] = (
        st.facade.refit_in_background() if st.settings.refit_after_forget else "off"
    )
    # Under the tombstone: the audit says that a customer was forgotten, and by which key, not who.
    tomb = st.ops.tombstone(customer_id)
    st.ops.audit("forget", key_id=key.id, customer_id=tomb, detail={"deleted": deleted, "refit": refit})
    st.ops.checkpoint()
    return {"customer_id": customer_id, "deleted": deleted, "refit": refit}


@router.get("/v1/model")
async def model_status(st: AppState, key: Crm) -> JsonObject:
    """The fitted ranker: when, on how many customers, and what changed in the store since."""
    return dict(await run_in_threadpool(st.facade.model_status))


@router.get("/v1/model/shadow")
async def model_shadow(st: AppState, key: Crm, fresh: bool = False) -> JsonObject:
    """The served ranker judged on what its customers bought since it was fitted, against repeat history and
    popularity, with the drift of its inputs (``tailor.app.shadow``): the latest scheduled one, or a new one
    with ``fresh=true`` (or when none has run yet)."""
    if fresh:
        return await run_in_threadpool(st.run_shadow_eval)
    if st.shadow is None:
        raise NotFoundError(
            "shadow evaluation",
            "latest",
            hint="none has run yet (the first runs once the server is warm, every TAILOR_SHADOW_EVAL_HOURS);"
            " ask for one with ?fresh=true",
        )
    model = await run_in_threadpool(st.facade.model_status)
    judged = st.shadow.get("fitted_at")
    if model.get("fitted_at") and (
        not isinstance(judged, str)
        or abs((utc_timestamp(judged) - utc_timestamp(str(model["fitted_at"]))).total_seconds()) > 1
    ):
        # The model was replaced since: those figures are not this model's.
        return await run_in_threadpool(st.run_shadow_eval)
    return st.shadow


@router.post("/v1/model/refit", status_code=202)
async def model_refit(st: AppState, key: Crm) -> JsonObject:
    """Refit the ranker on the store as it is now, in the background; poll ``GET /v1/model``."""
    refit = await run_in_threadpool(st.facade.refit_in_background)
    st.ops.audit("refit", key_id=key.id, customer_id=None, detail={"refit": refit})
    status = await run_in_threadpool(st.facade.model_status)
    return {"refit": refit, "model": status}


@router.post("/v1/feedback", status_code=201)
async def post_feedback(st: AppState, key: Crm, body: FeedbackIn) -> JsonObject:
    if not await run_in_threadpool(st.facade.store.has_customer, body.customer_id):
        raise NotFoundError("customer", body.customer_id)
    fid = await run_in_threadpool(
        st.ops.add_feedback,
        body.customer_id,
        body.signal,
        item_id=body.item_id,
        job_id=body.job_id,
        note=body.note,
    )
    return {"id": fid}


def _job_links(job_id: str) -> dict[str, str]:
    return {
        "self": f"/v1/jobs/{job_id}",
        "results": f"/v1/jobs/{job_id}/results",
        "audit": f"/v1/jobs/{job_id}/audit",
    }


def _job_headers(job_id: str, created: bool) -> dict[str, str]:
    # A replay gets the first answer again (the job's state now is behind ``Location``), marked as a replay.
    return {"Location": f"/v1/jobs/{job_id}", "Idempotent-Replayed": "false" if created else "true"}


def _known_customers(st: ServiceState, ids: list[str]) -> dict[str, Customer]:
    out: dict[str, Customer] = {}
    for cid in dict.fromkeys(ids):
        if st.facade.store.has_customer(cid):
            out[cid] = st.facade.store.get_customer(cid)
    return out
