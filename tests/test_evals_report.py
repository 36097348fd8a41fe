"""Gates, report files and the comparison of two reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from rich.console import Console

from evals.base import read_jsonl, write_jsonl
from evals.compare import compare, compare_files, print_table, to_html
from evals.report import Report, evaluate_gates, load_gates, load_report
from tailor.errors import ConfigError, DataError, RecordError

GATES = {"ranking.tailor.all.recall@10": {"min": 0.3}, "generation.grounding.violation_rate": {"max": 0.0}}


def test_gates_pass_fail_and_skip() -> None:
    ok = evaluate_gates(
        {"ranking.tailor.all.recall@10": 0.31, "generation.grounding.violation_rate": 0.0},
        GATES,
        ["ranking", "generation"],
    )
    assert [g.status for g in ok] == ["pass", "pass"]
    bad = evaluate_gates(
        {"ranking.tailor.all.recall@10": 0.29, "generation.grounding.violation_rate": 0.05},
        GATES,
        ["ranking", "generation"],
    )
    assert [g.status for g in bad] == ["fail", "fail"]
    assert not any(g.passed for g in bad)
    # A suite that did not run skips its gates; a suite that ran without the metric fails them.
    skipped = evaluate_gates({"ranking.tailor.all.recall@10": 0.4}, GATES, ["ranking"])
    assert [g.status for g in skipped] == ["pass", "skipped"]
    missing = evaluate_gates({}, GATES, ["ranking"])
    assert missing[0].status == "fail" and missing[0].value is None
    nan = evaluate_gates({"ranking.tailor.all.recall@10": math.nan}, GATES, ["ranking"])
    assert nan[0].status == "fail"


def test_gates_file_sections_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "gates.toml"
    path.write_text('[gates]\n"a.b" = { min = 1 }\n[quick]\n"a.b" = { min = 0.5, max = 2 }\n')
    assert load_gates(path) == {"a.b": {"min": 1.0}}
    assert load_gates(path, quick=True) == {"a.b": {"min": 0.5, "max": 2.0}}
    path.write_text('[gates]\n"a.b" = { above = 1 }\n')
    with pytest.raises(ConfigError, match=r"a\.b"):
        load_gates(path)
    path.write_text("[gates\n")
    with pytest.raises(ConfigError, match=r"gates\.toml"):
        load_gates(path)


def test_the_shipped_gates_file_loads() -> None:
    assert "ranking.tailor.all.recall@10" in load_gates()
    assert "ranking.tailor.all.recall@10" in load_gates(quick=True)


def _report(metrics: dict[str, float]) -> Report:
    gates = evaluate_gates(metrics, GATES, ["ranking"])
    suites = sorted({k.split(".", 1)[0] for k in metrics})
    return Report(metrics=metrics, meta={"seed": 0, "suites": suites, "errors": {}}, gates=gates)


def test_report_round_trips_and_html_shows_gate_status_and_curves(tmp_path: Path) -> None:
    metrics = {f"ranking.tailor.all.recall@{k}": 0.2 + k / 100 for k in (5, 10, 20)}
    metrics["ranking.popularity.all.recall@10"] = 0.1
    metrics["policy.synthetic.x.snips"] = math.nan
    js, page = _report(metrics).write(tmp_path)
    data = json.loads(js.read_text())
    assert data["metrics"]["ranking.tailor.all.recall@10"] == pytest.approx(0.3)
    assert data["metrics"]["policy.synthetic.x.snips"] is None  # JSON has no NaN
    assert data["gates"][0]["status"] == "pass" and data["meta"]["seed"] == 0
    back = load_report(js)
    assert back.metrics["ranking.tailor.all.recall@10"] == pytest.approx(0.3)
    assert math.isnan(back.metrics["policy.synthetic.x.snips"])
    html = page.read_text()
    assert "All gates pass" in html and "<tr class='pass'>" in html
    assert html.count("data:image/png;base64,") == 1  # one variant → one figure of @k curves
    failing = _report({"ranking.tailor.all.recall@10": 0.1}).write(tmp_path / "f")[1].read_text()
    assert "1 gate(s) failed" in failing and "<tr class='fail'>" in failing


def test_load_report_names_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"meta": {}}')
    with pytest.raises(DataError, match=r"r\.json"):
        load_report(path)


def test_compare_lists_what_moved_biggest_first(tmp_path: Path) -> None:
    old = _report({"a.x": 0.5, "a.y": 1.0, "a.same": 2.0, "a.gone": 1.0})
    new = _report({"a.x": 0.55, "a.y": 0.5, "a.same": 2.0, "a.new": 3.0})
    changes = compare(old, new)
    assert [c.key for c in changes] == ["a.y", "a.x", "a.gone", "a.new"]
    assert changes[0].relative == pytest.approx(-0.5) and changes[1].delta == pytest.approx(0.05)
    html = to_html(changes)
    assert "a.y" in html and "-50.0%" in html and "new" in html and "a.same" not in html
    console = Console(record=True, width=120)
    print_table(changes, console)
    text = console.export_text()
    assert "a.y" in text and "+10.0%" in text
    old.write(tmp_path / "old")
    new.write(tmp_path / "new")
    assert [c.key for c in compare_files(tmp_path / "old/report.json", tmp_path / "new/report.json")] == [
        c.key for c in changes
    ]
    assert compare(old, old) == []
    other = Report(metrics={"policy.v": 1.0, "a.x": 0.5}, meta={"suites": ["policy", "a"]})
    assert [c.key for c in compare(Report(metrics={"a.x": 0.6}, meta={"suites": ["a"]}), other)] == ["a.x"]


def test_samples_round_trip_and_a_bad_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    assert write_jsonl(path, [{"a": 1}, {"b": [2]}]) == 2
    assert list(read_jsonl(path)) == [{"a": 1}, {"b": [2]}]
    path.write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(RecordError, match=r"s\.jsonl:2"):
        list(read_jsonl(path))
