"""Gates, report files and the comparison of two reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from evals.base import read_jsonl, write_jsonl
from evals.compare import compare, compare_files, direction, print_header, print_table, to_html
from evals.report import Report, evaluate_gates, load_gates, load_report
from tailor.core.errors import ConfigError, DataError, RecordError

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


def test_every_at_k_metric_of_the_protocol_gets_a_curve() -> None:
    from evals.protocol import evaluate, temporal_split
    from evals.report import AT_K_METRICS, _at_k_curves

    split = temporal_split(
        pd.DataFrame(
            [("A", "x", "2011-01-01"), ("A", "y", "2011-01-02"), ("A", "y", "2011-01-11")],
            columns=["customer_id", "item_id", "timestamp"],
        ),
        "2011-01-10",
    )
    produced = evaluate(split, lambda cs, new: [["x", "y"] for _ in cs], "all", ks=(1, 2))
    names = {k.partition("@")[0] for k in produced if "@" in k}
    assert names == set(AT_K_METRICS)  # the plot set is exactly what the protocol reports, hitrate included
    metrics = {f"ranking.tailor.all.{k}": v for k, v in produced.items() if "@" in k}
    one = _at_k_curves(metrics)
    without_hitrate = _at_k_curves({k: v for k, v in metrics.items() if ".hitrate@" not in k})
    assert len(one) == 1 and len(without_hitrate) == 1
    # The figure with four panels (recall, ndcg, hitrate, mrr) is wider than the one with three.
    assert len(one[0]) > len(without_hitrate[0])


def test_relative_gates_need_a_strict_win_or_at_least_a_tie_as_they_say(tmp_path: Path) -> None:
    gates: dict[str, dict[str, float | str]] = {
        "ranking.tailor.all.recall@10": {"min": 0.3, "above": "ranking.repeat.all.recall@10"}
    }
    win = evaluate_gates(
        {"ranking.tailor.all.recall@10": 0.36, "ranking.repeat.all.recall@10": 0.35}, gates, ["ranking"]
    )
    assert [g.status for g in win] == ["pass", "pass"]
    assert win[1].versus == "ranking.repeat.all.recall@10" and win[1].threshold == 0.35
    assert win[1].rule_text.startswith("> ranking.repeat.all.recall@10")
    tie = evaluate_gates(
        {"ranking.tailor.all.recall@10": 0.35, "ranking.repeat.all.recall@10": 0.35}, gates, ["ranking"]
    )
    assert [g.status for g in tie] == ["pass", "fail"]  # a tie is not a beat
    gone = evaluate_gates({"ranking.tailor.all.recall@10": 0.5}, gates, ["ranking"])
    assert gone[1].status == "fail"  # the peer vanished: nothing to beat is not a pass
    below = evaluate_gates({"a.x": 0.1, "a.y": 0.2}, {"a.x": {"below": "a.y"}}, ["a"])
    assert below[0].status == "pass"
    # at_least / at_most: a tie passes (Tailor serving the reference it was validated against), a loss fails.
    floor = {"a.x": {"at_least": "a.y"}, "a.z": {"at_most": "a.y"}}
    tied = evaluate_gates({"a.x": 0.2, "a.y": 0.2, "a.z": 0.2}, floor, ["a"])
    assert [g.status for g in tied] == ["pass", "pass"]
    assert tied[0].rule_text == "≥ a.y (0.2000)" and tied[1].rule_text == "≤ a.y (0.2000)"
    lost = evaluate_gates({"a.x": 0.1999, "a.y": 0.2, "a.z": 0.2001}, floor, ["a"])
    assert [g.status for g in lost] == ["fail", "fail"]
    assert evaluate_gates({"a.x": 0.3}, floor, ["a"])[0].status == "fail"  # nothing to match: not a pass
    path = tmp_path / "gates.toml"
    path.write_text('[gates]\n"a.b" = { above = "a.c", max = 2 }\n')
    assert load_gates(path) == {"a.b": {"above": "a.c", "max": 2.0}}
    path.write_text('[gates]\n"a.b" = { above = 1 }\n')
    with pytest.raises(ConfigError, match="names another metric"):
        load_gates(path)
    path.write_text('[gates]\n"a.b" = { min = "x" }\n')
    with pytest.raises(ConfigError, match="numbers"):
        load_gates(path)
    report = Report(metrics={"ranking.tailor.all.recall@10": 0.5}, meta={"suites": ["ranking"]}, gates=gone)
    back = load_report(report.write(tmp_path / "r")[0])
    assert back.gates[1].versus == "ranking.repeat.all.recall@10" and math.isnan(back.gates[1].threshold)


def test_the_shipped_gates_can_fail_and_the_vacuous_ones_are_gone() -> None:
    full, quick, uci = load_gates(), load_gates(quick=True), load_gates(section="uci")
    for gone in (
        "policy.synthetic.decisions",
        "generation.refusal_or_email_rate",
        "generation.grounding.violation_rate",
    ):
        assert gone not in full and gone not in quick
    # On any store: at least the best reference measured in the same run (x1.00 the floor: a store whose
    # validation serves a reference ties it), with no absolute figure.
    for variant in ("all", "new-only"):
        for metric in ("recall@10", "ndcg@10"):
            key = f"ranking.tailor.{variant}.{metric}"
            assert full[key] == {"at_least": f"ranking.best_reference.{variant}.{metric}"}
    # UCI's own: beating its best peers, and the peers' published figures as floors.
    assert uci["ranking.tailor.all.recall@10"] == {"min": 0.3561, "above": "ranking.repeat.all.recall@10"}
    assert uci["ranking.tailor.new-only.recall@10"]["above"] == "ranking.ease.new-only.recall@10"
    assert uci["ranking.tailor.new-only.ndcg@10"]["above"] == "ranking.ease.new-only.ndcg@10"
    assert uci["ranking.tailor.all.ndcg@10"]["above"] == "ranking.repeat.all.ndcg@10"
    # The quick slice computes popularity, repeat and EASE only: its gates compare with nothing else.
    for rule in quick.values():
        versus = rule.get("above")
        if isinstance(versus, str) and versus.startswith("ranking."):
            assert versus.split(".")[1] in {"popularity", "repeat", "ease"}
    assert "generation.independent_grounding.violation_rate" in full and "policy.synthetic.ips_max_z" in quick


def test_compare_colours_by_each_metrics_direction() -> None:
    old = _report(
        {
            "safety.grounding.false_positive_rate": 0.01,
            "ranking.tailor.all.recall@10": 0.30,
            "generation.grounding.violation_rate": 0.0,
            "generation.latency_ms.p95": 100.0,
            "ranking.tailor.all.popularity_bias@10": 0.8,
            "ranking.customers.all": 10.0,
            "safety.canary_leaks": 0.0,
            "generation.fallback_rate": 0.1,
        }
    )
    new = _report(
        {
            "safety.grounding.false_positive_rate": 0.02,
            "ranking.tailor.all.recall@10": 0.33,
            "generation.grounding.violation_rate": 0.2,
            "generation.latency_ms.p95": 80.0,
            "ranking.tailor.all.popularity_bias@10": 0.9,
            "ranking.customers.all": 12.0,
            "safety.canary_leaks": 1.0,
            "generation.fallback_rate": 0.05,
        }
    )
    verdicts = {c.key: c.better for c in compare(old, new)}
    assert verdicts == {
        "safety.grounding.false_positive_rate": False,
        "ranking.tailor.all.recall@10": True,
        "generation.grounding.violation_rate": False,  # a higher violation rate is worse, not green
        "generation.latency_ms.p95": True,
        "ranking.tailor.all.popularity_bias@10": False,
        "ranking.customers.all": None,  # a count has no better direction
        "safety.canary_leaks": False,
        "generation.fallback_rate": True,
    }
    assert direction("safety.injection_success_rate") == "lower"
    assert direction("policy.synthetic.always_repeat.ips") == "higher"
    assert direction("safety.grounding.detection_rate") == "higher"
    # Tailor's ratio to the best reference and its interval's ends: higher is better; the error, lower.
    assert direction("ranking.tailor_vs_best.new-only.ndcg@10.low") == "higher"
    assert direction("ranking.tailor_vs_best.all.recall@10.ratio") == "higher"
    assert direction("ranking.tailor_vs_best.all.recall@10.paired_se") == "lower"
    html = to_html(compare(old, new))
    row = next(r for r in html.split("<tr") if "violation_rate" in r)
    assert "class='worse'" in row and "lower" in row
    console = Console(record=True, width=160, color_system="truecolor")
    print_table(compare(old, new), console)
    rendered = console.export_text(styles=True)
    line = next(ln for ln in rendered.splitlines() if "violation_rate" in ln)
    assert "\x1b[31m" in line and "worse" in line  # red


def test_compare_header_shows_commit_and_settings_of_both_runs() -> None:
    old = Report(
        metrics={"a.x": 1.0}, meta={"git_commit": "c0ffee", "settings_digest": "d1", "suites": ["a"]}
    )
    new = Report(
        metrics={"a.x": 2.0}, meta={"git_commit": "beef+dirty", "settings_digest": "d2", "suites": ["a"]}
    )
    console = Console(record=True, width=160)
    print_header(old, new, console)
    text = console.export_text()
    assert "c0ffee" in text and "beef+dirty" in text and "d1" in text and "d2" in text
    html = to_html(compare(old, new), old, new)
    assert "c0ffee" in html and "beef+dirty" in html and "d1" in html and "d2" in html
