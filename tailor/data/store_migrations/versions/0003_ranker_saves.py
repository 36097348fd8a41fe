"""The fitted ranker's last save, published in the store's database (``Store.publish_ranker``), so that
replicas sharing the database but no volume load the ranker another one fitted or purged.

One save at a time: publishing a save removes the one before, in the same transaction (a forgotten
customer's rows must not outlive the save that purged them). Its files are kept in chunks, so no one value
approaches a database's limit on a field, and a reader streams them.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"

_KEY = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "ranker_saves",
        sa.Column("save_id", _KEY, primary_key=True),
        sa.Column("saved_at", sa.Text, nullable=False),
        # {file name: {"bytes": n, "sha256": hex}}: what a reader checks the chunks it read against.
        sa.Column("files", sa.Text, nullable=False),
    )
    op.create_table(
        "ranker_chunks",
        sa.Column("save_id", _KEY, primary_key=True),
        sa.Column("name", _KEY, primary_key=True),
        sa.Column("part", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
