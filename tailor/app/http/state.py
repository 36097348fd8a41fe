"""What the app holds while it serves: the facade, the ops database, the job runner, the rate limiter and
the warm-up; one ``ServiceState`` per app, made at startup (``tailor.app.http.lifespan``)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime

from tailor.app.facade import Facade
from tailor.app.jobs import JobRunner
from tailor.app.metrics import Metrics
from tailor.app.ops import Ops
from tailor.app.preview import CampaignPreview
from tailor.core.logs import describe
from tailor.core.models import JsonObject
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
        self._stopping = threading.Event()
        # The latest shadow evaluation (``start_shadow_evals``), or None before the first.
        self.shadow: JsonObject | None = None
        # ``{"seconds": {part: seconds}}`` once warm, ``{"error": type name}`` if the warm-up failed.
        self.warm_up: dict[str, dict[str, float] | str] = {}

    def start_shadow_evals(self) -> None:
        """Judge the served ranker every ``shadow_eval_hours`` (``tailor.app.shadow``), the first once the
        warm-up is done; each result is kept for ``GET /v1/model/shadow`` and set as gauges on /metrics. A
        failed one is logged and kept as its error; the next one runs on time."""
        hours = self.settings.shadow_eval_hours
        if hours <= 0:
            return

        def loop() -> None:
            self.warm.wait()
            while not self._stopping.is_set():
                self.run_shadow_eval()
                self._stopping.wait(hours * 3600)

        threading.Thread(target=loop, name="tailor-shadow-eval", daemon=True).start()

    def run_shadow_eval(self) -> JsonObject:
        try:
            report = self.facade.shadow_eval()
        except Exception as exc:
            log.warning("shadow evaluation failed: %s", describe(exc))
            report = {"error": type(exc).__name__}
        report = {**report, "at": datetime.now(UTC).isoformat()}
        self.shadow = report
        recall = report.get("recall@10")
        if isinstance(recall, dict) and "served" in recall:
            self.metrics.set("tailor_model_shadow_recall_served", float(recall["served"]))
            refs = [float(v) for k, v in recall.items() if k != "served"]
            self.metrics.set("tailor_model_shadow_recall_best_reference", max(refs, default=0.0))
        ratio = report.get("ratio_to_best_reference")
        if isinstance(ratio, int | float):
            self.metrics.set("tailor_model_shadow_ratio", float(ratio))
        customers = report.get("customers")
        if isinstance(customers, int):
            self.metrics.set("tailor_model_shadow_customers", float(customers))
        drift = report.get("drift_psi")
        for name in ("item_mix", "basket_lines"):
            value = drift.get(name) if isinstance(drift, dict) else None
            if isinstance(value, int | float):
                self.metrics.set(f"tailor_model_drift_{name}_psi", float(value))
        self.metrics.set("tailor_model_stale_by_shadow", 1.0 if report.get("stale") is True else 0.0)
        return report

    def stop(self) -> None:
        self._stopping.set()

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
