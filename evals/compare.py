"""What moved between two evaluation reports, by how much, and whether that is better or worse.

Each metric has an explicit direction (``direction``): higher is better (recall, pass and detection rates,
faithfulness...), lower is better (violation and false-positive rates, leaks, latency, fallbacks, popularity
bias...) or neutral (counts and sizes, where neither way is good). Colours follow the direction, so a rising
violation rate reads red. The commit and settings digest of both runs head the comparison.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from rich.table import Table

from evals.report import Report, load_report

__all__ = [
    "Change",
    "Direction",
    "compare",
    "compare_files",
    "direction",
    "print_header",
    "print_table",
    "to_html",
]

Direction = Literal["higher", "lower", "neutral"]

# First match wins, so the specific rules come before the general ones.
_DIRECTIONS: tuple[tuple[str, Direction], ...] = (
    # Lower is better: harm, error and cost.
    (r"violation_rate$", "lower"),
    (r"false_positive", "lower"),
    (r"canary_leaks$", "lower"),
    (r"fabricated_passed$", "lower"),
    (r"sends_without_consent$", "lower"),
    (r"injection_success_rate$", "lower"),
    (r"fallback_rate$", "lower"),
    (r"popularity_bias@\d+$", "lower"),
    (r"(^|\.)latency_ms\.", "lower"),
    (r"(^|\.)check_ms\.", "lower"),
    (r"(_ms|_s|\.seconds)$", "lower"),
    (r"tokens_per_email$", "lower"),
    (r"abs_error$", "lower"),
    (r"\.refusals\.guardrail_blocked$", "lower"),
    # Higher is better: accuracy, quality and safety catches.
    (r"\.(recall|ndcg|hitrate|mrr)@\d+$", "higher"),
    (r"^ranking\.tailor_vs_best\..*\.(ratio|low|high)$", "higher"),
    (r"^ranking\.tailor_vs_best\..*\.paired_se$", "lower"),
    (r"\.(coverage|diversity|novelty)@\d+$", "higher"),
    (r"pass_rate$", "higher"),
    (r"detection_rate$", "higher"),
    (r"faithfulness$", "higher"),
    (r"specific_rate$", "higher"),
    (r"pairwise_jaccard$", "higher"),
    (r"readability\.flesch$", "higher"),
    (r"ci_coverage$", "higher"),
    (r"^policy\.[^.]+\.[^.]+\.(ips|snips|true)$", "higher"),
    (r"^policy\.[^.]+\.logging\.value$", "higher"),
)
_RULES = tuple((re.compile(p), d) for p, d in _DIRECTIONS)


def direction(key: str) -> Direction:
    """Which way is better for a metric; ``neutral`` for counts and sizes (customers, decisions, words)."""
    for pattern, d in _RULES:
        if pattern.search(key):
            return d
    return "neutral"


@dataclass(frozen=True)
class Change:
    key: str
    old: float | None  # None: the metric is new
    new: float | None  # None: the metric disappeared

    @property
    def delta(self) -> float | None:
        if self.old is None or self.new is None:
            return None
        return self.new - self.old

    @property
    def relative(self) -> float | None:
        d = self.delta
        if d is None or self.old is None or self.old == 0:
            return None
        return d / abs(self.old)

    @property
    def direction(self) -> Direction:
        return direction(self.key)

    @property
    def better(self) -> bool | None:
        """True: moved the good way; False: the bad way; None: no direction, no number, or no move."""
        d = self.delta
        if d is None or d == 0 or not math.isfinite(d) or self.direction == "neutral":
            return None
        return (d > 0) == (self.direction == "higher")


def _same(a: float, b: float, tol: float) -> bool:
    if math.isnan(a) and math.isnan(b):
        return True
    return math.isclose(a, b, rel_tol=tol, abs_tol=1e-12)


def compare(old: Report, new: Report, *, tol: float = 1e-9) -> list[Change]:
    """Metrics that changed (beyond ``tol`` relative), appeared or vanished; largest relative move first."""
    changes = []
    # A suite run in only one of the two says nothing about movement: its metrics are left out, not "gone".
    both = set(old.meta.get("suites", ())) & set(new.meta.get("suites", ()))
    for key in sorted(set(old.metrics) | set(new.metrics)):
        if both and key.split(".", 1)[0] not in both:
            continue
        a, b = old.metrics.get(key), new.metrics.get(key)
        if a is not None and b is not None and _same(a, b, tol):
            continue
        changes.append(Change(key, a, b))

    def order(c: Change) -> tuple[int, float, str]:
        r = c.relative
        return (0 if r is not None else 1, -abs(r) if r is not None and math.isfinite(r) else 0.0, c.key)

    return sorted(changes, key=order)


def compare_files(old: Path, new: Path) -> list[Change]:
    return compare(load_report(old), load_report(new))


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4f}"


def _rel(c: Change) -> str:
    if c.old is None:
        return "new"
    if c.new is None:
        return "gone"
    r = c.relative
    return f"{r:+.1%}" if r is not None and math.isfinite(r) else f"{c.delta:+.4f}"


def _verdict(c: Change) -> str:
    return {True: "better", False: "worse", None: ""}[c.better]


def _runs(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(what, old run, new run) for the fields that say which code and configuration produced a report."""
    return [
        (field, str(old.get(field, "unknown")), str(new.get(field, "unknown")))
        for field in ("git_commit", "settings_digest", "timestamp")
    ]


def print_header(old: Report, new: Report, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title="Runs compared")
    for col in ("", "old", "new"):
        table.add_column(col)
    for field, a, b in _runs(old.meta, new.meta):
        table.add_row(field, a, b, style="" if a == b or field == "timestamp" else "yellow")
    console.print(table)


def print_table(changes: list[Change], console: Console | None = None) -> None:
    console = console or Console()
    if not changes:
        console.print("No metric moved.")
        return
    table = Table(title="What moved", show_lines=False)
    for col, just in (
        ("metric", "left"),
        ("old", "right"),
        ("new", "right"),
        ("change", "right"),
        ("", "left"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for c in changes:
        style = {True: "green", False: "red", None: ""}[c.better]
        table.add_row(c.key, _fmt(c.old), _fmt(c.new), _rel(c), _verdict(c), style=style)
    console.print(table)


def to_html(changes: list[Change], old: Report | None = None, new: Report | None = None) -> str:
    head = ""
    if old is not None and new is not None:
        rows = "".join(
            f"<tr><td>{html.escape(f)}</td><td><code>{html.escape(a)}</code></td>"
            f"<td><code>{html.escape(b)}</code></td></tr>"
            for f, a, b in _runs(old.meta, new.meta)
        )
        head = f"<table class='runs'><tr><th></th><th>old</th><th>new</th></tr>{rows}</table>"
    if not changes:
        return head + "<p>No metric moved.</p>"
    rows_html = ["<table><tr><th>metric</th><th>old</th><th>new</th><th>change</th><th>better is</th></tr>"]
    for c in changes:
        cls = {True: "better", False: "worse", None: ""}[c.better]
        rows_html.append(
            f"<tr class='{cls}'><td>{html.escape(c.key)}</td><td class='num'>{_fmt(c.old)}</td>"
            f"<td class='num'>{_fmt(c.new)}</td><td class='num {cls}'>{_rel(c)} {_verdict(c)}</td>"
            f"<td>{c.direction}</td></tr>"
        )
    rows_html.append("</table>")
    return head + "".join(rows_html)
