"""Alembic's entry for the embedding cache's migrations (``tailor.data.db.run_migrations``)."""

from __future__ import annotations

from tailor.data.db import run_migrations

run_migrations()
