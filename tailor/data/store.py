"""The customer data store: catalog, customers and events in one SQLite file.

SQLite is the system of record for what the retailer told us; Qdrant holds the vectors derived from it.
Writes are transactional per call, so a failed import leaves nothing half-written.

An event id names one event. An event sent again unchanged is a duplicate and is not written twice; one
sent under a stored id (or twice in a batch) with other content is a conflict, and its batch is refused.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from tailor.core.errors import ConflictError, DataError, NotFoundError
from tailor.core.models import FROM_STORE, Customer, Event, EventKind, Item
from tailor.core.utc import as_utc
from tailor.data.sqlite import SqliteFile

__all__ = ["CustomerFacts", "EventsWritten", "Store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, doc TEXT NOT NULL, content_hash TEXT NOT NULL, category TEXT NOT NULL,
    in_stock INTEGER NOT NULL, price REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS customers (id TEXT PRIMARY KEY, doc TEXT NOT NULL, country TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, kind TEXT NOT NULL, item_id TEXT,
    quantity INTEGER, value REAL, text TEXT, ts TEXT NOT NULL, order_id TEXT
);
CREATE INDEX IF NOT EXISTS events_customer ON events(customer_id, ts);
CREATE INDEX IF NOT EXISTS events_kind_ts ON events(kind, ts);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS contacts (customer_id TEXT NOT NULL, ts TEXT NOT NULL, channel TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS contacts_customer ON contacts(customer_id, ts);
CREATE TABLE IF NOT EXISTS impressions (
    customer_id TEXT NOT NULL, item_id TEXT NOT NULL, ts TEXT NOT NULL, channel TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS impressions_customer ON impressions(customer_id, ts);
CREATE TABLE IF NOT EXISTS sends (
    id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, ts TEXT NOT NULL, channel TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sends_customer ON sends(customer_id);
"""


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
    return "ev_" + hashlib.blake2b(raw.encode(), digest_size=10).hexdigest()


_CHANGES = "changes:"


def _count_change(db: sqlite3.Connection, kind: str, n: int) -> None:
    # In the writer's transaction, so the totals never disagree with the rows.
    if n > 0:
        db.execute(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=CAST(value AS INTEGER)+?",
            (_CHANGES + kind, str(n), n),
        )


# What defines an event, in the order of its row after the id: two events under one id must agree on all.
_EVENT_FIELDS = ("customer_id", "kind", "item_id", "quantity", "value", "text", "timestamp", "order_id")
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


def _stored_events(db: sqlite3.Connection, ids: Sequence[str]) -> dict[str, tuple[Any, ...]]:
    found: dict[str, tuple[Any, ...]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for row in db.execute(f"SELECT * FROM events WHERE id IN ({marks})", chunk):
            found[row[0]] = tuple(row)
    return found


def _insert_events(db: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> list[int]:
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
    # A plain INSERT: a row that slipped past the check fails the transaction rather than vanishing.
    db.executemany(_INSERT_EVENT, [rows[n] for n in new])
    # Purchases are what the ranker learns from; a view or a ticket does not make it stale.
    _count_change(db, "purchases", sum(rows[n][2] == EventKind.PURCHASE.value for n in new))
    return new


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
    )


_UPSERT_CUSTOMER = (
    "INSERT INTO customers VALUES (?,?,?) ON CONFLICT(id) DO UPDATE SET doc=excluded.doc,"
    " country=excluded.country"
)
_INSERT_EVENT = "INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?)"


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


class Store(SqliteFile):
    """The customer store: catalog, customers, events, contacts and impressions (``tailor.data.sqlite``)."""

    def __init__(self, path: Path | str) -> None:
        super().__init__(path, _SCHEMA)

    # -- catalog ---------------------------------------------------------------------------------
    def upsert_items(self, items: Iterable[Item]) -> int:
        rows = [
            (i.id, i.model_dump_json(), _item_hash(i), i.category, int(i.in_stock), i.price) for i in items
        ]
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO items VALUES (?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET doc=excluded.doc,"
                " content_hash=excluded.content_hash, category=excluded.category,"
                " in_stock=excluded.in_stock, price=excluded.price",
                rows,
            )
        return len(rows)

    def get_item(self, item_id: str) -> Item:
        rows = self._query("SELECT doc FROM items WHERE id=?", (item_id,))
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
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for (doc,) in self._query(f"SELECT doc FROM items WHERE id IN ({marks})", chunk):
                item = Item.model_validate_json(doc, context=FROM_STORE)
                out[item.id] = item
        return out

    def item_hashes(self) -> dict[str, str]:
        return {row[0]: row[1] for row in self._query("SELECT id, content_hash FROM items")}

    # -- customers -------------------------------------------------------------------------------
    def upsert_customers(self, customers: Iterable[Customer]) -> int:
        rows = [(c.id, c.model_dump_json(), c.country) for c in customers]
        with self.transaction() as db:
            db.executemany(_UPSERT_CUSTOMER, rows)
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
        customer_rows = [(c.id, c.model_dump_json(), c.country) for c in customers]
        events = list(events)
        event_rows = [_event_row(e) for e in events]
        with self.transaction() as db:
            db.executemany(_UPSERT_CUSTOMER, customer_rows)
            new = _insert_events(db, event_rows)
        return EventsWritten(
            ids=[r[0] for r in event_rows],
            new=[events[n].model_copy(update={"id": event_rows[n][0]}) for n in new],
            duplicates=len(event_rows) - len(new),
        )

    def get_customer(self, customer_id: str) -> Customer:
        rows = self._query("SELECT doc FROM customers WHERE id=?", (customer_id,))
        if not rows:
            raise NotFoundError("customer", customer_id, hint="list customers with `tailor customers`")
        return Customer.model_validate_json(rows[0][0], context=FROM_STORE)

    def has_customer(self, customer_id: str) -> bool:
        return bool(self._query("SELECT 1 FROM customers WHERE id=?", (customer_id,)))

    def customers(self, *, limit: int | None = None, offset: int = 0) -> list[Customer]:
        sql = "SELECT doc FROM customers ORDER BY id LIMIT ? OFFSET ?"
        rows = self._query(sql, (-1 if limit is None else limit, offset))
        return [Customer.model_validate_json(r[0], context=FROM_STORE) for r in rows]

    def customer_ids(self) -> list[str]:
        return [r[0] for r in self._query("SELECT id FROM customers ORDER BY id")]

    def customer_facts(self, *, purchases: bool = True) -> list[CustomerFacts]:
        """Every customer's audience facts, in id order, in one query. ``purchases=False`` leaves out the
        aggregate over the events table, the only costly part, for filters that need no purchase facts."""
        consent = "json_extract(c.doc, '$.consent.marketing_email')"
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
        sql = f"SELECT * FROM events {where} ORDER BY ts, id"
        if limit is not None:
            # The newest ``limit`` events, still returned oldest first.
            newest = f"SELECT * FROM events {where} ORDER BY ts DESC, id DESC LIMIT ?"
            sql = f"SELECT * FROM ({newest}) ORDER BY ts, id"
            params.append(limit)
        return [self._event(r) for r in self._query(sql, params)]

    def order_lines(
        self, customer_id: str, order_ids: Sequence[str], *, until: datetime | None = None
    ) -> list[Event]:
        """This customer's purchase lines of these orders (before ``until``), oldest first: one query, so a
        support question naming an old order does not read her whole history."""
        if not order_ids:
            return []
        where, params = self._event_filter(customer_id, [EventKind.PURCHASE], None, until)
        marks = ",".join("?" * len(order_ids))
        # By her rows, not by kind and time: with the kind in the filter the planner took the (kind, ts)
        # index and walked every purchase in the store (0.1 s a question on the demo store).
        rows = self._query(
            f"SELECT * FROM events INDEXED BY events_customer {where} AND order_id IN ({marks})"
            " ORDER BY ts, id",
            [*params, *order_ids],
        )
        return [self._event(r) for r in rows]

    def get_events(self, ids: Sequence[str]) -> list[Event]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        return [self._event(r) for r in self._query(f"SELECT * FROM events WHERE id IN ({marks})", list(ids))]

    def events_frame(
        self, *, kinds: Iterable[EventKind] = (EventKind.PURCHASE,), until: datetime | None = None
    ) -> pd.DataFrame:
        """Events as a DataFrame (customer_id, item_id, kind, quantity, value, timestamp, order_id)."""
        where, params = self._event_filter(None, kinds, None, until)
        with self._lock:
            frame = pd.read_sql_query(
                f"SELECT id, customer_id, item_id, kind, quantity, value, ts, order_id FROM events {where}",
                self._db,
                params=params,
            )
        frame["timestamp"] = pd.to_datetime(frame.pop("ts"), utc=True, format="ISO8601")
        return frame

    @staticmethod
    def _event_filter(
        customer_id: str | None,
        kinds: Iterable[EventKind] | None,
        since: datetime | None,
        until: datetime | None,
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if customer_id is not None:
            clauses.append("customer_id=?")
            params.append(customer_id)
        if kinds is not None:
            kinds = list(kinds)
            clauses.append(f"kind IN ({','.join('?' * len(kinds))})")
            params.extend(k.value for k in kinds)
        if since is not None:
            clauses.append("ts>=?")
            params.append(since.isoformat())
        if until is not None:
            clauses.append("ts<?")
            params.append(until.isoformat())
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    @staticmethod
    def _event(row: tuple[Any, ...]) -> Event:
        eid, cid, kind, item, qty, value, text, ts, order = row
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
            },
            context=FROM_STORE,
        )

    def busiest_customers(self, limit: int = 10) -> list[str]:
        """Customers with the most distinct orders, most first (ties by id, so the order is stable)."""
        rows = self._query(
            "SELECT customer_id FROM events WHERE kind='purchase' GROUP BY customer_id"
            " ORDER BY COUNT(DISTINCT order_id) DESC, customer_id LIMIT ?",
            (limit,),
        )
        return [r[0] for r in rows]

    def customers_with(self, kind: EventKind) -> list[str]:
        return [
            r[0] for r in self._query("SELECT DISTINCT customer_id FROM events WHERE kind=?", (kind.value,))
        ]

    def record_contact(self, customer_id: str, when: datetime, channel: str = "email") -> None:
        """A marketing message was sent: the frequency cap counts these."""
        with self.transaction() as db:
            db.execute("INSERT INTO contacts VALUES (?,?,?)", (customer_id, when.isoformat(), channel))

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
            if db.execute("SELECT 1 FROM customers WHERE id=?", (customer_id,)).fetchone() is None:
                return False
            fresh = db.execute(
                "INSERT OR IGNORE INTO sends VALUES (?,?,?,?)", (send_id, customer_id, stamp, channel)
            ).rowcount
            if not fresh:
                return False
            db.execute("INSERT INTO contacts VALUES (?,?,?)", (customer_id, when.isoformat(), channel))
            db.executemany(
                "INSERT INTO impressions VALUES (?,?,?,?)",
                [(customer_id, item_id, stamp, channel) for item_id in dict.fromkeys(item_ids)],
            )
        return True

    def contacts(self, customer_id: str, channel: str = "email") -> list[datetime]:
        rows = self._query(
            "SELECT ts FROM contacts WHERE customer_id=? AND channel=? ORDER BY ts", (customer_id, channel)
        )
        return [datetime.fromisoformat(r[0]) for r in rows]

    def record_impressions(
        self, customer_id: str, item_ids: Iterable[str], when: datetime, channel: str = "email"
    ) -> int:
        """The customer was shown these items (once each, whatever the repeats); the 30-day cap counts
        these. Returns how many were recorded."""
        # Stamps are stored as ISO text and compared as text, so every one must be in the same zone.
        stamp = as_utc(when).isoformat()
        rows = [(customer_id, item_id, stamp, channel) for item_id in dict.fromkeys(item_ids)]
        with self.transaction() as db:
            db.executemany("INSERT INTO impressions VALUES (?,?,?,?)", rows)
        return len(rows)

    def impressions(self, customer_id: str, since: datetime | None = None) -> list[tuple[str, datetime]]:
        """(item id, when shown), oldest first, on every channel; a ``retrieval.rules.ImpressionSource``."""
        sql = "SELECT item_id, ts FROM impressions WHERE customer_id=?"
        params: list[Any] = [customer_id]
        if since is not None:
            sql += " AND ts>=?"
            params.append(as_utc(since).isoformat())
        rows = self._query(sql + " ORDER BY ts, item_id", params)
        return [(r[0], datetime.fromisoformat(r[1])) for r in rows]

    def last_event_time(self) -> datetime | None:
        rows = self._query("SELECT MAX(ts) FROM events")
        return datetime.fromisoformat(rows[0][0]) if rows and rows[0][0] else None

    def import_all(
        self, items: Sequence[Item], customers: Sequence[Customer], events: Sequence[Event]
    ) -> None:
        """Write a whole import in one transaction: all of it lands, or none of it."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO items VALUES (?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET doc=excluded.doc,"
                " content_hash=excluded.content_hash, category=excluded.category,"
                " in_stock=excluded.in_stock, price=excluded.price",
                [
                    (i.id, i.model_dump_json(), _item_hash(i), i.category, int(i.in_stock), i.price)
                    for i in items
                ],
            )
            db.executemany(
                "INSERT INTO customers VALUES (?,?,?) ON CONFLICT(id) DO UPDATE SET doc=excluded.doc,"
                " country=excluded.country",
                [(c.id, c.model_dump_json(), c.country) for c in customers],
            )
            _insert_events(db, [_event_row(e) for e in events])

    # -- lifecycle -------------------------------------------------------------------------------
    def delete_customer(self, customer_id: str) -> dict[str, int]:
        """Forget a customer: their profile, every event, contact, impression and send, overwritten in the
        file (``secure_delete``) and checkpointed out of the write-ahead log. Returns what was deleted."""
        with self.transaction() as db:
            n_events = db.execute("DELETE FROM events WHERE customer_id=?", (customer_id,)).rowcount
            n_customers = db.execute("DELETE FROM customers WHERE id=?", (customer_id,)).rowcount
            n_contacts = db.execute("DELETE FROM contacts WHERE customer_id=?", (customer_id,)).rowcount
            n_shown = db.execute("DELETE FROM impressions WHERE customer_id=?", (customer_id,)).rowcount
            db.execute("DELETE FROM sends WHERE customer_id=?", (customer_id,))
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
        """Copy the write-ahead log into the database file and empty it. False when a reader (another
        process) kept it from finishing; the next checkpoint finishes it."""
        with self._lock:
            busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        return not busy

    def counts(self) -> dict[str, int]:
        return {t: self._query(f"SELECT COUNT(*) FROM {t}")[0][0] for t in ("items", "customers", "events")}

    def get_meta(self, key: str) -> Any:
        rows = self._query("SELECT value FROM meta WHERE key=?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def changes(self) -> dict[str, int]:
        """Running totals of what changed the purchase data: purchases added, customers forgotten.

        A model fitted on the store keeps the totals it saw; the difference tells how stale it is (and
        whether it still holds a forgotten customer's share of its item-level aggregates)."""
        return {kind: int(self.get_meta(_CHANGES + kind) or 0) for kind in ("purchases", "forgotten")}

    def set_meta(self, key: str, value: Any) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (key, json.dumps(value)))

    def require_data(self) -> None:
        if self.counts()["items"] == 0:
            raise DataError("the store is empty", hint="run `tailor import` (or `tailor demo`) first")
