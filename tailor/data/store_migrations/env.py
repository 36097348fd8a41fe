"""Alembic's entry for the customer store's migrations: run by ``tailor.data.db.migrate`` on a connection it
opened (and locked), never from a config file."""

from __future__ import annotations

from alembic import context

config = context.config
context.configure(
    connection=config.attributes["connection"],
    version_table=config.attributes["version_table"],
    # SQLite alters a table by copying it: Alembic's batch mode does that where a plain ALTER cannot.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
