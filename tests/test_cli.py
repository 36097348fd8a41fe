"""The CLI as a person uses it: a real subprocess, real files, exit codes and one-line errors."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tailor.app.ops import Ops
from tailor.core.models import Event, EventKind
from tailor.core.sends import send_of_link, token_of
from tailor.core.settings import Settings
from tailor.data.store import Store
from tests.postgres import PostgresCluster
from tests.server import seed_store
from tests.waiting import wait_until


def tailor(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "tailor.app.cli", *args, "--data-dir", str(data_dir)]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


def test_import_then_list_customers(slice_dir: Path, tmp_path: Path) -> None:
    done = tailor("import", str(slice_dir), data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "imported:" in done.stdout and "40 customers" in done.stdout
    again = tailor("import", str(slice_dir), data_dir=tmp_path)
    assert "unchanged:" in again.stdout
    listed = tailor("customers", "--limit", "3", "--json", data_dir=tmp_path)
    rows = json.loads(listed.stdout)
    assert len(rows) == 3 and all(r["synthetic"] for r in rows)


def test_import_both_years_of_online_retail(tmp_path: Path) -> None:
    raw = Path(__file__).resolve().parents[1] / "data" / "raw"
    files = [str(raw / "online_retail_ii_2009_2010.parquet"), str(raw / "online_retail.parquet")]
    done = tailor("import", *files, "--customers-limit", "20", data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "imported:" in done.stdout and "20 customers" in done.stdout
    assert "unchanged:" in tailor("import", *files, "--customers-limit", "20", data_dir=tmp_path).stdout
    events = (tmp_path / "canonical" / "events.jsonl").read_text()
    assert '"id":"uci2-' in events and '"id":"uci-' in events
    mixed = tailor("import", files[1], str(tmp_path / "canonical"), data_dir=tmp_path / "other")
    assert mixed.returncode == 1 and "must all be UCI .parquet files" in mixed.stderr


def test_bad_input_is_one_line_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "items.jsonl").write_text('{"id": "A", "title": "Bag"}\n')
    done = tailor("import", str(tmp_path / "in"), data_dir=tmp_path / "data")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "items.jsonl:1" in done.stderr and "nothing was imported" in done.stderr
    assert "hint:" in done.stderr


def test_unknown_customer_names_the_id(slice_dir: Path, tmp_path: Path) -> None:
    tailor("import", str(slice_dir), data_dir=tmp_path)
    done = tailor("why", "no-such-customer", "85123A", data_dir=tmp_path)
    assert done.returncode == 1
    assert "customer 'no-such-customer' not found" in done.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tailor.app.cli",
            "--debug",
            "import",
            str(tmp_path / "missing"),
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0 and "Traceback" in done.stderr


@pytest.mark.slow
def test_forget_then_refit_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAILOR_NOW", "2011-12-10T10:00:00+00:00")
    ids = seed_store(tmp_path, n_customers=8)
    assert tailor("index", data_dir=tmp_path).returncode == 0
    done = tailor("forget", ids[3], data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["deleted"]["customers"] == 1
    assert "until a refit" in done.stderr
    status = json.loads(tailor("refit", "--status", data_dir=tmp_path).stdout)
    assert status["forgotten_since_fit"] == 1 and status["stale"] and status["customers"] == 8
    status = json.loads(tailor("refit", data_dir=tmp_path).stdout)
    assert status["forgotten_since_fit"] == 0 and not status["stale"] and status["customers"] == 7
    done = tailor("forget", ids[4], "--refit", data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["refit"]["customers"] == 6 and "until a refit" not in done.stderr


@pytest.mark.slow
def test_email_send_records_the_contact_and_the_impressions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tailor email --send`` takes the job runner's send path: the contact and every product shown."""
    from tailor.data.store import Store

    monkeypatch.setenv("TAILOR_NOW", "2011-12-10T10:00:00+00:00")
    seed_store(tmp_path, n_customers=3)
    assert tailor("index", data_dir=tmp_path).returncode == 0
    sent = tailor("email", "100", "--send", "--json", data_dir=tmp_path)
    assert sent.returncode == 0, sent.stderr
    answer = json.loads(sent.stdout)
    products = [p["item_id"] for p in answer["email"]["products"]]
    # Its links carry the send's token, as a job's do: the text body's links are the products' own.
    token = answer["send_id"]
    assert re.fullmatch(r"s_[0-9a-f]{24}", token), token
    links = [p["url"] for p in answer["email"]["products"]]
    assert links and all(send_of_link(u) == token for u in links)
    assert all(u in answer["email"]["body_text"] for u in links)
    ops = Ops(tmp_path / "ops.db")
    store = Store(tmp_path / "tailor.db")
    try:
        assert len(store.contacts("100")) == 1 and products
        assert sorted(i for i, _ in store.impressions("100")) == sorted(products)
        # The token is the recorded send's, under the ops database's secret: a click naming it is hers.
        [(send_id, _)] = store.sends_of(["100"])["100"]
        assert send_id.startswith("direct:") and token_of(ops.secret("send"), send_id) == token
        click = Event(
            customer_id="100",
            kind=EventKind.EMAIL_CLICK,
            timestamp=datetime(2011, 12, 10, 11, tzinfo=UTC),
            send_id=token,
        )
        store.add_events([click])
        assert store.email_engagement({token: "100"}) == {token: {EventKind.EMAIL_CLICK}}
    finally:
        store.close()
        ops.close()
    # A preview counts toward neither cap, and is itself held back by the send's frequency cap.
    preview = json.loads(tailor("email", "100", "--json", data_dir=tmp_path).stdout)
    assert preview["refusal"]["reason"] == "frequency_cap"


@pytest.mark.slow
def test_a_worker_runs_queued_jobs_and_stops_cleanly_on_sigterm(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TAILOR_NOW", "2011-12-10T10:00:00+00:00")
    ids = seed_store(tmp_path, n_customers=6)
    assert tailor("index", data_dir=tmp_path).returncode == 0
    settings = Settings(data_dir=tmp_path)
    ops = Ops(settings.ops_database)
    try:
        job = ops.create_job("campaign", ids, {"trigger": {"kind": "campaign", "campaign_id": "cli"}}).job_id
    finally:
        ops.close()
    command = [sys.executable, "-m", "tailor.app.cli", "worker", "--data-dir", str(tmp_path)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as worker:
        ops = Ops(settings.ops_database)
        try:
            wait_until(lambda: ops.get_job(job).status == "done", 240, every=0.5)
            counts = ops.get_job(job).counts
        finally:
            ops.close()
            worker.send_signal(signal.SIGTERM)
            _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 0, stderr
    assert "taking jobs from" in stderr and "worker stopped" in stderr
    # Five emails; the second customer opted out of marketing.
    assert counts == {"done": 5, "refused": 1}, counts


def test_copy_store_moves_the_store_to_postgresql_once(tmp_path: Path, pg_cluster: PostgresCluster) -> None:
    seed_store(tmp_path, n_customers=5)
    url = pg_cluster.database(f"cli_copy_{tmp_path.name[-12:].lower().replace('-', '_')}")
    done = tailor("copy-store", "--to", url, data_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["customers"] == 5 and "copied into" in done.stderr
    moved, kept = Store(url), Store(tmp_path / "tailor.db")
    try:
        assert moved.counts() == kept.counts() and moved.customer_ids() == kept.customer_ids()
    finally:
        moved.close()
        kept.close()
    again = tailor("copy-store", "--to", url, data_dir=tmp_path)
    assert again.returncode == 1 and "is not empty" in again.stderr and "Traceback" not in again.stderr
    # A mistyped data dir has no store to move: said so, and no empty store is made there.
    nowhere = tailor("copy-store", "--to", str(tmp_path / "x.db"), data_dir=tmp_path / "typo")
    assert nowhere.returncode == 1 and "no store to copy" in nowhere.stderr
    assert not (tmp_path / "typo" / "tailor.db").exists() and not (tmp_path / "x.db").exists()
    lost = tailor("copy-store", "--to", str(tmp_path / "no" / "such" / "x.db"), data_dir=tmp_path)
    assert lost.returncode == 1 and "does not exist" in lost.stderr and not (tmp_path / "no").exists()
