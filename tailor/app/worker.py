"""``tailor worker``: the job runner with no HTTP in front of it.

Campaign items and trigger jobs wait in the ops database; every ``tailor serve`` replica runs them too,
unless ``TAILOR_SERVE_JOBS=false`` leaves them to workers. Any number of workers share one database: items
are claimed with leases (``tailor.app.ops.Ops.next_item``), so a worker that dies loses its items to the
others, and a clean stop hands back what it holds at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from threadpoolctl import threadpool_limits

from tailor.app.facade import Facade
from tailor.app.jobs import JobRunner
from tailor.app.metrics import Metrics
from tailor.app.ops import Ops
from tailor.core.logs import describe
from tailor.core.settings import Settings

__all__ = ["run_worker"]

log = logging.getLogger("tailor.app.worker")


def run_worker(
    settings: Settings,
    facade: Facade | None = None,
    *,
    stop: threading.Event,
    ready: Callable[[str], None] | None = None,
) -> None:
    """Run jobs until ``stop`` is set; ``ready`` is told the worker's name once it takes jobs. ``facade``
    defaults to ``Tailor.open(settings)``, opened and closed here; a given one is left open."""
    import scipy.linalg  # noqa: F401 -- loads the BLAS the ranker uses, so the limit below reaches it

    from tailor.app.service import Tailor

    threadpool_limits(limits=settings.serve_blas_threads, user_api="blas")
    owned = facade is None
    the_facade: Facade = Tailor.open(settings) if facade is None else facade
    try:
        ops = Ops(settings.ops_database, lease_s=settings.job_lease_s)
        try:
            # A stop asked for while opening (models load for seconds) is honoured before any job is taken.
            if stop.is_set():
                return
            try:
                the_facade.warm_up()
            except Exception as exc:
                # What failed to warm (an index another process holds) fails the items that need it, each
                # with its reason: no reason to run none.
                log.warning("warm-up failed: %s", describe(exc))
            if stop.is_set():
                return
            runner = JobRunner(the_facade, ops, settings, Metrics())
            runner.start()
            if ready is not None:
                ready(ops.worker)
            try:
                stop.wait()
            finally:
                runner.stop()
        finally:
            ops.close()
    finally:
        if owned:
            the_facade.close()
