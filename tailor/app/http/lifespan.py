"""Startup and shutdown: the facade (opened here unless one was given), the ops database, the warm-up, the
job runner and the served model's shadow evaluations."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from threadpoolctl import threadpool_limits

from tailor.app.facade import Facade
from tailor.app.http.state import ServiceState
from tailor.app.metrics import Metrics
from tailor.app.ops import Ops
from tailor.app.service import Tailor
from tailor.core.settings import Settings

__all__ = ["lifespan"]


def lifespan(
    settings: Settings, facade: Facade | None, metrics: Metrics, *, run_jobs: bool
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """``facade`` defaults to ``Tailor.open(settings)``, opened here and closed at shutdown; a given one is
    left open. ``run_jobs=False`` leaves jobs queued (tests), as ``TAILOR_SERVE_JOBS=false`` does for
    replicas beside ``tailor worker`` processes."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        import scipy.linalg  # noqa: F401 -- loads the BLAS the ranker uses, so the limit below reaches it

        # For the process, not a block: request handlers run on other threads. Measured in
        # tailor/core/settings.py.
        threadpool_limits(limits=settings.serve_blas_threads, user_api="blas")
        owned = facade is None
        if facade is None:
            # torch whole before the first request: scipy looks torch up in sys.modules on array operations,
            # and a request doing one while the warm-up (or another request) is half way through importing
            # it (the embedding model's first load) failed with a 500 (AttributeError: no torch.Tensor yet).
            with contextlib.suppress(ImportError):
                await run_in_threadpool(importlib.import_module, "torch")
            the_facade: Facade = await run_in_threadpool(Tailor.open, settings)
        else:
            the_facade = facade
        ops = Ops(settings.ops_database, lease_s=settings.job_lease_s)
        state = ServiceState(settings, the_facade, ops, metrics)
        app.state.tailor = state
        state.start_warm_up()
        state.start_shadow_evals()
        if run_jobs and settings.serve_jobs:
            # Picks up whatever a previous process left pending: that is what makes jobs resumable.
            state.runner.start()
        try:
            yield
        finally:
            state.stop()
            state.runner.stop()
            ops.close()
            if owned:
                the_facade.close()

    return run
