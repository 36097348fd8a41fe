"""Email events name the send they belong to: ``events.send_id`` (an email's open or click, tied to the send
that Tailor's job result names and its links carry), indexed for a campaign's attribution.

Events stored before keep their rows and their ids, with no send.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

# As 0001's keys: byte order on both engines.
_KEY = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.add_column("events", sa.Column("send_id", _KEY))
    # Partial: nearly every event has no send, and an index of them would only slow the writes.
    where = sa.text("send_id IS NOT NULL")
    op.create_index("events_send", "events", ["send_id"], postgresql_where=where, sqlite_where=where)
