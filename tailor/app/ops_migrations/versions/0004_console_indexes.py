"""The console's lookups: one key's jobs (its campaigns page, its totals) and a job's approvals in the audit
trail, each from an index rather than a scan of the table.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    op.create_index("jobs_key", "jobs", ["key_id", "created"])
    op.create_index("audit_action", "audit", ["action"])


def downgrade() -> None:
    op.drop_index("audit_action", "audit")
    op.drop_index("jobs_key", "jobs")
