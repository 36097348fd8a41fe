"""Alembic's entry for the customer store's migrations (``tailor.data.db.run_migrations``)."""

from __future__ import annotations

from tailor.data.db import run_migrations

run_migrations()
