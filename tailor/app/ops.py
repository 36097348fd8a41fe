"""Operational state of the HTTP service, in its own SQLite file (``settings.ops_path``).

Kept apart from the customer store so that wiping or re-importing customer data never loses a job,
an idempotency key or an API key. Every multi-row change is one transaction: a crash (even SIGKILL)
leaves either the old state or the new one, which is what makes jobs resumable without duplicates.

One module, over 600 lines, on purpose: keys, idempotency, jobs, contacts to record and the audit trail
share one connection and its transactions (forgetting a customer scrubs all of them in one), and a split by
table would spread those transactions over modules.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from tailor.core.errors import ConflictError, DataError, NotFoundError
from tailor.core.models import JsonObject
from tailor.data.sqlite import Row, SqliteFile

__all__ = [
    "ROLES",
    "ApiKey",
    "IdempotentJob",
    "Job",
    "JobItem",
    "Ops",
    "Role",
    "body_hash",
]

Role = Literal["crm", "support"]
ROLES: tuple[Role, ...] = ("crm", "support")

_SCHEMA = """
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

# Item states: pending (to do, maybe after a backoff), and the three final ones.
_FINAL = ("done", "refused", "failed")

# Columns added after the first release: added in place to an older ops database when it is opened.
_ADDED_COLUMNS = {"job_items": (("audit", "TEXT"), ("contact_at", "TEXT"))}


def body_hash(body: object) -> str:
    """A canonical hash of a JSON body: key order and whitespace do not make two bodies differ."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _hash_secret(salt: str, secret: str) -> str:
    return hashlib.sha256((salt + secret).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    role: Role
    name: str


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    kind: str
    status: str
    spec: JsonObject
    callback_url: str | None
    callback_status: str | None
    total: int
    counts: dict[str, int]
    refusals: dict[str, int]
    created: float
    updated: float

    def as_dict(self) -> JsonObject:
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "total": self.total,
            "done": self.counts.get("done", 0),
            "refused": self.counts.get("refused", 0),
            "failed": self.counts.get("failed", 0),
            "pending": self.counts.get("pending", 0),
            "deferred": self.counts.get("deferred", 0),
            "refusal_reasons": self.refusals,
            "callback_status": self.callback_status,
            "created": self.created,
            "updated": self.updated,
        }


@dataclass(frozen=True, slots=True)
class JobItem:
    job_id: str
    customer_id: str
    status: str
    reason: str | None
    result: JsonObject | None
    attempts: int


@dataclass(frozen=True, slots=True)
class IdempotentJob:
    job_id: str
    created: bool  # False: a replay of an earlier request; the job is the first request's


class Ops(SqliteFile):
    """The ops database (``tailor.data.sqlite``): keys, idempotency, jobs, contacts to record, audit."""

    def __init__(self, path: Path | str) -> None:
        # FULL, not NORMAL: a job result acknowledged to a client must survive a power cut too.
        super().__init__(path, _SCHEMA, synchronous="FULL", busy_timeout_s=30)
        try:
            self._migrate()
            self._salt = self._install_salt()
        except sqlite3.Error as exc:
            raise DataError(f"cannot open the ops database {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        for table, columns in _ADDED_COLUMNS.items():
            have = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for column, kind in columns:
                if column not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        # After the columns it names exist in an older database too. The runner asks for unrecorded contacts
        # after every item: without it, a scan of every item ever run.
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS job_items_contact ON job_items(updated) WHERE contact_at IS NOT NULL"
        )

    def _install_salt(self) -> bytes:
        """This database's secret for tombstones, made once: a forgotten id is kept only as its HMAC."""
        self._db.execute(
            "INSERT OR IGNORE INTO ops_meta VALUES ('tombstone_salt', ?)", (secrets.token_hex(32),)
        )
        row = self._db.execute("SELECT value FROM ops_meta WHERE key='tombstone_salt'").fetchone()
        return bytes.fromhex(row[0])

    def tombstone(self, customer_id: str) -> str:
        """The opaque stand-in for a forgotten customer's id: the same id always gives the same one here,
        so a later request naming them is known, and the id cannot be read back from it."""
        digest = hmac.new(self._salt, customer_id.encode(), hashlib.sha256).hexdigest()
        return "forgotten:" + digest[:32]

    def forgotten(self, customer_ids: Sequence[str]) -> list[str]:
        """Those of ``customer_ids`` that were forgotten here, in input order."""
        if not customer_ids:
            return []
        marks = {self.tombstone(c): c for c in dict.fromkeys(customer_ids)}
        found: set[str] = set()
        keys = list(marks)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._query(
                f"SELECT tombstone FROM forgotten WHERE tombstone IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update(marks[r[0]] for r in rows)
        return [c for c in customer_ids if c in found]

    # -- API keys --------------------------------------------------------------------------------
    def create_key(self, role: str, name: str = "") -> str:
        """Create a key and return the token, which is shown once: only a salted hash is kept."""
        if role not in ROLES:
            raise DataError(f"unknown role {role!r}", hint=f"use one of {', '.join(ROLES)}")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(24)
        salt = secrets.token_hex(16)
        with self.transaction() as db:
            db.execute(
                "INSERT INTO api_keys (id, salt, hash, role, name, created) VALUES (?,?,?,?,?,?)",
                (key_id, salt, _hash_secret(salt, secret), role, name, time.time()),
            )
        return f"tk_{key_id}_{secret}"

    def verify_key(self, token: str) -> ApiKey | None:
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "tk":
            return None
        _, key_id, secret = parts
        rows = self._query("SELECT salt, hash, role, name FROM api_keys WHERE id=? AND revoked=0", (key_id,))
        if not rows:
            return None
        salt, stored, role, name = rows[0]
        # Constant-time comparison, so response timing does not leak how much of a guess was right.
        if not hmac.compare_digest(_hash_secret(salt, secret), stored):
            return None
        return ApiKey(id=key_id, role=role, name=name)

    def revoke_key(self, key_id: str) -> None:
        with self.transaction() as db:
            if db.execute("UPDATE api_keys SET revoked=1 WHERE id=?", (key_id,)).rowcount == 0:
                raise NotFoundError("api key", key_id)

    # -- jobs ------------------------------------------------------------------------------------
    def create_job(
        self,
        kind: str,
        customer_ids: Sequence[str],
        spec: JsonObject,
        *,
        callback_url: str | None = None,
        key_id: str | None = None,
        idempotency: tuple[str, str, str] | None = None,
    ) -> IdempotentJob:
        """Create a job with one pending item per customer, all in one transaction.

        ``idempotency`` is ``(scope, key, body_hash)``: the key is claimed in the same transaction
        that creates the job, so of any number of concurrent replays exactly one creates a job and
        the others get its id (or a ConflictError if their body differs).
        """
        unique = list(dict.fromkeys(customer_ids))
        now = time.time()
        job_id = "job_" + uuid.uuid4().hex[:16]
        with self.transaction() as db:
            if idempotency is not None:
                scope, key, digest = idempotency
                row = db.execute(
                    "SELECT body_hash, job_id FROM idempotency WHERE scope=? AND key=?", (scope, key)
                ).fetchone()
                if row is not None:
                    if row[0] != digest:
                        raise ConflictError(
                            f"Idempotency-Key {key!r} was already used with a different body",
                            hint="use a new key for a new request",
                        )
                    return IdempotentJob(job_id=row[1], created=False)
                db.execute("INSERT INTO idempotency VALUES (?,?,?,?,?)", (key, scope, digest, job_id, now))
            db.execute(
                "INSERT INTO jobs VALUES (?,?,?,?,?,?,?,?,?,?)",
                (job_id, kind, "queued", json.dumps(spec), callback_url, None, len(unique), now, now, key_id),
            )
            db.executemany(
                "INSERT INTO job_items (job_id, customer_id, seq, status, updated) VALUES (?,?,?,?,?)",
                [(job_id, cid, seq, "pending", now) for seq, cid in enumerate(unique)],
            )
        return IdempotentJob(job_id=job_id, created=True)

    def get_job(self, job_id: str) -> Job:
        rows = self._query(
            "SELECT id, kind, status, spec, callback_url, callback_status, total, created, updated"
            " FROM jobs WHERE id=?",
            (job_id,),
        )
        if not rows:
            raise NotFoundError("job", job_id)
        jid, kind, status, spec, callback, cb_status, total, created, updated = rows[0]
        counts: dict[str, int] = {}
        for st, attempts, n in self._query(
            "SELECT status, attempts > 0, COUNT(*) FROM job_items WHERE job_id=? GROUP BY 1, 2", (job_id,)
        ):
            counts[st] = counts.get(st, 0) + n
            if st == "pending" and attempts:
                # Pending after a failed attempt: waiting for a backend to come back.
                counts["deferred"] = counts.get("deferred", 0) + n
        refusals = {
            r[0]: r[1]
            for r in self._query(
                "SELECT reason, COUNT(*) FROM job_items WHERE job_id=? AND status='refused' GROUP BY reason",
                (job_id,),
            )
        }
        return Job(
            id=jid,
            kind=kind,
            status=status,
            spec=json.loads(spec),
            callback_url=callback,
            callback_status=cb_status,
            total=total,
            counts=counts,
            refusals=refusals,
            created=created,
            updated=updated,
        )

    def job_key(self, job_id: str) -> str | None:
        rows = self._query("SELECT key_id FROM jobs WHERE id=?", (job_id,))
        if not rows:
            raise NotFoundError("job", job_id)
        return rows[0][0]  # type: ignore[no-any-return]

    def next_item(
        self,
        now: float | None = None,
        *,
        running: Collection[tuple[str, str]] = (),
    ) -> JobItem | None:
        """The next pending item that is due, or None.

        ``running`` are the (job, customer) items under way: none of them is handed out again, nor another
        item for one of their customers (two emails to one customer at once would both pass the frequency
        cap). Of the jobs with a due item, the one with the fewest items running goes first, then the
        oldest; within a job, items go in order. With nothing running that is plain job order.
        """
        now = time.time() if now is None else now
        busy_customers = {c for _, c in running}
        load = Counter(j for j, _ in running)
        # Unfinished jobs are few; each one's next items come from an index, whatever its size.
        jobs = self._query("SELECT id, created FROM jobs WHERE status IN ('queued', 'running')")
        for job_id, _ in sorted(jobs, key=lambda row: (load[row[0]], row[1], row[0])):
            # Skipping is bounded by what runs: at most ``len(running)`` of a job's first rows are busy.
            rows = self._query(
                "SELECT job_id, customer_id, status, reason, result, attempts FROM job_items"
                " INDEXED BY job_items_next"
                " WHERE job_id=? AND status='pending' AND next_attempt<=? ORDER BY seq LIMIT ?",
                (job_id, now, 2 * len(running) + 1),
            )
            for row in rows:
                if row[1] not in busy_customers:
                    return self._item(row)
        return None

    def next_due_in(self, now: float | None = None) -> float | None:
        """Seconds until the next deferred item is due, or None when nothing is pending."""
        now = time.time() if now is None else now
        rows = self._query("SELECT MIN(next_attempt) FROM job_items WHERE status='pending'")
        if not rows or rows[0][0] is None:
            return None
        return max(0.0, float(rows[0][0]) - now)

    def finish_item(
        self,
        job_id: str,
        customer_id: str,
        status: Literal["done", "refused", "failed"],
        result: JsonObject | None,
        reason: str | None = None,
        *,
        audit: list[JsonObject] | None = None,
        contact_at: str | None = None,
    ) -> bool:
        """Write an item's result, and the agent's audit trace, once. False when it was already final (a
        resumed or raced worker).

        ``contact_at`` (ISO time) is a send still to be recorded in the customer store's contact log; it is
        written with the result, in the same transaction, so a crash can delay that record but never lose
        it or the email (see ``pending_contacts``)."""
        now = time.time()
        with self.transaction() as db:
            changed = db.execute(
                "UPDATE job_items SET status=?, reason=?, result=?, audit=?, contact_at=?,"
                " attempts=attempts+1, updated=? WHERE job_id=? AND customer_id=? AND status='pending'",
                (
                    status,
                    reason,
                    json.dumps(result) if result is not None else None,
                    json.dumps(audit, default=str) if audit is not None else None,
                    contact_at,
                    now,
                    job_id,
                    customer_id,
                ),
            ).rowcount
            db.execute(
                "UPDATE jobs SET status='running', updated=? WHERE id=? AND status='queued'", (now, job_id)
            )
            self._maybe_complete(db, job_id, now)
        return changed == 1

    def pending_contacts(self) -> list[tuple[str, str, str]]:
        """Sends whose contact is not yet recorded in the customer store: ``(job_id, customer_id, when)``."""
        rows = self._query(
            "SELECT job_id, customer_id, contact_at FROM job_items WHERE contact_at IS NOT NULL"
            " ORDER BY updated"
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def sent_items(self, job_id: str, customer_id: str) -> list[str]:
        """The products of the email a finished item sent (none for a refusal or a forgotten result)."""
        rows = self._query(
            "SELECT result FROM job_items WHERE job_id=? AND customer_id=?", (job_id, customer_id)
        )
        result = json.loads(rows[0][0]) if rows and rows[0][0] else {}
        email = result.get("email") if isinstance(result, dict) else None
        products = email.get("products", []) if isinstance(email, dict) else []
        return [str(p["item_id"]) for p in products if isinstance(p, dict) and "item_id" in p]

    def contact_recorded(self, job_id: str, customer_id: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE job_items SET contact_at=NULL WHERE job_id=? AND customer_id=?", (job_id, customer_id)
            )

    def item_audits(self, job_id: str) -> list[JsonObject]:
        """Each finished item's status and the agent's audit trace (None where the agent did not finish)."""
        self.get_job(job_id)
        marks = ",".join("?" * len(_FINAL))
        rows = self._query(
            "SELECT customer_id, status, reason, audit FROM job_items"
            f" WHERE job_id=? AND status IN ({marks}) ORDER BY seq",
            (job_id, *_FINAL),
        )
        return [
            {"customer_id": c, "status": st, "reason": r, "audit": json.loads(a) if a else None}
            for c, st, r, a in rows
        ]

    def defer_item(self, job_id: str, customer_id: str, delay_s: float, reason: str) -> None:
        """A backend was down: keep the item pending and try again after ``delay_s``."""
        now = time.time()
        with self.transaction() as db:
            db.execute(
                "UPDATE job_items SET attempts=attempts+1, next_attempt=?, reason=?, updated=?"
                " WHERE job_id=? AND customer_id=? AND status='pending'",
                (now + delay_s, reason, now, job_id, customer_id),
            )

    @staticmethod
    def _maybe_complete(db: sqlite3.Connection, job_id: str, now: float) -> None:
        left = db.execute(
            "SELECT COUNT(*) FROM job_items WHERE job_id=? AND status='pending'", (job_id,)
        ).fetchone()[0]
        if left == 0:
            db.execute("UPDATE jobs SET status='done', updated=? WHERE id=?", (now, job_id))

    def set_callback_status(self, job_id: str, status: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE jobs SET callback_status=? WHERE id=?", (status, job_id))

    def jobs_needing_callback(self) -> list[str]:
        """Finished jobs whose callback has not been delivered (also after a restart)."""
        rows = self._query(
            "SELECT id FROM jobs WHERE status='done' AND callback_url IS NOT NULL"
            " AND (callback_status IS NULL OR callback_status LIKE 'retry%') ORDER BY created"
        )
        return [r[0] for r in rows]

    def job_items(self, job_id: str, *, final_only: bool = True) -> list[JobItem]:
        self.get_job(job_id)
        where = f" AND status IN ({','.join('?' * len(_FINAL))})" if final_only else ""
        params: list[object] = [job_id, *(_FINAL if final_only else ())]
        rows = self._query(
            "SELECT job_id, customer_id, status, reason, result, attempts FROM job_items"
            f" WHERE job_id=?{where} ORDER BY seq",
            params,
        )
        return [self._item(r) for r in rows]

    @staticmethod
    def _item(row: Row) -> JobItem:
        job_id, cid, status, reason, result, attempts = row
        return JobItem(
            job_id=job_id,
            customer_id=cid,
            status=status,
            reason=reason,
            result=json.loads(result) if result else None,
            attempts=attempts,
        )

    # -- audit and feedback ----------------------------------------------------------------------
    def audit(
        self,
        action: str,
        *,
        key_id: str | None,
        customer_id: str | None,
        detail: JsonObject | None = None,
        item: tuple[str, str] | None = None,
    ) -> None:
        """Add an audit row. With ``item`` (job, customer), only while that job item still names the
        customer: one statement, so a ``forget`` cannot slip in between the check and the write."""
        row = (time.time(), key_id, action, customer_id, json.dumps(detail or {}, default=str))
        with self.transaction() as db:
            if item is None:
                db.execute(
                    "INSERT INTO audit (ts, key_id, action, customer_id, detail) VALUES (?,?,?,?,?)", row
                )
            else:
                db.execute(
                    "INSERT INTO audit (ts, key_id, action, customer_id, detail) SELECT ?,?,?,?,?"
                    " WHERE EXISTS (SELECT 1 FROM job_items WHERE job_id=? AND customer_id=?)",
                    (*row, *item),
                )

    def audit_trail(self, customer_id: str | None = None, limit: int = 100) -> list[JsonObject]:
        sql = "SELECT ts, key_id, action, customer_id, detail FROM audit"
        params: list[object] = []
        if customer_id is not None:
            sql += " WHERE customer_id=?"
            params.append(customer_id)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        return [
            {"ts": ts, "key_id": k, "action": a, "customer_id": c, "detail": json.loads(d)}
            for ts, k, a, c, d in self._query(sql, params)
        ]

    def add_feedback(
        self,
        customer_id: str,
        signal: str,
        *,
        item_id: str | None = None,
        job_id: str | None = None,
        note: str | None = None,
    ) -> int:
        with self.transaction() as db:
            cur = db.execute(
                "INSERT INTO feedback (ts, customer_id, item_id, job_id, signal, note) VALUES (?,?,?,?,?,?)",
                (time.time(), customer_id, item_id, job_id, signal, note),
            )
            return int(cur.lastrowid or 0)

    def forget(self, customer_id: str, *, only_if_found: bool = False) -> dict[str, int]:
        """Remove a customer's operational traces; what must stay (a job's items, the audit row that says
        they were forgotten) keeps their tombstone instead of their id.

        Job items lose their results, traces and notes, and name the tombstone; job specs (a trigger's
        customer, a campaign's id list) and the idempotency keys and body hashes of those jobs are rewritten
        the same way, and a callback URL naming the id (a path segment or query value equal to it) is
        dropped, from the job and from its spec; feedback and audit rows go. The tombstone is kept, so a
        later job naming the id is refused (``forgotten``). Then the database is checkpointed:
        with ``secure_delete`` on, no deleted row is left in the file or its write-ahead log.

        ``only_if_found`` (the customer store no longer knows the id: a retry of a forget that died half
        way, or an id never seen): when nothing here names the id either, nothing is written, not even the
        tombstone, so an id never seen stays unknown rather than forgotten. Every count is then 0.
        """
        tomb = self.tombstone(customer_id)
        now = time.time()
        with self.transaction() as db:
            jobs = [
                r[0]
                for r in db.execute(
                    "SELECT DISTINCT job_id FROM job_items WHERE customer_id=?", (customer_id,)
                ).fetchall()
            ]
            items = db.execute(
                "UPDATE job_items SET customer_id=?, result=NULL, audit=NULL, contact_at=NULL,"
                " reason='forgotten', status=CASE WHEN status='pending' THEN 'failed' ELSE status END"
                " WHERE customer_id=?",
                (tomb, customer_id),
            ).rowcount
            specs = 0
            for job_id in jobs:
                specs += self._scrub_job(db, job_id, customer_id, tomb)
                self._maybe_complete(db, job_id, now)
            feedback = db.execute("DELETE FROM feedback WHERE customer_id=?", (customer_id,)).rowcount
            audit = db.execute("DELETE FROM audit WHERE customer_id=?", (customer_id,)).rowcount
            if only_if_found and not (items or feedback or audit):
                return {"job_results": 0, "job_specs": 0, "feedback": 0, "audit": 0}
            db.execute("INSERT OR IGNORE INTO forgotten VALUES (?, ?)", (tomb, now))
        self.checkpoint()
        return {"job_results": items, "job_specs": specs, "feedback": feedback, "audit": audit}

    def _scrub_job(self, db: sqlite3.Connection, job_id: str, customer_id: str, tomb: str) -> int:
        row = db.execute("SELECT spec, callback_url FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            return 0
        spec = _replace_id(json.loads(row[0]), customer_id, tomb)
        callback = None if row[1] is not None and _url_names(row[1], customer_id) else row[1]
        # The spec is the request's body and holds the callback URL too: scrubbed by the same rule.
        if isinstance(spec, dict):
            spec_url = spec.get("callback_url")
            if isinstance(spec_url, str) and _url_names(spec_url, customer_id):
                spec["callback_url"] = None
        db.execute(
            "UPDATE jobs SET spec=?, callback_url=?, callback_status=CASE WHEN ? IS NULL AND callback_url"
            " IS NOT NULL THEN 'dropped:forgotten' ELSE callback_status END WHERE id=?",
            (json.dumps(spec), callback, callback, job_id),
        )
        # The key and the hash of the body were the request's: either may carry the id (a key made from
        # it; a hash that confirms a guess). A replay of that request is then a new request, and refused.
        for key, scope in db.execute(
            "SELECT key, scope FROM idempotency WHERE job_id=?", (job_id,)
        ).fetchall():
            db.execute(
                "UPDATE idempotency SET key=?, body_hash=? WHERE scope=? AND key=?",
                (self.tombstone(key), body_hash(spec), scope, key),
            )
        return 1

    def checkpoint(self) -> bool:
        """Copy the write-ahead log into the database file and empty it. False when a reader kept it from
        finishing (it is finished by the next checkpoint)."""
        with self._lock:
            busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        return not busy


def _url_names(url: str, customer_id: str) -> bool:
    """Whether a part of ``url`` is ``customer_id``: a path segment or a query value, unquoted, equal to it.

    Whole parts only: forgetting customer ``1`` must not match ``http://127.0.0.1/...``.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return customer_id in url  # not a URL we can take apart: be safe, drop it if the id is in it
    if any(unquote(segment) == customer_id for segment in parts.path.split("/")):
        return True
    return any(value == customer_id for _, value in parse_qsl(parts.query, keep_blank_values=True))


def _replace_id(value: object, customer_id: str, tomb: str) -> object:
    """``value`` (a job spec) with every string equal to ``customer_id`` replaced by its tombstone."""
    if isinstance(value, dict):
        return {k: _replace_id(v, customer_id, tomb) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_id(v, customer_id, tomb) for v in value]
    return tomb if value == customer_id else value
