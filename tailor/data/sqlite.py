"""One SQLite file behind one serialized connection: the customer store and the service's ops database.

Both are written by several threads (request handlers, the job runner, a refit) through one connection in
autocommit mode, so every multi-row change is an explicit ``BEGIN IMMEDIATE`` transaction and a crash leaves
the old state or the new one. Deleted rows are overwritten with zeros (``secure_delete``): a forgotten
customer's rows must not survive in free pages of the file.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from tailor.core.errors import DataError

__all__ = ["Row", "SqliteFile"]

# A row as sqlite3 returns it: each query's columns have their own types, unpacked where it is read.
Row = tuple[Any, ...]


class SqliteFile:
    """Thread-safe access to one SQLite file (one connection, serialized; every call is short)."""

    def __init__(
        self,
        path: Path | str,
        schema: str,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout_s: float = 5.0,
    ) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                str(path), check_same_thread=False, isolation_level=None, timeout=busy_timeout_s
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA secure_delete=ON")
            self._db.executescript(schema)
        except sqlite3.Error as exc:
            raise DataError(f"cannot open the database {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()
