"""A job's due items by when they are due: a campaign sent at each customer's hour holds most of its items
scheduled for later, and a claim walking them in order would step over every one of them (a pass over a
campaign of N customers, N squared rows read); by this index it reads only the due ones.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_index("job_items_due", "job_items", ["job_id", "status", "next_attempt", "seq"])


def downgrade() -> None:
    op.drop_index("job_items_due", "job_items")
