"""The Qdrant deployments the vector-store suite runs against.

``embedded`` (qdrant-client local mode in a temp folder) always. ``server`` when a Qdrant server binary is on
this machine: ``$TAILOR_QDRANT_BIN`` or ``qdrant`` on PATH. No package registry reachable here ships one
(PyPI, Debian and npm have clients only), so on a stock machine the suite runs on the embedded backend alone.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.waiting import free_port

__all__ = ["BACKENDS", "free_port", "qdrant_binary", "qdrant_server"]


def qdrant_binary() -> str | None:
    explicit = os.environ.get("TAILOR_QDRANT_BIN")
    if explicit:
        if not Path(explicit).is_file():
            raise RuntimeError(f"TAILOR_QDRANT_BIN={explicit!r} is not a file")
        return explicit
    return shutil.which("qdrant")


# "server" is always listed, so a machine without the binary shows the suite's remote half as skipped
# (with the reason) in the test report instead of dropping it without a word.
BACKENDS = [
    "embedded",
    pytest.param(
        "server",
        marks=pytest.mark.skipif(
            qdrant_binary() is None,
            reason="no Qdrant server binary here: set TAILOR_QDRANT_BIN or put `qdrant` on PATH",
        ),
    ),
]


def qdrant_server(binary: str, workdir: Path) -> Iterator[str]:
    """Run a Qdrant server on 127.0.0.1 (free ports, storage under ``workdir``); yields its URL."""
    http_port, grpc_port = free_port(), free_port()
    env = dict(
        os.environ,
        QDRANT__SERVICE__HOST="127.0.0.1",
        QDRANT__SERVICE__HTTP_PORT=str(http_port),
        QDRANT__SERVICE__GRPC_PORT=str(grpc_port),
        QDRANT__STORAGE__STORAGE_PATH=str(workdir / "storage"),
        QDRANT__STORAGE__SNAPSHOTS_PATH=str(workdir / "snapshots"),
        QDRANT__TELEMETRY_DISABLED="true",
    )
    log = (workdir / "qdrant.log").open("wb")
    proc = subprocess.Popen([binary], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"qdrant exited with {proc.returncode}; see {workdir / 'qdrant.log'}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"qdrant did not get ready in 60 s; see {workdir / 'qdrant.log'}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
