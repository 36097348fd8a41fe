"""Run the evaluation suites, write report.json and report.html, and judge the gates."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from evals.base import Eval, artifacts_of, read_jsonl
from evals.compare import compare as compare_reports
from evals.compare import print_header, print_table, to_html
from evals.copy import CopyQualityEval
from evals.generation import GenerationEval
from evals.own_log import OwnLog
from evals.policy import PolicyEval, bought_within, event_times, load_decisions
from evals.protocol import DEFAULT_CUT as DEFAULT_CUT_TS
from evals.protocol import UCI_START, holdout_cut, sized_holdout_days
from evals.ranking import DEFAULT_EARLIER_PARQUET, DEFAULT_PARQUET, RankingEval
from evals.report import DEFAULT_GATES, Report, evaluate_gates, load_gates, load_report
from evals.safety import SafetyEval
from evals.support import CLOCK as SUPPORT_CLOCK
from evals.support import DEV as SUPPORT_DEV
from evals.support import FRESH as SUPPORT_FRESH
from evals.support import HELDOUT as SUPPORT_HELDOUT
from evals.support import SupportEval
from retrieval.embeddings import Embedder
from retrieval.recommender import item_text_vectors
from tailor.app.ops import Ops
from tailor.app.service import Tailor
from tailor.core.errors import ConfigError, DataError, TailorError
from tailor.core.models import EventKind, JsonObject
from tailor.core.sends import send_token
from tailor.core.settings import Settings
from tailor.core.utc import utc_timestamp
from tailor.data.frame import purchases_from_store, purchases_from_uci
from tailor.data.store import Store

__all__ = [
    "DEFAULT_HOLDOUT_DAYS",
    "SUITES",
    "EvalFactory",
    "Suite",
    "SuiteInput",
    "decisions_path",
    "demo_now",
    "eval_command",
    "run_suites",
]

Suite = Literal["ranking", "generation", "safety", "policy", "copy", "support"]
SUITES: tuple[Suite, ...] = get_args(Suite)
# A store that is not UCI Online Retail has no reference cut: its last four weeks are the test period (long
# enough for most customers to come back once, short enough to leave the ranker a long history), or, on a
# store younger than four months, a quarter of its days (``evals.protocol.sized_holdout_days``).
DEFAULT_HOLDOUT_DAYS = 28
MIN_HOLDOUT_DAYS = 7
UCI_LAST_DAY = pd.Timestamp("2011-12-09", tz="UTC")


@dataclass
class SuiteInput:
    """What a suite's factory gets: the settings, the shared purchase frame, and the run's knobs."""

    settings: Settings
    quick: bool
    seed: int
    out_dir: Path
    notes: list[str]
    cut: str | None = None  # --cut YYYY-MM-DD
    holdout_days: int | None = None  # --holdout-days N
    protocol: JsonObject = field(default_factory=dict)  # what the ranking suite split on, for meta
    _purchases: pd.DataFrame | None = None
    from_store: bool = False
    uci: bool = False  # the purchases are UCI Online Retail (the parquet, or a store imported from it)
    unmeasured: set[str] = field(default_factory=set)  # suites with nothing to measure on this store

    @property
    def purchases(self) -> pd.DataFrame:
        """The store's purchases if it holds data, else the UCI parquet; a seeded customer slice if quick."""
        if self._purchases is None:
            frame: pd.DataFrame | None = None
            if self.settings.store_exists:
                store = Store(self.settings.store_database)
                try:
                    if store.counts()["events"]:
                        frame, self.from_store = purchases_from_store(store), True
                        self.uci = store.get_meta("uci_source") is not None or _looks_like_uci(frame)
                finally:
                    store.close()
            if frame is None:
                self.notes.append(
                    f"the store {'on PostgreSQL' if self.settings.database_url else self.settings.store_path}"
                    f" is empty: purchases from {DEFAULT_PARQUET}"
                )
                frame = purchases_from_uci(DEFAULT_PARQUET)
                self.uci = True
            if self.quick:
                customers = np.sort(frame["customer_id"].unique())
                keep = np.random.default_rng(self.seed).choice(customers, size=max(len(customers) // 8, 1))
                frame = frame[frame["customer_id"].isin(set(keep))]
                self.notes.append(f"quick: purchases of a seeded 1/8 of customers ({len(frame)} rows)")
            self._purchases = frame
        return self._purchases


EvalFactory = Callable[[SuiteInput], Eval]


def _looks_like_uci(frame: pd.DataFrame) -> bool:
    # The demo store imported from canonical files carries no UCI marker; its dates give it away.
    ts = frame["timestamp"]
    return bool(len(ts)) and ts.min() < DEFAULT_CUT_TS <= ts.max() and ts.max().normalize() == UCI_LAST_DAY


def _ranking_protocol(inp: SuiteInput) -> JsonObject:
    """The split the ranking suite uses: ``--cut``, ``--holdout-days``, or the default for the data.

    Default: the reference cut (2011-09-09) on UCI Online Retail, so figures stay comparable with the peers';
    on any other store the last ``DEFAULT_HOLDOUT_DAYS`` days are held out."""
    if inp.cut is not None and inp.holdout_days is not None:
        raise ConfigError("--cut and --holdout-days both given", hint="choose one way to split")
    if inp.cut is not None:
        try:
            cut = utc_timestamp(inp.cut)
        except ValueError as exc:
            raise ConfigError(f"--cut {inp.cut!r} is not a date", hint="write it as YYYY-MM-DD") from exc
        return {"split": "cut", "cut": cut.isoformat(), "chosen_by": "--cut"}
    if inp.holdout_days is not None:
        if inp.holdout_days < 1:
            raise ConfigError(f"--holdout-days must be >= 1, got {inp.holdout_days}")
        return {"split": "holdout", "holdout_days": inp.holdout_days, "chosen_by": "--holdout-days"}

    purchases = inp.purchases  # decides whether the data is UCI
    if inp.uci:
        return {"split": "cut", "cut": DEFAULT_CUT_TS.isoformat(), "chosen_by": "default (UCI reference cut)"}
    days = sized_holdout_days(purchases, most=DEFAULT_HOLDOUT_DAYS, least=MIN_HOLDOUT_DAYS)
    why = (
        "default (not UCI)"
        if days == DEFAULT_HOLDOUT_DAYS
        else f"default (not UCI): a quarter of the store's days, at least {MIN_HOLDOUT_DAYS}"
    )
    return {"split": "holdout", "holdout_days": days, "chosen_by": why}


def _ranking(inp: SuiteInput) -> Eval:

    protocol = _ranking_protocol(inp)
    purchases = inp.purchases
    if protocol["split"] == "holdout":
        protocol["cut"] = holdout_cut(purchases, int(protocol["holdout_days"])).isoformat()
    inp.protocol = protocol
    inp.notes.append(f"ranking: train before {protocol['cut']}, test from it on ({protocol['chosen_by']})")
    cut = protocol["cut"]
    if inp.quick:
        # The quick slice measures its own peers: popularity, repeat history and EASE on the same customers.
        refs = ("popularity", "repeat", "ease")
        return RankingEval(purchases, cut=cut, text=None, seed=inp.seed, references=refs)
    if inp.from_store:
        # The same item vectors the service fits on (the store's catalog through the configured embedder,
        # cached on disk), so the suite measures the ranker that serves.
        store = Store(inp.settings.store_database)
        try:
            items = store.items()
            vectors = item_text_vectors(items, Embedder.from_settings(inp.settings))
        finally:
            store.close()
        unnamed = len(items) - len(vectors)
        inp.notes.append(
            f"ranking: store purchases; text vectors of the store's {len(vectors)} items"
            + (f" ({unnamed} unnamed items have none: their titles are stand-ins)" if unnamed else "")
        )
        # A store that holds the year before Online Retail learns from it; the reference period is measured.
        start = UCI_START if inp.uci and purchases["timestamp"].min() < UCI_START else None
        if start is not None:
            inp.notes.append(f"ranking: purchases before {start.date()} are earlier history, not measured")
        elif inp.uci:
            inp.notes.append(
                f"ranking: the store holds nothing before {UCI_START.date()}, so no earlier history; on an"
                f" empty data dir the suite reads the parquet files, {DEFAULT_EARLIER_PARQUET.name} included"
            )
        return RankingEval(purchases, cut=cut, start=start, text=vectors, seed=inp.seed, out_dir=inp.out_dir)
    earlier = DEFAULT_EARLIER_PARQUET if DEFAULT_EARLIER_PARQUET.exists() else None
    if earlier is not None:
        inp.notes.append(f"ranking: {earlier.name} before {UCI_START.date()} is earlier history")
    return RankingEval(
        None,
        earlier=earlier,
        cut=cut,
        cache_dir=inp.settings.cache_dir,
        seed=inp.seed,
        out_dir=inp.out_dir,
    )


def demo_now(settings: Settings, last_event: datetime | None) -> str | None:
    """The clock the generation suite runs on: ``TAILOR_NOW`` when set, else the morning after the store's
    last event (as ``tailor demo`` does), so recency and "last bought" mean the same on old data as on new."""
    if settings.now:
        return settings.now
    if last_event is None:
        return None
    day = last_event.astimezone(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, 10, tzinfo=UTC).isoformat()


def _generation(inp: SuiteInput) -> Eval:

    store = Store(inp.settings.store_database)
    try:
        store.require_data()
        now = demo_now(inp.settings, store.last_event_time())
    finally:
        store.close()
    settings = inp.settings if now == inp.settings.now else inp.settings.model_copy(update={"now": now})
    inp.notes.append(
        f"generation: clock at {now}" + (" (TAILOR_NOW)" if inp.settings.now else " (the store's data end)")
    )
    service = Tailor(settings)
    return GenerationEval(service.agent_deps(), n=5 if inp.quick else 20, seed=inp.seed, out_dir=inp.out_dir)


def _safety(inp: SuiteInput) -> Eval:

    return SafetyEval(seed=inp.seed, quick=inp.quick)


def _copy(inp: SuiteInput) -> Eval:

    deps = None
    service = None
    if inp.settings.store_exists:
        store = Store(inp.settings.store_database)
        try:
            has_data = store.counts()["items"] > 0
            now = demo_now(inp.settings, store.last_event_time()) if has_data else None
        finally:
            store.close()
        if has_data:
            settings = (
                inp.settings if now == inp.settings.now else inp.settings.model_copy(update={"now": now})
            )
            service = Tailor(settings)
            deps = service.agent_deps()
    if deps is None:
        inp.notes.append("copy: no store imported, so only the labelled set was measured (no writers)")
    else:
        inp.notes.append(
            f"copy: writers measured on the store's customers with the {deps.writer.name} writer"
        )
    similarity = service.embedder.similarity if service is not None else None
    return CopyQualityEval(deps, n=4 if inp.quick else 10, seed=inp.seed, similarity=similarity)


def _support(inp: SuiteInput) -> Eval:
    """The labelled support questions, answered by the service at their own clock (the demo store's)."""
    sets = {"dev": SUPPORT_DEV, "heldout": SUPPORT_HELDOUT}
    if SUPPORT_FRESH.exists():
        sets["fresh"] = SUPPORT_FRESH
    cases = [c for path in sets.values() for c in read_jsonl(path)]
    held = False
    if inp.settings.store_exists:
        store = Store(inp.settings.store_database)
        try:
            held = all(store.has_customer(str(c["customer_id"])) for c in cases)
        finally:
            store.close()
    if not held:
        inp.notes.append(
            "support: the labelled questions are about the demo store's customers: not measured here"
        )
        inp.unmeasured.add("support")
        return _Nothing(inp.seed)
    service = Tailor(inp.settings.model_copy(update={"now": SUPPORT_CLOCK.isoformat()}))
    inp.notes.append(f"support: the service's answers at the sets' clock {SUPPORT_CLOCK:%Y-%m-%d %H:%M} UTC")
    return SupportEval(
        service.support, service.store, service.brand, sets=sets, seed=inp.seed, quick=inp.quick
    )


@dataclass
class _Nothing:
    """A suite with nothing to measure on this store (its note says why): no figures, and its gates are not
    judged (``SuiteInput.unmeasured``)."""

    seed: int

    def run(self) -> dict[str, float]:
        return {}


def decisions_path(settings: Settings) -> Path:
    """Where logged email decisions are read from: one JSON object a line (``customer_id``, ``timestamp``,
    ``action``, ``propensity``, optionally ``reward``), as the CRM that sent them logged them."""
    return settings.data_dir / "decisions.jsonl"


def _policy(inp: SuiteInput) -> Eval:

    n = 300 if inp.quick else 3000
    path = decisions_path(inp.settings)
    log = None
    if path.exists() and inp.settings.store_exists:
        store = Store(inp.settings.store_database)
        try:
            # Reward: a click on an email or a purchase within 7 days of the send (opens are too noisy:
            # image proxies open mail nobody read).
            events = store.events_frame(kinds=(EventKind.EMAIL_CLICK, EventKind.PURCHASE))
        finally:
            store.close()
        log = load_decisions(path, events=events)
        inp.notes.append(
            f"policy: policy.logged.* from {len(log)} logged sends in {path}, rewards from the store's "
            "clicks and purchases; policy.synthetic.* checks the estimators on a SYNTHETIC log"
        )
    else:
        inp.notes.append(
            f"policy: no logged sends ({path} is absent): values come from a SYNTHETIC logged-feedback log "
            "built on real purchases"
        )
    own, clicks = _own_log(inp)
    return PolicyEval(inp.purchases, log=log, own=own, own_clicks=clicks, n=n, seed=inp.seed, simulations=200)


def _own_log(inp: SuiteInput) -> tuple[OwnLog | None, OwnLog | None]:
    """Tailor's own decision log (the ops database), each decision rewarded 1 when the customer bought
    within ``TAILOR_ATTRIBUTION_DAYS`` of it, over the whole window as the campaign comparison counts it
    (``tailor.app.attribution``: not cut at a later email, which the frequency cap keeps from the emailed and
    not from the held out, so a cut would bias "send nothing" against sending); and the same decisions
    rewarded by engagement: 1 when the customer clicked a link of the email the decision made (its send
    token, ``tailor.core.sends``: the click, or the CRM's Email Link Clicked, names it), 0 for a decision
    that made none. (None, None) when there is no log.

    One policy's decisions only, the one with the most (its holdout and exploration shares are in its
    name): pooled across shares, the holdout and the targeted would no longer be draws of one audience.
    A decision whose window is still open (it ends after the store's last purchase) has no reward yet and
    is left out."""
    settings = inp.settings
    if not settings.ops_exists or not settings.store_exists:
        return None, None
    ops = Ops(settings.ops_database)
    try:
        rows = ops.all_decisions()
        secret = ops.secret("send")
    finally:
        ops.close()
    if not rows:
        inp.notes.append("policy: Tailor's decision log is empty: no policy.own.* figures")
        return None, None
    sends = {
        send_token(secret, str(r["job_id"]), str(r["customer_id"])): str(r["customer_id"])
        for r in rows
        if r["action"] != "nothing"
    }
    store = Store(settings.store_database)
    try:
        bought = store.events_frame(kinds=(EventKind.PURCHASE,))
        engaged = store.email_engagement(sends)
    finally:
        store.close()
    policies = Counter(str(r["policy"]) for r in rows)
    policy, _ = policies.most_common(1)[0]
    window = pd.Timedelta(days=settings.attribution_days)
    data_end = bought["timestamp"].max() if len(bought) else None
    kept = [
        r
        for r in rows
        if r["policy"] == policy
        and data_end is not None
        and utc_timestamp(str(r["decided_at"])) + window <= data_end
    ]
    times = event_times(bought)
    rewards = [
        bought_within(times, str(row["customer_id"]), utc_timestamp(str(row["decided_at"])), window)
        for row in kept
    ]
    other = sum(n for p, n in policies.items() if p != policy)
    open_windows = sum(1 for r in rows if r["policy"] == policy) - len(kept)
    inp.notes.append(
        f"policy: policy.own.* from Tailor's own log: {len(kept)} decisions under {policy}"
        f" ({other} under other policies and {open_windows} whose {settings.attribution_days}-day window"
        " is still open left out); reward: a purchase within the window; intervals clustered by"
        " customer (a customer in several campaigns is one draw, not several); policy.own_simulated.* and"
        " policy.own_simulated_repeat.* check the estimators on simulated logs whose true values are known;"
        " policy.own_clicks.*: the same decisions rewarded by a click on the email each made"
    )
    if not kept:
        return None, None
    clicks = [
        float(
            r["action"] != "nothing"
            and EventKind.EMAIL_CLICK
            in engaged.get(send_token(secret, str(r["job_id"]), str(r["customer_id"])), set())
        )
        for r in kept
    ]
    return OwnLog.from_rows(kept, rewards), OwnLog.from_rows(kept, clicks)


DEFAULT_FACTORIES: Mapping[str, EvalFactory] = {
    "ranking": _ranking,
    "generation": _generation,
    "safety": _safety,
    "policy": _policy,
    "copy": _copy,
    "support": _support,
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
    cut: str | None = None,
    holdout_days: int | None = None,
) -> Report:
    """Run each suite once, write ``report.json`` and ``report.html`` under ``out_dir`` and judge the gates.

    A suite that raises a ``TailorError`` is recorded in ``meta.errors`` and its gated metrics fail.
    ``cut`` (YYYY-MM-DD) or ``holdout_days`` choose the ranking split; see ``_ranking_protocol``.
    """
    if cut is not None and holdout_days is not None:
        raise ConfigError("--cut and --holdout-days both given", hint="choose one way to split")
    chosen = _check_suites(suites)
    # Before the long part: a broken gates file fails fast. UCI's own figures are read now, judged later.
    gates = load_gates(gates_path, quick=quick)
    uci_gates = {} if quick else load_gates(gates_path, section="uci")
    old = load_report(compare) if compare is not None else None
    makers = {**DEFAULT_FACTORIES, **(factories or {})}
    out_dir.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    inp = SuiteInput(
        settings=settings,
        quick=quick,
        seed=seed,
        out_dir=out_dir,
        notes=notes,
        cut=cut,
        holdout_days=holdout_days,
    )
    metrics: dict[str, float] = {}
    artifacts: JsonObject = {}
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
    meta: JsonObject = {
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
    judged = evaluate_gates(metrics, gates, chosen)
    if inp.protocol:
        meta["ranking_protocol"] = inp.protocol
        # The peers' published figures are UCI's under its reference cut: they bind there and nowhere else.
        if inp.uci and utc_timestamp(inp.protocol["cut"]) == DEFAULT_CUT_TS and uci_gates:
            judged += evaluate_gates(metrics, uci_gates, chosen)
            meta["gate_sections"] = ["gates", "uci"]
    meta.setdefault("gate_sections", ["quick" if quick else "gates"])
    # The support questions are about the demo store's customers: their gates bind wherever the suite was
    # chosen and could be measured. One that failed part way has no figures, and its gates fail.
    if "support" in chosen and "support" not in inp.unmeasured:
        judged += evaluate_gates(metrics, load_gates(gates_path, section="support"), chosen)
        meta["gate_sections"] = [*meta["gate_sections"], "support"]
    report = Report(metrics=metrics, meta=meta, gates=judged, artifacts=artifacts)
    if old is not None:
        report.meta["compared_with"] = str(compare)
        report.comparison_html = to_html(compare_reports(old, report), old, report)
    report.write(out_dir)
    return report


def eval_command(
    settings: Settings,
    suites: Sequence[str] | None,
    out_dir: Path,
    compare: Path | None,
    quick: bool,
    *,
    cut: str | None = None,
    holdout_days: int | None = None,
    console: Console | None = None,
) -> int:
    """What ``tailor eval`` runs: 0 when every gate passes, 1 when one fails or a suite could not run."""
    console = console or Console()
    report = run_suites(
        settings, _check_suites(suites), out_dir, quick, compare=compare, cut=cut, holdout_days=holdout_days
    )
    if compare is not None:
        old = load_report(compare)
        print_header(old, report, console)
        print_table(compare_reports(old, report), console)
    table = Table(title="Gates")
    for col in ("metric", "rule", "value", "status"):
        table.add_column(col)
    for g in report.gates:
        style = {"pass": "green", "fail": "bold red"}.get(g.status, "dim")
        value = "—" if g.value is None else f"{g.value:.4f}"
        table.add_row(g.key, g.rule_text, value, g.status, style=style)
    console.print(table)
    for suite, error in report.meta["errors"].items():
        console.print(f"[red]suite {suite} failed:[/red] {error}")
    console.print(f"report: {out_dir / 'report.html'} and {out_dir / 'report.json'}")
    return 1 if report.failed or report.meta["errors"] else 0
