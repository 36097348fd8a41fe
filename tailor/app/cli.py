"""The `tailor` command line. Each command is small and composes with the others (and with jq)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

# Before anything that might read them: the model ships inside a package, and nothing may be fetched from a
# hub at run time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from tailor.app.ops import Ops
from tailor.app.render import (
    markup_safe,
    outcome_dict,
    print_explanation,
    print_outcome,
    print_recommendations,
    print_support,
    run_demo,
)
from tailor.core.errors import DataError, NotFoundError, TailorError
from tailor.core.logs import quiet_libraries
from tailor.core.models import CONTROL_CHARACTERS, TRIGGER_KINDS, JsonObject
from tailor.core.settings import Settings

if TYPE_CHECKING:
    from tailor.app.service import Tailor

# The service, the HTTP app and the eval runner are imported by the commands that use them, not here: at the
# top, every `tailor` call (`--help` too) loaded langgraph, FastAPI and every eval suite first (3.0 s and
# 227 MB against 0.4 s and 45 MB, measured with `time tailor --help`). They are the shell's own modules;
# `make lint` sees these imports all the same.

__all__ = ["app", "main"]

app = typer.Typer(
    help="Tailor: what should this customer see next, and why.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
keys_app = typer.Typer(help="API keys for the HTTP service.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
out = Console()
err = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}
T = TypeVar("T")

DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Overrides TAILOR_DATA_DIR.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False) -> None:
    _state["debug"] = debug
    quiet_libraries()


def _settings(data_dir: Path | None) -> Settings:
    try:
        return Settings(data_dir=data_dir) if data_dir else Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "TAILOR_" + str(first["loc"][0]).upper() if first["loc"] else "settings"
        raise TailorError(f"invalid setting {name}: {first['msg']}") from exc


def _run(fn: Callable[[], T]) -> T:
    """Run a command body: a Tailor error becomes one line and exit code 1 (a traceback with --debug)."""
    try:
        return fn()
    except TailorError as exc:
        if _state["debug"]:
            raise
        # A message may quote input (an id, a file's line): escaped, as all data printed here is.
        err.print(f"[bold red]error:[/] {markup_safe(exc.message)}", highlight=False)
        if exc.hint:
            err.print(f"  hint: {markup_safe(exc.hint)}", highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err.print("interrupted")
        raise typer.Exit(130) from None


@contextmanager
def _progress(enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """A progress callback ``(stage, done, total)`` drawn as rich bars (silent when not a terminal)."""
    bars = Progress(
        TextColumn("{task.description:<22}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not enabled or not err.is_terminal,
        transient=False,
    )
    tasks: dict[str, TaskID] = {}

    def update(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars:
        yield update


def _tailor(data_dir: Path | None) -> Tailor:
    from tailor.app.service import Tailor

    return Tailor.open(_settings(data_dir))


def _dump(obj: object) -> None:
    # Plain JSON on stdout, so that `tailor ... --json | jq` works. JSON escapes C0 controls itself; DEL,
    # C1 and the bidi controls it would print raw are written as \u escapes too, which jq reads back as
    # the same characters, so a terminal never gets them (``tailor.app.render.terminal_safe``).
    text = json.dumps(obj, default=str, ensure_ascii=False, indent=2)
    sys.stdout.write(CONTROL_CHARACTERS.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n")


@app.command("import")
def import_(
    source: Annotated[
        list[Path] | None,
        typer.Argument(
            help="A folder in the canonical format (items/customers/events .jsonl or .csv), UCI Online "
            "Retail .parquet files (Online Retail, Online Retail II, or both years together), or the Ta-Feng "
            "grocery file (ta_feng.csv.zip or its .csv)."
        ),
    ] = None,
    customers_limit: Annotated[
        int | None, typer.Option(help="UCI and Ta-Feng only: keep the N busiest customers.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-import even when the input is unchanged.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Validate and load data into the store (all or nothing). Default: the bundled demo store."""

    def body() -> None:
        with _tailor(data_dir) as t:
            report = t.import_source(source or [], customers_limit=customers_limit, force=force)
            verb = "unchanged" if report.skipped else "imported"
            out.print(f"{verb}: {report.items} items, {report.customers} customers, {report.events} events")

    _run(body)


@app.command()
def index(
    data_dir: DataDir = None, force: Annotated[bool, typer.Option(help="Re-embed everything.")] = False
) -> None:
    """Embed the catalog and histories into Qdrant and fit the ranker (only what changed)."""

    def body() -> None:
        with _tailor(data_dir) as t, _progress() as progress:
            report = t.index(progress=progress, force=force)
        out.print(" ".join(f"{k}={v}" for k, v in report.items()))

    _run(body)


@app.command()
def customers(
    limit: Annotated[int, typer.Option(help="How many.")] = 20,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """List customers (ids, country, consent)."""

    def body() -> None:
        with _tailor(data_dir) as t:
            rows = t.store.customers(limit=limit)
        if as_json:
            _dump([c.model_dump(mode="json") for c in rows])
            return
        for c in rows:
            consent = "email" if c.consent.marketing_email else "no-email"
            out.print(markup_safe(f"{c.id}\t{c.first_name}\t{c.country}\t{consent}"), highlight=False)

    _run(body)


@app.command()
def recommend(
    customer: str,
    k: Annotated[int, typer.Option("-k", help="How many items.")] = 10,
    data_dir: DataDir = None,
    as_json: AsJson = False,
) -> None:
    """Top recommendations for a customer, with the sources and evidence behind each."""

    def body() -> None:
        with _tailor(data_dir) as t:
            recs = t.recommend(customer, k=k)
        if as_json:
            _dump([r.model_dump(mode="json") for r in recs])
            return

        print_recommendations(out, recs)

    _run(body)


@app.command()
def email(
    customer: str,
    trigger: Annotated[str, typer.Option(help=f"One of {', '.join(TRIGGER_KINDS)}.")] = "campaign",
    data_dir: DataDir = None,
    as_json: AsJson = False,
    send: Annotated[
        bool,
        typer.Option(
            "--send",
            help="Record it as sent: the contact (frequency cap) and its products' impressions (30-day"
            " cap), as the HTTP service's jobs do, and tag its product links with the send's token, so a"
            " click comes back tied to it (the token is the answer's send_id). Without it, a preview that"
            " counts toward neither.",
        ),
    ] = False,
) -> None:
    """Write a personalized email (or a logged refusal) for a customer."""

    def body() -> None:
        with _tailor(data_dir) as t:
            secret = None
            if send:
                from tailor.app.ops import Ops

                # The ops database's send secret, as the service's jobs sign with (made if absent): a
                # click on this email names its send on every replica.
                ops = Ops(t.settings.ops_database)
                try:
                    secret = ops.secret("send")
                finally:
                    ops.close()
            outcome = t.email(customer, trigger=trigger, send=send, send_secret=secret)

        if as_json:
            _dump(outcome_dict(outcome))
        else:
            print_outcome(out, outcome)

    _run(body)


@app.command()
def why(customer: str, item: str, data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Explain why an item is recommended to a customer; every sentence cites its evidence."""

    def body() -> None:
        with _tailor(data_dir) as t:
            explanation = t.why(customer, item)
        if as_json:
            _dump(explanation.model_dump(mode="json"))
            return

        print_explanation(out, explanation)

    _run(body)


@app.command()
def support(customer: str, question: str, data_dir: DataDir = None, as_json: AsJson = False) -> None:
    """Suggestions with talking points for a support agent, grounded in the customer's history."""

    def body() -> None:
        with _tailor(data_dir) as t:
            answer = t.support(customer, question)
        if as_json:
            _dump(answer.model_dump(mode="json"))
            return

        print_support(out, answer)

    _run(body)


@app.command()
def forget(
    customer: str,
    data_dir: DataDir = None,
    refit: Annotated[
        bool, typer.Option(help="Refit the ranker after, so the customer's share of its aggregates goes too.")
    ] = False,
) -> None:
    """Delete everything about a customer, everywhere (store, vectors, caches). Prints what was deleted."""

    def body() -> None:
        with _tailor(data_dir) as t:
            # A customer already gone from the store (a forget that died before the ops database) still
            # has their ops traces forgotten: the retry finishes the job. Not found only if neither knew them.
            try:
                deleted = t.forget(customer)
                not_found: NotFoundError | None = None
            except NotFoundError as exc:
                deleted, not_found = {}, exc
            in_ops = 0
            if t.settings.ops_exists:
                # The HTTP service's jobs, feedback and audit: the id goes there too (a tombstone stays).

                ops = Ops(t.settings.ops_database)
                try:
                    counts = ops.forget(customer, only_if_found=not_found is not None)
                finally:
                    ops.close()
                in_ops = sum(counts.values())
                deleted.update({f"ops_{k}": v for k, v in counts.items()})
            if not_found is not None and not in_ops:
                raise not_found
            out_doc: JsonObject = {"deleted": deleted}
            if refit:
                out_doc["refit"] = t.refit()
            else:
                err.print(
                    "[dim]the ranker's item-level aggregates still hold their share until a refit"
                    " (`tailor refit`, or `tailor forget --refit`)[/]",
                    highlight=False,
                )
            _dump(out_doc)

    _run(body)


@app.command()
def refit(
    data_dir: DataDir = None,
    status_only: Annotated[bool, typer.Option("--status", help="Only show how stale the ranker is.")] = False,
) -> None:
    """Fit the ranker anew on the store as it is now (new events in, forgotten customers out)."""

    def body() -> None:
        with _tailor(data_dir) as t:
            if not status_only:
                with _progress() as progress:
                    progress("fitting ranker", 0, 1)
                    t.refit()
                    progress("fitting ranker", 1, 1)
            _dump(t.model_status())

    _run(body)


@app.command()
def demo(
    data_dir: DataDir = None,
    customers_limit: Annotated[
        int | None, typer.Option(help="Use only the N busiest customers (faster).")
    ] = None,
) -> None:
    """Load and index the demo store; show recommendations, an email and an explanation for 3 customers."""

    def body() -> None:

        settings = _settings(data_dir)
        if settings.now is None:
            # The demo store ends on 2011-12-09: make "now" the morning after, so recency means something.
            settings = settings.model_copy(update={"now": "2011-12-10T10:00:00+00:00"})

        from tailor.app.service import Tailor

        with Tailor.open(settings) as t, _progress() as progress:
            run_demo(t, out, progress=progress, customers_limit=customers_limit)

    _run(body)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    data_dir: DataDir = None,
) -> None:
    """Run the HTTP API (FastAPI under uvicorn); OpenAPI at /docs."""

    def body() -> None:

        from tailor.app.http import serve

        serve(_settings(data_dir), host=host, port=port)

    _run(body)


@app.command()
def worker(data_dir: DataDir = None) -> None:
    """Run queued jobs (campaign items, triggers) with no HTTP, until interrupted: any number of workers,
    beside `tailor serve` replicas, on one ops database (TAILOR_DATABASE_URL)."""

    def body() -> None:
        import signal
        import threading

        from tailor.app.worker import run_worker

        settings = _settings(data_dir)
        stop = threading.Event()
        # SIGTERM (an orchestrator's stop) ends it as cleanly as Ctrl-C: the items it holds go back at once.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        where = "PostgreSQL" if settings.database_url else str(settings.ops_path)
        run_worker(
            settings,
            stop=stop,
            ready=lambda name: err.print(f"worker {markup_safe(name)} taking jobs from {markup_safe(where)}"),
        )
        err.print("worker stopped")

    _run(body)


@app.command("copy-store")
def copy_store(
    to: Annotated[
        str, typer.Option("--to", help="postgresql://USER@HOST:PORT/DB, or an SQLite file's path.")
    ],
    data_dir: DataDir = None,
) -> None:
    """Copy this data dir's customer store (catalog, customers, events, contacts) into an empty database,
    all of it or nothing: the move to PostgreSQL. Then set TAILOR_DATABASE_URL to it."""

    def body() -> None:
        from tailor.data.store import Store

        settings = _settings(data_dir)
        if not settings.store_exists:
            raise DataError(
                f"no store to copy in {settings.data_dir}", hint="check --data-dir (TAILOR_DATA_DIR)"
            )
        if "://" not in to and not Path(to).expanduser().parent.is_dir():
            raise DataError(f"--to {to}: the folder {Path(to).expanduser().parent} does not exist")
        source = Store(settings.store_database)
        try:
            if not any(source.counts().values()):
                raise DataError(f"the store {source.where} is empty: nothing to copy")
            dest = Store(to)
            try:
                copied = source.copy_into(dest)
                where = dest.where
            finally:
                dest.close()
        finally:
            source.close()
        out.print(json.dumps(copied))
        err.print(f"copied into {markup_safe(where)}; the ops database (keys, jobs) is not copied")

    _run(body)


@keys_app.command("create")
def keys_create(
    role: Annotated[str, typer.Option(help="crm or support.")],
    name: Annotated[str, typer.Option(help="A label.")] = "",
    data_dir: DataDir = None,
) -> None:
    """Create an API key; it is printed once and stored only as a hash."""

    def body() -> None:

        from tailor.app.http import create_key

        out.print(create_key(_settings(data_dir), role, name))

    _run(body)


@app.command("eval")
def eval_(
    suite: Annotated[
        list[str] | None, typer.Option(help="ranking, generation, safety, policy or copy (repeatable).")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Where report.html and report.json go.")] = Path(
        "out/eval"
    ),
    compare: Annotated[Path | None, typer.Option(help="An earlier report.json to diff against.")] = None,
    quick: Annotated[bool, typer.Option(help="A small, fast slice (what CI runs).")] = False,
    cut: Annotated[
        str | None,
        typer.Option(
            help="Ranking: train before this date (YYYY-MM-DD, UTC), test from it on. Default: 2011-09-09 "
            "(the peers' reference cut) on UCI Online Retail, else the store's last quarter held out "
            "(7 to 28 days)."
        ),
    ] = None,
    holdout_days: Annotated[
        int | None,
        typer.Option(min=1, help="Ranking: hold out the store's last N days as the test period."),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Run the offline evaluation; exits non-zero when a gate in evals/gates.toml fails."""

    def body() -> int:

        from tailor.app.evaluate import eval_command

        return eval_command(
            _settings(data_dir), suite, out_dir, compare, quick, cut=cut, holdout_days=holdout_days
        )

    code = _run(body)
    raise typer.Exit(code)


def main() -> None:
    try:
        app()
    except BrokenPipeError:  # `tailor ... | head` is fine
        sys.stderr.close()


if __name__ == "__main__":
    main()
