# One entry point per job. Everything runs inside .venv (created by `make install`).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
MODEL_DIR ?= $(TTS_MODEL_DIR)
PYTEST_FLAGS ?=

.PHONY: install run test test-full bench bench-engine bench-frontend lint doctor clean

$(PY):
	python3.11 -m venv $(VENV)

install: $(PY)
	$(PIP) install -q -r requirements.txt -r requirements-dev.txt
	$(PIP) install -q --no-deps --ignore-requires-python helm-sdkpy

test: $(PY)
	$(PY) -m pytest -m "not slow" $(PYTEST_FLAGS)

test-full: $(PY)
	$(PY) -m pytest $(PYTEST_FLAGS)

lint: $(PY)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: bench-engine bench-frontend

bench-engine: $(PY)
	$(PY) -m benchmarks.bench_engine

bench-frontend: $(PY)
	$(PY) -m benchmarks.bench_frontend

clean:
	rm -rf .pytest_cache .ruff_cache build models/_generated
