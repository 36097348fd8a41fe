"""A throwaway PostgreSQL cluster for the tests: ``initdb`` and ``pg_ctl`` from the Debian package, under the
build folder, on a free port of 127.0.0.1 with its socket in its own folder, stopped at the end even when the
tests fail, and removed.

PostgreSQL will not run as root. Where the tests do (a container's CI), the cluster is made and run as the
package's own ``postgres`` user, which owns its folder.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.waiting import free_port

__all__ = ["PostgresCluster", "pg_bindir", "postgres_cluster"]

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build" / "postgres"


def pg_bindir() -> Path:
    """The folder of ``initdb`` and ``pg_ctl``: the newest Debian cluster version, or the PATH."""
    versions = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").is_file()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if versions:
        return versions[-1]
    found = shutil.which("initdb")
    if found is None:
        raise FileNotFoundError("PostgreSQL's initdb is not installed (Debian: apt install postgresql)")
    return Path(found).resolve().parent


@dataclass(frozen=True)
class PostgresCluster:
    url: str  # postgresql+psycopg://tailor@127.0.0.1:PORT/postgres
    port: int
    root: Path

    def database(self, name: str) -> str:
        """The URL of a new, empty database ``name`` in this cluster."""
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={self.port} user=tailor dbname=postgres", autocommit=True
        ) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://tailor@127.0.0.1:{self.port}/{name}"


def _traversable(path: Path, uid: int) -> bool:
    """Whether user ``uid`` can reach ``path``: every folder above it open to others, or its own."""
    for folder in [path, *path.parents]:
        st = folder.stat()
        if not (st.st_mode & 0o001 or st.st_uid == uid):
            return False
    return True


@contextmanager
def postgres_cluster(under: Path = BUILD) -> Iterator[PostgresCluster]:
    bindir = pg_bindir()
    under.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0 and not _traversable(under, pwd.getpwnam("postgres").pw_uid):
        # A checkout in root's home: the postgres user cannot reach the build folder, so the cluster goes
        # to the system's temporary folder instead (removed all the same).
        under = Path(tempfile.gettempdir())
    root = Path(tempfile.mkdtemp(prefix="pg-", dir=under))
    data, log = root / "data", root / "server.log"
    as_user: list[str] = []
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=120)
        if check and done.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({done.returncode}): {done.stderr[-2000:]}{tail}"
            )
        return done

    port = free_port()
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "tailor", "-A", "trust", "-E", "UTF8",
            "--locale=C", "--no-sync")  # fmt: skip
        # No fsync: a test cluster is thrown away, and durability is PostgreSQL's own, not under test.
        options = f"-p {port} -k {root} -h 127.0.0.1 -F -c max_connections=60"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        yield PostgresCluster(f"postgresql+psycopg://tailor@127.0.0.1:{port}/postgres", port, root)
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)
