"""The embedding cache's two tables: vectors by key (sha256 of the model id and the text) and the models that
wrote them, with their dimension.

A cache file of the releases before migrations (tables ``vectors`` and ``models``) is adopted: its tables
are renamed, every vector kept. In a PostgreSQL database the tables sit beside the store's and the ops
tables, hence the prefix.

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
    have = set(sa.inspect(bind).get_table_names()) if bind.dialect.name == "sqlite" else set()
    if "vectors" in have:
        op.rename_table("vectors", "embedding_vectors")
    else:
        op.create_table(
            "embedding_vectors",
            sa.Column("key", sa.LargeBinary, primary_key=True),
            sa.Column("dim", sa.Integer),
            sa.Column("vec", sa.LargeBinary),
        )
    if "models" in have:
        op.rename_table("models", "embedding_models")
    else:
        op.create_table(
            "embedding_models",
            sa.Column("model", sa.Text, primary_key=True),
            sa.Column("dim", sa.Integer, nullable=False),
        )
