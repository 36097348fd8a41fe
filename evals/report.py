"""The evaluation report: metrics, gates, and a self-contained HTML page with the plots inline."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: the report is rendered on CI machines without a display

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from evals.base import Artifact
from tailor.core.errors import ConfigError, DataError

__all__ = [
    "AT_K_METRICS",
    "DEFAULT_GATES",
    "GateResult",
    "Report",
    "evaluate_gates",
    "load_gates",
    "load_report",
]

DEFAULT_GATES = Path(__file__).resolve().parent / "gates.toml"
# The metric names ``evals.protocol.evaluate`` gives (``<metric>@<k>``): each gets a curve in the report.
AT_K_METRICS = ("recall", "ndcg", "hitrate", "mrr")
# A gate is absolute (``min``/``max``: a number) or relative (``above``/``below``: another metric of the same
# report, strictly beaten; ``at_least``/``at_most``: matched or beaten, e.g. Tailor against a reference ranker
# measured in the same run, which Tailor ties when its validation chose to serve that reference).
ABSOLUTE_RULES = frozenset({"min", "max"})
RELATIVE_RULES = frozenset({"above", "below", "at_least", "at_most"})
_SIGNS = {"min": "≥", "max": "≤", "above": ">", "below": "<", "at_least": "≥", "at_most": "≤"}
Rule = dict[str, float | str]


@dataclass(frozen=True)
class GateResult:
    key: str
    rule: str  # "min", "max", "above", "below", "at_least" or "at_most"
    threshold: float  # for a relative rule: the other metric's value in this run (NaN when it is missing)
    value: float | None
    status: str  # "pass", "fail" or "skipped" (its suite was not run)
    versus: str | None = None  # a relative rule: the metric it is compared with

    @property
    def rule_text(self) -> str:
        sign = _SIGNS[self.rule]
        if self.versus is None:
            return f"{sign} {self.threshold:g}"
        return f"{sign} {self.versus} ({self.threshold:.4f})"

    @property
    def passed(self) -> bool:
        return self.status != "fail"


@dataclass
class Report:
    metrics: dict[str, float]
    meta: dict[str, Any]
    gates: list[GateResult] = field(default_factory=list)
    artifacts: dict[str, Artifact] = field(default_factory=dict)
    comparison_html: str = ""

    @property
    def failed(self) -> list[GateResult]:
        return [g for g in self.gates if g.status == "fail"]

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "metrics": {k: _json_float(v) for k, v in sorted(self.metrics.items())},
            "gates": [{**asdict(g), "threshold": _json_float(g.threshold)} for g in self.gates],
        }

    def write(self, out_dir: Path) -> tuple[Path, Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        js, page = out_dir / "report.json", out_dir / "report.html"
        _atomic_write(js, json.dumps(self.to_json(), indent=1, sort_keys=True))
        _atomic_write(page, render_html(self))
        return js, page


def _json_float(v: float) -> float | None:
    # JSON has no NaN; null says "not measurable here" (e.g. SNIPS with no matching decision).
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def load_report(path: Path) -> Report:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(
            f"cannot read report {path}: {exc}", hint="pass a report.json from `tailor eval`"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise DataError(f"{path} is not a Tailor report: no 'metrics' object")
    metrics = {str(k): (math.nan if v is None else float(v)) for k, v in data["metrics"].items()}
    gates = [
        GateResult(**{**g, "threshold": math.nan if g.get("threshold") is None else g["threshold"]})
        for g in data.get("gates", [])
    ]
    return Report(metrics=metrics, meta=dict(data.get("meta", {})), gates=gates)


def load_gates(
    path: Path = DEFAULT_GATES, *, quick: bool = False, section: str | None = None
) -> dict[str, Rule]:
    """The rules of one section: ``[quick]`` (else ``[gates]``) when ``quick``, ``[gates]`` otherwise, or the
    ``section`` named (``uci``: the store-specific figures), which is empty when the file has none."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read gates {path}: {exc}") from exc
    if section is not None:
        table = doc.get(section, {})
    else:
        section = "quick" if quick else "gates"
        table = doc.get(section, doc.get("gates", {}))
    out: dict[str, Rule] = {}
    shape = (
        "a gate is { min = X } and/or { max = Y } (numbers), or { above = 'metric' } / { below = 'metric' }"
        " (strictly) or { at_least = 'metric' } / { at_most = 'metric' } (a tie passes)"
    )
    for key, rule in table.items():
        if not isinstance(rule, dict) or not rule or set(rule) - ABSOLUTE_RULES - RELATIVE_RULES:
            raise ConfigError(f"{path} [{section}] {key!r}: {shape}")
        parsed: Rule = {}
        for kind, v in rule.items():
            if kind in RELATIVE_RULES:
                if not isinstance(v, str) or not v:
                    raise ConfigError(f"{path} [{section}] {key!r}: {kind} names another metric: {shape}")
                parsed[kind] = v
                continue
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigError(f"{path} [{section}] {key!r}: thresholds must be numbers")
            parsed[kind] = float(v)
        out[key] = parsed
    return out


def evaluate_gates(
    metrics: Mapping[str, float], gates: Mapping[str, Mapping[str, float | str]], suites: Sequence[str]
) -> list[GateResult]:
    results: list[GateResult] = []
    for key, rule in gates.items():
        suite = key.split(".", 1)[0]
        value = metrics.get(key)
        for kind, bound in rule.items():
            versus = bound if isinstance(bound, str) else None
            other = metrics.get(versus) if versus is not None else None
            threshold = float(bound) if versus is None else (math.nan if other is None else other)
            if suite not in suites or (versus is not None and versus.split(".", 1)[0] not in suites):
                status = "skipped"
            elif value is None or not math.isfinite(value) or not math.isfinite(threshold):
                status = "fail"  # a gate on a metric that vanished must not pass silently
            elif kind in ("min", "at_least"):
                status = "pass" if value >= threshold else "fail"
            elif kind in ("max", "at_most"):
                status = "pass" if value <= threshold else "fail"
            elif kind == "above":
                status = "pass" if value > threshold else "fail"  # a tie is not a win
            else:
                status = "pass" if value < threshold else "fail"
            results.append(GateResult(key, kind, threshold, value, status, versus))
    return results


# -- HTML -------------------------------------------------------------------------------------------


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _at_k_curves(metrics: Mapping[str, float]) -> list[str]:
    """One figure per variant: each ranker's metric@k curves (ranking.<ranker>.<variant>.<metric>@<k>)."""
    series: dict[str, dict[str, dict[str, list[tuple[int, float]]]]] = {}
    for key, value in metrics.items():
        parts = key.split(".")
        if len(parts) != 4 or parts[0] != "ranking" or "@" not in parts[3]:
            continue
        metric, _, k = parts[3].partition("@")
        if metric not in AT_K_METRICS or not k.isdigit():
            continue
        series.setdefault(parts[2], {}).setdefault(metric, {}).setdefault(parts[1], []).append(
            (int(k), value)
        )
    out = []
    for variant, by_metric in sorted(series.items()):
        fig, axes = plt.subplots(1, len(by_metric), figsize=(3.6 * len(by_metric), 3.0), squeeze=False)
        for ax, (metric, rankers) in zip(axes[0], sorted(by_metric.items()), strict=True):
            for ranker, points in sorted(rankers.items()):
                points.sort()
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=ranker)
            ax.set_title(f"{metric}@k ({variant})")
            ax.set_xlabel("k")
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        out.append(_png(fig))
    return out


def _artifact_plot(name: str, art: Artifact) -> str:
    kind = art.get("kind")
    title = str(art.get("title", name))
    if kind == "bars":
        values: Mapping[str, float] = art["values"]
        fig, ax = plt.subplots(figsize=(6, 3))
        bars = ax.barh(list(values), list(values.values()), color="#c0504d")
        ax.bar_label(bars, fmt="%g")
        # Zero failures must read as "0 of a visible scale", not as an empty, autoscaled axis.
        ax.set_xlim(0, max([1.0, *values.values()]) * 1.15)
        ax.set_title(title)
        ax.set_xlabel(str(art.get("xlabel", "")))
        return _png(fig)
    if kind == "samples":
        samples: Mapping[str, Sequence[float]] = art["values"]
        fig, ax = plt.subplots(figsize=(6, 3))
        for label, xs in samples.items():
            if xs:
                ax.hist(list(xs), bins=30, alpha=0.6, label=label)
        ax.set_title(title)
        ax.set_xlabel(str(art.get("xlabel", "")))
        ax.legend(fontsize=8)
        return _png(fig)
    if kind == "intervals":
        rows: Mapping[str, Mapping[str, float]] = art["rows"]
        fig, ax = plt.subplots(figsize=(6, 0.6 * len(rows) + 1.2))
        names = list(rows)
        for i, n in enumerate(names):
            r = rows[n]
            ax.errorbar(
                r["ips"],
                i,
                xerr=[[r["ips"] - r["ips_low"]], [r["ips_high"] - r["ips"]]],
                fmt="o",
                color="C0",
                label="IPS (95% CI)" if i == 0 else None,
                capsize=4,
            )
            if "dr" in r:
                ax.errorbar(
                    r["dr"],
                    i + 0.15,
                    xerr=[[r["dr"] - r["dr_low"]], [r["dr_high"] - r["dr"]]],
                    fmt="s",
                    color="C2",
                    label="doubly robust (95% CI)" if i == 0 else None,
                    capsize=4,
                )
            if math.isfinite(r.get("snips", math.nan)):
                ax.plot(r["snips"], i + 0.15, "s", color="C1", label="SNIPS" if i == 0 else None)
            if "true" in r:
                ax.plot(r["true"], i - 0.15, "x", color="k", label="true (synthetic)" if i == 0 else None)
        ax.set_yticks(range(len(names)), names)
        ax.set_title(title)
        ax.set_xlabel("value (reward rate)")
        ax.legend(fontsize=8)
        return _png(fig)
    if kind == "table":
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in art["columns"])
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in art["rows"]
        )
        return f"<table><tr>{head}</tr>{body or '<tr><td>none</td></tr>'}</table>"
    if kind == "emails":
        return _emails_side_by_side(art["emails"])
    return f"<pre>{html.escape(json.dumps(art, default=str)[:2000])}</pre>"


def _emails_side_by_side(emails: Sequence[Mapping[str, Any]], most: int = 8) -> str:
    """One row per customer, one column per writer: each email as its reader gets it (subject, preview
    line, body), with the parts the template wrote in its stead named under it."""
    writers = list(dict.fromkeys(str(e["writer"]) for e in emails))
    by_customer: dict[str, dict[str, Mapping[str, Any]]] = {}
    for e in emails:
        by_customer.setdefault(str(e["customer_id"]), {})[str(e["writer"])] = e
    rows = sorted(by_customer.items(), key=lambda kv: -len(kv[1]))[:most]

    def cell(e: Mapping[str, Any] | None) -> str:
        if e is None:
            return "<td class='skipped'>no email</td>"
        fell = e.get("fallback_parts") or [p for p, w in e.get("part_writers", {}).items() if w == "template"]
        note = f"<br><small>template wrote: {html.escape(', '.join(fell))}</small>" if fell else ""
        return (
            f"<td style='vertical-align:top;max-width:380px'><b>{html.escape(str(e['subject']))}</b><br>"
            f"<i>{html.escape(str(e['preheader']))}</i><pre style='white-space:pre-wrap;font-size:12px'>"
            f"{html.escape(str(e['body_text']))}</pre>{note}</td>"
        )

    head = "<tr><th>customer</th>" + "".join(f"<th>{html.escape(w)}</th>" for w in writers) + "</tr>"
    body = "".join(
        f"<tr><td>{html.escape(cid)}</td>" + "".join(cell(got.get(w)) for w in writers) + "</tr>"
        for cid, got in rows
    )
    return f"<table>{head}{body}</table>"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}
th{background:#f0f0f0}.pass{background:#d8f5d0}.fail{background:#f8d0d0}.skipped{background:#eee;color:#777}
.better{color:#1a7f1a}.worse{color:#b00}h2{border-bottom:2px solid #ddd;padding-bottom:4px}
.num{text-align:right;font-family:monospace}.banner{padding:8px 12px;font-weight:bold;border-radius:4px}
"""


def render_html(report: Report) -> str:
    meta = report.meta
    errors: Mapping[str, str] = meta.get("errors", {})
    ok = not report.failed and not errors
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>Tailor eval</title><style>{_CSS}</style>",
        "</head><body><h1>Tailor offline evaluation</h1>",
        f"<p>commit <code>{html.escape(str(meta.get('git_commit')))}</code> · "
        f"settings <code>{html.escape(str(meta.get('settings_digest')))}</code> · "
        f"{html.escape(str(meta.get('timestamp')))} · seed {html.escape(str(meta.get('seed')))} · "
        f"suites {html.escape(', '.join(meta.get('suites', [])))}"
        f"{' · <b>quick</b>' if meta.get('quick') else ''}</p>",
        f"<div class='banner {'pass' if ok else 'fail'}'>"
        f"{'All gates pass' if ok else f'{len(report.failed)} gate(s) failed'}"
        f"{f', {len(errors)} suite(s) did not run' if errors else ''}</div>",
        *(
            f"<p class='banner fail'>suite {html.escape(k)} could not run: {html.escape(v)}</p>"
            for k, v in errors.items()
        ),
        "<h2>Gates</h2><table><tr><th>metric</th><th>rule</th><th>value</th><th>status</th></tr>",
    ]
    for g in report.gates:
        value = "—" if g.value is None else f"{g.value:.4f}"
        parts.append(
            f"<tr class='{g.status}'><td>{html.escape(g.key)}</td><td>{html.escape(g.rule_text)}</td>"
            f"<td class='num'>{value}</td><td>{g.status}</td></tr>"
        )
    parts.append("</table>")
    if report.comparison_html:
        # Long diffs fold away so the plots below stay one scroll from the gates.
        parts.append(
            "<h2>Compared with the previous report</h2><details open><summary>what moved</summary>"
            + report.comparison_html
            + "</details>"
        )
    curves = _at_k_curves(report.metrics)
    if curves:
        parts.append("<h2>Ranking: metric@k per ranker</h2>" + "".join(curves))
    for name, art in sorted(report.artifacts.items()):
        parts.append(f"<h2>{html.escape(str(art.get('title', name)))}</h2>" + _artifact_plot(name, art))
    if meta.get("notes"):
        parts.append(
            "<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in meta["notes"]) + "</ul>"
        )
    parts.append("<h2>All metrics</h2><table><tr><th>metric</th><th>value</th></tr>")
    for key, figure in sorted(report.metrics.items()):
        parts.append(f"<tr><td>{html.escape(key)}</td><td class='num'>{figure:.4f}</td></tr>")
    parts.append("</table></body></html>")
    return "\n".join(parts)
