"""The ops database: hashed keys, atomic idempotency, write-once job items, forgetting."""

from __future__ import annotations

import hashlib
import hmac
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import text

from tailor.app.ops import Decision, Ops, body_hash
from tailor.core.errors import ConflictError, DataError, NotFoundError
from tailor.core.models import Customer


@pytest.fixture
def ops(ops_target: str | Path) -> Iterator[Ops]:
    """The ops database on each engine (``tests/ops_backends.py``): the same tests, SQLite and PostgreSQL."""
    o = Ops(ops_target)
    yield o
    o.close()


def at_once(n: int, run: Callable[[int], None]) -> None:
    """``run(0)`` … ``run(n - 1)`` on ``n`` threads released together, as separate workers would be."""
    barrier = threading.Barrier(n)

    def start(k: int) -> None:
        barrier.wait()
        run(k)

    threads = [threading.Thread(target=start, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def _held(ops: Ops) -> bytes:
    """What the database holds, as bytes: for SQLite the file and its write-ahead log (what a copy of the
    disk would hold), for PostgreSQL every row of every ops table."""
    if ops.path is not None:
        wal = ops.path.with_name(ops.path.name + "-wal")
        return ops.path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    tables = ("api_keys", "idempotency", "jobs", "job_items", "audit", "feedback", "ops_meta", "forgotten")
    with ops.transaction() as db:
        return repr([db.execute(text(f"SELECT * FROM {t}")).all() for t in tables]).encode()


def test_keys_are_stored_hashed_and_verified(ops: Ops) -> None:
    token = ops.create_key("crm", "crm-prod")
    key = ops.verify_key(token)
    assert key is not None and key.role == "crm" and key.name == "crm-prod"
    secret = token.split("_", 2)[2]
    assert secret.encode() not in _held(ops)
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


def test_concurrent_replays_create_exactly_one_job(ops_target: str | Path) -> None:
    # Separate connections, as separate server workers would have: the claim must be atomic on both engines.
    path = ops_target
    Ops(path).close()
    results: list[str] = []
    created: list[bool] = []

    def claim() -> None:
        o = Ops(path)
        try:
            r = o.create_job("email", ["c1"], {"x": 1}, idempotency=("email", "key-1", body_hash({"x": 1})))
            results.append(r.job_id)
            created.append(r.created)
        finally:
            o.close()

    at_once(12, lambda _: claim())
    assert len(results) == 12 and len(set(results)) == 1
    assert created.count(True) == 1
    o = Ops(path)
    with o.transaction() as db:
        assert db.execute(text("SELECT COUNT(*) FROM jobs")).scalar_one() == 1
    o.close()


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
    assert ops.forget("a") == {"job_results": 1, "job_specs": 1, "feedback": 1, "audit": 1, "decisions": 0}
    item = ops.job_items(job.job_id)[0]
    assert item.result is None and item.reason == "forgotten"
    assert item.customer_id == ops.tombstone("a") and item.customer_id.startswith("forgotten:")
    assert [r["customer_id"] for r in ops.audit_trail()] == ["b"]


def test_forgetting_leaves_no_id_in_the_ops_file_and_refuses_the_id_later(ops: Ops) -> None:
    gone, kept = "zq-forget-me-4242", "zq-keep-me-5353"
    spec = {"customer_id": gone, "trigger": {"kind": "browse"}}
    email = ops.create_job("email", [gone], spec, idempotency=("email:k", f"key-{gone}", body_hash(spec)))
    ops.finish_item(email.job_id, gone, "done", {"email": {"customer_id": gone}}, audit=[{"who": gone}])
    campaign = ops.create_job(
        "campaign", [kept, gone], {"segment": {"customer_ids": [kept, gone]}}, callback_url="http://h/x"
    )
    ops.add_feedback(gone, "click", note=f"from {gone}")
    ops.audit("trigger.email", key_id="k", customer_id=gone, detail={"job_id": email.job_id})
    assert gone.encode() in _held(ops)
    ops.forget(gone)
    ops.audit("forget", key_id="k", customer_id=ops.tombstone(gone), detail={})
    ops.checkpoint()
    raw = _held(ops)
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


def test_forget_scrubs_a_callback_url_naming_the_id_from_the_job_spec_too(ops: Ops) -> None:
    # The API stores the whole request body as the spec, callback_url included.
    gone, kept = "zq-forget-me-4242", "zq-keep-me-5353"
    url = f"http://h/hook?customer={gone}"
    spec = {"segment": {"customer_ids": [kept, gone]}, "callback_url": url}
    job = ops.create_job("campaign", [kept, gone], spec, callback_url=url)
    assert gone.encode() in _held(ops)
    ops.forget(gone)
    ops.checkpoint()
    assert gone.encode() not in _held(ops), "not in the spec's callback_url"
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


# -- several workers on one database: claims with a lease ---------------------------------------------
def test_a_claimed_item_is_no_other_workers_until_its_lease_runs_out(ops_target: str | Path) -> None:
    one, two = Ops(ops_target, worker="one", lease_s=60), Ops(ops_target, worker="two", lease_s=60)
    try:
        job = one.create_job("campaign", ["a", "b"], {})
        now = 1_000_000.0
        first = one.next_item(now=now)
        assert first is not None and first.customer_id == "a"
        second = two.next_item(now=now)
        assert second is not None and second.customer_id == "b", "a is one's"
        mine = {(job.job_id, "b")}  # what "two" has under way, as its runner would say
        assert two.next_item(now=now + 1, running=mine) is None
        # "one" dies holding a: once its lease has run out, "two" takes it, and only "two" writes it.
        taken = two.next_item(now=now + 61, running=mine)
        assert taken is not None and taken.customer_id == "a"
        assert two.finish_item(job.job_id, "a", "done", {"by": "two"})
        assert not one.finish_item(job.job_id, "a", "done", {"by": "one"}), "the late worker loses"
        assert two.finish_item(job.job_id, "b", "done", {"by": "two"})
        assert [i.result for i in one.job_items(job.job_id)] == [{"by": "two"}, {"by": "two"}]
        assert one.get_job(job.job_id).status == "done"
    finally:
        one.close()
        two.close()


def test_scheduled_items_wait_and_come_in_the_order_they_come_due(ops_target: str | Path) -> None:
    """A campaign at each customer's hour: items scheduled for later are passed over for due ones, and when
    their hours come they go in that order, not in the audience's; a schedule is not an attempt."""
    ops = Ops(ops_target, worker="w", lease_s=60)
    try:
        job = ops.create_job("campaign", ["a", "b", "c", "d"], {}).job_id
        now = 1_000_000.0
        for cid, hours in (("a", 3), ("b", 1), ("c", 2)):
            item = ops.next_item(now=now)
            assert item is not None and item.customer_id == cid
            ops.schedule_item(job, cid, now + 3600 * hours, f"scheduled:+{hours}h")
        due = ops.next_item(now=now)
        assert due is not None and due.customer_id == "d"
        assert ops.next_item(now=now, running={(job, "d")}) is None, "the others wait for their hours"
        counts = ops.get_job(job).as_dict()
        assert counts["scheduled"] == 3 and counts["deferred"] == 0
        pending = [i for i in ops.job_items(job, final_only=False) if i.status == "pending"]
        assert len(pending) == 4 and all(i.attempts == 0 for i in pending)
        order = []
        while (item := ops.next_item(now=now + 4 * 3600, running={(job, "d")})) is not None:
            order.append(item.customer_id)
            ops.finish_item(job, item.customer_id, "done", {})
        assert order == ["b", "c", "a"]
    finally:
        ops.close()


def test_two_workers_never_hold_two_items_of_one_customer(ops_target: str | Path) -> None:
    one, two = Ops(ops_target, worker="one"), Ops(ops_target, worker="two")
    try:
        first = one.create_job("email", ["x"], {})
        one.create_job("campaign", ["x", "y"], {})
        now = 2_000_000.0
        held = one.next_item(now=now)
        assert held is not None and (held.job_id, held.customer_id) == (first.job_id, "x")
        other = two.next_item(now=now)
        assert other is not None and other.customer_id == "y", "x is being written to by one"
        one.finish_item(first.job_id, "x", "done", {})
        after = two.next_item(now=now + 1)
        assert after is not None and after.customer_id == "x"
    finally:
        one.close()
        two.close()


def test_many_workers_split_a_campaign_each_item_done_once(ops_target: str | Path) -> None:
    setup = Ops(ops_target)
    customers = [f"c{n:03d}" for n in range(120)]
    job = setup.create_job("campaign", customers, {})
    done: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        ops = Ops(ops_target, worker=f"w{n}")
        try:
            while (item := ops.next_item()) is not None:
                if ops.finish_item(item.job_id, item.customer_id, "done", {"by": n}):
                    with lock:
                        done.append(item.customer_id)
        finally:
            ops.close()

    at_once(6, work)
    assert sorted(done) == customers, "every item once, none twice"
    state = setup.get_job(job.job_id)
    assert state.status == "done" and state.counts == {"done": 120}
    if setup.dialect == "postgresql":
        # SQLite's writers take turns by its busy handler, which need not be fair: one may take them all.
        shared = {i.result["by"] for i in setup.job_items(job.job_id) if i.result}
        assert len(shared) > 1, "the work was shared"
    setup.close()


def test_a_restart_takes_back_what_a_dead_process_of_this_machine_held(
    ops_target: str | Path,
) -> None:
    ops = Ops(ops_target)
    try:
        job = ops.create_job("campaign", ["a", "b"], {})
        host = ops.worker.split(":", 1)[0]
        gone = f"{host}:{2**22 + 7}:123:x"  # a pid above the kernel's limit: no such process
        with ops.transaction() as db:
            db.execute(
                text("UPDATE job_items SET worker=:w, lease_until=:t WHERE customer_id='a'"),
                {"w": gone, "t": 1e12},
            )
            db.execute(
                text("UPDATE job_items SET worker=:w, lease_until=:t WHERE customer_id='b'"),
                {"w": "another-host/1:1:1:y", "t": 1e12},
            )
        assert ops.next_item() is None, "both are leased"
        assert ops.release_orphans() == 1, "only this machine's dead worker's item"
        item = ops.next_item()
        assert item is not None and (item.job_id, item.customer_id) == (job.job_id, "a")
    finally:
        ops.close()


def test_concurrent_claims_never_give_one_customer_to_two_workers(ops_target: str | Path) -> None:
    setup = Ops(ops_target)
    customers = [f"c{n:02d}" for n in range(30)]
    for _ in range(3):  # every customer in three jobs
        setup.create_job("campaign", customers, {})
    held: list[str] = []
    lock = threading.Lock()

    def claim(n: int) -> None:
        ops = Ops(ops_target, worker=f"w{n}")
        mine: set[tuple[str, str]] = set()  # claimed and kept, as a runner's items under way
        try:
            while (item := ops.next_item(running=mine)) is not None:
                mine.add((item.job_id, item.customer_id))
                with lock:
                    held.append(item.customer_id)
        finally:
            ops.close()

    at_once(6, claim)
    assert sorted(held) == customers, "each customer held once, by one worker, whatever the race"
    setup.close()


def test_a_stopped_worker_lets_go_and_a_late_one_cannot_defer_what_it_lost(ops_target: str | Path) -> None:
    one, two = Ops(ops_target, worker="one", lease_s=60), Ops(ops_target, worker="two", lease_s=60)
    try:
        job = one.create_job("campaign", ["a", "b"], {})
        now = 3_000_000.0
        a = one.next_item(now=now)
        b = one.next_item(now=now, running={(job.job_id, "a")})
        assert a is not None and b is not None and b.customer_id == "b"
        assert one.release_mine(keep={(job.job_id, "a")}) == 1, "b was not under way: it goes back"
        taken = two.next_item(now=now)
        assert taken is not None and taken.customer_id == "b"
        # a's lease runs out and two takes it; one, late, defers it: that must not free two's claim.
        again = two.next_item(now=now + 61, running={(job.job_id, "b")})
        assert again is not None and again.customer_id == "a"
        one.defer_item(job.job_id, "a", 30.0, "deferred:LLMError")
        assert one.get_job(job.job_id).counts.get("deferred", 0) == 0
        with one.transaction() as db:
            holder = db.execute(text("SELECT worker FROM job_items WHERE customer_id='a'")).scalar_one()
        assert holder == "two", "the late worker's defer let go of nothing"
    finally:
        one.close()
        two.close()


# The ops schema of the release before migrations (tailor/app/ops.py at a0e755f), as its files hold it.
_RELEASE_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, salt TEXT NOT NULL, hash TEXT NOT NULL, role TEXT NOT NULL, name TEXT NOT NULL,
    created REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT NOT NULL, scope TEXT NOT NULL, body_hash TEXT NOT NULL, job_id TEXT NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (scope, key)
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, spec TEXT NOT NULL,
    callback_url TEXT, callback_status TEXT, total INTEGER NOT NULL, created REAL NOT NULL,
    updated REAL NOT NULL, key_id TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs(status);
CREATE TABLE IF NOT EXISTS job_items (
    job_id TEXT NOT NULL, customer_id TEXT NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL,
    reason TEXT, result TEXT, attempts INTEGER NOT NULL DEFAULT 0, next_attempt REAL NOT NULL DEFAULT 0,
    updated REAL NOT NULL, audit TEXT, contact_at TEXT, PRIMARY KEY (job_id, customer_id)
);
CREATE INDEX IF NOT EXISTS job_items_pending ON job_items(status, next_attempt);
CREATE INDEX IF NOT EXISTS job_items_next ON job_items(job_id, status, seq);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, key_id TEXT, action TEXT NOT NULL,
    customer_id TEXT, detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_customer ON audit(customer_id);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, customer_id TEXT NOT NULL, item_id TEXT,
    job_id TEXT, signal TEXT NOT NULL, note TEXT
);
CREATE TABLE IF NOT EXISTS ops_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS forgotten (tombstone TEXT PRIMARY KEY, ts REAL NOT NULL);
"""


def test_an_ops_file_of_the_release_before_migrations_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "ops.db"
    db = sqlite3.connect(path)
    db.executescript(_RELEASE_SCHEMA)
    salt = "ab" * 8
    db.execute(
        "INSERT INTO api_keys VALUES ('k1', ?, ?, 'crm', 'old-crm', 1.0, 0)",
        (salt, hashlib.sha256((salt + "secret").encode()).hexdigest()),
    )
    db.execute("INSERT INTO ops_meta VALUES ('tombstone_salt', ?)", ("cd" * 32,))
    db.execute("INSERT INTO idempotency VALUES ('key-1', 'email', 'h1', 'job_old', 2.0)")
    db.execute(
        "INSERT INTO jobs VALUES ('job_old', 'email', 'running', '{\"customer_id\": \"c1\"}', NULL, NULL, 2,"
        " 2.0, 3.0, 'k1')"
    )
    db.execute(
        "INSERT INTO job_items VALUES ('job_old', 'c1', 0, 'done', NULL, '{\"email\": 1}', 1, 0, 3.0,"
        ' \'[{"node": "finalize"}]\', NULL)'
    )
    db.execute(
        "INSERT INTO job_items VALUES ('job_old', 'c2', 1, 'pending', NULL, NULL, 0, 0, 3.0, NULL, NULL)"
    )
    db.execute(
        "INSERT INTO audit (ts, key_id, action, customer_id, detail) VALUES (4.0, 'k1', 'x', 'c1', '{}')"
    )
    db.execute("INSERT INTO forgotten VALUES ('forgotten:abc', 5.0)")
    db.commit()
    db.close()
    ops = Ops(path)
    try:
        key = ops.verify_key("tk_k1_secret")
        assert key is not None and key.name == "old-crm"
        kept = hmac.new(bytes.fromhex("cd" * 32), b"c1", hashlib.sha256).hexdigest()[:32]
        assert ops.tombstone("c1") == "forgotten:" + kept, "the old salt is kept"
        job = ops.get_job("job_old")
        assert (job.status, job.total, job.counts) == ("running", 2, {"done": 1, "pending": 1})
        assert ops.item_audits("job_old")[0]["audit"] == [{"node": "finalize"}]
        replay = ops.create_job("email", ["c1"], {}, idempotency=("email", "key-1", "h1"))
        assert (replay.job_id, replay.created) == ("job_old", False)
        assert ops.audit_trail("c1")[0]["action"] == "x"
        # Its pending item is claimed and finished as any other, and the job completes.
        item = ops.next_item()
        assert item is not None and item.customer_id == "c2"
        assert ops.finish_item("job_old", "c2", "done", {})
        assert ops.get_job("job_old").status == "done"
    finally:
        ops.close()


def test_a_job_awaiting_approval_is_never_claimed_until_approved(ops_target: str | Path) -> None:
    """Nothing of a campaign that needs approval is made (or sent) before it is approved, by any worker."""
    one, two = Ops(ops_target, worker="one"), Ops(ops_target, worker="two")
    try:
        job = one.create_job("campaign", ["a", "b"], {}, approval=True, key_id="k1")
        assert one.get_job(job.job_id).status == "awaiting_approval"
        assert one.next_item(now=1e12) is None and two.next_item(now=1e12) is None
        # Pending items of a waiting job are not "due": a runner does not spin on them.
        assert one.next_due_in() is None
        assert one.job_customers(job.job_id) == ["a", "b"]
        assert one.approve_job(job.job_id)
        assert not two.approve_job(job.job_id), "approved once; a second approval changes nothing"
        assert one.get_job(job.job_id).status == "queued"
        claimed = two.next_item()
        assert claimed is not None and claimed.customer_id == "a"
        # One who never needed approval is not "approved" either.
        plain = one.create_job("campaign", ["c"], {})
        assert not one.approve_job(plain.job_id)
        assert [j.id for j in one.jobs_of("k1")] == [job.job_id]
    finally:
        one.close()
        two.close()


def test_cancel_stops_every_item_not_finished_even_one_under_way(ops_target: str | Path) -> None:
    one, two = Ops(ops_target, worker="one", lease_s=60), Ops(ops_target, worker="two", lease_s=60)
    try:
        job = one.create_job("campaign", ["a", "b", "c"], {})
        first = one.next_item()
        assert first is not None and one.finish_item(job.job_id, "a", "done", {"email": 1})
        held = one.next_item()
        assert held is not None and held.customer_id == "b"
        assert two.cancel_job(job.job_id) == 2, "b (under way on worker one) and c"
        assert two.next_item(now=1e12) is None, "nothing of a cancelled job is claimed"
        # The worker that was writing b finds it cancelled: its result is neither saved nor sent.
        assert not one.finish_item(job.job_id, "b", "done", {"email": 2}, contact_at="2011-12-10T10:00:00")
        assert one.pending_contacts() == []
        state = one.get_job(job.job_id)
        assert (state.status, state.counts) == ("cancelled", {"done": 1, "cancelled": 2})
        assert state.as_dict()["cancelled"] == 2
        assert one.cancel_job(job.job_id) is None, "an ended job has nothing left to cancel"
        # A waiting job is cancelled whole, and cannot be approved after.
        waiting = one.create_job("campaign", ["d"], {}, approval=True)
        assert one.cancel_job(waiting.job_id) == 1
        assert not one.approve_job(waiting.job_id)
        assert one.next_due_in() is None
    finally:
        one.close()
        two.close()


def test_a_waiting_job_whose_customers_were_all_forgotten_is_done_once_approved(ops: Ops) -> None:
    job = ops.create_job("campaign", ["a"], {}, approval=True)
    ops.forget("a")
    assert ops.get_job(job.job_id).status == "awaiting_approval"
    assert ops.approve_job(job.job_id)
    assert ops.get_job(job.job_id).status == "done", "nothing is left to do: it ends, and calls back"


def test_key_totals_count_one_keys_jobs_only(ops: Ops) -> None:
    mine = ops.create_job("campaign", ["a", "b"], {}, key_id="k1")
    ops.create_job("email", ["c"], {}, key_id="k1")
    ops.create_job("campaign", ["d"], {}, key_id="k2")
    ops.finish_item(mine.job_id, "a", "done", {"email": 1})
    ops.finish_item(mine.job_id, "b", "refused", {"refusal": 1}, "no_marketing_consent")
    totals = ops.key_totals("k1")
    assert totals == {
        "jobs": {"campaign": 1, "email": 1},
        "items": {"done": 1, "refused": 1, "pending": 1},
        "refusals": {"no_marketing_consent": 1},
    }
    assert ops.key_totals("nobody") == {"jobs": {}, "items": {}, "refusals": {}}


def test_a_secret_is_one_per_purpose_and_shared_by_every_process_on_the_database(
    ops_target: str | Path,
) -> None:
    one, two = Ops(ops_target), Ops(ops_target)
    try:
        assert one.secret("why-link") == two.secret("why-link")
        # Never a tombstone's HMAC: the secrets are made from a NUL-prefixed text, and no id can hold a NUL.
        for cid in ("tailor:why-link", "secret:why-link", "why-link"):
            assert one.tombstone(cid) != "forgotten:" + one.secret("why-link").hex()[:32]
        with pytest.raises(ValidationError, match="control character"):
            Customer(id="\x00secret:why-link", first_name="A", email="a@example.test", country="UK")
        assert one.secret("why-link") != one.secret("console-session")
        assert len(one.secret("why-link")) == 32
    finally:
        one.close()
        two.close()


def test_the_decision_log_keeps_one_row_per_kept_result_and_forgets_with_the_customer(ops: Ops) -> None:
    job = ops.create_job("campaign", ["a", "b"], {})
    decision = Decision(
        decided_at="2011-12-10T10:00:00+00:00",
        action="recommend",
        propensity=0.9,
        policy="planner-1;holdout=0.1@abc",
        model="ranker@x",
        detail={"group": "targeted", "options": {"recommend": 0.7, "win_back": 0.0}},
    )
    assert ops.finish_item(job.job_id, "a", "done", {"email": 1}, decision=decision)
    # A late second writer's result is refused, and so is its decision: one row per item.
    assert not ops.finish_item(job.job_id, "a", "done", {"email": 2}, decision=decision)
    held = Decision("2011-12-10T10:00:00+00:00", "nothing", 0.1, "planner-1;holdout=0.1@abc", "ranker@x", {})
    assert ops.finish_item(job.job_id, "b", "refused", {"refusal": 1}, "holdout", decision=held)
    log = ops.decisions(job.job_id)
    assert [(d["customer_id"], d["action"], d["propensity"]) for d in log] == [
        ("a", "recommend", 0.9),
        ("b", "nothing", 0.1),
    ]
    assert log[0]["detail"]["options"] == {"recommend": 0.7, "win_back": 0.0}
    assert ops.forget("a")["decisions"] == 1
    assert [d["customer_id"] for d in ops.decisions(job.job_id)] == ["b"]
