"""For the orchestrator and the metrics scraper: liveness, readiness and Prometheus metrics, no key."""

from __future__ import annotations

import logging
from functools import partial

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from tailor.app.http.dependencies import AppState
from tailor.app.llm_endpoint import llm_endpoint_up
from tailor.core.models import JsonObject

__all__ = ["router"]

log = logging.getLogger("tailor.app.http")

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={503: {"description": "down (a backend is unreachable) or still warming up"}},
)
async def readyz(st: AppState) -> JSONResponse:
    """``status``: ``ready``; ``degraded`` (200: the model endpoint is down and the template writer
    serves, ``mode: fallback``); ``warming`` (503: loading models before the first request); ``down``
    (503: the store or Qdrant is unreachable, or the model is and emails wait for it, ``mode: defer``)."""
    try:
        checks = dict(await run_in_threadpool(st.facade.health))
    except Exception as exc:
        log.warning("health check failed: %s", type(exc).__name__)
        checks = {"store": False, "qdrant": False}
    if st.settings.writer == "openai" and "llm" not in checks:
        # Only when the health check failed (the facade's own says ``llm``): the model endpoint may be up.
        up = partial(llm_endpoint_up, st.settings, timeout_s=min(st.settings.llm_timeout_s, 3.0))
        checks["llm"] = await run_in_threadpool(up)
    body: JsonObject = {"checks": checks, "warm": st.warm.is_set(), "warm_up": st.warm_up}
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


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics_text(st: AppState) -> PlainTextResponse:
    model = await run_in_threadpool(st.facade.model_status)
    st.metrics.set("tailor_model_purchases_since_fit", model["purchases_since_fit"])
    st.metrics.set("tailor_model_forgotten_since_fit", model["forgotten_since_fit"])
    st.metrics.set("tailor_model_refitting", float(model["refitting"]))
    return PlainTextResponse(st.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
