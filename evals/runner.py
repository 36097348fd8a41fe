"""Run the evaluation suites, write report.json and report.html, and judge the gates."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from evals.base import Eval, artifacts_of
from evals.compare import compare as compare_reports
from evals.compare import print_table, to_html
from evals.report import DEFAULT_GATES, Report, evaluate_gates, load_gates, load_report
from tailor.errors import ConfigError, DataError, TailorError
from tailor.settings import Settings

__all__ = ["SUITES", "EvalFactory", "Suite", "SuiteInput", "eval_command", "run_suites"]

Suite = Literal["ranking", "generation", "safety", "policy"]
SUITES: tuple[Suite, ...] = get_args(Suite)


@dataclass
class SuiteInput:
    """What a suite's factory gets: the settings, the shared purchase frame, and the run's knobs."""

    settings: Settings
    quick: bool
    seed: int
    out_dir: Path
    notes: list[str]
    _purchases: pd.DataFrame | None = None
    from_store: bool = False

    @property
    def purchases(self) -> pd.DataFrame:
        """The store's purchases if it holds data, else the UCI parquet; a seeded customer slice if quick."""
        if self._purchases is None:
            from evals.protocol import purchases_from_store, purchases_from_uci
            from evals.ranking import DEFAULT_PARQUET
            from tailor.store import Store

            frame: pd.DataFrame | None = None
            if self.settings.store_path.exists():
                store = Store(self.settings.store_path)
                try:
                    if store.counts()["events"]:
                        frame, self.from_store = purchases_from_store(store), True
                finally:
                    store.close()
            if frame is None:
                self.notes.append(
                    f"the store {self.settings.store_path} is empty: purchases from {DEFAULT_PARQUET}"
                )
                frame = purchases_from_uci(DEFAULT_PARQUET)
            if self.quick:
                customers = np.sort(frame["customer_id"].unique())
                keep = np.random.default_rng(self.seed).choice(customers, size=max(len(customers) // 8, 1))
                frame = frame[frame["customer_id"].isin(set(keep))]
                self.notes.append(f"quick: purchases of a seeded 1/8 of customers ({len(frame)} rows)")
            self._purchases = frame
        return self._purchases


EvalFactory = Callable[[SuiteInput], Eval]


def _ranking(inp: SuiteInput) -> Eval:
    from evals.ranking import RankingEval

    purchases = inp.purchases
    if inp.quick:
        return RankingEval(purchases, text=None, seed=inp.seed, references=("popularity", "repeat"))
    if inp.from_store:
        inp.notes.append("ranking: store purchases, so no text signal (item vectors come from the parquet)")
        return RankingEval(purchases, text=None, seed=inp.seed, out_dir=inp.out_dir)
    return RankingEval(None, cache_dir=inp.settings.cache_dir, seed=inp.seed, out_dir=inp.out_dir)


def _generation(inp: SuiteInput) -> Eval:
    from evals.generation import GenerationEval
    from tailor.service import Tailor

    service = Tailor(inp.settings)
    service.store.require_data()
    return GenerationEval(service.agent_deps(), n=5 if inp.quick else 20, seed=inp.seed, out_dir=inp.out_dir)


def _safety(inp: SuiteInput) -> Eval:
    from evals.safety import SafetyEval

    return SafetyEval(seed=inp.seed, quick=inp.quick)


def _policy(inp: SuiteInput) -> Eval:
    from evals.policy import PolicyEval

    inp.notes.append("policy: values come from a SYNTHETIC logged-feedback log built on real purchases")
    return PolicyEval(inp.purchases, n=300 if inp.quick else 3000, seed=inp.seed)


DEFAULT_FACTORIES: Mapping[str, EvalFactory] = {
    "ranking": _ranking,
    "generation": _generation,
    "safety": _safety,
    "policy": _policy,
}


def _git_commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def _settings_digest(settings: Settings) -> str:
    # Secrets are left out: the digest says "same configuration", never what the key was.
    doc = settings.model_dump_json(exclude={"llm_api_key", "qdrant_api_key"})
    return hashlib.sha256(doc.encode()).hexdigest()[:16]


def _check_suites(suites: Sequence[str] | None) -> list[Suite]:
    if not suites:
        return list(SUITES)
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        raise ConfigError(f"unknown suite(s) {unknown}", hint=f"choose from {', '.join(SUITES)}")
    return [s for s in SUITES if s in suites]


def run_suites(
    settings: Settings,
    suites: Sequence[Suite] | None = None,
    out_dir: Path = Path("out/eval"),
    quick: bool = False,
    *,
    seed: int = 0,
    gates_path: Path = DEFAULT_GATES,
    compare: Path | None = None,
    factories: Mapping[str, EvalFactory] | None = None,
) -> Report:
    """Run each suite once, write ``report.json`` and ``report.html`` under ``out_dir`` and judge the gates.

    A suite that raises a ``TailorError`` is recorded in ``meta.errors`` and its gated metrics fail.
    """
    chosen = _check_suites(suites)
    gates = load_gates(gates_path, quick=quick)  # before the long part: a broken gates file fails fast
    old = load_report(compare) if compare is not None else None
    makers = {**DEFAULT_FACTORIES, **(factories or {})}
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    inp = SuiteInput(settings=settings, quick=quick, seed=seed, out_dir=out_dir, notes=notes)
    metrics: dict[str, float] = {}
    artifacts: dict[str, Any] = {}
    errors: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for suite in chosen:
        t0 = time.perf_counter()
        try:
            ev = makers[suite](inp)
            result = ev.run()
            artifacts.update(artifacts_of(ev))
        except TailorError as exc:
            errors[suite] = str(exc)
            continue
        finally:
            seconds[suite] = round(time.perf_counter() - t0, 2)
        bad = [k for k, v in result.items() if not isinstance(v, int | float)]
        if bad:
            raise DataError(f"suite {suite} returned non-numeric metrics {bad[:5]}")
        metrics.update({k: float(v) for k, v in result.items()})
    meta: dict[str, Any] = {
        "git_commit": _git_commit(),
        "settings_digest": _settings_digest(settings),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "suites": list(chosen),
        "quick": quick,
        "seconds": seconds,
        "errors": errors,
        "notes": notes,
    }
    report = Report(
        metrics=metrics, meta=meta, gates=evaluate_gates(metrics, gates, chosen), artifacts=artifacts
    )
    if old is not None:
        report.meta["compared_with"] = str(compare)
        report.comparison_html = to_html(compare_reports(old, report))
    report.write(out_dir)
    return report


def eval_command(
    settings: Settings, suites: Sequence[str] | None, out_dir: Path, compare: Path | None, quick: bool
) -> int:
    """What ``tailor eval`` runs: 0 when every gate passes, 1 when one fails or a suite could not run."""
    console = Console()
    report = run_suites(settings, _check_suites(suites), out_dir, quick, compare=compare)
    if compare is not None:
        print_table(compare_reports(load_report(compare), report), console)
    table = Table(title="Gates")
    for col in ("metric", "rule", "value", "status"):
        table.add_column(col)
    for g in report.gates:
        style = {"pass": "green", "fail": "bold red"}.get(g.status, "dim")
        value = "—" if g.value is None else f"{g.value:.4f}"
        table.add_row(g.key, f"{g.rule} {g.threshold:g}", value, g.status, style=style)
    console.print(table)
    for suite, error in report.meta["errors"].items():
        console.print(f"[red]suite {suite} failed:[/red] {error}")
    console.print(f"report: {out_dir / 'report.html'} and {out_dir / 'report.json'}")
    return 1 if report.failed or report.meta["errors"] else 0
