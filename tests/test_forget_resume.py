"""A forget that died between the two databases (the customer row gone, their jobs, feedback and audit
still named in the ops database) is finished by a retry, over HTTP and from the command line; an id that
neither database knows is still not found, and is not made 'forgotten'."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tailor.app import cli
from tailor.app.http import create_app, create_key
from tailor.app.ops import Ops
from tailor.core.settings import Settings
from tests.server import ScriptedTailor, seed_store

GONE = "101"


def _half_forgotten(settings: Settings) -> str:
    """A job, feedback and an audit row naming ``GONE`` in the ops database, and ``GONE`` already deleted
    from the store: what a forget that died after the store and before the ops database leaves."""
    ops = Ops(settings.ops_path)
    try:
        job = ops.create_job("campaign", ["100", GONE], {"segment": {"customer_ids": ["100", GONE]}})
        ops.add_feedback(GONE, "click")
        ops.audit("consent", key_id="k", customer_id=GONE, detail={})
    finally:
        ops.close()
    facade = ScriptedTailor(settings)
    try:
        facade.store.delete_customer(GONE)
    finally:
        facade.close()
    return job.job_id


def _raw(settings: Settings) -> bytes:
    wal = settings.ops_path.with_name(settings.ops_path.name + "-wal")
    return settings.ops_path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def _check_finished(settings: Settings, job_id: str) -> None:
    ops = Ops(settings.ops_path)
    try:
        ops.checkpoint()
        assert ops.forgotten([GONE, "never-was"]) == [GONE], "the retry left the tombstone; no other"
        items = ops.job_items(job_id, final_only=False)
        assert [i.customer_id for i in items] == ["100", ops.tombstone(GONE)]
        assert ops.get_job(job_id).spec == {"segment": {"customer_ids": ["100", ops.tombstone(GONE)]}}
    finally:
        ops.close()
    assert f'"{GONE}"'.encode() not in _raw(settings)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    s = Settings(data_dir=tmp_path / "data", now="2011-12-10T10:00:00+00:00")
    seed_store(s.data_dir)
    return s


@pytest.fixture
def http(settings: Settings) -> Iterator[tuple[TestClient, dict[str, str]]]:
    crm = {"Authorization": f"Bearer {create_key(settings, 'crm')}"}
    facade = ScriptedTailor(settings)
    try:
        with TestClient(create_app(settings, facade, run_jobs=False)) as client:
            yield client, crm
    finally:
        facade.close()


def test_a_retried_delete_finishes_a_forget_that_died_half_way(
    settings: Settings, http: tuple[TestClient, dict[str, str]]
) -> None:
    client, crm = http
    job_id = _half_forgotten(settings)
    retry = client.delete(f"/v1/customers/{GONE}", headers=crm)
    assert retry.status_code == 200, retry.text
    deleted = retry.json()["deleted"]
    assert (deleted["job_results"], deleted["feedback"], deleted["audit"]) == (1, 1, 1)
    _check_finished(settings, job_id)
    # Done now: neither database names them, so a third try is not found (and changes nothing).
    assert client.delete(f"/v1/customers/{GONE}", headers=crm).status_code == 404
    assert client.delete("/v1/customers/never-was", headers=crm).status_code == 404
    later = client.post(
        "/v1/triggers/email",
        headers={**crm, "Idempotency-Key": "x"},
        json={"customer_id": "never-was", "trigger": {"kind": "browse"}},
    )
    assert later.status_code == 404, "an id never seen is unknown, not forgotten"


def test_the_command_line_forget_finishes_it_too(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    job_id = _half_forgotten(settings)

    def scripted(data_dir: Path | None) -> Any:
        return contextlib.closing(ScriptedTailor(settings))

    monkeypatch.setattr(cli, "_tailor", scripted)
    runner = CliRunner()
    done = runner.invoke(cli.app, ["forget", GONE, "--data-dir", str(settings.data_dir)])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["deleted"]["ops_job_results"] == 1
    _check_finished(settings, job_id)
    again = runner.invoke(cli.app, ["forget", "never-was", "--data-dir", str(settings.data_dir)])
    assert again.exit_code == 1 and "not found" in again.output.lower()
