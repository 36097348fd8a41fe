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
        self._shadow_lock = threading.Lock()
        self._shadow_thread: threading.Thread | None = None
        # ``{"seconds": {part: seconds}}`` once warm, ``{"error": type name}`` if the warm-up failed.
        self.warm_up: dict[str, dict[str, float] | str] = {}

    def start_shadow_evals(self) -> None:
        """Judge the served ranker every ``shadow_eval_hours`` (``tailor.app.shadow``), the first once the
        warm-up is done; each result is kept for ``GET /v1/model/shadow`` and set as gauges on /metrics. A
        failed one is logged and counted; the next one runs on time."""
        hours = self.settings.shadow_eval_hours
        if hours <= 0:
            return

        def loop() -> None:
            self.warm.wait()
            while not self._stopping.is_set():
                try:
                    self.run_shadow_eval()
                except Exception as exc:  # the loop outlives any one evaluation
                    log.warning("shadow evaluation loop: %s", describe(exc))
                self._stopping.wait(hours * 3600)

        self._shadow_thread = threading.Thread(target=loop, name="tailor-shadow-eval", daemon=True)
        self._shadow_thread.start()

    def run_shadow_eval(self) -> JsonObject:
        """One shadow evaluation now; one at a time (a second caller waits for the one under way and gets
        a fresh one after it: what it asked for)."""
        with self._shadow_lock:
            if self._stopping.is_set():
                return self.shadow or {"error": "stopping"}
            try:
                report = {**self.facade.shadow_eval(), "at": datetime.now(UTC).isoformat()}
            except Exception as exc:
                log.warning("shadow evaluation failed: %s", describe(exc))
                self.metrics.inc("tailor_model_shadow_failures_total")
                # The figures of the last one that worked stay, and so does its stale mark: a failure
                # says nothing about the model.
                return {
                    **(self.shadow or {}),
                    "error": type(exc).__name__,
                    "failed_at": datetime.now(UTC).isoformat(),
                }
            self.shadow = report
            self._gauges(report)
            return report

    def _gauges(self, report: JsonObject) -> None:
        recall = report.get("recall@10")
        recall = recall if isinstance(recall, dict) else {}
        drift = report.get("drift_psi")
        drift = drift if isinstance(drift, dict) else {}
        values: dict[str, object] = {
            "tailor_model_shadow_recall_served": recall.get("served"),
            "tailor_model_shadow_recall_best_reference": max(
                (float(v) for k, v in recall.items() if k != "served"), default=None
            ),
            "tailor_model_shadow_ratio": report.get("ratio_to_best_reference"),
            "tailor_model_shadow_customers": report.get("customers"),
            "tailor_model_drift_item_mix_psi": drift.get("item_mix"),
            "tailor_model_drift_basket_lines_psi": drift.get("basket_lines"),
        }
        # Every gauge set or cleared: a figure of a model since replaced must not stand beside the new one's.
        for name, value in values.items():
            if isinstance(value, int | float):
                self.metrics.set(name, float(value))
            else:
                self.metrics.unset(name)
        self.metrics.set("tailor_model_stale_by_shadow", 1.0 if report.get("stale") is True else 0.0)
        self.metrics.set("tailor_model_shadow_last_success_timestamp_seconds", time.time())

    def stop(self) -> None:
        """No new evaluation starts; one under way is waited for (a minute at most) before the facade
        it reads closes."""
        self._stopping.set()
        if self._shadow_thread is not None:
            self._shadow_thread.join(timeout=60)

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
