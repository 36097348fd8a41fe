"""The runner end to end with scripted evals: one run per suite, files written, gates judged, errors kept."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.base import Artifact
from evals.runner import SuiteInput, eval_command, run_suites
from tailor.errors import ConfigError, DataError
from tailor.settings import Settings


class OnceEval:
    """A scripted eval: it has one run in it, and a second call is a runner bug."""

    name = "ranking"

    def __init__(self, metrics: dict[str, float], seed: int = 0) -> None:
        self.seed = seed
        self.metrics = metrics
        self.calls = 0

    def run(self) -> dict[str, float]:
        self.calls += 1
        if self.calls > 1:
            raise AssertionError("run() called twice")
        return dict(self.metrics)

    def artifacts(self) -> dict[str, Artifact]:
        return {"lat": {"kind": "samples", "title": "Latency", "values": {"x": [1.0, 2.0, 2.5]}}}


def _gates(tmp_path: Path) -> Path:
    path = tmp_path / "gates.toml"
    path.write_text(
        '[gates]\n"ranking.tailor.all.recall@10" = { min = 0.3 }\n'
        '"policy.synthetic.decisions" = { min = 10 }\n'
    )
    return path


def test_runner_runs_each_suite_once_and_writes_the_report(tmp_path: Path) -> None:
    made: list[OnceEval] = []

    def ranking(inp: SuiteInput) -> OnceEval:
        assert inp.quick and inp.seed == 5
        made.append(OnceEval({"ranking.tailor.all.recall@10": 0.4, "ranking.tailor.all.recall@5": 0.3}))
        return made[-1]

    settings = Settings(data_dir=tmp_path / "data")
    report = run_suites(
        settings,
        ["ranking"],
        tmp_path / "out",
        True,
        seed=5,
        gates_path=_gates(tmp_path),
        factories={"ranking": ranking},
    )
    assert len(made) == 1 and made[0].calls == 1
    assert not report.failed
    assert [g.status for g in report.gates] == ["pass", "skipped"]
    data = json.loads((tmp_path / "out/report.json").read_text())
    assert data["metrics"]["ranking.tailor.all.recall@10"] == 0.4
    assert {"git_commit", "settings_digest", "timestamp", "seed", "suites", "quick"} <= set(data["meta"])
    assert data["meta"]["seed"] == 5 and data["meta"]["suites"] == ["ranking"]
    html = (tmp_path / "out/report.html").read_text()
    assert "Latency" in html and html.count("data:image/png;base64,") == 2


def test_a_failing_suite_is_recorded_and_fails_its_gates(tmp_path: Path) -> None:
    def broken(inp: SuiteInput) -> OnceEval:
        raise DataError("no purchases at all")

    def ranking(inp: SuiteInput) -> OnceEval:
        return OnceEval({"ranking.tailor.all.recall@10": 0.1})

    report = run_suites(
        Settings(data_dir=tmp_path / "data"),
        ["ranking", "policy"],
        tmp_path / "out",
        gates_path=_gates(tmp_path),
        factories={"ranking": ranking, "policy": broken},
    )
    assert {g.key: g.status for g in report.gates} == {
        "ranking.tailor.all.recall@10": "fail",
        "policy.synthetic.decisions": "fail",
    }
    assert "no purchases" in report.meta["errors"]["policy"]
    assert "could not run" in (tmp_path / "out/report.html").read_text()


def test_compare_is_folded_into_the_html(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    gates = _gates(tmp_path)
    first = run_suites(
        settings,
        ["ranking"],
        tmp_path / "a",
        gates_path=gates,
        factories={"ranking": lambda inp: OnceEval({"ranking.tailor.all.recall@10": 0.40})},
    )
    assert not first.failed
    run_suites(
        settings,
        ["ranking"],
        tmp_path / "b",
        gates_path=gates,
        compare=tmp_path / "a/report.json",
        factories={"ranking": lambda inp: OnceEval({"ranking.tailor.all.recall@10": 0.44})},
    )
    html = (tmp_path / "b/report.html").read_text()
    assert "Compared with the previous report" in html and "+10.0%" in html


def test_unknown_suites_are_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bogus"):
        eval_command(Settings(data_dir=tmp_path), ["ranking", "bogus"], tmp_path / "out", None, True)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_eval_command_policy_suite_on_the_real_data(tmp_path: Path) -> None:
    """The real policy suite over the UCI purchases (the store here is empty), in quick mode."""
    code = eval_command(Settings(data_dir=tmp_path / "data"), ["policy"], tmp_path / "out", None, True)
    data = json.loads((tmp_path / "out/report.json").read_text())
    assert data["metrics"]["policy.synthetic.decisions"] == 300
    assert any("SYNTHETIC" in n for n in data["meta"]["notes"])
    assert code == 0
