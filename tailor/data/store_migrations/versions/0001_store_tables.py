"""The customer store's tables as the releases before migrations wrote them: catalog, customers, events,
contacts, impressions, sends and the store's meta.

An SQLite file those releases wrote already has them: it is adopted as it is, and only what is missing (a
table or an index a release before added) is made.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

# Ids and ISO timestamps sort as SQLite sorts them, byte by byte: a PostgreSQL database's own collation
# (a locale's) would order customer ids, and the stamps of two zones, differently on the two engines.
_KEY = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")
# Prices and sums as 8-byte floats on both engines (PostgreSQL's REAL is 4 bytes).
_REAL = sa.Float(precision=53)


def upgrade() -> None:
    bind = op.get_bind()
    # An SQLite file of the releases before migrations already has these tables: they are adopted. On
    # PostgreSQL a table of the same name is someone else's, and creating ours fails loudly.
    have = set(sa.inspect(bind).get_table_names()) if bind.dialect.name == "sqlite" else set()
    text, integer = sa.Text, sa.Integer
    tables = {
        "items": (
            sa.Column("id", _KEY, primary_key=True),
            sa.Column("doc", text, nullable=False),
            sa.Column("content_hash", text, nullable=False),
            sa.Column("category", text, nullable=False),
            sa.Column("in_stock", integer, nullable=False),
            sa.Column("price", _REAL, nullable=False),
        ),
        "customers": (
            sa.Column("id", _KEY, primary_key=True),
            sa.Column("doc", text, nullable=False),
            sa.Column("country", text, nullable=False),
        ),
        "events": (
            sa.Column("id", _KEY, primary_key=True),
            sa.Column("customer_id", _KEY, nullable=False),
            sa.Column("kind", _KEY, nullable=False),
            sa.Column("item_id", _KEY),
            sa.Column("quantity", integer),
            sa.Column("value", _REAL),
            sa.Column("text", text),
            sa.Column("ts", _KEY, nullable=False),
            sa.Column("order_id", _KEY),
        ),
        "meta": (sa.Column("key", _KEY, primary_key=True), sa.Column("value", text, nullable=False)),
        "contacts": (
            sa.Column("customer_id", _KEY, nullable=False),
            sa.Column("ts", _KEY, nullable=False),
            sa.Column("channel", _KEY, nullable=False),
        ),
        "impressions": (
            sa.Column("customer_id", _KEY, nullable=False),
            sa.Column("item_id", _KEY, nullable=False),
            sa.Column("ts", _KEY, nullable=False),
            sa.Column("channel", _KEY, nullable=False),
        ),
        "sends": (
            sa.Column("id", _KEY, primary_key=True),
            sa.Column("customer_id", _KEY, nullable=False),
            sa.Column("ts", _KEY, nullable=False),
            sa.Column("channel", _KEY, nullable=False),
        ),
    }
    indexes = {
        "events": (("events_customer", ["customer_id", "ts"]), ("events_kind_ts", ["kind", "ts"])),
        "contacts": (("contacts_customer", ["customer_id", "ts"]),),
        "impressions": (("impressions_customer", ["customer_id", "ts"]),),
        "sends": (("sends_customer", ["customer_id"]),),
    }
    for name, columns in tables.items():
        if name not in have:
            op.create_table(name, *columns)
        for index, on in indexes.get(name, ()):
            op.create_index(index, name, on, if_not_exists=True)
