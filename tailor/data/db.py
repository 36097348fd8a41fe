"""One database, by URL, through SQLAlchemy Core: SQLite in a file (embedded, the default) or PostgreSQL
(``postgresql://…``, by psycopg 3), the same statements on both.

SQLite is written by several threads and, for the ops database, by several processes on one machine: every
transaction starts ``BEGIN IMMEDIATE``, so writers queue on the file lock (with a busy timeout) instead of
failing half way, and a crash leaves the old state or the new one. Deleted rows are overwritten with zeros
(``secure_delete``): a forgotten customer's rows must not survive in free pages of the file. PostgreSQL gives
the same guarantees by itself, to any number of processes on any number of machines.

Schemas change by versioned migrations (Alembic, ``migrate``), the same ones on both engines; a database
written before it had a version is brought up to date in place.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine, Row

from tailor.core.errors import ConfigError, DataError

__all__ = ["Database", "Dialect", "engine_url", "migrate", "process_started", "run_migrations", "worker_name"]

Dialect = Literal["sqlite", "postgresql"]


def engine_url(target: str | Path) -> str:
    """The SQLAlchemy URL of ``target``: a file path (SQLite), or a ``postgresql://`` or ``sqlite://`` URL."""
    text = str(target)
    if "://" not in text:
        return f"sqlite:///{Path(text).expanduser().resolve()}"
    scheme = text.split("://", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        return "postgresql+psycopg://" + text.split("://", 1)[1]
    if scheme in ("postgresql+psycopg", "sqlite"):
        return text
    raise ConfigError(
        f"unsupported database URL scheme {scheme!r}",
        hint="use a file path (SQLite) or postgresql://USER@HOST:PORT/DBNAME",
    )


class Database:
    """A pooled engine on one database, and its transactions."""

    def __init__(
        self,
        target: str | Path,
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        busy_timeout_s: float = 30.0,
        pool_size: int = 8,
    ) -> None:
        self.url = sa.make_url(engine_url(target))
        self.dialect: Dialect = "postgresql" if self.url.get_backend_name() == "postgresql" else "sqlite"
        self.path: Path | None = None
        self._busy_timeout_s = busy_timeout_s
        try:
            if self.dialect == "sqlite":
                self.path = Path(self.url.database or "")
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.path = self.path.resolve()
                self.engine: Engine = sa.create_engine(
                    self.url,
                    connect_args={"check_same_thread": False, "timeout": busy_timeout_s},
                    pool_size=pool_size,
                    max_overflow=pool_size,
                )
                _serialize_sqlite_writers(self.engine, synchronous, busy_timeout_s)
            else:
                self.engine = sa.create_engine(
                    self.url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
                )
            with self.engine.connect() as probe:
                probe.execution_options(tailor_read=True).execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            raise DataError(f"cannot open the database {self.where}: {_short(exc)}") from exc

    @property
    def where(self) -> str:
        """The database in words, without its password."""
        return str(self.path) if self.path is not None else self.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back when it raises.

        On SQLite, the writers of this process to one file take turns on a lock first, whichever object
        opened it: a write waits behind a long import here for the busy timeout, then fails with a
        DataError naming the file. Another process's writer waits on the file's own busy timeout."""
        if self.path is None:
            with self.engine.begin() as conn:
                yield conn
            return
        lock = _file_lock(self.path)
        if not lock.acquire(timeout=self._busy_timeout_s):
            raise DataError(
                f"the database {self.path} is busy: another writer of this process held it for"
                f" {self._busy_timeout_s:.0f} s",
                hint="try again when the import or refit that holds it is done",
            )
        try:
            with self.engine.begin() as conn:
                yield conn
        finally:
            lock.release()

    def checkpoint(self, wait_s: float = 5.0) -> bool:
        """SQLite: copy the write-ahead log into the database file and empty it, so that deleted rows
        (overwritten in the file) are gone from the log too. False when a reader kept it from finishing
        within ``wait_s`` (new writers wait as long); the next checkpoint finishes it. PostgreSQL: True,
        it keeps no such file of ours."""
        if self.dialect != "sqlite":
            return True
        # On the driver's own connection, outside any transaction: a checkpoint cannot run inside one.
        raw = self.engine.raw_connection()
        try:
            driver: Any = raw.driver_connection
            usual = int(driver.execute("PRAGMA busy_timeout").fetchone()[0])
            driver.execute(f"PRAGMA busy_timeout={int(wait_s * 1000)}")
            try:
                busy = driver.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                driver.execute(f"PRAGMA busy_timeout={usual}")
        except BaseException:
            # Not back to the pool with a short timeout: this connection is closed, a new one opened later.
            raw.invalidate()
            raise
        finally:
            raw.close()
        return busy is not None and not busy[0]

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row[Any]]:
        """A read in a transaction of its own (on SQLite a deferred one: readers do not queue)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(tailor_read=True)
            rows = list(conn.execute(sa.text(sql), dict(params or {})).all())
            conn.rollback()
            return rows


_FILE_LOCKS: dict[Path, threading.RLock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def _file_lock(path: Path) -> threading.RLock:
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(path, threading.RLock())


def _serialize_sqlite_writers(engine: Engine, synchronous: str, busy_timeout_s: float) -> None:
    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # The driver's own transaction handling is off: the "begin" hook below says how each one starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # A write takes the file's write lock at once, so two writers queue instead of deadlocking on the
        # upgrade from a read lock; a read starts deferred and never waits on a writer (WAL). A read of one
        # statement needs no transaction around it: it is its own.
        read = conn.get_execution_options().get("tailor_read")
        if read != "statement":
            conn.exec_driver_sql("BEGIN" if read else "BEGIN IMMEDIATE")


_MIGRATING = threading.Lock()


def migrate(db: Database, location: Path, version_table: str) -> None:
    """Bring ``db`` to the newest revision of the Alembic migrations in ``location``, in one transaction;
    its version is kept in ``version_table`` (two schemas may share one PostgreSQL database). Replicas that
    start together take turns: on PostgreSQL an advisory lock, on SQLite the file's write lock."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(location))
    try:
        # One migration at a time in a process: Alembic's ``context`` is a module-wide proxy, and two threads
        # migrating at once (the embedding cache opened by a warm-up thread while a store opens) tore it
        # down under each other (AttributeError: alembic.context has no 'config').
        with _MIGRATING, db.transaction() as conn:
            if db.dialect == "postgresql":
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:t))"), {"t": version_table})
            config.attributes["connection"] = conn
            config.attributes["version_table"] = version_table
            command.upgrade(config, "head")
    except sa.exc.SQLAlchemyError as exc:
        raise DataError(f"cannot migrate the database {db.where}: {_short(exc)}") from exc


def run_migrations() -> None:
    """The body of each migrations folder's ``env.py``: Alembic runs it on the connection ``migrate`` opened
    (and locked), never from a config file."""
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


def _short(exc: BaseException) -> str:
    text = " ".join(str(getattr(exc, "orig", None) or exc).split())
    return text[:300]


def worker_name() -> str:
    """This process, as a lease names it: ``host:pid:start``. The host is the machine's name and its pid
    namespace (two containers sharing a host name do not share pids), and ``start`` the process's start
    time, so a pid reused by a later process is not taken for the first."""
    return f"{_host()}:{os.getpid()}:{process_started(os.getpid())}"


def _host() -> str:
    try:
        namespace = os.readlink("/proc/self/ns/pid").removeprefix("pid:").strip("[]")
    except OSError:
        namespace = "-"
    return f"{os.uname().nodename}/{namespace}"


def process_started(pid: int) -> str:
    """When process ``pid`` of this pid namespace started (clock ticks since boot), or "" when there is no
    such process (or no /proc to ask)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # The command name, in parentheses, may hold spaces: the fields are counted after its closing one.
    return stat.rsplit(")", 1)[-1].split()[19]
