"""The console's pages: server-rendered HTML over the same state, role checks and audit as the API.

Support keys see customers (profile, consent, timeline, recommendations, explanations, support answers);
crm keys see campaigns (preview, approval, progress) and the model's card. The customer's why-link is the
one page without a key: a signed token names one customer and one item, and the page shows that one
explanation and nothing else.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from agent import SupportAnswer
from tailor.app.attribution import campaign_uplift
from tailor.app.http.actions import (
    approve_campaign,
    campaign_preview,
    cancel_campaign,
    create_campaign,
    own_job,
    support_audit,
)
from tailor.app.http.console.render import page
from tailor.app.http.console.session import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    ConsoleRefusal,
    Session,
    form_of,
    login_form_token,
    need,
    session_of,
    set_cookie,
    start_session,
)
from tailor.app.http.dependencies import AppState
from tailor.app.http.schemas import CampaignIn, SupportIn
from tailor.app.http.state import ServiceState
from tailor.app.http.tokens import read, sign
from tailor.app.metrics import Metrics
from tailor.app.ops import Job
from tailor.core.errors import ConsentError, DataError, NotFoundError, TailorError
from tailor.core.models import (
    TRIGGER_KINDS,
    Customer,
    Event,
    Explanation,
    JsonObject,
    Recommendation,
)

__all__ = ["router", "why_link"]

router = APIRouter(include_in_schema=False)

_TIMELINE = 100
_AUDIENCE_WORDS = {"marketing_email": "marketing e-mail consent", "min_orders": "at least orders"}
_RECS = 5


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")


def _session(st: ServiceState, request: Request, role: str | None = None, what: str = "") -> Session:
    session = session_of(st, request)
    if role is not None:
        need(session, role, what)  # type: ignore[arg-type]
    return session


def why_link(st: ServiceState, request: Request, customer_id: str, item_id: str) -> str:
    """A link that opens one explanation for the customer, with no key, until it expires."""
    ttl = st.settings.why_link_days * 86400
    token = sign(st.ops.secret("why-link"), {"c": customer_id, "i": item_id}, ttl)
    return str(request.base_url).rstrip("/") + "/why/" + token


# -- login -----------------------------------------------------------------------------------------------
@router.get("/console/login")
async def login_page(
    st: AppState, request: Request, then: Annotated[str, Query(alias="next")] = "/console"
) -> Response:
    csrf, cookie = login_form_token(st, request)
    response = page(
        "login.html",
        title="Log in",
        csrf=csrf,
        next=_safe_next(then),
        hours=f"{st.settings.console_session_hours:g}",
    )
    if cookie is not None:
        set_cookie(response, request, LOGIN_COOKIE, cookie, 3600)
    return response


@router.post("/console/login")
async def login(st: AppState, request: Request) -> Response:
    csrf, cookie = login_form_token(st, request)
    if cookie is not None:
        # No login cookie (or an expired one): the form did not come from this console's login page.
        raise ConsoleRefusal(
            403, "Form refused", "The login form had expired or did not come from this console: reload it."
        )
    form = await form_of(request, csrf)
    key = await run_in_threadpool(st.ops.verify_key, form.get("key", "").strip())
    if key is None:
        return page(
            "login.html",
            status=401,
            title="Log in",
            csrf=csrf,
            next=_safe_next(form.get("next", "/console")),
            hours=f"{st.settings.console_session_hours:g}",
            problem="That key is not valid, or it was revoked.",
        )
    response = RedirectResponse(_safe_next(form.get("next", "/console")), status_code=303)
    start_session(st, request, response, key)
    st.ops.audit("console.login", key_id=key.id, customer_id=None, detail={})
    return response


@router.post("/console/logout")
async def logout(st: AppState, request: Request) -> Response:
    session = _session(st, request)
    await form_of(request, session.csrf)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/console")
    return response


def _safe_next(then: str) -> str:
    # Only back into the console: never to another site (an open redirect), nor to another scheme.
    if then.startswith("/console") and not then.startswith("//") and "\\" not in then:
        return then
    return "/console"


@router.get("/console")
async def home(st: AppState, request: Request) -> Response:
    session = _session(st, request)
    return page("home.html", title="Console", session=session)


# -- customers (support) ---------------------------------------------------------------------------------
@router.get("/console/customers")
async def customers(st: AppState, request: Request, id: str = "") -> Response:
    session = _session(st, request, "support", "customers")
    wanted = id.strip()
    if wanted:
        if await run_in_threadpool(st.facade.store.has_customer, wanted):
            return RedirectResponse(f"/console/customers/{quote(wanted, safe='')}", status_code=303)
        return page(
            "customers.html",
            status=404,
            title="Customers",
            session=session,
            lookup_id=wanted,
            problem=f"No customer has the id {wanted!r}.",
        )
    return page("customers.html", title="Customers", session=session)


@router.get("/console/customers/{customer_id}")
async def customer(
    st: AppState, request: Request, customer_id: str, why: Annotated[str | None, Query(max_length=200)] = None
) -> Response:
    session = _session(st, request, "support", "customers")
    return await _customer_page(st, session, request, customer_id, why=why)


@router.post("/console/customers/{customer_id}/ask")
async def ask(st: AppState, request: Request, customer_id: str) -> Response:
    session = _session(st, request, "support", "customers")
    form = await form_of(request, session.csrf)
    try:
        body = SupportIn(customer_id=customer_id, question=form.get("question", ""))
    except ValidationError as exc:
        raise ConsoleRefusal(422, "Question refused", f"The question: {exc.errors()[0]['msg']}.") from exc
    return await _customer_page(st, session, request, customer_id, question=body.question)


async def _customer_page(
    st: ServiceState,
    session: Session,
    request: Request,
    customer_id: str,
    *,
    why: str | None = None,
    question: str | None = None,
) -> Response:
    # One part after another, on one thread: run side by side they were slower (measured with
    # benchmarks/console_pages.py on 2 cores), their Python sharing one interpreter lock.
    history, (recs, recs_problem), explained, answer = await run_in_threadpool(
        lambda: (
            _history(st, customer_id),
            _recommendations(st, session, customer_id),
            _explain(st, session, customer_id, why) if why else None,
            _answer(st, session, customer_id, question) if question else None,
        )
    )
    person, events, more, counts = history
    explanation: Explanation | None = None
    cited: set[str] = set()
    link = why_title = None
    if explained is not None and why is not None:
        explanation, why_title = explained
        cited = {ev for s in explanation.sentences for e in s.evidence for ev in e.event_ids}
        shown = {e.id for e in events}
        missing = sorted(cited - shown)
        if missing:
            older = await run_in_threadpool(st.facade.store.get_events, missing)
            mine = [e for e in older if e.customer_id == customer_id]
            events = sorted([*mine, *events], key=lambda e: (e.timestamp, e.id or ""))
        link = why_link(st, request, customer_id, why)
    items = sorted({e.item_id for e in events if e.item_id})
    titles = {i.id: i.title for i in await run_in_threadpool(st.facade.store.items, items)} if items else {}
    return page(
        "customer.html",
        title=person.first_name,
        session=session,
        customer=person,
        events=list(reversed(events)),
        events_more=more,
        titles=titles,
        orders=counts["orders"],
        purchases=counts["purchases"],
        returns=counts["returns"],
        recs=recs,
        recs_problem=recs_problem,
        why_item=why if explanation is not None else None,
        why_title=why_title,
        explanation=explanation,
        cited=cited,
        why_link=link,
        link_days=f"{st.settings.why_link_days:g}",
        answer=answer,
        question=question,
    )


def _history(st: ServiceState, customer_id: str) -> tuple[Customer, list[Event], bool, dict[str, int]]:
    store = st.facade.store
    person = store.get_customer(customer_id)
    events = store.events(customer_id, limit=_TIMELINE + 1)
    # The counts are of the whole history, not of the timeline's latest events.
    return person, events[-_TIMELINE:], len(events) > _TIMELINE, store.order_counts(customer_id)


def _recommendations(
    st: ServiceState, session: Session, customer_id: str
) -> tuple[list[Recommendation], str | None]:
    try:
        recs = st.facade.recommend(customer_id, _RECS)
    except ConsentError as exc:
        return [], str(exc)
    detail: JsonObject = {"k": _RECS, "via": "console"}
    st.ops.audit("recommendations", key_id=session.key_id, customer_id=customer_id, detail=detail)
    return recs, None


def _explain(
    st: ServiceState, session: Session, customer_id: str, item_id: str
) -> tuple[Explanation, str] | None:
    try:
        explanation = st.facade.why(customer_id, item_id)
    except ConsentError:
        return None  # said once, by the recommendations' notice
    detail: JsonObject = {"item_id": item_id, "via": "console"}
    st.ops.audit("why", key_id=session.key_id, customer_id=customer_id, detail=detail)
    return explanation, st.facade.store.get_item(item_id).title


def _answer(st: ServiceState, session: Session, customer_id: str, question: str) -> SupportAnswer:
    answer = st.facade.support(customer_id, question)
    detail = support_audit(answer, via="console")
    st.ops.audit("support", key_id=session.key_id, customer_id=customer_id, detail=detail)
    return answer


# -- campaigns (crm) -------------------------------------------------------------------------------------
@router.get("/console/campaigns")
async def campaigns(st: AppState, request: Request) -> Response:
    session = _session(st, request, "crm", "campaigns")
    jobs = await run_in_threadpool(st.ops.jobs_of, session.key_id, kind="campaign")
    return page("campaigns.html", **_campaigns_context(session, jobs, {}))


def _campaigns_context(
    session: Session, jobs: list[Job], form: dict[str, str], problem: str | None = None
) -> dict[str, Any]:
    return {
        "title": "Campaigns",
        "session": session,
        "jobs": jobs,
        "form": form,
        "kinds": TRIGGER_KINDS,
        "when": _when,
        "problem": problem,
    }


@router.post("/console/campaigns")
async def new_campaign(st: AppState, request: Request) -> Response:
    session = _session(st, request, "crm", "campaigns")
    form = await form_of(request, session.csrf)
    try:
        body = CampaignIn.model_validate(
            {
                "audience": _audience(form),
                "trigger": {"kind": form.get("kind", "campaign")},
                "approval": "required",
                "send_time": form.get("send_time", "now"),
            }
        )
        created = await create_campaign(st, session.key, body, None)
    except (ValidationError, TailorError) as exc:
        jobs = await run_in_threadpool(st.ops.jobs_of, session.key_id, kind="campaign")
        message = _problem(exc)
        return page("campaigns.html", status=422, **_campaigns_context(session, jobs, form, message))
    return RedirectResponse(f"/console/campaigns/{created.job_id}", status_code=303)


def _audience(form: dict[str, str]) -> dict[str, object]:
    audience: dict[str, object] = {}
    ids = [c for c in re.split(r"[\s,;]+", form.get("customer_ids", "")) if c]
    if ids:
        audience["customer_ids"] = ids
    if form.get("country", "").strip():
        audience["country"] = form["country"].strip()
    for name in ("min_orders", "limit"):
        if form.get(name, "").strip():
            audience[name] = form[name].strip()
    if form.get("marketing_email") == "1":
        audience["marketing_email"] = True
    return audience


def _problem(exc: ValidationError | TailorError) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(x) for x in err["loc"] if x != "audience") or "the form"
        return f"{where}: {err['msg']}"
    return str(exc)


@router.get("/console/campaigns/{job_id}")
async def campaign(st: AppState, request: Request, job_id: str) -> Response:
    session = _session(st, request, "crm", "campaigns")
    own_job(st, session.key, job_id)
    job = await run_in_threadpool(st.ops.get_job, job_id)
    if job.kind != "campaign":
        raise NotFoundError("campaign", job_id)
    preview, problem = None, None
    if job.status == "awaiting_approval":
        try:
            preview = await campaign_preview(st, session.key, job_id)
        except TailorError as exc:
            # Approve and Cancel stay in reach; the preview is tried again at the next view.
            problem = f"The preview could not be written: {exc}"
    decisions = await run_in_threadpool(st.ops.job_decisions, job.id)
    uplift = None
    if job.status in ("done", "cancelled"):
        uplift = await run_in_threadpool(
            campaign_uplift,
            st.facade.store,
            st.ops,
            job.id,
            window_days=st.settings.attribution_days,
            now=st.facade.now(),
            rule=st.settings.attribution_rule,
        )
    return page(
        "campaign.html",
        **_campaign_context(session, job, preview, decisions),
        problem=problem,
        uplift=uplift,
        holdout_share=st.settings.holdout_share,
    )


def _campaign_context(
    session: Session, job: Job, preview: Any, decisions: list[JsonObject]
) -> dict[str, Any]:
    finished = sum(job.counts.get(k, 0) for k in ("done", "refused", "failed", "cancelled"))
    audience = job.spec.get("audience") or {}
    said = []
    for name, value in audience.items() if isinstance(audience, dict) else ():
        if value is None:
            continue
        if name == "customer_ids" and isinstance(value, list):
            value = f"{len(value)} named customers"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        said.append(f"{_AUDIENCE_WORDS.get(name, name.replace('_', ' '))}: {value}")
    approvals = [
        {
            "what": "Approved" if d["action"] == "campaign.approve" else "Cancelled",
            "ts": d["ts"],
            "key_id": d["key_id"],
        }
        for d in decisions
    ]
    return {
        "title": f"Campaign {job.id}",
        "session": session,
        "job": job,
        "finished": finished,
        "audience": "; ".join(said) or "everyone",
        "approvals": approvals,
        "preview": preview.as_dict() if preview is not None else None,
        "live": job.status in ("queued", "running"),
        "when": _when,
    }


@router.get("/console/campaigns/{job_id}/progress")
async def campaign_progress(st: AppState, request: Request, job_id: str) -> JSONResponse:
    session = _session(st, request, "crm", "campaigns")
    own_job(st, session.key, job_id)
    job = await run_in_threadpool(st.ops.get_job, job_id)
    return JSONResponse(job.as_dict(), headers={"Cache-Control": "no-store"})


@router.post("/console/campaigns/{job_id}/approve")
async def approve(st: AppState, request: Request, job_id: str) -> Response:
    session = _session(st, request, "crm", "campaigns")
    await form_of(request, session.csrf)
    await approve_campaign(st, session.key, job_id)
    return RedirectResponse(f"/console/campaigns/{job_id}", status_code=303)


@router.post("/console/campaigns/{job_id}/cancel")
async def cancel(st: AppState, request: Request, job_id: str) -> Response:
    session = _session(st, request, "crm", "campaigns")
    await form_of(request, session.csrf)
    await cancel_campaign(st, session.key, job_id)
    return RedirectResponse(f"/console/campaigns/{job_id}", status_code=303)


# -- the model and quality (crm) -------------------------------------------------------------------------
@router.get("/console/model")
async def model(st: AppState, request: Request) -> Response:
    session = _session(st, request, "crm", "the model's page")
    status = await run_in_threadpool(st.facade.model_status)
    totals = await run_in_threadpool(st.ops.key_totals, session.key_id)
    return page(
        "model.html",
        title="Model and quality",
        session=session,
        model=status,
        fit_facts=_fit_facts(status.get("fit")),
        report=_report(st),
        report_path=str(st.settings.eval_report),
        work=_work(totals, st.metrics),
    )


def _fit_facts(fit: object) -> list[tuple[str, str]]:
    if not isinstance(fit, dict):
        return []
    facts = []
    if fit.get("label_window"):
        facts.append(("Label window", str(fit["label_window"])))
    validation = fit.get("validation")
    if isinstance(validation, dict):
        recall = validation.get("recall@10")
        customers_n = validation.get("customers") or {}
        if isinstance(recall, dict):
            for group, label in (("all", "all customers"), ("new", "customers new to the item")):
                figures = recall.get(group)
                if isinstance(figures, dict) and figures:
                    said = ", ".join(f"{name} {value:.3f}" for name, value in figures.items())
                    n = customers_n.get(group) if isinstance(customers_n, dict) else None
                    facts.append(
                        (f"Validation recall@10, {label}", said + (f" ({n} customers)" if n else ""))
                    )
    serving = fit.get("serving")
    if isinstance(serving, dict):
        facts.append(("Serving", ", ".join(f"{k}: {v}" for k, v in serving.items())))
    return facts


def _report(st: ServiceState) -> dict[str, Any] | None:
    from evals.report import load_report

    path = st.settings.eval_report
    if not path.is_file():
        return None
    try:
        report = load_report(path)
    except (DataError, ValueError, TypeError):
        return None  # a report being written, or not one of Tailor's: the page says there is none
    gates = [
        {
            "name": g.key,
            "value": "missing" if g.value is None else f"{g.value:.4g}",
            "need": g.rule_text,
            "passed": g.status == "pass",
        }
        for g in report.gates
        if g.status != "skipped"
    ]
    return {
        "path": str(path),
        "written": _when(path.stat().st_mtime),
        "gates": gates,
        "metrics": [(k, f"{v:.4g}") for k, v in sorted(report.metrics.items())],
    }


def _n(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _work(totals: dict[str, Any], metrics: Metrics) -> list[str]:
    lines = []
    jobs, items, refused = totals["jobs"], totals["items"], totals["refusals"]
    lines.append(
        f"{_n(jobs.get('campaign', 0), 'campaign')} and {_n(jobs.get('email', 0), 'triggered email')} from"
        f" this key: {_n(items.get('done', 0), 'email')} made, {items.get('pending', 0)} to come."
    )
    if refused:
        said = ", ".join(
            f"{r.replace('_', ' ')} {n}" for r, n in sorted(refused.items(), key=lambda x: -x[1])
        )
        lines.append(f"{sum(refused.values())} refused, by reason: {said}.")
    else:
        lines.append("None refused.")
    blocks = metrics.series("tailor_guardrail_blocks_total")
    if blocks:
        said = ", ".join(f"{dict(k).get('rail', '?')} {v:g}" for k, v in sorted(blocks.items()))
        lines.append(f"Drafts blocked by a rail (then revised or replaced): {said}.")
    fallbacks = metrics.series("tailor_fallbacks_total")
    if fallbacks:
        lines.append(f"Email parts the template wrote in the model's place: {sum(fallbacks.values()):g}.")
    tokens = metrics.series("tailor_llm_tokens_total")
    if tokens:
        said = ", ".join(f"{dict(k).get('kind', '?')} {v:g}" for k, v in sorted(tokens.items()))
        lines.append(f"Model tokens: {said}.")
    else:
        lines.append("No model tokens used (the template writer, or no email yet).")
    for key, (count, mean, p95) in sorted(metrics.latency("tailor_http_request_duration_seconds").items()):
        route = dict(key).get("route", "?")
        if not route.startswith("/v1/"):
            continue
        bound = f"95% under {p95 * 1000:g} ms" if p95 is not None else "95% above 10 s"
        lines.append(f"{route}: {count} requests, mean {mean * 1000:.1f} ms, {bound}.")
    return lines


# -- the customer's why-link (no key) --------------------------------------------------------------------
@router.get("/why/{token}")
async def why_page(st: AppState, token: str) -> Response:
    payload = read(st.ops.secret("why-link"), token)
    if payload is None or not isinstance(payload.get("c"), str) or not isinstance(payload.get("i"), str):
        return page(
            "why.html",
            status=404,
            public=True,
            title="This link does not open",
            message="The link has expired or was changed. Ask us for a new one.",
            item=None,
        )
    try:
        explanation = await run_in_threadpool(st.facade.why, payload["c"], payload["i"])
        item = await run_in_threadpool(st.facade.store.get_item, payload["i"])
    except (NotFoundError, ConsentError):
        # Forgotten, withdrawn consent, or an item gone from the catalog: nothing of theirs is shown.
        return page(
            "why.html",
            status=404,
            public=True,
            title="This link does not open",
            message="There is nothing to show for this link any more.",
            item=None,
        )
    st.ops.audit(
        "why", key_id=None, customer_id=payload["c"], detail={"item_id": payload["i"], "via": "link"}
    )
    expires = datetime.fromtimestamp(payload["exp"], UTC).strftime("%Y-%m-%d %H:%M")
    return page("why.html", public=True, explanation=explanation, item=item, expires=expires)
