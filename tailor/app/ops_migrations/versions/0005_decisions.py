"""The decision log: for every job item Tailor decided, what it chose among what, with which probability,
under which policy and model. Append-only; a customer's rows go when they are forgotten.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("decided_at", sa.Text, nullable=False),
        sa.Column("job_id", sa.Text, nullable=False),
        sa.Column("customer_id", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("propensity", sa.Float, nullable=False),
        sa.Column("policy", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("decisions_job", "decisions", ["job_id"])
    op.create_index("decisions_customer", "decisions", ["customer_id"])


def downgrade() -> None:
    op.drop_table("decisions")
