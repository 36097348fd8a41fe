"""The HTTP service: FastAPI routers over the ``tailor.app.facade.Facade``, with keys, idempotency, jobs and
metrics.

``routers/`` holds one module per audience (``probes``: the orchestrator and the scraper; ``crm``;
``support``), and ``console/`` the web pages; ``dependencies`` checks keys, ``errors`` gives every refusal
its one shape, ``middleware`` caps bodies and counts requests, ``lifespan`` opens what the app serves with
(``state``).
"""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from tailor.app.facade import Facade
from tailor.app.http.console import add_console_handlers
from tailor.app.http.console import router as console_router
from tailor.app.http.errors import ApiError, add_error_handlers
from tailor.app.http.lifespan import lifespan
from tailor.app.http.middleware import Shell
from tailor.app.http.routers import crm, probes, support
from tailor.app.http.schemas import EventsOut
from tailor.app.http.state import TokenBuckets
from tailor.app.metrics import Metrics
from tailor.app.ops import Ops
from tailor.core.logs import quiet_libraries
from tailor.core.settings import Settings

__all__ = ["ApiError", "EventsOut", "TokenBuckets", "create_app", "create_key", "serve"]

DESCRIPTION = (
    "What should this customer see next, and why. Errors always have the shape "
    '`{"error": {"code": str, "message": str, "field": str | null}}`. Authenticate with '
    "`Authorization: Bearer <key>` (`tailor keys create --role crm|support`)."
)


def create_app(settings: Settings, facade: Facade | None = None, *, run_jobs: bool = True) -> FastAPI:
    """The FastAPI app. ``facade`` defaults to ``tailor.app.service.Tailor.open(settings)`` (opened at startup
    and closed at shutdown); a given one is left open. ``run_jobs=False`` leaves jobs queued (tests)."""
    quiet_libraries()
    metrics = Metrics()
    app = FastAPI(
        title="Tailor",
        version="1",
        lifespan=lifespan(settings, facade, metrics, run_jobs=run_jobs),
        description=DESCRIPTION,
    )
    add_error_handlers(app)
    add_console_handlers(app)
    # In this order, so the OpenAPI document lists the paths as it always has.
    for router in (probes.router, crm.router, support.router, console_router):
        app.include_router(router)
    app.add_middleware(Shell, max_body=settings.api_max_body_bytes, metrics=metrics)
    return app


def create_key(settings: Settings, role: str, name: str = "") -> str:
    """Create an API key for ``role`` (crm or support); the token is returned once, stored hashed."""
    ops = Ops(settings.ops_database)
    try:
        return ops.create_key(role, name)
    finally:
        ops.close()


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run the service under uvicorn until interrupted (``tailor serve``)."""
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")
