"""What the API and the console both do to a campaign (create, preview, approve, cancel) and to a why-link,
in one place: the same checks, the same audit rows, whichever face a person uses."""

from __future__ import annotations

import asyncio
import time

from starlette.concurrency import run_in_threadpool

from agent import SupportAnswer
from tailor.app.http.schemas import CampaignIn
from tailor.app.http.state import ServiceState
from tailor.app.ops import ApiKey, IdempotentJob, body_hash
from tailor.app.preview import CampaignPreview, preview_campaign
from tailor.core.errors import ConflictError, ForgottenError, NotFoundError, RecordError
from tailor.core.models import JsonObject
from tailor.data.audience import select

__all__ = [
    "PREVIEW_SIZE",
    "approve_campaign",
    "campaign_preview",
    "cancel_campaign",
    "create_campaign",
    "own_job",
    "support_audit",
]

# Enough emails to judge a campaign's copy by, few enough to read and to write before the page opens.
PREVIEW_SIZE = 5
_PREVIEWS_KEPT = 32
# A preview is kept this long: it is read while a person decides, and then it is written again, so a
# customer forgotten or a consent withdrawn since shows within a minute.
_PREVIEW_TTL_S = 60.0


def own_job(st: ServiceState, key: ApiKey, job_id: str, *, to_change: bool = False) -> None:
    """A job is visible to the key that created it only; to others it does not exist. A job made before
    jobs had owners is readable by any crm key, and changed (approved, cancelled, previewed) by none."""
    owner = st.ops.job_key(job_id)
    if (owner is not None or to_change) and owner != key.id:
        raise NotFoundError("job", job_id)


async def create_campaign(
    st: ServiceState, key: ApiKey, body: CampaignIn, idempotency_key: str | None
) -> IdempotentJob:
    await run_in_threadpool(_refuse_forgotten, st, body.audience.customer_ids or [], body.named)
    ids = await run_in_threadpool(select, st.facade.store, body.audience, field=body.named)
    if not ids:
        raise RecordError(f"the {body.named} matches no customer", source="body", field=body.named)
    spec = body.model_dump(mode="json")
    created = await run_in_threadpool(
        st.ops.create_job,
        "campaign",
        ids,
        spec,
        callback_url=body.callback_url,
        key_id=key.id,
        idempotency=(f"campaign:{key.id}", idempotency_key, body_hash(spec)) if idempotency_key else None,
        approval=body.approval == "required",
    )
    if created.created:
        detail = {"job_id": created.job_id, "total": len(ids), "approval": body.approval}
        st.ops.audit("campaign", key_id=key.id, customer_id=None, detail=detail)
        st.runner.wake()
        if body.approval == "required":
            _preview_task(st, created.job_id, PREVIEW_SIZE)  # written while its maker opens its page
    return created


async def campaign_preview(
    st: ServiceState, key: ApiKey, job_id: str, n: int = PREVIEW_SIZE
) -> CampaignPreview:
    """The job's seeded sample, made once and kept a minute in this process. A campaign that waits for
    approval has its preview started as it is made (``create_campaign``), so its page usually finds it
    written. A customer forgotten since it was written is left out of it."""
    own_job(st, key, job_id, to_change=True)
    task = _preview_task(st, job_id, n)
    try:
        # Shielded: a reader who goes away does not stop the preview that others wait on.
        made = await asyncio.shield(task)
    except Exception:
        if st.previews.get((job_id, n), (0.0, None))[1] is task:
            st.previews.pop((job_id, n), None)  # not kept: the next view tries again
        raise
    gone = [s.customer_id for s in made.samples if not st.facade.store.has_customer(s.customer_id)]
    return made.without(gone) if gone else made


def _preview_task(st: ServiceState, job_id: str, n: int) -> asyncio.Task[CampaignPreview]:
    now = time.monotonic()
    kept = st.previews.get((job_id, n))
    if kept is not None and now - kept[0] < _PREVIEW_TTL_S:
        return kept[1]
    task = asyncio.ensure_future(
        run_in_threadpool(
            preview_campaign, st.facade, st.ops, job_id, n=n, seed=_seed(job_id), model=_model(st)
        )
    )
    # Its failure is raised to whoever awaits it; one nobody awaits is not an "unretrieved" error.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    st.previews[(job_id, n)] = (now, task)
    st.previews.move_to_end((job_id, n))
    while len(st.previews) > _PREVIEWS_KEPT:
        st.previews.popitem(last=False)
    return task


async def approve_campaign(st: ServiceState, key: ApiKey, job_id: str) -> None:
    own_job(st, key, job_id, to_change=True)
    if not await run_in_threadpool(st.ops.approve_job, job_id):
        status = st.ops.get_job(job_id).status
        raise ConflictError(
            f"job {job_id} is {status}, not awaiting approval", hint="only a waiting job is approved"
        )
    # Who approved and when: the audit row's key and time.
    st.ops.audit("campaign.approve", key_id=key.id, customer_id=None, detail={"job_id": job_id})
    st.runner.wake()


async def cancel_campaign(st: ServiceState, key: ApiKey, job_id: str) -> int:
    own_job(st, key, job_id, to_change=True)
    cancelled = await run_in_threadpool(st.ops.cancel_job, job_id)
    if cancelled is None:
        status = st.ops.get_job(job_id).status
        raise ConflictError(f"job {job_id} is {status}: there is nothing left to cancel")
    st.ops.audit(
        "campaign.cancel", key_id=key.id, customer_id=None, detail={"job_id": job_id, "items": cancelled}
    )
    return cancelled


def support_audit(answer: SupportAnswer, **extra: object) -> JsonObject:
    """A support answer's audit detail, from the API or the console alike: what the rails withheld,
    redacted, dropped or neutralized (the rules and actions only, never the text removed), the intent and
    the tools the answer took (names, timings, counts), who thought it (offline or the model) and where the
    model's work was not used, so that a reviewer sees why it said what it said."""
    return {
        **extra,
        "guardrail_notes": [
            n.model_dump(mode="json", include={"kind", "action", "rules"}) for n in answer.guardrail_notes
        ],
        "intent": answer.intent,
        "confidence": answer.confidence,
        "tools": [t.model_dump(mode="json") for t in answer.tools],
        "thinker": answer.thinker,
        "fell_back": list(answer.fell_back),
        "points_by": [s.points_by for s in answer.suggestions],
    }


def _seed(job_id: str) -> int:
    # The same sample on every replica and after a restart: from the job's id, not from the process.
    return int.from_bytes(job_id.encode()[-8:].rjust(8, b"\0"), "big")


def _model(st: ServiceState) -> str:
    s = st.settings
    return "template" if s.writer == "template" else f"{s.writer}:{s.llm_model}"


def _refuse_forgotten(st: ServiceState, customer_ids: list[str], named: str) -> None:
    """A campaign naming a forgotten customer (who is not a customer again) is refused whole: queued, it
    would store their id again, in its spec and its items."""
    unknown = [c for c in dict.fromkeys(customer_ids) if not st.facade.store.has_customer(c)]
    gone = st.ops.forgotten(unknown)
    if gone:
        raise ForgottenError(gone, field=f"{named}.customer_ids.{customer_ids.index(gone[0])}")
