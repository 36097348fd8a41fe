"""The customer data store: catalog, customers and events, in an SQLite file (embedded, the default) or in
PostgreSQL (``TAILOR_DATABASE_URL``, shared by every replica), through one code path (``tailor.data.db``).

The store is the system of record for what the retailer told us; Qdrant holds the vectors derived from it.
Writes are transactional per call, so a failed import leaves nothing half-written. Its schema changes by
versioned migrations (``tailor/data/store_migrations``, version table ``alembic_version_store``): a file
written before they existed is adopted as it is.

An event id names one event. An event sent again unchanged is a duplicate and is not written twice; one
sent under a stored id (or twice in a batch) with other content is a conflict, and its batch is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from tailor.core.errors import ConflictError, DataError, NotFoundError
from tailor.core.models import FROM_STORE, Customer, Event, EventKind, Item
from tailor.core.utc import as_utc
from tailor.data.db import Database, Dialect, _short, migrate

__all__ = ["CustomerFacts", "EventsWritten", "Store"]

MIGRATIONS = Path(__file__).resolve().parent / "store_migrations"
VERSION_TABLE = "alembic_version_store"
# Rows as the driver returns them, as plain tuples: each query's columns have their own types.
Row = tuple[Any, ...]
_CHUNK = 500
# Customers per IN list: well under SQLite's oldest bound-parameter limit (999), whatever the build.
_IN_BATCH = 900


def event_id(event: Event) -> str:
    """A stable id from the event's content, so re-importing the same events is idempotent."""
    raw = "|".join(
        str(x)
        for x in (
            event.customer_id,
            event.kind.value,
            event.item_id,
            event.quantity,
            event.value,
            event.text,
            event.timestamp.isoformat(),
            event.order_id,
        )
    )
    # Only when there is one: every event stored before sends were named keeps its id.
    raw += f"|send:{event.send_id}" if event.send_id is not None else ""
    return "ev_" + hashlib.blake2b(raw.encode(), digest_size=10).hexdigest()


_CHANGES = "changes:"
# A published ranker file's rows: far below any engine's limit on one value, few enough rows for any size.
_RANKER_CHUNK = 8 << 20


def _count_change(db: Connection, kind: str, n: int) -> None:
    # In the writer's transaction, so the totals never disagree with the rows.
    if n > 0:
        db.execute(
            sa.text(
                "INSERT INTO meta (key, value) VALUES (:key, :value) ON CONFLICT (key) DO UPDATE"
                " SET value=CAST(CAST(meta.value AS BIGINT) + :n AS TEXT)"
            ),
            {"key": _CHANGES + kind, "value": str(n), "n": n},
        )


# What defines an event, in the order of its row after the id: two events under one id must agree on all.
_EVENT_FIELDS = (
    "customer_id",
    "kind",
    "item_id",
    "quantity",
    "value",
    "text",
    "timestamp",
    "order_id",
    "send_id",
)
_TS = 1 + _EVENT_FIELDS.index("timestamp")


def _differences(a: tuple[Any, ...], b: tuple[Any, ...]) -> list[str]:
    """The fields in which two event rows differ (their ids aside)."""
    out = []
    for n, name in enumerate(_EVENT_FIELDS, start=1):
        if a[n] == b[n]:
            continue
        # The same instant may be written in another form by an older store; it is the same event.
        if n == _TS and datetime.fromisoformat(a[n]) == datetime.fromisoformat(b[n]):
            continue
        out.append(name)
    return out


def _conflict(event_id: str, n: int, fields: list[str], where: str) -> ConflictError:
    # Only the names of the fields that differ: the stored event may be another customer's, and its
    # content is not the sender's to see.
    return ConflictError(
        f"event {event_id!r} (event {n + 1} of the batch) {where} with a different "
        f"{', '.join(fields)}; nothing of the batch was written",
        hint="an event id names one event: re-send an event unchanged, or send another event under a new "
        "id; for a Segment call, a new messageId",
    )


def _in(sql: str) -> sa.TextClause:
    """``sql`` with ``:ids`` bound to a list (``IN :ids``), expanded to one parameter per element."""
    return sa.text(sql).bindparams(sa.bindparam("ids", expanding=True))


def _stored_events(db: Connection, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    found: dict[str, tuple[Any, ...]] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = list(ids[start : start + _CHUNK])
        for row in db.execute(_in(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id IN :ids"), {"ids": chunk}):
            found[row[0]] = tuple(row)
    return found


def _insert_events(db: Connection, rows: Sequence[tuple[Any, ...]]) -> list[int]:
    """Insert the rows that are new, inside the caller's transaction; return their positions.

    Raises ConflictError, before writing any, if an id is stored, or earlier in the batch, with other
    content. Being in the caller's (immediate) transaction, no other writer can add an id between the
    check and the insert."""
    first: dict[str, int] = {}
    for n, row in enumerate(rows):
        seen = first.setdefault(row[0], n)
        if seen != n and (fields := _differences(rows[seen], row)):
            raise _conflict(row[0], n, fields, f"repeats event {seen + 1} of the batch")
    stored = _stored_events(db, list(first))
    for n in first.values():
        old = stored.get(rows[n][0])
        if old is not None and (fields := _differences(old, rows[n])):
            raise _conflict(rows[n][0], n, fields, "is already stored")
    new = [n for n in first.values() if rows[n][0] not in stored]
    if new and db.dialect.name == "postgresql":
        new = _insert_racing(db, rows, new)
    elif new:
        # SQLite's writers take turns (BEGIN IMMEDIATE): no id can appear between the check and here. A
        # plain INSERT: a row that slipped past the check fails the transaction rather than vanishing. The
        # driver's own placeholders and tuples: an import writes millions of these.
        db.exec_driver_sql(_INSERT_EVENT_QMARK, [rows[n] for n in new])
    # Purchases are what the ranker learns from; a view or a ticket does not make it stale.
    _count_change(db, "purchases", sum(rows[n][2] == EventKind.PURCHASE.value for n in new))
    return new


def _insert_racing(db: Connection, rows: Sequence[tuple[Any, ...]], new: list[int]) -> list[int]:
    """PostgreSQL's writers run side by side: another may store one of these ids after the check. Each
    insert skips an id stored meanwhile (waiting for its writer to commit), and says which it wrote; a
    skipped one is then a duplicate if it is the same event, and a conflict (the whole batch refused)
    if it is not. One stored meanwhile and deleted again (a forget) is inserted again. Returns the
    positions really written."""
    # In id order, so that two writers of the same ids lock them in the same order.
    todo = sorted(new, key=lambda n: str(rows[n][0]))
    written: set[str] = set()
    for _ in range(_RACE_TRIES):
        done = _insert_skipping(db, [rows[n] for n in todo])
        written |= done
        raced = [n for n in todo if rows[n][0] not in done]
        now = _stored_events(db, [rows[n][0] for n in raced]) if raced else {}
        for n in raced:
            if rows[n][0] in now and (fields := _differences(now[rows[n][0]], rows[n])):
                raise _conflict(rows[n][0], n, fields, "was stored meanwhile")
        todo = [n for n in raced if rows[n][0] not in now]
        if not todo:
            return [n for n in new if rows[n][0] in written]
    raise DataError(
        f"{len(todo)} events kept being stored and deleted by other writers while this batch was written",
        hint="nothing of the batch was written; send it again",
    )


def _insert_skipping(db: Connection, rows: Sequence[tuple[Any, ...]]) -> set[str]:
    """Insert ``rows`` into PostgreSQL's events, skipping ids already there; the ids written. A large
    batch goes by COPY into a temporary table, then one INSERT ... SELECT: many times the rate of row by
    row inserts, as an import needs."""
    if len(rows) < _COPY_FROM:
        statement = (
            postgresql.insert(_EVENTS).on_conflict_do_nothing(index_elements=["id"]).returning(_EVENTS.c.id)
        )
        params = [dict(zip(_EVENT_KEYS, row, strict=True)) for row in rows]
        return {r[0] for r in db.execute(statement, params)}
    raw: Any = db.connection.driver_connection  # psycopg's own connection, in this same transaction
    with raw.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE incoming_events (LIKE events) ON COMMIT DROP")
        with cursor.copy(f"COPY incoming_events ({_EVENT_COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    out = db.exec_driver_sql(
        f"INSERT INTO events ({_EVENT_COLUMNS}) SELECT {_EVENT_COLUMNS} FROM incoming_events ORDER BY id"
        " ON CONFLICT (id) DO NOTHING RETURNING id"
    )
    written = {r[0] for r in out}
    db.exec_driver_sql("DROP TABLE incoming_events")
    return written


def _event_row(e: Event) -> tuple[Any, ...]:
    return (
        e.id or event_id(e),
        e.customer_id,
        e.kind.value,
        e.item_id,
        e.quantity,
        e.value,
        e.text,
        e.timestamp.isoformat(),
        e.order_id,
        e.send_id,
    )


# A row's columns, by name: ``SELECT *`` would depend on the order a migration left them in.
_EVENT_KEYS = ("id", *("ts" if f == "timestamp" else f for f in _EVENT_FIELDS))
_EVENT_COLUMNS = ", ".join(_EVENT_KEYS)
_EVENTS = sa.table("events", *(sa.column(k) for k in _EVENT_KEYS))
# Every table of the store and its columns, in the order a copy writes them.
_TABLES = {
    "items": ("id", "doc", "content_hash", "category", "in_stock", "price"),
    "customers": ("id", "doc", "country"),
    "events": _EVENT_KEYS,
    "meta": ("key", "value"),
    "contacts": ("customer_id", "ts", "channel"),
    "impressions": ("customer_id", "item_id", "ts", "channel"),
    "sends": ("id", "customer_id", "ts", "channel"),
}
_UPSERT_CUSTOMER = sa.text(
    "INSERT INTO customers (id, doc, country) VALUES (:id, :doc, :country) ON CONFLICT (id) DO UPDATE"
    " SET doc=excluded.doc, country=excluded.country"
)
_UPSERT_ITEM = sa.text(
    "INSERT INTO items (id, doc, content_hash, category, in_stock, price)"
    " VALUES (:id, :doc, :content_hash, :category, :in_stock, :price) ON CONFLICT (id) DO UPDATE"
    " SET doc=excluded.doc, content_hash=excluded.content_hash, category=excluded.category,"
    " in_stock=excluded.in_stock, price=excluded.price"
)
_INSERT_EVENT_QMARK = f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ({', '.join('?' * len(_EVENT_KEYS))})"
# PostgreSQL: batches from this size on go by COPY; how often an insert may meet ids stored and deleted again.
_COPY_FROM = 2_000
_RACE_TRIES = 3


_INSERT_CONTACT = sa.text("INSERT INTO contacts (customer_id, ts, channel) VALUES (:cid, :ts, :channel)")
_INSERT_IMPRESSION = sa.text(
    "INSERT INTO impressions (customer_id, item_id, ts, channel) VALUES (:cid, :item, :ts, :channel)"
)


def _by_id(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in id order, so that two writers of the same rows (on PostgreSQL, side by side) lock them in
    the same order and never wait on each other in a circle."""
    return sorted(rows, key=lambda r: str(r["id"]))


def _customer_row(c: Customer) -> dict[str, Any]:
    return {"id": c.id, "doc": c.model_dump_json(), "country": c.country}


def _item_row(i: Item) -> dict[str, Any]:
    return {
        "id": i.id,
        "doc": i.model_dump_json(),
        "content_hash": _item_hash(i),
        "category": i.category,
        "in_stock": int(i.in_stock),
        "price": i.price,
    }


@dataclass(frozen=True)
class EventsWritten:
    """What a batch of events did to the store. ``ids``: every event's id, in input order; ``new``: the
    events really written, with their ids, in input order; ``duplicates``: the others, each one already
    stored or repeated in the batch, unchanged."""

    ids: list[str]
    new: list[Event]
    duplicates: int


@dataclass(frozen=True)
class CustomerFacts:
    """What a campaign audience filters on. ``orders``: distinct orders (a purchase without an order id
    is an order of its own); ``spend``: the value of purchases less that of returns; the first and last
    purchase. The purchase facts are 0 and None when they were not asked for (``Store.customer_facts``)."""

    id: str
    country: str
    marketing_email: bool
    orders: int = 0
    spend: float = 0.0
    first_purchase: datetime | None = None
    last_purchase: datetime | None = None


def _item_hash(item: Item) -> str:
    return hashlib.sha256(item.model_dump_json().encode()).hexdigest()


class Store:
    """The customer store: catalog, customers, events, contacts and impressions, on ``target``: an SQLite
    file's path (the default), or a ``postgresql://`` URL."""

    def __init__(self, target: Path | str) -> None:
        self.target = target
        self._db = Database(target)
        self.dialect: Dialect = self._db.dialect
        # The SQLite file (None on PostgreSQL): what is copied, inspected or removed as a file.
        self.path: Path | None = self._db.path
        try:
            migrate(self._db, MIGRATIONS, VERSION_TABLE)
        except BaseException:
            self._db.close()
            raise

    @property
    def where(self) -> str:
        """The store in words, without a password."""
        return self._db.where

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One write transaction: committed when the block ends, rolled back when it raises."""
        with self._db.transaction() as conn:
            yield conn

    def _query(self, sql: str | sa.TextClause, params: Mapping[str, Any] | None = None) -> list[Row]:
        """One statement's rows (on SQLite, with no transaction around it: one statement is its own)."""
        with self._db.engine.connect() as conn:
            conn = conn.execution_options(tailor_read="statement")
            statement = sa.text(sql) if isinstance(sql, str) else sql
            rows = [tuple(r) for r in conn.execute(statement, dict(params or {}))]
            conn.rollback()
            return rows

    # -- catalog ---------------------------------------------------------------------------------
    def upsert_items(self, items: Iterable[Item]) -> int:
        rows = [_item_row(i) for i in items]
        if rows:
            with self.transaction() as db:
                db.execute(_UPSERT_ITEM, _by_id(rows))
        return len(rows)

    def get_item(self, item_id: str) -> Item:
        rows = self._query("SELECT doc FROM items WHERE id=:id", {"id": item_id})
        if not rows:
            raise NotFoundError("item", item_id, hint="check the id against `tailor import` output")
        return Item.model_validate_json(rows[0][0], context=FROM_STORE)

    def items(self, ids: Sequence[str] | None = None) -> list[Item]:
        if ids is None:
            rows = self._query("SELECT doc FROM items ORDER BY id")
            return [Item.model_validate_json(r[0], context=FROM_STORE) for r in rows]
        found = self.item_map(ids)
        return [found[i] for i in ids if i in found]

    def item_map(self, ids: Sequence[str] | None = None) -> dict[str, Item]:
        if ids is None:
            return {i.id: i for i in self.items()}
        out: dict[str, Item] = {}
        unique = list(dict.fromkeys(ids))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            for (doc,) in self._query(_in("SELECT doc FROM items WHERE id IN :ids"), {"ids": chunk}):
                item = Item.model_validate_json(doc, context=FROM_STORE)
                out[item.id] = item
        return out

    def item_hashes(self) -> dict[str, str]:
        return {row[0]: row[1] for row in self._query("SELECT id, content_hash FROM items")}

    # -- customers -------------------------------------------------------------------------------
    def upsert_customers(self, customers: Iterable[Customer]) -> int:
        rows = [_customer_row(c) for c in customers]
        if rows:
            with self.transaction() as db:
                db.execute(_UPSERT_CUSTOMER, _by_id(rows))
        return len(rows)

    def add_customers_and_events(self, customers: Iterable[Customer], events: Iterable[Event]) -> list[str]:
        """Profiles and events in one transaction: a crash (or an error) between the two writes nothing.
        Returns the events' ids in input order, as ``add_events`` does."""
        return self.add_batch(customers, events).ids

    def add_batch(self, customers: Iterable[Customer], events: Iterable[Event]) -> EventsWritten:
        """Profiles and events in one transaction, and what was written of the events.

        An event already stored (or repeated in the batch) unchanged is a duplicate: not written again.
        One whose id is stored, or repeated, with other content raises ConflictError, and nothing of the
        batch is written."""
        customer_rows = [_customer_row(c) for c in customers]
        events = list(events)
        event_rows = [_event_row(e) for e in events]
        with self.transaction() as db:
            if customer_rows:
                db.execute(_UPSERT_CUSTOMER, _by_id(customer_rows))
            new = _insert_events(db, event_rows)
        return EventsWritten(
            ids=[r[0] for r in event_rows],
            new=[events[n].model_copy(update={"id": event_rows[n][0]}) for n in new],
            duplicates=len(event_rows) - len(new),
        )

    def get_customer(self, customer_id: str) -> Customer:
        rows = self._query("SELECT doc FROM customers WHERE id=:id", {"id": customer_id})
        if not rows:
            raise NotFoundError("customer", customer_id, hint="list customers with `tailor customers`")
        return Customer.model_validate_json(rows[0][0], context=FROM_STORE)

    def has_customer(self, customer_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM customers WHERE id=:id", {"id": customer_id}))

    def customers(self, *, limit: int | None = None, offset: int = 0) -> list[Customer]:
        sql = "SELECT doc FROM customers ORDER BY id"
        params: dict[str, Any] = {"offset": offset}
        if limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = limit
        elif self.dialect == "sqlite":
            sql += " LIMIT -1"  # SQLite takes an OFFSET only after a LIMIT; -1 is none
        rows = self._query(sql + " OFFSET :offset", params)
        return [Customer.model_validate_json(r[0], context=FROM_STORE) for r in rows]

    def customer_ids(self) -> list[str]:
        return [r[0] for r in self._query("SELECT id FROM customers ORDER BY id")]

    def _consent_sql(self) -> str:
        """The customer document's marketing e-mail consent, as 1 or 0 (NULL when it is not there)."""
        if self.dialect == "postgresql":
            return "CASE (CAST(c.doc AS jsonb) #>> '{consent,marketing_email}') WHEN 'true' THEN 1 ELSE 0 END"
        return "json_extract(c.doc, '$.consent.marketing_email')"

    def customer_facts(self, *, purchases: bool = True) -> list[CustomerFacts]:
        """Every customer's audience facts, in id order, in one query. ``purchases=False`` leaves out the
        aggregate over the events table, the only costly part, for filters that need no purchase facts."""
        consent = self._consent_sql()
        if not purchases:
            rows = self._query(f"SELECT c.id, c.country, {consent} FROM customers c ORDER BY c.id")
            return [CustomerFacts(cid, country, bool(ok)) for cid, country, ok in rows]
        rows = self._query(
            f"SELECT c.id, c.country, {consent}, COALESCE(p.orders, 0), COALESCE(p.spend, 0), p.first, p.last"
            " FROM customers c LEFT JOIN ("
            "  SELECT customer_id,"
            "   COUNT(DISTINCT CASE WHEN kind='purchase' THEN COALESCE(order_id, 'event:' || id) END)"
            "    AS orders,"
            "   SUM(CASE WHEN kind='purchase' THEN 1 ELSE -1 END * COALESCE(value, 0)) AS spend,"
            "   MIN(CASE WHEN kind='purchase' THEN ts END) AS first,"
            "   MAX(CASE WHEN kind='purchase' THEN ts END) AS last"
            "  FROM events WHERE kind IN ('purchase', 'return') GROUP BY customer_id"
            " ) p ON p.customer_id = c.id ORDER BY c.id"
        )
        return [
            CustomerFacts(
                cid,
                country,
                bool(ok),
                int(orders),
                round(float(spend), 2),
                datetime.fromisoformat(first) if first else None,
                datetime.fromisoformat(last) if last else None,
            )
            for cid, country, ok, orders, spend, first, last in rows
        ]

    # -- events ----------------------------------------------------------------------------------
    def add_events(self, events: Iterable[Event]) -> list[str]:
        """Store events and return their ids in input order. An event already stored unchanged is not
        written again; one stored with other content raises ConflictError (see ``add_batch``)."""
        return self.add_batch((), events).ids

    def events(
        self,
        customer_id: str | None = None,
        *,
        kinds: Iterable[EventKind] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = None,
    ) -> list[Event]:
        """Events oldest first. ``until`` is exclusive."""
        where, params = self._event_filter(customer_id, kinds, since, until)
        sql = f"SELECT {_EVENT_COLUMNS} FROM events {where} ORDER BY ts, id"
        if limit is not None:
            # The newest ``limit`` events, still returned oldest first.
            newest = f"SELECT {_EVENT_COLUMNS} FROM events {where} ORDER BY ts DESC, id DESC LIMIT :limit"
            sql = f"SELECT * FROM ({newest}) AS newest ORDER BY ts, id"
            params["limit"] = limit
        return [self._event(r) for r in self._query(self._expanding(sql, params), params)]

    def order_lines(
        self, customer_id: str, order_ids: Sequence[str], *, until: datetime | None = None
    ) -> list[Event]:
        """This customer's purchase lines of these orders (before ``until``), oldest first: one query, so a
        support question naming an old order does not read her whole history."""
        if not order_ids:
            return []
        where, params = self._event_filter(customer_id, [EventKind.PURCHASE], None, until)
        params["ids"] = list(order_ids)
        # By her rows, not by kind and time: with the kind in the filter SQLite's planner took the (kind, ts)
        # index and walked every purchase in the store (0.1 s a question on the demo store).
        hint = " INDEXED BY events_customer" if self.dialect == "sqlite" else ""
        sql = f"SELECT {_EVENT_COLUMNS} FROM events{hint} {where} AND order_id IN :ids ORDER BY ts, id"
        return [self._event(r) for r in self._query(self._expanding(sql, params), params)]

    def utc_hours(
        self, kinds: Iterable[EventKind], *, until: datetime, country: str | None = None
    ) -> dict[int, int]:
        """How many events of ``kinds`` before ``until`` (of the customers of ``country``, if given) fell
        in each UTC hour (send-time optimisation's segment, ``tailor.core.send_time``): one aggregate."""
        where, params = self._event_filter(None, kinds, None, until)
        hour = "substr(events.ts, 12, 2)"  # ts is ISO 8601 in UTC: YYYY-MM-DDTHH...
        sql = f"SELECT {hour}, count(*) FROM events {where} GROUP BY {hour}"
        if country is not None:
            params["country"] = country
            sql = (
                f"SELECT {hour}, count(*) FROM events JOIN customers ON customers.id = events.customer_id"
                f" {where} AND customers.country = :country GROUP BY {hour}"
            )
        return {int(h): int(n) for h, n in self._query(self._expanding(sql, params), params)}

    def email_engagement(self, sends: Mapping[str, str]) -> dict[str, set[EventKind]]:
        """For each send of ``sends`` (send id: the customer it went to) with any, the kinds of email event
        its own customer's events tie to it (``Event.send_id``: opened, clicked); a forwarded email opened by
        someone else is not hers. Asked in IN batches of ``_IN_BATCH``, whatever the number of sends."""
        out: dict[str, set[EventKind]] = {}
        ids = list(sends)
        for start in range(0, len(ids), _IN_BATCH):
            rows = self._query(
                _in(
                    "SELECT send_id, customer_id, kind FROM events WHERE send_id IN :ids"
                    " GROUP BY send_id, customer_id, kind"
                ),
                {"ids": ids[start : start + _IN_BATCH]},
            )
            for send_id, customer_id, kind in rows:
                if sends.get(str(send_id)) == customer_id:
                    out.setdefault(str(send_id), set()).add(EventKind(kind))
        return out

    def sends_of(
        self, customer_ids: Collection[str], channel: str = "email"
    ) -> dict[str, list[tuple[str, datetime]]]:
        """Each of these customers' recorded sends (``record_send``), as (send id, when), oldest first; a
        customer with none is absent. Asked in IN batches of ``_IN_BATCH``."""
        out: dict[str, list[tuple[str, datetime]]] = {}
        ids = list(dict.fromkeys(customer_ids))
        for start in range(0, len(ids), _IN_BATCH):
            rows = self._query(
                _in(
                    "SELECT customer_id, id, ts FROM sends WHERE customer_id IN :ids AND channel=:channel"
                    " ORDER BY ts, id"
                ),
                {"ids": ids[start : start + _IN_BATCH], "channel": channel},
            )
            for customer_id, send_id, ts in rows:
                out.setdefault(str(customer_id), []).append((str(send_id), datetime.fromisoformat(ts)))
        return out

    def get_events(self, ids: Sequence[str]) -> list[Event]:
        if not ids:
            return []
        rows = self._query(_in(f"SELECT {_EVENT_COLUMNS} FROM events WHERE id IN :ids"), {"ids": list(ids)})
        return [self._event(r) for r in rows]

    def events_frame(
        self,
        *,
        kinds: Iterable[EventKind] = (EventKind.PURCHASE,),
        until: datetime | None = None,
        since: datetime | None = None,
        customers: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Events as a DataFrame (customer_id, item_id, kind, quantity, value, timestamp, order_id); with
        ``customers``, those customers' events only (asked in batches, one query each, however many)."""
        sql = "SELECT id, customer_id, item_id, kind, quantity, value, ts, order_id FROM events {where}"
        batches: list[list[str] | None] = (
            [None]
            if customers is None
            else [list(customers[i : i + _IN_BATCH]) for i in range(0, len(customers), _IN_BATCH)]
        )
        frames = []
        with self._db.engine.connect() as conn:
            conn = conn.execution_options(tailor_read="statement")
            for batch in batches or [[]]:
                where, params = self._event_filter(None, kinds, since, until, customers=batch)
                query = self._expanding(sql.format(where=where), params)
                frames.append(pd.read_sql_query(query, conn, params=params))
            conn.rollback()
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        frame["timestamp"] = pd.to_datetime(frame.pop("ts"), utc=True, format="ISO8601")
        return frame

    @staticmethod
    def _expanding(sql: str, params: Mapping[str, Any]) -> sa.TextClause:
        """``sql`` with every list parameter (``IN :kinds``) expanded to one parameter per element."""
        lists = [k for k, v in params.items() if isinstance(v, list)]
        return sa.text(sql).bindparams(*(sa.bindparam(k, expanding=True) for k in lists))

    @staticmethod
    def _event_filter(
        customer_id: str | None,
        kinds: Iterable[EventKind] | None,
        since: datetime | None,
        until: datetime | None,
        *,
        customers: list[str] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        clauses: list[str] = []
        params: dict[str, Any] = {}
        if customer_id is not None:
            clauses.append("customer_id=:customer_id")
            params["customer_id"] = customer_id
        if customers is not None:
            # An empty list selects nothing (an empty IN is not valid SQL everywhere).
            clauses.append("customer_id IN :customers" if customers else "1=0")
            if customers:
                params["customers"] = customers
        if kinds is not None:
            clauses.append("kind IN :kinds")
            params["kinds"] = [k.value for k in kinds]
        # Stored times are UTC ISO text, compared as text: a bound in another zone is put in UTC first.
        if since is not None:
            clauses.append("ts>=:since")
            params["since"] = as_utc(since).isoformat()
        if until is not None:
            clauses.append("ts<:until")
            params["until"] = as_utc(until).isoformat()
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    @staticmethod
    def _event(row: tuple[Any, ...]) -> Event:
        eid, cid, kind, item, qty, value, text, ts, order, send = row
        return Event.model_validate(
            {
                "id": eid,
                "customer_id": cid,
                "kind": EventKind(kind),
                "item_id": item,
                "quantity": qty,
                "value": value,
                "text": text,
                "timestamp": datetime.fromisoformat(ts),
                "order_id": order,
                "send_id": send,
            },
            context=FROM_STORE,
        )

    def busiest_customers(self, limit: int = 10) -> list[str]:
        """Customers with the most distinct orders, most first (ties by id, so the order is stable)."""
        rows = self._query(
            "SELECT customer_id FROM events WHERE kind='purchase' GROUP BY customer_id"
            " ORDER BY COUNT(DISTINCT order_id) DESC, customer_id LIMIT :limit",
            {"limit": limit},
        )
        return [r[0] for r in rows]

    def order_counts(self, customer_id: str) -> dict[str, int]:
        """A customer's whole history in three numbers: distinct orders, purchase lines, returned lines."""
        # No condition on kind: with one, SQLite's planner took the kind index and read every purchase of
        # the store (130 ms for the busiest demo customer, against a few ms by the customer's index).
        rows = self._query(
            "SELECT COUNT(DISTINCT CASE WHEN kind='purchase' THEN order_id END),"
            " SUM(CASE WHEN kind='purchase' THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN kind='return' THEN 1 ELSE 0 END)"
            " FROM events WHERE customer_id=:cid",
            {"cid": customer_id},
        )
        orders, lines, returns = rows[0] if rows else (0, 0, 0)
        return {"orders": int(orders or 0), "purchases": int(lines or 0), "returns": int(returns or 0)}

    def customers_with(self, kind: EventKind) -> list[str]:
        rows = self._query("SELECT DISTINCT customer_id FROM events WHERE kind=:kind", {"kind": kind.value})
        return [r[0] for r in rows]

    def record_contact(self, customer_id: str, when: datetime, channel: str = "email") -> None:
        """A marketing message was sent: the frequency cap counts these."""
        with self.transaction() as db:
            db.execute(_INSERT_CONTACT, {"cid": customer_id, "ts": when.isoformat(), "channel": channel})

    def record_send(
        self,
        send_id: str,
        customer_id: str,
        item_ids: Iterable[str],
        when: datetime,
        channel: str = "email",
    ) -> bool:
        """The one way a sent message is recorded: its contact (the frequency cap) and its products'
        impressions (the 30-day cap), in one transaction, once per ``send_id``.

        False when nothing was written: that send was recorded already (a replayed or resumed job that
        records its send again counts nothing twice, and a crash between the two records cannot leave one
        without the other), or the customer is gone. The customer is looked up in the same transaction as
        the writes, so a forget that lands after a caller's own check leaves no row naming them."""
        stamp = as_utc(when).isoformat()
        with self.transaction() as db:
            # On PostgreSQL the customer's row is locked until the end: a concurrent forget waits for this
            # send and then deletes its rows too, instead of running beside it.
            lock = " FOR SHARE" if self.dialect == "postgresql" else ""
            if (
                db.execute(
                    sa.text(f"SELECT 1 FROM customers WHERE id=:cid{lock}"), {"cid": customer_id}
                ).first()
                is None
            ):
                return False
            fresh = db.execute(
                sa.text(
                    "INSERT INTO sends (id, customer_id, ts, channel) VALUES (:id, :cid, :ts, :channel)"
                    " ON CONFLICT (id) DO NOTHING"
                ),
                {"id": send_id, "cid": customer_id, "ts": stamp, "channel": channel},
            ).rowcount
            if not fresh:
                return False
            db.execute(_INSERT_CONTACT, {"cid": customer_id, "ts": when.isoformat(), "channel": channel})
            shown = [
                {"cid": customer_id, "item": item_id, "ts": stamp, "channel": channel}
                for item_id in dict.fromkeys(item_ids)
            ]
            if shown:
                db.execute(_INSERT_IMPRESSION, shown)
        return True

    def contacts(self, customer_id: str, channel: str = "email") -> list[datetime]:
        rows = self._query(
            "SELECT ts FROM contacts WHERE customer_id=:cid AND channel=:channel ORDER BY ts",
            {"cid": customer_id, "channel": channel},
        )
        return [datetime.fromisoformat(r[0]) for r in rows]

    def record_impressions(
        self, customer_id: str, item_ids: Iterable[str], when: datetime, channel: str = "email"
    ) -> int:
        """The customer was shown these items (once each, whatever the repeats); the 30-day cap counts
        these. Returns how many were recorded."""
        # Stamps are stored as ISO text and compared as text, so every one must be in the same zone.
        stamp = as_utc(when).isoformat()
        rows = [
            {"cid": customer_id, "item": item_id, "ts": stamp, "channel": channel}
            for item_id in dict.fromkeys(item_ids)
        ]
        if rows:
            with self.transaction() as db:
                db.execute(_INSERT_IMPRESSION, rows)
        return len(rows)

    def impressions(self, customer_id: str, since: datetime | None = None) -> list[tuple[str, datetime]]:
        """(item id, when shown), oldest first, on every channel; a ``retrieval.rules.ImpressionSource``."""
        sql = "SELECT item_id, ts FROM impressions WHERE customer_id=:cid"
        params: dict[str, Any] = {"cid": customer_id}
        if since is not None:
            sql += " AND ts>=:since"
            params["since"] = as_utc(since).isoformat()
        rows = self._query(sql + " ORDER BY ts, item_id", params)
        return [(r[0], datetime.fromisoformat(r[1])) for r in rows]

    def last_event_time(self) -> datetime | None:
        rows = self._query("SELECT MAX(ts) FROM events")
        return datetime.fromisoformat(rows[0][0]) if rows and rows[0][0] else None

    def import_all(
        self, items: Sequence[Item], customers: Sequence[Customer], events: Sequence[Event]
    ) -> None:
        """Write a whole import in one transaction: all of it lands, or none of it."""
        item_rows = [_item_row(i) for i in items]
        customer_rows = [_customer_row(c) for c in customers]
        with self.transaction() as db:
            if item_rows:
                db.execute(_UPSERT_ITEM, _by_id(item_rows))
            if customer_rows:
                db.execute(_UPSERT_CUSTOMER, _by_id(customer_rows))
            _insert_events(db, [_event_row(e) for e in events])

    # -- lifecycle -------------------------------------------------------------------------------
    def delete_customer(self, customer_id: str) -> dict[str, int]:
        """Forget a customer: their profile, every event, contact, impression and send. In an SQLite file
        the rows are overwritten (``secure_delete``) and checkpointed out of the write-ahead log; on
        PostgreSQL the deleted rows' space is reclaimed by the database's vacuum. Returns what was
        deleted."""
        gone = {"cid": customer_id}
        with self.transaction() as db:
            n_customers = db.execute(sa.text("DELETE FROM customers WHERE id=:cid"), gone).rowcount
            n_events = db.execute(sa.text("DELETE FROM events WHERE customer_id=:cid"), gone).rowcount
            n_contacts = db.execute(sa.text("DELETE FROM contacts WHERE customer_id=:cid"), gone).rowcount
            n_shown = db.execute(sa.text("DELETE FROM impressions WHERE customer_id=:cid"), gone).rowcount
            db.execute(sa.text("DELETE FROM sends WHERE customer_id=:cid"), gone)
            _count_change(db, "forgotten", n_customers)
        # The old pages are still in the write-ahead log until a checkpoint copies the zeroed ones over.
        self.checkpoint()
        return {
            "customers": n_customers,
            "events": n_events,
            "contacts": n_contacts,
            "impressions": n_shown,
        }

    def checkpoint(self) -> bool:
        """Copy SQLite's write-ahead log into the database file and empty it. False when a reader kept it
        from finishing; the next checkpoint finishes it. PostgreSQL has no such log to empty: True."""
        return self._db.checkpoint()

    def counts(self) -> dict[str, int]:
        return {t: self._query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("items", "customers", "events")}

    def get_meta(self, key: str) -> Any:
        rows = self._query("SELECT value FROM meta WHERE key=:key", {"key": key})
        return json.loads(rows[0][0]) if rows else None

    def changes(self) -> dict[str, int]:
        """Running totals of what changed the purchase data: purchases added, customers forgotten.

        A model fitted on the store keeps the totals it saw; the difference tells how stale it is (and
        whether it still holds a forgotten customer's share of its item-level aggregates)."""
        return {kind: int(self.get_meta(_CHANGES + kind) or 0) for kind in ("purchases", "forgotten")}

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as db:
            db.execute(
                sa.text(
                    "INSERT INTO meta (key, value) VALUES (:key, :value)"
                    " ON CONFLICT (key) DO UPDATE SET value=excluded.value"
                ),
                {"key": key, "value": json.dumps(value)},
            )

    # -- the ranker's published save ---------------------------------------------------------------
    def ranker_save_id(self) -> str | None:
        """The id of the ranker save published last (``publish_ranker``), or None."""
        rows = self._query("SELECT save_id FROM ranker_saves")
        return str(rows[0][0]) if rows else None

    def publish_ranker(
        self,
        save_id: str,
        files: Mapping[str, Path],
        *,
        chunk: int = _RANKER_CHUNK,
        unless_published: bool = False,
    ) -> bool:
        """A fitted ranker's saved files, by name, for processes that share this database but no volume
        (replicas on several machines), in one transaction that removes the save before: a forgotten
        customer's rows must not outlive the save that purged them. Each file goes in ``chunk``-byte rows,
        read from disk a chunk at a time. ``unless_published``: only if no save is published yet, decided
        inside the transaction (two replicas at once: one publishes); False when one was."""
        try:
            with self.transaction() as db:
                if self.dialect == "postgresql":
                    # Two replicas publishing at once: one after the other, the later one's save standing.
                    db.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('tailor.publish_ranker'))"))
                if unless_published and db.execute(sa.text("SELECT 1 FROM ranker_saves")).first():
                    return False
                db.execute(sa.text("DELETE FROM ranker_chunks"))
                db.execute(sa.text("DELETE FROM ranker_saves"))
                insert = sa.text(
                    "INSERT INTO ranker_chunks (save_id, name, part, data)"
                    " VALUES (:save_id, :name, :part, :data)"
                )
                described: dict[str, dict[str, Any]] = {}
                for name, path in files.items():
                    digest, size, part = hashlib.sha256(), 0, 0
                    try:
                        with path.open("rb") as fh:
                            while data := fh.read(chunk):
                                db.execute(
                                    insert, {"save_id": save_id, "name": name, "part": part, "data": data}
                                )
                                digest.update(data)
                                size += len(data)
                                part += 1
                    except OSError as exc:
                        raise DataError(f"cannot read the ranker's {name} file {path}: {exc}") from exc
                    described[name] = {"bytes": size, "sha256": digest.hexdigest()}
                db.execute(
                    sa.text(
                        "INSERT INTO ranker_saves (save_id, saved_at, files) VALUES (:save_id, :at, :files)"
                    ),
                    {"save_id": save_id, "at": datetime.now(UTC).isoformat(), "files": json.dumps(described)},
                )
        except sa.exc.SQLAlchemyError as exc:
            raise DataError(
                f"cannot publish the ranker in the database {self.where}: {_short(exc)}",
                hint="the save before stands; the fit or forget can be run again once the database answers",
            ) from exc
        return True

    def _snapshot_options(self, *, yield_per: int) -> dict[str, Any]:
        """A connection's options for reading one snapshot of the store, ``yield_per`` rows at a time: on
        PostgreSQL a read-only REPEATABLE READ transaction; on SQLite the deferred transaction its reads
        already hold."""
        options: dict[str, Any] = {"tailor_read": True, "stream_results": True, "yield_per": yield_per}
        if self.dialect == "postgresql":
            options["isolation_level"] = "REPEATABLE READ"
            options["postgresql_readonly"] = True
        return options

    def fetch_ranker(self, save_id: str, files: Mapping[str, Path]) -> bool:
        """Write the published save ``save_id``'s files to ``files`` (by name), streamed from one snapshot of
        the database. False, with nothing written, when that save is no longer the published one (replaced
        since it was named) or lacks a file asked for; a file that does not add up to its record is refused
        by name, and removed."""
        options = self._snapshot_options(yield_per=4)
        written: list[Path] = []
        try:
            with self._db.engine.connect() as conn:
                conn = conn.execution_options(**options)
                row = conn.execute(
                    sa.text("SELECT files FROM ranker_saves WHERE save_id=:save_id"), {"save_id": save_id}
                ).first()
                described = json.loads(row[0]) if row is not None else {}
                if not set(files) <= set(described):
                    conn.rollback()
                    return False
                for name, path in files.items():
                    digest, size = hashlib.sha256(), 0
                    result = conn.execute(
                        sa.text(
                            "SELECT data FROM ranker_chunks"
                            " WHERE save_id=:save_id AND name=:name ORDER BY part"
                        ),
                        {"save_id": save_id, "name": name},
                    )
                    written.append(path)
                    with path.open("wb") as fh:
                        for (data,) in result:
                            fh.write(data)
                            digest.update(data)
                            size += len(data)
                    want = described[name]
                    if size != want["bytes"] or digest.hexdigest() != want["sha256"]:
                        what = (
                            f"{size} bytes of {want['bytes']}"
                            if size != want["bytes"]
                            else "its SHA-256 differs"
                        )
                        raise DataError(
                            f"the published ranker save {save_id}'s {name} file does not match its"
                            f" record: {what}",
                            hint="run `tailor refit` to fit and publish it again",
                        )
                conn.rollback()
        except sa.exc.SQLAlchemyError as exc:
            for path in written:
                path.unlink(missing_ok=True)
            raise DataError(f"cannot fetch the ranker from the database {self.where}: {_short(exc)}") from exc
        except (DataError, OSError):
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return True

    def copy_into(self, dest: Store, *, chunk: int = 20_000) -> dict[str, int]:
        """Every row of this store into ``dest``, an empty store on any engine (an SQLite file moving to
        PostgreSQL as a retailer outgrows one machine), in one transaction of ``dest``: all of it lands, or
        none. Rows are read in chunks, never all at once. Returns the rows copied, by table."""
        copied: dict[str, int] = {}
        with self._db.engine.connect() as source, dest.transaction() as db:
            if dest.dialect == "postgresql":
                # Two copies into one database at once: the second waits, then finds it full.
                db.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('tailor.copy_into'))"))
            if any(db.execute(sa.text(f"SELECT 1 FROM {table} LIMIT 1")).first() for table in _TABLES):
                raise DataError(
                    f"the store {dest.where} is not empty",
                    hint="copy into a new database (or a new file); nothing was written",
                )
            # One snapshot of the source, whatever writes it meanwhile (SQLite: a deferred transaction).
            source = source.execution_options(**self._snapshot_options(yield_per=chunk))
            for table, columns in _TABLES.items():
                names, marks = ", ".join(columns), ", ".join(":" + c for c in columns)
                insert = sa.text(f"INSERT INTO {table} ({names}) VALUES ({marks})")
                result = source.execute(sa.text(f"SELECT {names} FROM {table}"))
                copied[table] = 0
                if dest.dialect == "postgresql":
                    # COPY: a retailer's store is millions of rows.
                    raw: Any = db.connection.driver_connection
                    with raw.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                        for rows in result.partitions():
                            for row in rows:
                                copy.write_row(tuple(row))
                            copied[table] += len(rows)
                    continue
                for rows in result.partitions():
                    db.execute(insert, [dict(zip(columns, row, strict=True)) for row in rows])
                    copied[table] += len(rows)
            source.rollback()
        return copied

    def require_data(self) -> None:
        if self.counts()["items"] == 0:
            raise DataError("the store is empty", hint="run `tailor import` (or `tailor demo`) first")
