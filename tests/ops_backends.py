"""The ops database's two engines, for one suite run against each (as qdrant-client runs its tests against
its local and remote backends): SQLite in a file, and PostgreSQL in a throwaway cluster
(``tests/postgres.py``). Tests take the ``ops_target`` fixture (``tests/conftest.py``): a file path or a
fresh database's URL."""

from __future__ import annotations

from sqlalchemy import text

from tailor.app.ops import Ops

__all__ = ["OPS_ENGINES", "time_passes"]

OPS_ENGINES = ("sqlite", "postgresql")


def time_passes(ops: Ops) -> None:
    """Every deferred item is due now, as if its backoff had run out."""
    with ops.transaction() as db:
        db.execute(text("UPDATE job_items SET next_attempt=0"))
