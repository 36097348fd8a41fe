"""The ops database: hashed keys, atomic idempotency, write-once job items, forgetting."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from tailor.app.ops import Ops, body_hash
from tailor.core.errors import ConflictError, DataError, NotFoundError


@pytest.fixture
def ops(tmp_path: Path) -> Ops:
    o = Ops(tmp_path / "ops.db")
    yield o  # type: ignore[misc]
    o.close()


def test_keys_are_stored_hashed_and_verified(ops: Ops, tmp_path: Path) -> None:
    token = ops.create_key("crm", "crm-prod")
    key = ops.verify_key(token)
    assert key is not None and key.role == "crm" and key.name == "crm-prod"
    secret = token.split("_", 2)[2]
    raw = (tmp_path / "ops.db").read_bytes() + (tmp_path / "ops.db-wal").read_bytes()
    assert secret.encode() not in raw
    assert ops.verify_key(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert ops.verify_key("not-a-key") is None
    ops.revoke_key(key.id)
    assert ops.verify_key(token) is None


def test_unknown_role_is_refused_by_name(ops: Ops) -> None:
    with pytest.raises(DataError, match="unknown role 'admin'"):
        ops.create_key("admin")


def test_body_hash_ignores_key_order() -> None:
    assert body_hash({"a": 1, "b": [1, 2]}) == body_hash({"b": [1, 2], "a": 1})
    assert body_hash({"a": 1}) != body_hash({"a": 2})


def test_concurrent_replays_create_exactly_one_job(tmp_path: Path) -> None:
    # Separate connections, as separate server workers would have: the claim must be atomic in SQLite.
    path = tmp_path / "ops.db"
    Ops(path).close()
    results: list[str] = []
    created: list[bool] = []
    barrier = threading.Barrier(12)

    def claim() -> None:
        o = Ops(path)
        try:
            barrier.wait()
            r = o.create_job("email", ["c1"], {"x": 1}, idempotency=("email", "key-1", body_hash({"x": 1})))
            results.append(r.job_id)
            created.append(r.created)
        finally:
            o.close()

    threads = [threading.Thread(target=claim) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 12 and len(set(results)) == 1
    assert created.count(True) == 1
    db = sqlite3.connect(path)
    assert db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1


def test_same_key_other_body_conflicts(ops: Ops) -> None:
    ops.create_job("email", ["c1"], {"x": 1}, idempotency=("email", "k", body_hash({"x": 1})))
    with pytest.raises(ConflictError, match="'k'"):
        ops.create_job("email", ["c1"], {"x": 2}, idempotency=("email", "k", body_hash({"x": 2})))
    # Another scope (another endpoint) may reuse the key.
    assert ops.create_job("campaign", ["c1"], {"x": 2}, idempotency=("campaign", "k", "h")).created


def test_items_are_written_once_and_the_job_completes(ops: Ops) -> None:
    job = ops.create_job("campaign", ["a", "b", "a", "c"], {"trigger": {"kind": "campaign"}})
    assert ops.get_job(job.job_id).total == 3  # duplicates in the segment are one item
    first = ops.next_item()
    assert first is not None and first.customer_id == "a"
    assert ops.finish_item(job.job_id, "a", "done", {"email": 1})
    assert not ops.finish_item(job.job_id, "a", "failed", None)  # a second writer loses
    ops.finish_item(job.job_id, "b", "refused", {"refusal": 1}, "no_marketing_consent")
    ops.defer_item(job.job_id, "c", 60.0, "deferred:LLMError")
    state = ops.get_job(job.job_id)
    assert (state.status, state.counts["pending"], state.counts["deferred"]) == ("running", 1, 1)
    assert state.refusals == {"no_marketing_consent": 1}
    assert ops.next_item() is None  # c is not due yet
    assert ops.next_item(now=1e12) is not None
    ops.finish_item(job.job_id, "c", "done", {"email": 2})
    assert ops.get_job(job.job_id).status == "done"
    assert [i.customer_id for i in ops.job_items(job.job_id)] == ["a", "b", "c"]
    assert ops.job_items(job.job_id)[0].result == {"email": 1}


def test_unknown_job_is_not_found(ops: Ops) -> None:
    with pytest.raises(NotFoundError, match="job 'job_x'"):
        ops.get_job("job_x")


def test_forget_removes_results_feedback_and_audit(ops: Ops) -> None:
    job = ops.create_job("campaign", ["a", "b"], {})
    ops.finish_item(job.job_id, "a", "done", {"email": {"subject": "hi Ann"}})
    ops.add_feedback("a", "click", item_id="I1")
    ops.audit("consent", key_id="k", customer_id="a", detail={"x": 1})
    ops.audit("consent", key_id="k", customer_id="b")
    assert ops.forget("a") == {"job_results": 1, "job_specs": 1, "feedback": 1, "audit": 1}
    item = ops.job_items(job.job_id)[0]
    assert item.result is None and item.reason == "forgotten"
    assert item.customer_id == ops.tombstone("a") and item.customer_id.startswith("forgotten:")
    assert [r["customer_id"] for r in ops.audit_trail()] == ["b"]


def _raw(path: Path) -> bytes:
    """The database file and its write-ahead log, as bytes: what a copy of the disk would hold."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def test_forgetting_leaves_no_id_in_the_ops_file_and_refuses_the_id_later(ops: Ops, tmp_path: Path) -> None:
    gone, kept = "zq-forget-me-4242", "zq-keep-me-5353"
    spec = {"customer_id": gone, "trigger": {"kind": "browse"}}
    email = ops.create_job("email", [gone], spec, idempotency=("email:k", f"key-{gone}", body_hash(spec)))
    ops.finish_item(email.job_id, gone, "done", {"email": {"customer_id": gone}}, audit=[{"who": gone}])
    campaign = ops.create_job(
        "campaign", [kept, gone], {"segment": {"customer_ids": [kept, gone]}}, callback_url="http://h/x"
    )
    ops.add_feedback(gone, "click", note=f"from {gone}")
    ops.audit("trigger.email", key_id="k", customer_id=gone, detail={"job_id": email.job_id})
    assert gone.encode() in _raw(tmp_path / "ops.db")
    ops.forget(gone)
    ops.audit("forget", key_id="k", customer_id=ops.tombstone(gone), detail={})
    ops.checkpoint()
    raw = _raw(tmp_path / "ops.db")
    assert gone.encode() not in raw, "no copy of the id: not in a row, a free page or the log"
    assert kept.encode() in raw
    assert ops.get_job(campaign.job_id).spec == {"segment": {"customer_ids": [kept, ops.tombstone(gone)]}}
    assert ops.get_job(email.job_id).spec["customer_id"] == ops.tombstone(gone)
    [final] = ops.job_items(campaign.job_id)
    assert (final.customer_id, final.status, final.reason) == (ops.tombstone(gone), "failed", "forgotten")
    assert [r["customer_id"] for r in ops.audit_trail()] == [ops.tombstone(gone)]
    assert ops.forgotten([kept, gone, "other"]) == [gone]
    # The old request replayed is not the old job any more: the key was the request's, and it is gone.
    again = ops.create_job("email", [gone], spec, idempotency=("email:k", f"key-{gone}", body_hash(spec)))
    assert again.created


def test_tombstones_are_stable_per_database_and_opaque(tmp_path: Path) -> None:
    one, two = Ops(tmp_path / "a.db"), Ops(tmp_path / "b.db")
    try:
        assert one.tombstone("c1") == one.tombstone("c1") != one.tombstone("c2")
        assert one.tombstone("c1") != two.tombstone("c1"), "salted per database"
    finally:
        one.close()
        two.close()
    reopened = Ops(tmp_path / "a.db")
    assert reopened.tombstone("c1") != two.tombstone("c1")
    reopened.close()


def test_the_audit_trace_and_the_contact_to_record_are_saved_with_the_result(ops: Ops) -> None:
    job = ops.create_job("campaign", ["a", "b"], {})
    trace = [{"node": "load_context", "ms": 1.5}, {"node": "finalize", "outcome": "sent"}]
    assert ops.finish_item(
        job.job_id, "a", "done", {"email": 1}, audit=trace, contact_at="2011-12-10T10:00:00+00:00"
    )
    assert ops.item_audits(job.job_id) == [
        {"customer_id": "a", "status": "done", "reason": None, "audit": trace}
    ]
    assert ops.pending_contacts() == [(job.job_id, "a", "2011-12-10T10:00:00+00:00")]
    ops.contact_recorded(job.job_id, "a")
    assert ops.pending_contacts() == []
    ops.finish_item(job.job_id, "b", "refused", {"refusal": 1}, "frequency_cap", audit=trace)
    assert [i["audit"] for i in ops.item_audits(job.job_id)] == [trace, trace]
    ops.forget("a")
    assert [i["audit"] for i in ops.item_audits(job.job_id)] == [None, trace]


def test_an_older_ops_database_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "ops.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE job_items (job_id TEXT NOT NULL, customer_id TEXT NOT NULL, seq INTEGER NOT NULL,"
        " status TEXT NOT NULL, reason TEXT, result TEXT, attempts INTEGER NOT NULL DEFAULT 0,"
        " next_attempt REAL NOT NULL DEFAULT 0, updated REAL NOT NULL, PRIMARY KEY (job_id, customer_id))"
    )
    db.commit()
    db.close()
    ops = Ops(path)
    try:
        job = ops.create_job("email", ["a"], {})
        ops.finish_item(job.job_id, "a", "done", {}, audit=[{"node": "finalize"}], contact_at="x")
        assert ops.item_audits(job.job_id)[0]["audit"] == [{"node": "finalize"}]
    finally:
        ops.close()
    reopened = Ops(path)
    assert reopened.pending_contacts() == [(job.job_id, "a", "x")]
    reopened.close()


@pytest.mark.parametrize(
    ("url", "dropped"),
    [
        ("http://127.0.0.1:8080/hooks/done", False),  # "1" is in the host, not a part naming them
        ("http://h/hooks/c10/done?batch=11", False),
        ("http://h/hooks/1/done", True),
        ("http://h/hooks/%31", True),  # a quoted segment is the id once unquoted
        ("http://h/hook?customer=1&x=y", True),
    ],
)
def test_forget_drops_only_a_callback_url_whose_parts_name_the_id(ops: Ops, url: str, dropped: bool) -> None:
    job = ops.create_job("campaign", ["1", "2"], {"segment": {"customer_ids": ["1", "2"]}}, callback_url=url)
    ops.forget("1")
    state = ops.get_job(job.job_id)
    if dropped:
        assert (state.callback_url, state.callback_status) == (None, "dropped:forgotten")
    else:
        assert (state.callback_url, state.callback_status) == (url, None)


def test_forget_scrubs_a_callback_url_naming_the_id_from_the_job_spec_too(ops: Ops, tmp_path: Path) -> None:
    # The API stores the whole request body as the spec, callback_url included.
    gone, kept = "zq-forget-me-4242", "zq-keep-me-5353"
    url = f"http://h/hook?customer={gone}"
    spec = {"segment": {"customer_ids": [kept, gone]}, "callback_url": url}
    job = ops.create_job("campaign", [kept, gone], spec, callback_url=url)
    assert gone.encode() in _raw(tmp_path / "ops.db")
    ops.forget(gone)
    ops.checkpoint()
    assert gone.encode() not in _raw(tmp_path / "ops.db"), "not in the spec's callback_url"
    state = ops.get_job(job.job_id)
    assert state.callback_url is None and state.spec["callback_url"] is None
    # A callback URL that does not name them stays in both.
    other = ops.create_job("campaign", [kept, "b"], {"callback_url": "http://h/x"}, callback_url="http://h/x")
    ops.forget("b")
    assert (
        ops.get_job(other.job_id).spec["callback_url"]
        == ops.get_job(other.job_id).callback_url
        == "http://h/x"
    )
