"""Job items are claimed with a lease: several workers, in several processes or on several machines, split
the work, and a crashed worker's items go to another once its lease has run out.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("job_items") as batch:
        batch.add_column(sa.Column("worker", sa.Text))
        batch.add_column(sa.Column("lease_until", sa.Float))
    # Every claim asks which customers other workers hold: the leased items, few, from their own index.
    where = sa.text("worker IS NOT NULL")
    op.create_index(
        "job_items_leased", "job_items", ["lease_until"], sqlite_where=where, postgresql_where=where
    )
