"""Prometheus text exposition (format 0.0.4), hand-written: a few counters and histograms need no library.

Labels hold route templates (``/v1/customers/{customer_id}/recommendations``), never raw paths, so a
customer id never becomes a label value (cardinality, and no personal data in the metrics store).
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Collection, Iterable, Mapping
from typing import ClassVar

__all__ = ["LATENCY_BUCKETS", "Metrics", "record_outcome"]

LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)

LabelKey = tuple[tuple[str, str], ...]


def _labels(labels: LabelKey) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34)).replace(chr(10), " ")}"'
        for k, v in labels
    )
    return "{" + inner + "}"


class Metrics:
    _HELP: ClassVar[dict[str, tuple[str, str]]] = {
        "tailor_http_requests_total": ("counter", "HTTP requests by method, route and status."),
        "tailor_http_request_duration_seconds": ("histogram", "HTTP request latency by route."),
        "tailor_guardrail_blocks_total": ("counter", "Outputs blocked, by guardrail rail."),
        "tailor_fallbacks_total": ("counter", "Email parts written by the template writer as a fallback."),
        "tailor_template_parts_kept_total": (
            "counter",
            "Email parts the template writes because the retailer keeps them from the model"
            " (TAILOR_LLM_PARTS).",
        ),
        "tailor_llm_tokens_total": ("counter", "LLM tokens used, by kind (prompt, completion)."),
        "tailor_jobs_items_total": ("counter", "Job items finished, by status."),
        "tailor_rate_limited_total": ("counter", "Requests refused by the rate limiter."),
        "tailor_model_purchases_since_fit": ("gauge", "Purchases stored since the ranker was fitted."),
        "tailor_model_forgotten_since_fit": (
            "gauge",
            "Customers forgotten since the ranker was fitted (their share of its aggregates is still in it).",
        ),
        "tailor_model_refitting": ("gauge", "1 while the ranker is being refitted."),
        "tailor_model_shadow_recall_served": (
            "gauge",
            "Recall@10 of what the ranker serves on purchases since its fit (the latest shadow evaluation).",
        ),
        "tailor_model_shadow_recall_best_reference": (
            "gauge",
            "Recall@10 of the better of repeat history and popularity on the same purchases.",
        ),
        "tailor_model_shadow_ratio": (
            "gauge",
            "The served ranker's shadow Recall@10 over the better reference's.",
        ),
        "tailor_model_shadow_customers": ("gauge", "Customers the latest shadow evaluation judged on."),
        "tailor_model_drift_item_mix_psi": (
            "gauge",
            "Population stability index of which items are bought, before the fit against since.",
        ),
        "tailor_model_drift_basket_lines_psi": (
            "gauge",
            "Population stability index of lines an order, before the fit against since.",
        ),
        "tailor_model_shadow_last_success_timestamp_seconds": (
            "gauge",
            "When the latest shadow evaluation that worked finished (Unix time).",
        ),
        "tailor_model_shadow_failures_total": ("counter", "Shadow evaluations that failed."),
        "tailor_model_stale_by_shadow": (
            "gauge",
            "1 when the shadow evaluation marks the served ranker stale (under TAILOR_SHADOW_STALE_RATIO).",
        ),
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[LabelKey, float]] = {}
        self._hist: dict[str, dict[LabelKey, list[float]]] = {}  # bucket counts..., then sum, count
        self._gauges: dict[str, float] = {}

    def inc(self, name: str, labels: Mapping[str, str] | None = None, value: float = 1.0) -> None:
        key = tuple(sorted((labels or {}).items()))
        with self._lock:
            series = self._counters.setdefault(name, {})
            series[key] = series.get(key, 0.0) + value

    def observe(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        key = tuple(sorted((labels or {}).items()))
        with self._lock:
            series = self._hist.setdefault(name, {})
            row = series.get(key)
            if row is None:
                row = series[key] = [0.0] * (len(LATENCY_BUCKETS) + 2)
            idx = bisect.bisect_left(LATENCY_BUCKETS, value)
            if idx < len(LATENCY_BUCKETS):
                row[idx] += 1
            row[-2] += value
            row[-1] += 1

    def set(self, name: str, value: float) -> None:
        """A gauge: the latest value wins."""
        with self._lock:
            self._gauges[name] = value

    def unset(self, name: str) -> None:
        """A gauge with nothing to say any more (the model it measured was replaced): no longer exported."""
        with self._lock:
            self._gauges.pop(name, None)

    def value(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        key = tuple(sorted((labels or {}).items()))
        with self._lock:
            return self._counters.get(name, {}).get(key, 0.0)

    def series(self, name: str) -> dict[LabelKey, float]:
        """A counter's value for each label set (empty when nothing was counted)."""
        with self._lock:
            return dict(self._counters.get(name, {}))

    def latency(self, name: str) -> dict[LabelKey, tuple[int, float, float | None]]:
        """A histogram per label set: the count, the mean, and the bucket bound under which 95% fell (None
        above the last bucket)."""
        out: dict[LabelKey, tuple[int, float, float | None]] = {}
        with self._lock:
            for key, row in self._hist.get(name, {}).items():
                count = int(row[-1])
                if count == 0:
                    continue
                cumulative, p95 = 0.0, None
                for bound, n in zip(LATENCY_BUCKETS, row, strict=False):
                    cumulative += n
                    if cumulative >= 0.95 * count:
                        p95 = bound
                        break
                out[key] = (count, row[-2] / count, p95)
        return out

    def render(self) -> str:
        lines: list[str] = []
        with self._lock:
            for name in sorted(set(self._HELP) | set(self._counters) | set(self._hist) | set(self._gauges)):
                kind, text = self._HELP.get(name, ("counter", name))
                if kind == "gauge" and name not in self._gauges:
                    continue  # a gauge nobody set has no value to report, not zero
                lines.append(f"# HELP {name} {text}")
                lines.append(f"# TYPE {name} {kind}")
                if name in self._gauges:
                    lines.append(f"{name} {self._gauges[name]:g}")
                for key, val in sorted(self._counters.get(name, {}).items()):
                    lines.append(f"{name}{_labels(key)} {val:g}")
                for key, row in sorted(self._hist.get(name, {}).items()):
                    cumulative = 0.0
                    for bound, n in zip(LATENCY_BUCKETS, row, strict=False):
                        cumulative += n
                        lines.append(f"{name}_bucket{_labels((*key, ('le', f'{bound:g}')))} {cumulative:g}")
                    lines.append(f"{name}_bucket{_labels((*key, ('le', '+Inf')))} {row[-1]:g}")
                    lines.append(f"{name}_sum{_labels(key)} {row[-2]:g}")
                    lines.append(f"{name}_count{_labels(key)} {row[-1]:g}")
        return "\n".join(lines) + "\n"


_WRITER_NODES = ("generate", "revise")


def record_outcome(
    metrics: Metrics,
    audit: Iterable[object],
    fallback_parts: Iterable[str] = (),
    *,
    model_parts: Collection[str] | None = None,
) -> None:
    """Count guardrail blocks, fallbacks and LLM tokens from an agent outcome's audit trace. With
    ``model_parts`` (the kinds of part the model is asked for, ``Settings.llm_parts``), a template part of
    another kind is one the retailer keeps to the template, counted in ``tailor_template_parts_kept_total``
    and not as a fallback.

    The trace is the agent's, one record per node, built by ``agent.audit``: a ``check`` record names the
    rails that failed in ``blocked`` (one block per rail per check, so a draft that was revised counts
    too); ``generate`` and ``revise`` records carry ``prompt_tokens`` and ``completion_tokens``. Other
    records and keys are ignored, so new node kinds need no change here.
    """
    for entry in audit:
        if not isinstance(entry, Mapping):
            continue
        node = entry.get("node")
        if node == "check":
            blocked = entry.get("blocked")
            for rail in blocked if isinstance(blocked, list) else ():
                if isinstance(rail, str):
                    metrics.inc("tailor_guardrail_blocks_total", {"rail": rail})
        elif node in _WRITER_NODES:
            for kind in ("prompt", "completion"):
                n = entry.get(f"{kind}_tokens")
                if isinstance(n, int | float) and not isinstance(n, bool) and n > 0:
                    metrics.inc("tailor_llm_tokens_total", {"kind": kind}, float(n))
    for part in fallback_parts:
        # A part the retailer keeps to the template (TAILOR_LLM_PARTS) is its choice, not a model's failure,
        # whether or not the model answered at all.
        kind = part.split(":", 1)[0]
        kept = model_parts is not None and kind not in model_parts
        name = "tailor_template_parts_kept_total" if kept else "tailor_fallbacks_total"
        metrics.inc(name, {"part": kind})
