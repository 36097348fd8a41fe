"""What the app holds while it serves: the facade, the ops database, the job runner, the rate limiter and
the warm-up; one ``ServiceState`` per app, made at startup (``tailor.app.http.lifespan``)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict

from tailor.app.facade import Facade
from tailor.app.jobs import JobRunner
from tailor.app.metrics import Metrics
from tailor.app.ops import Ops
from tailor.app.preview import CampaignPreview
from tailor.core.logs import describe
from tailor.core.settings import Settings

__all__ = ["ServiceState", "TokenBuckets"]

log = logging.getLogger("tailor.app.http")


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


class ServiceState:
    def __init__(self, settings: Settings, facade: Facade, ops: Ops, metrics: Metrics) -> None:
        self.settings = settings
        self.facade = facade
        self.ops = ops
        self.metrics = metrics
        self.runner = JobRunner(facade, ops, settings, metrics)
        self.buckets = TokenBuckets(settings.api_rate_per_s, settings.api_rate_burst)
        # Campaign previews under way or written, by (job, size): ``tailor.app.http.actions``.
        self.previews: OrderedDict[tuple[str, int], tuple[float, asyncio.Task[CampaignPreview]]] = (
            OrderedDict()
        )
        self.warm = threading.Event()
        # ``{"seconds": {part: seconds}}`` once warm, ``{"error": type name}`` if the warm-up failed.
        self.warm_up: dict[str, dict[str, float] | str] = {}

    def start_warm_up(self) -> None:
        """Warm the facade on a thread (``Tailor.warm_up``): the server answers ``/healthz`` at once, and
        ``/readyz`` says ready only once it is done. A failed warm-up is logged and ends the wait: the
        checks then say what is down."""

        def run() -> None:
            try:
                self.warm_up = {"seconds": dict(self.facade.warm_up())}
            except Exception as exc:
                log.warning("warm-up failed: %s", describe(exc))
                self.warm_up = {"error": type(exc).__name__}
            finally:
                self.warm.set()

        threading.Thread(target=run, name="tailor-warm-up", daemon=True).start()
