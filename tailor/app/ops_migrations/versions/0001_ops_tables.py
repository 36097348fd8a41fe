"""The ops tables as the first release wrote them: keys, idempotency, jobs and their items, audit, feedback.

An SQLite file those releases wrote (before migrations) already has them: only what is missing is made.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def upgrade() -> None:
    bind = op.get_bind()
    # An SQLite file of the releases before migrations already has these tables: they are adopted. On
    # PostgreSQL a table of the same name is someone else's, and creating ours fails loudly.
    have = set(sa.inspect(bind).get_table_names()) if bind.dialect.name == "sqlite" else set()
    text, real, integer = sa.Text, sa.Float, sa.Integer
    tables = {
        "api_keys": (
            sa.Column("id", text, primary_key=True),
            sa.Column("salt", text, nullable=False),
            sa.Column("hash", text, nullable=False),
            sa.Column("role", text, nullable=False),
            sa.Column("name", text, nullable=False),
            sa.Column("created", real, nullable=False),
            sa.Column("revoked", integer, nullable=False, server_default="0"),
        ),
        "idempotency": (
            sa.Column("key", text, primary_key=True),
            sa.Column("scope", text, primary_key=True),
            sa.Column("body_hash", text, nullable=False),
            sa.Column("job_id", text, nullable=False),
            sa.Column("created", real, nullable=False),
        ),
        "jobs": (
            sa.Column("id", text, primary_key=True),
            sa.Column("kind", text, nullable=False),
            sa.Column("status", text, nullable=False),
            sa.Column("spec", text, nullable=False),
            sa.Column("callback_url", text),
            sa.Column("callback_status", text),
            sa.Column("total", integer, nullable=False),
            sa.Column("created", real, nullable=False),
            sa.Column("updated", real, nullable=False),
            sa.Column("key_id", text),
        ),
        "job_items": (
            sa.Column("job_id", text, primary_key=True),
            sa.Column("customer_id", text, primary_key=True),
            sa.Column("seq", integer, nullable=False),
            sa.Column("status", text, nullable=False),
            sa.Column("reason", text),
            sa.Column("result", text),
            sa.Column("attempts", integer, nullable=False, server_default="0"),
            sa.Column("next_attempt", real, nullable=False, server_default="0"),
            sa.Column("updated", real, nullable=False),
        ),
        "audit": (
            sa.Column("id", integer, primary_key=True, autoincrement=True),
            sa.Column("ts", real, nullable=False),
            sa.Column("key_id", text),
            sa.Column("action", text, nullable=False),
            sa.Column("customer_id", text),
            sa.Column("detail", text, nullable=False),
        ),
        "feedback": (
            sa.Column("id", integer, primary_key=True, autoincrement=True),
            sa.Column("ts", real, nullable=False),
            sa.Column("customer_id", text, nullable=False),
            sa.Column("item_id", text),
            sa.Column("job_id", text),
            sa.Column("signal", text, nullable=False),
            sa.Column("note", text),
        ),
        "ops_meta": (sa.Column("key", text, primary_key=True), sa.Column("value", text, nullable=False)),
        "forgotten": (sa.Column("tombstone", text, primary_key=True), sa.Column("ts", real, nullable=False)),
    }
    indexes = {
        "jobs": (("jobs_status", ["status"]),),
        "job_items": (
            ("job_items_pending", ["status", "next_attempt"]),
            ("job_items_next", ["job_id", "status", "seq"]),
        ),
        "audit": (("audit_customer", ["customer_id"]),),
    }
    for name, columns in tables.items():
        if name in have:
            continue
        op.create_table(name, *columns)
        for index, on in indexes.get(name, ()):
            op.create_index(index, name, on)
