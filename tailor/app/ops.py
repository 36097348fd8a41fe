"""Operational state of the HTTP service, in its own database: an SQLite file (``settings.ops_path``), or
PostgreSQL (``TAILOR_DATABASE_URL``) shared by every replica and worker.

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
import os
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlsplit

from sqlalchemy import bindparam, text
from sqlalchemy.engine import Connection, Row

from tailor.core.errors import ConflictError, DataError, NotFoundError
from tailor.core.models import JsonObject
from tailor.data.db import Database, migrate, process_started, worker_name

__all__ = [
    "ROLES",
    "ApiKey",
    "Decision",
    "IdempotentJob",
    "Job",
    "JobItem",
    "Ops",
    "Role",
    "body_hash",
]

Role = Literal["crm", "support"]
ROLES: tuple[Role, ...] = ("crm", "support")

# Item states: pending (to do, maybe after a backoff), and the three final ones.
_FINAL = ("done", "refused", "failed")
MIGRATIONS = Path(__file__).resolve().parent / "ops_migrations"
_VERSION_TABLE = "alembic_version_ops"


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
            "scheduled": self.counts.get("scheduled", 0),
            "cancelled": self.counts.get("cancelled", 0),
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
class Decision:
    """One row of the decision log: what was chosen for a customer (``action``: the plan's action, or
    ``nothing``), with which probability under the policy that logged it, which policy and model, when (the
    service's clock), and what else (the options and their scores, the products, the trigger)."""

    decided_at: str
    action: str
    propensity: float
    policy: str
    model: str
    detail: JsonObject


@dataclass(frozen=True, slots=True)
class IdempotentJob:
    job_id: str
    created: bool  # False: a replay of an earlier request; the job is the first request's


class Ops:
    """The ops database: keys, idempotency, jobs and their leases, contacts to record, audit.

    ``target`` is a file path (SQLite, the embedded default) or a PostgreSQL URL (``TAILOR_DATABASE_URL``),
    which any number of API replicas and workers share: job items are claimed with a lease (``next_item``),
    so each is done once, and an idempotency key is claimed in the transaction that creates its job."""

    def __init__(self, target: Path | str, *, worker: str | None = None, lease_s: float = 300.0) -> None:
        # FULL, not NORMAL: a job result acknowledged to a client must survive a power cut too.
        self.db = Database(target, synchronous="FULL", busy_timeout_s=30)
        self.path = self.db.path
        self.worker = worker or f"{worker_name()}:{uuid.uuid4().hex[:6]}"
        _LIVE_WORKERS.add(self.worker)
        self.lease_s = lease_s
        try:
            migrate(self.db, MIGRATIONS, _VERSION_TABLE)
            self._salt = self._install_salt()
        except BaseException:
            self.db.close()
            raise

    @property
    def dialect(self) -> str:
        return self.db.dialect

    def close(self) -> None:
        _LIVE_WORKERS.discard(self.worker)
        self.db.close()

    def release_mine(self, keep: Collection[tuple[str, str]] = ()) -> int:
        """Let go of the items this worker holds, but those in ``keep`` (still under way): on a clean stop
        another worker takes them at once."""
        with self.transaction() as db:
            rows = db.execute(
                text("SELECT job_id, customer_id FROM job_items WHERE worker=:me AND status='pending'"),
                {"me": self.worker},
            ).all()
            mine = [(j, c) for j, c in rows if (j, c) not in keep]
            for job_id, customer_id in mine:
                db.execute(
                    text(
                        "UPDATE job_items SET worker=NULL, lease_until=NULL"
                        " WHERE job_id=:job AND customer_id=:cid AND worker=:me AND status='pending'"
                    ),
                    {"job": job_id, "cid": customer_id, "me": self.worker},
                )
        return len(mine)

    def transaction(self) -> AbstractContextManager[Connection]:
        return self.db.transaction()

    def _query(self, sql: str, **params: object) -> list[Row[Any]]:
        return self.db.query(sql, params)

    def _install_salt(self) -> bytes:
        """This database's secret for tombstones, made once: a forgotten id is kept only as its HMAC."""
        with self.transaction() as db:
            db.execute(
                text(
                    "INSERT INTO ops_meta (key, value) VALUES ('tombstone_salt', :v) ON CONFLICT DO NOTHING"
                ),
                {"v": secrets.token_hex(32)},
            )
            row = db.execute(text("SELECT value FROM ops_meta WHERE key='tombstone_salt'")).one()
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
        query = text("SELECT tombstone FROM forgotten WHERE tombstone IN :marks").bindparams(
            bindparam("marks", expanding=True)
        )
        with self.db.engine.connect() as conn:
            conn = conn.execution_options(tailor_read=True)
            for start in range(0, len(keys), 500):
                rows = conn.execute(query, {"marks": keys[start : start + 500]}).all()
                found.update(marks[r[0]] for r in rows)
            conn.rollback()
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
                text(
                    "INSERT INTO api_keys (id, salt, hash, role, name, created)"
                    " VALUES (:id, :salt, :hash, :role, :name, :created)"
                ),
                {"id": key_id, "salt": salt, "hash": _hash_secret(salt, secret), "role": role, "name": name,
                 "created": time.time()},
            )  # fmt: skip
        return f"tk_{key_id}_{secret}"

    def verify_key(self, token: str) -> ApiKey | None:
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "tk":
            return None
        _, key_id, secret = parts
        rows = self._query(
            "SELECT salt, hash, role, name FROM api_keys WHERE id=:id AND revoked=0", id=key_id
        )
        if not rows:
            return None
        salt, stored, role, name = rows[0]
        # Constant-time comparison, so response timing does not leak how much of a guess was right.
        if not hmac.compare_digest(_hash_secret(salt, secret), stored):
            return None
        return ApiKey(id=key_id, role=role, name=name)

    def revoke_key(self, key_id: str) -> None:
        with self.transaction() as db:
            if db.execute(text("UPDATE api_keys SET revoked=1 WHERE id=:id"), {"id": key_id}).rowcount == 0:
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
        approval: bool = False,
    ) -> IdempotentJob:
        """Create a job with one pending item per customer, all in one transaction.

        With ``approval`` the job waits (``awaiting_approval``) until ``approve_job``: no worker claims an
        item of it before, so nothing is made or sent.

        ``idempotency`` is ``(scope, key, body_hash)``: the key is claimed in the same transaction
        that creates the job, so of any number of concurrent replays, in any number of processes sharing
        the database, exactly one creates a job and the others get its id (or a ConflictError if their
        body differs).
        """
        unique = list(dict.fromkeys(customer_ids))
        now = time.time()
        job_id = "job_" + uuid.uuid4().hex[:16]
        with self.transaction() as db:
            if idempotency is not None:
                scope, key, digest = idempotency
                # The claim is the insert itself: on PostgreSQL a concurrent replay waits on the row the
                # first one inserted, and finds it once that one commits (SQLite writers queue anyway).
                claimed = db.execute(
                    text(
                        "INSERT INTO idempotency (key, scope, body_hash, job_id, created)"
                        " VALUES (:key, :scope, :digest, :job, :now) ON CONFLICT DO NOTHING"
                    ),
                    {"key": key, "scope": scope, "digest": digest, "job": job_id, "now": now},
                ).rowcount
                if claimed == 0:
                    row = db.execute(
                        text("SELECT body_hash, job_id FROM idempotency WHERE scope=:scope AND key=:key"),
                        {"scope": scope, "key": key},
                    ).one()
                    if row[0] != digest:
                        raise ConflictError(
                            f"Idempotency-Key {key!r} was already used with a different body",
                            hint="use a new key for a new request",
                        )
                    return IdempotentJob(job_id=row[1], created=False)
            db.execute(
                text(
                    "INSERT INTO jobs (id, kind, status, spec, callback_url, callback_status, total,"
                    " created, updated, key_id)"
                    " VALUES (:id, :kind, :status, :spec, :cb, NULL, :total, :now, :now, :key)"
                ),
                {"id": job_id, "kind": kind, "status": "awaiting_approval" if approval else "queued",
                 "spec": json.dumps(spec), "cb": callback_url,
                 "total": len(unique), "now": now, "key": key_id},
            )  # fmt: skip
            if unique:
                db.execute(
                    text(
                        "INSERT INTO job_items (job_id, customer_id, seq, status, updated)"
                        " VALUES (:job, :cid, :seq, 'pending', :now)"
                    ),
                    [{"job": job_id, "cid": cid, "seq": seq, "now": now} for seq, cid in enumerate(unique)],
                )
        return IdempotentJob(job_id=job_id, created=True)

    def get_job(self, job_id: str) -> Job:
        rows = self._query(
            "SELECT id, kind, status, spec, callback_url, callback_status, total, created, updated"
            " FROM jobs WHERE id=:id",
            id=job_id,
        )
        if not rows:
            raise NotFoundError("job", job_id)
        jid, kind, status, spec, callback, cb_status, total, created, updated = rows[0]
        counts: dict[str, int] = {}
        for st, retried, scheduled, n in self._query(
            "SELECT status, CASE WHEN attempts > 0 THEN 1 ELSE 0 END,"
            " CASE WHEN reason LIKE 'scheduled:%' THEN 1 ELSE 0 END, COUNT(*) FROM job_items"
            " WHERE job_id=:id GROUP BY 1, 2, 3",
            id=job_id,
        ):
            counts[st] = counts.get(st, 0) + n
            if st == "pending" and retried:
                # Pending after a failed attempt: waiting for a backend to come back.
                counts["deferred"] = counts.get("deferred", 0) + n
            if st == "pending" and scheduled:
                # Waiting for its customer's hour (a best-hour campaign).
                counts["scheduled"] = counts.get("scheduled", 0) + n
        refusals = {
            r[0]: r[1]
            for r in self._query(
                "SELECT reason, COUNT(*) FROM job_items WHERE job_id=:id AND status='refused'"
                " GROUP BY reason",
                id=job_id,
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

    def approve_job(self, job_id: str) -> bool:
        """Let a job that waits for approval run; False when it was not waiting (already approved,
        cancelled, or never needed it)."""
        now = time.time()
        with self.transaction() as db:
            changed = db.execute(
                text(
                    "UPDATE jobs SET status='queued', updated=:now"
                    " WHERE id=:job AND status='awaiting_approval'"
                ),
                {"now": now, "job": job_id},
            ).rowcount
            if changed:
                # Its customers may all have been forgotten while it waited: then it is done at once.
                self._maybe_complete(db, job_id, now)
        return changed == 1

    def cancel_job(self, job_id: str) -> int | None:
        """Stop a job: every item not finished becomes ``cancelled``, and none is claimed after. An item a
        worker is writing now is cancelled too: its result is then refused (``finish_item``), so it is
        neither saved nor sent. The number of items cancelled, or None when the job had already ended."""
        now = time.time()
        live = "('awaiting_approval', 'queued', 'running')"
        with self.transaction() as db:
            # The items first, then the job's row: the order in which a worker finishing an item takes
            # them (``finish_item``), so the two never wait on each other on PostgreSQL.
            cancelled = db.execute(
                text(
                    "UPDATE job_items SET status='cancelled', reason='cancelled', updated=:now, worker=NULL,"
                    " lease_until=NULL WHERE job_id=:job AND status='pending'"
                    f" AND EXISTS (SELECT 1 FROM jobs WHERE id=:job AND status IN {live})"
                ),
                {"now": now, "job": job_id},
            ).rowcount
            changed = db.execute(
                text(f"UPDATE jobs SET status='cancelled', updated=:now WHERE id=:job AND status IN {live}"),
                {"now": now, "job": job_id},
            ).rowcount
        return int(cancelled) if changed else None

    def key_totals(self, key_id: str) -> dict[str, Any]:
        """What one key's jobs came to: jobs by kind, items by status, refusals by reason."""
        jobs = {
            r[0]: int(r[1])
            for r in self._query(
                "SELECT kind, COUNT(*) FROM jobs WHERE key_id=:key GROUP BY kind", key=key_id
            )
        }
        items: dict[str, int] = {}
        refusals: dict[str, int] = {}
        for status, reason, n in self._query(
            "SELECT i.status, i.reason, COUNT(*) FROM job_items i JOIN jobs j ON j.id = i.job_id"
            " WHERE j.key_id=:key GROUP BY i.status, i.reason",
            key=key_id,
        ):
            items[status] = items.get(status, 0) + int(n)
            if status == "refused" and reason:
                refusals[reason] = refusals.get(reason, 0) + int(n)
        return {"jobs": jobs, "items": items, "refusals": refusals}

    def jobs_of(self, key_id: str, *, kind: str | None = None, limit: int = 50) -> list[Job]:
        """The jobs one key created, newest first."""
        sql = "SELECT id FROM jobs WHERE key_id=:key"
        params: dict[str, object] = {"key": key_id, "limit": limit}
        if kind is not None:
            sql += " AND kind=:kind"
            params["kind"] = kind
        rows = self._query(sql + " ORDER BY created DESC, id LIMIT :limit", **params)
        return [self.get_job(r[0]) for r in rows]

    def job_decisions(self, job_id: str) -> list[JsonObject]:
        """Who approved or cancelled a job, and when: its audit rows, oldest first."""
        rows = self._query(
            "SELECT ts, key_id, action FROM audit WHERE action IN ('campaign.approve', 'campaign.cancel')"
            " AND detail LIKE :pattern ORDER BY id",
            pattern=f'%"job_id": {json.dumps(job_id)}%',
        )
        return [{"ts": ts, "key_id": k, "action": a} for ts, k, a in rows]

    def decisions(self, job_id: str) -> list[JsonObject]:
        """A job's decision log, in the order decided."""
        rows = self._query(
            "SELECT customer_id, decided_at, action, propensity, policy, model, detail FROM decisions"
            " WHERE job_id=:job ORDER BY id",
            job=job_id,
        )
        return [
            {"customer_id": c, "decided_at": at, "action": a, "propensity": p, "policy": pol, "model": m,
             "detail": json.loads(d)}
            for c, at, a, p, pol, m, d in rows
        ]  # fmt: skip

    def all_decisions(self) -> list[JsonObject]:
        """Every job's decision log, in the order decided: what ``tailor eval --suite policy`` judges
        policies on (``evals.own_log``)."""
        rows = self._query(
            "SELECT job_id, customer_id, decided_at, action, propensity, policy, model, detail FROM decisions"
            " ORDER BY id"
        )
        return [
            {"job_id": j, "customer_id": c, "decided_at": at, "action": a, "propensity": p, "policy": pol,
             "model": m, "detail": json.loads(d)}
            for j, c, at, a, p, pol, m, d in rows
        ]  # fmt: skip

    def job_customers(self, job_id: str) -> list[str]:
        """A job's customers, in the job's order."""
        rows = self._query("SELECT customer_id FROM job_items WHERE job_id=:job ORDER BY seq", job=job_id)
        return [r[0] for r in rows]

    def key_by_id(self, key_id: str) -> ApiKey | None:
        """A key that is not revoked, by its id (a console session names its key by id)."""
        rows = self._query("SELECT role, name FROM api_keys WHERE id=:id AND revoked=0", id=key_id)
        if not rows:
            return None
        return ApiKey(id=key_id, role=rows[0][0], name=rows[0][1])

    def secret(self, purpose: str) -> bytes:
        """A secret for signing ``purpose``'s tokens (console sessions, customers' why-links): derived from
        this database's own secret, so every replica on it signs and checks alike, and none is configured."""
        # A NUL first: no customer id holds one (control characters are refused), so no tombstone, which is
        # the same HMAC of an id, is ever one of these secrets.
        return hmac.new(self._salt, b"\x00secret:" + purpose.encode(), hashlib.sha256).digest()

    def job_key(self, job_id: str) -> str | None:
        rows = self._query("SELECT key_id FROM jobs WHERE id=:id", id=job_id)
        if not rows:
            raise NotFoundError("job", job_id)
        return rows[0][0]  # type: ignore[no-any-return]

    def next_item(
        self,
        now: float | None = None,
        *,
        running: Collection[tuple[str, str]] = (),
    ) -> JobItem | None:
        """Claim the next pending item that is due, or None: it is this worker's until it finishes, defers
        it, or its lease (``lease_s``) runs out (the worker died), whichever comes first.

        Never two items of one customer at once, in this process (``running``: the (job, customer) items
        under way here) or in another (an unexpired lease): two emails to one customer at once would both
        pass the frequency cap. Of the jobs with a due item, the one with the fewest items running here goes
        first, then the oldest; within a job, items go in the order they came due (a never-tried item is due
        from the start), then in order, by an index: items scheduled for later are never read. On PostgreSQL
        the claim skips rows another worker holds locked (``FOR UPDATE SKIP LOCKED``), so workers never wait
        on each other's claims.
        """
        now = time.time() if now is None else now
        load = Counter(j for j, _ in running)
        busy = {c for _, c in running}
        lock = " FOR UPDATE SKIP LOCKED" if self.dialect == "postgresql" else ""
        hint = " INDEXED BY job_items_due" if self.dialect == "sqlite" else ""
        with self.transaction() as db:
            if self.dialect == "postgresql":
                # Claims take turns (they are short): a claim not yet committed is invisible to another,
                # and two workers could otherwise each take an item of one customer. SQLite's writers queue
                # anyway.
                db.execute(text("SELECT pg_advisory_xact_lock(hashtext('tailor:claims'))"))
            # Unfinished jobs are few; each one's next items come from an index, whatever its size.
            jobs = db.execute(
                text("SELECT id, created FROM jobs WHERE status IN ('queued', 'running')")
            ).all()
            leased = {
                r[0]
                for r in db.execute(
                    text(
                        "SELECT customer_id FROM job_items WHERE worker IS NOT NULL AND status='pending'"
                        " AND lease_until > :now AND worker <> :me"
                    ),
                    {"now": now, "me": self.worker},
                )
            }
            busy |= leased
            for job_id, _ in sorted(jobs, key=lambda row: (load[row[0]], row[1], row[0])):
                # Skipping is bounded by what runs: at most as many of a job's first rows are busy.
                rows = db.execute(
                    text(
                        "SELECT job_id, customer_id, status, reason, result, attempts FROM job_items"
                        f"{hint} WHERE job_id=:job AND status='pending' AND next_attempt<=:now"
                        " AND (lease_until IS NULL OR lease_until <= :now OR worker = :me)"
                        f" ORDER BY next_attempt, seq LIMIT :n{lock}"
                    ),
                    {"job": job_id, "now": now, "me": self.worker, "n": 2 * (len(running) + len(leased)) + 1},
                ).all()
                for row in rows:
                    if row[1] in busy:
                        continue
                    db.execute(
                        text(
                            "UPDATE job_items SET worker=:me, lease_until=:until"
                            " WHERE job_id=:job AND customer_id=:cid AND status='pending'"
                        ),
                        {"me": self.worker, "until": now + self.lease_s, "job": row[0], "cid": row[1]},
                    )
                    return self._item(row)
        return None

    def release_orphans(self) -> int:
        """Let go of the items leased by workers of this machine whose process has died, so a restarted
        service picks them up at once instead of when their leases run out. Other machines' leases run out.
        The number of items let go."""
        host = worker_name().split(":", 1)[0]
        live = _LIVE_WORKERS
        rows = self._query(
            "SELECT DISTINCT worker FROM job_items WHERE status='pending' AND worker IS NOT NULL"
        )
        dead = [w for (w,) in rows if _dead_here(w, host, live)]
        if not dead:
            return 0
        with self.transaction() as db:
            return int(
                db.execute(
                    text(
                        "UPDATE job_items SET worker=NULL, lease_until=NULL"
                        " WHERE status='pending' AND worker IN :dead"
                    ).bindparams(bindparam("dead", expanding=True)),
                    {"dead": dead},
                ).rowcount
            )

    def next_due_in(self, now: float | None = None) -> float | None:
        """Seconds until the next pending item is due (a deferred one, or one leased by a worker that may
        have died), or None when nothing is pending."""
        now = time.time() if now is None else now
        rows = self._query(
            "SELECT MIN(CASE WHEN lease_until IS NOT NULL AND lease_until > next_attempt THEN lease_until"
            " ELSE next_attempt END) FROM job_items WHERE status='pending'"
            " AND job_id IN (SELECT id FROM jobs WHERE status IN ('queued', 'running'))"
        )
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
        decision: Decision | None = None,
    ) -> bool:
        """Write an item's result, and the agent's audit trace, once. False when it was already final (a
        resumed or raced worker).

        ``contact_at`` (ISO time) is a send still to be recorded in the customer store's contact log; it is
        written with the result, in the same transaction, so a crash can delay that record but never lose
        it or the email (see ``pending_contacts``). ``decision`` goes to the decision log in that transaction
        too, once: only with the result that is kept."""
        now = time.time()
        with self.transaction() as db:
            changed = db.execute(
                text(
                    "UPDATE job_items SET status=:status, reason=:reason, result=:result, audit=:audit,"
                    " contact_at=:contact, attempts=attempts+1, updated=:now, worker=NULL, lease_until=NULL"
                    " WHERE job_id=:job AND customer_id=:cid AND status='pending'"
                ),
                {
                    "status": status,
                    "reason": reason,
                    "result": json.dumps(result) if result is not None else None,
                    "audit": json.dumps(audit, default=str) if audit is not None else None,
                    "contact": contact_at,
                    "now": now,
                    "job": job_id,
                    "cid": customer_id,
                },
            ).rowcount
            if changed == 1 and decision is not None:
                db.execute(
                    text(
                        "INSERT INTO decisions (ts, decided_at, job_id, customer_id, action, propensity,"
                        " policy, model, detail)"
                        " VALUES (:ts, :at, :job, :cid, :action, :p, :policy, :model, :detail)"
                    ),
                    {"ts": now, "at": decision.decided_at, "job": job_id, "cid": customer_id,
                     "action": decision.action, "p": decision.propensity, "policy": decision.policy,
                     "model": decision.model, "detail": json.dumps(decision.detail, default=str)},
                )  # fmt: skip
            db.execute(
                text("UPDATE jobs SET status='running', updated=:now WHERE id=:job AND status='queued'"),
                {"now": now, "job": job_id},
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
            "SELECT result FROM job_items WHERE job_id=:job AND customer_id=:cid", job=job_id, cid=customer_id
        )
        result = json.loads(rows[0][0]) if rows and rows[0][0] else {}
        email = result.get("email") if isinstance(result, dict) else None
        products = email.get("products", []) if isinstance(email, dict) else []
        return [str(p["item_id"]) for p in products if isinstance(p, dict) and "item_id" in p]

    def contact_recorded(self, job_id: str, customer_id: str) -> None:
        with self.transaction() as db:
            db.execute(
                text("UPDATE job_items SET contact_at=NULL WHERE job_id=:job AND customer_id=:cid"),
                {"job": job_id, "cid": customer_id},
            )

    def item_audits(self, job_id: str) -> list[JsonObject]:
        """Each finished item's status and the agent's audit trace (None where the agent did not finish)."""
        self.get_job(job_id)
        rows = self._query(
            "SELECT customer_id, status, reason, audit FROM job_items"
            " WHERE job_id=:job AND status IN ('done', 'refused', 'failed') ORDER BY seq",
            job=job_id,
        )
        return [
            {"customer_id": c, "status": st, "reason": r, "audit": json.loads(a) if a else None}
            for c, st, r, a in rows
        ]

    def schedule_item(self, job_id: str, customer_id: str, at: float, reason: str) -> None:
        """Keep the item pending until ``at`` (epoch seconds; a campaign sent at each customer's hour),
        let go of it, and note why; not an attempt, unlike ``defer_item``."""
        with self.transaction() as db:
            db.execute(
                text(
                    "UPDATE job_items SET next_attempt=:next, reason=:reason, updated=:now, worker=NULL,"
                    " lease_until=NULL WHERE job_id=:job AND customer_id=:cid AND status='pending'"
                    " AND (worker=:me OR worker IS NULL)"
                ),
                {"next": at, "reason": reason, "now": time.time(), "job": job_id, "cid": customer_id,
                 "me": self.worker},
            )  # fmt: skip

    def defer_item(self, job_id: str, customer_id: str, delay_s: float, reason: str) -> None:
        """A backend was down: keep the item pending, let go of it, and try again after ``delay_s``."""
        now = time.time()
        with self.transaction() as db:
            db.execute(
                text(
                    "UPDATE job_items SET attempts=attempts+1, next_attempt=:next, reason=:reason,"
                    " updated=:now, worker=NULL, lease_until=NULL WHERE job_id=:job AND customer_id=:cid"
                    " AND status='pending' AND (worker=:me OR worker IS NULL)"
                ),
                {
                    "next": now + delay_s,
                    "reason": reason,
                    "now": now,
                    "job": job_id,
                    "cid": customer_id,
                    "me": self.worker,
                },  # a worker whose lease ran out lets go of nothing it no longer holds
            )

    def _maybe_complete(self, db: Connection, job_id: str, now: float) -> None:
        if self.dialect == "postgresql":
            # Two workers finishing a job's last two items at once would each count the other's as pending
            # (read committed) and neither would close the job: they take turns on the job's row.
            db.execute(text("SELECT 1 FROM jobs WHERE id=:job FOR UPDATE"), {"job": job_id})
        left = db.execute(
            text("SELECT COUNT(*) FROM job_items WHERE job_id=:job AND status='pending'"), {"job": job_id}
        ).scalar_one()
        if left == 0:
            db.execute(
                text(
                    "UPDATE jobs SET status='done', updated=:now WHERE id=:job"
                    " AND status IN ('queued', 'running')"
                ),
                {"now": now, "job": job_id},
            )

    def set_callback_status(self, job_id: str, status: str) -> None:
        with self.transaction() as db:
            db.execute(text("UPDATE jobs SET callback_status=:s WHERE id=:job"), {"s": status, "job": job_id})

    def jobs_needing_callback(self) -> list[str]:
        """Finished jobs whose callback has not been delivered (also after a restart)."""
        rows = self._query(
            "SELECT id FROM jobs WHERE status='done' AND callback_url IS NOT NULL"
            " AND (callback_status IS NULL OR callback_status LIKE 'retry%') ORDER BY created"
        )
        return [r[0] for r in rows]

    def job_items(self, job_id: str, *, final_only: bool = True) -> list[JobItem]:
        self.get_job(job_id)
        where = " AND status IN ('done', 'refused', 'failed')" if final_only else ""
        rows = self._query(
            "SELECT job_id, customer_id, status, reason, result, attempts FROM job_items"
            f" WHERE job_id=:job{where} ORDER BY seq",
            job=job_id,
        )
        return [self._item(r) for r in rows]

    @staticmethod
    def _item(row: Row[Any]) -> JobItem:
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
        customer: one statement (on PostgreSQL holding the item's row), so a ``forget`` cannot slip in between
        the check and the write."""
        row = {
            "ts": time.time(),
            "key": key_id,
            "action": action,
            "cid": customer_id,
            "detail": json.dumps(detail or {}, default=str),
        }
        with self.transaction() as db:
            if item is None:
                db.execute(
                    text(
                        "INSERT INTO audit (ts, key_id, action, customer_id, detail)"
                        " VALUES (:ts, :key, :action, :cid, :detail)"
                    ),
                    row,
                )
            else:
                # Typed, so that PostgreSQL knows each value's type in a SELECT list. There the item's row is
                # locked too: a forget under way is waited for, and its new id then no longer matches.
                share = " FOR SHARE" if self.dialect == "postgresql" else ""
                db.execute(
                    text(
                        "INSERT INTO audit (ts, key_id, action, customer_id, detail)"
                        " SELECT CAST(:ts AS FLOAT), CAST(:key AS TEXT), CAST(:action AS TEXT),"
                        " CAST(:cid AS TEXT), CAST(:detail AS TEXT)"
                        " WHERE EXISTS (SELECT 1 FROM job_items WHERE job_id=:job AND customer_id=:icid"
                        f"{share})"
                    ),
                    {**row, "job": item[0], "icid": item[1]},
                )

    def audit_trail(self, customer_id: str | None = None, limit: int = 100) -> list[JsonObject]:
        sql = "SELECT ts, key_id, action, customer_id, detail FROM audit"
        params: dict[str, object] = {"limit": limit}
        if customer_id is not None:
            sql += " WHERE customer_id=:cid"
            params["cid"] = customer_id
        sql += " ORDER BY id DESC LIMIT :limit"
        return [
            {"ts": ts, "key_id": k, "action": a, "customer_id": c, "detail": json.loads(d)}
            for ts, k, a, c, d in self._query(sql, **params)
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
            new = db.execute(
                text(
                    "INSERT INTO feedback (ts, customer_id, item_id, job_id, signal, note)"
                    " VALUES (:ts, :cid, :item, :job, :signal, :note) RETURNING id"
                ),
                {"ts": time.time(), "cid": customer_id, "item": item_id, "job": job_id, "signal": signal,
                 "note": note},
            ).scalar_one()  # fmt: skip
            return int(new)

    def forget(self, customer_id: str, *, only_if_found: bool = False) -> dict[str, int]:
        """Remove a customer's operational traces; what must stay (a job's items, the audit row that says
        they were forgotten) keeps their tombstone instead of their id.

        Job items lose their results, traces and notes, and name the tombstone; job specs (a trigger's
        customer, a campaign's id list) and the idempotency keys and body hashes of those jobs are rewritten
        the same way, and a callback URL naming the id (a path segment or query value equal to it) is
        dropped, from the job and from its spec; feedback and audit rows go. The tombstone is kept, so a
        later job naming the id is refused (``forgotten``). Then an SQLite database is checkpointed: with
        ``secure_delete`` on, no deleted row is left in the file or its write-ahead log.

        ``only_if_found`` (the customer store no longer knows the id: a retry of a forget that died half
        way, or an id never seen): when nothing here names the id either, nothing is written, not even the
        tombstone, so an id never seen stays unknown rather than forgotten. Every count is then 0.
        """
        tomb = self.tombstone(customer_id)
        now = time.time()
        cid = {"cid": customer_id}
        with self.transaction() as db:
            # The jobs are those of the rows this statement changed: one created meanwhile is among them.
            changed = db.execute(
                text(
                    "UPDATE job_items SET customer_id=:tomb, result=NULL, audit=NULL, contact_at=NULL,"
                    " reason='forgotten', worker=NULL, lease_until=NULL,"
                    " status=CASE WHEN status='pending' THEN 'failed' ELSE status END WHERE customer_id=:cid"
                    " RETURNING job_id"
                ),
                {"tomb": tomb, **cid},
            ).all()
            items = len(changed)
            jobs = list(dict.fromkeys(r[0] for r in changed))
            specs = 0
            for job_id in jobs:
                specs += self._scrub_job(db, job_id, customer_id, tomb)
                self._maybe_complete(db, job_id, now)
            feedback = db.execute(text("DELETE FROM feedback WHERE customer_id=:cid"), cid).rowcount
            audit = db.execute(text("DELETE FROM audit WHERE customer_id=:cid"), cid).rowcount
            decisions = db.execute(text("DELETE FROM decisions WHERE customer_id=:cid"), cid).rowcount
            if only_if_found and not (items or feedback or audit or decisions):
                return {"job_results": 0, "job_specs": 0, "feedback": 0, "audit": 0, "decisions": 0}
            db.execute(
                text("INSERT INTO forgotten (tombstone, ts) VALUES (:tomb, :now) ON CONFLICT DO NOTHING"),
                {"tomb": tomb, "now": now},
            )
        self.checkpoint()
        return {
            "job_results": items,
            "job_specs": specs,
            "feedback": feedback,
            "audit": audit,
            "decisions": decisions,
        }

    def _scrub_job(self, db: Connection, job_id: str, customer_id: str, tomb: str) -> int:
        row = db.execute(text("SELECT spec, callback_url FROM jobs WHERE id=:job"), {"job": job_id}).first()
        if row is None:
            return 0
        spec = _replace_id(json.loads(row[0]), customer_id, tomb)
        callback = None if row[1] is not None and _url_names(row[1], customer_id) else row[1]
        # The spec is the request's body and holds the callback URL too: scrubbed by the same rule.
        if isinstance(spec, dict):
            spec_url = spec.get("callback_url")
            if isinstance(spec_url, str) and _url_names(spec_url, customer_id):
                spec["callback_url"] = None
        dropped = callback is None and row[1] is not None
        db.execute(
            text(
                "UPDATE jobs SET spec=:spec, callback_url=:cb,"
                " callback_status=CASE WHEN :dropped THEN 'dropped:forgotten' ELSE callback_status END"
                " WHERE id=:job"
            ),
            {"spec": json.dumps(spec), "cb": callback, "dropped": dropped, "job": job_id},
        )
        # The key and the hash of the body were the request's: either may carry the id (a key made from
        # it; a hash that confirms a guess). A replay of that request is then a new request, and refused.
        for key, scope in db.execute(
            text("SELECT key, scope FROM idempotency WHERE job_id=:job"), {"job": job_id}
        ).all():
            db.execute(
                text("UPDATE idempotency SET key=:new, body_hash=:digest WHERE scope=:scope AND key=:key"),
                {"new": self.tombstone(key), "digest": body_hash(spec), "scope": scope, "key": key},
            )
        return 1

    def checkpoint(self) -> bool:
        """SQLite: the write-ahead log emptied into the file (``Database.checkpoint``); False when a reader
        kept it from finishing. PostgreSQL keeps no such file of ours: True."""
        return self.db.checkpoint()


# The workers of this process that are open: one of this process not among them was closed or abandoned.
_LIVE_WORKERS: set[str] = set()


def _dead_here(worker: str, host: str, live: Collection[str]) -> bool:
    """Whether ``worker`` (host:pid:start:tag, see ``tailor.data.db.worker_name``) ran in this machine's pid
    namespace in a process that is gone: no process has its pid, or the one that has it started at another
    time (the pid was reused). A worker of another machine, or of another container sharing this host name,
    is never judged here: its leases run out."""
    parts = worker.split(":")
    if len(parts) != 4 or parts[0] != host or not parts[1].isdigit():
        return False
    pid, started = int(parts[1]), parts[2]
    if pid == os.getpid():
        return worker not in live
    return process_started(pid) != started


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
