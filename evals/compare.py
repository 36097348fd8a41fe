"""What moved between two evaluation reports, and by how much."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

from evals.report import Report, load_report

__all__ = ["Change", "compare", "compare_files", "print_table", "to_html"]


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


def print_table(changes: list[Change], console: Console | None = None) -> None:
    console = console or Console()
    if not changes:
        console.print("No metric moved.")
        return
    table = Table(title="What moved", show_lines=False)
    for col, just in (("metric", "left"), ("old", "right"), ("new", "right"), ("change", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for c in changes:
        d = c.delta
        style = "" if d is None or d == 0 else ("green" if d > 0 else "red")
        table.add_row(c.key, _fmt(c.old), _fmt(c.new), _rel(c), style=style)
    console.print(table)


def to_html(changes: list[Change]) -> str:
    if not changes:
        return "<p>No metric moved.</p>"
    rows = ["<table><tr><th>metric</th><th>old</th><th>new</th><th>change</th></tr>"]
    for c in changes:
        d = c.delta
        cls = "" if d is None or d == 0 else ("up" if d > 0 else "down")
        rows.append(
            f"<tr class='{cls}'><td>{html.escape(c.key)}</td><td class='num'>{_fmt(c.old)}</td>"
            f"<td class='num'>{_fmt(c.new)}</td><td class='num {cls}'>{_rel(c)}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)
