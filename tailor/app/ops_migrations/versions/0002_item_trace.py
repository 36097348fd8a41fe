"""Each job item keeps the agent's audit trace and the send still to be recorded in the contact log.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    have = {c["name"] for c in inspector.get_columns("job_items")}
    with op.batch_alter_table("job_items") as batch:
        for column in ("audit", "contact_at"):
            if column not in have:
                batch.add_column(sa.Column(column, sa.Text))
    # The runner asks for unrecorded contacts after every item: without it, a scan of every item ever run.
    if "job_items_contact" not in {i["name"] for i in inspector.get_indexes("job_items")}:
        where = sa.text("contact_at IS NOT NULL")
        op.create_index(
            "job_items_contact", "job_items", ["updated"], sqlite_where=where, postgresql_where=where
        )
