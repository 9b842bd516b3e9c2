# One entry point per job. Everything runs inside .venv (created by `make install`).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
MODEL_DIR ?= $(TTS_MODEL_DIR)
PYTEST_FLAGS ?=

.PHONY: install run test test-full bench bench-engine bench-frontend lint doctor clean \
	loadtest loadtest-spike soak bench-compare autoscale-demo

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

# Load tests (locust) against a running service (`make run`); reports in loadtests/reports/ (git-ignored).
LOADTEST_HOST ?= http://127.0.0.1:8000
LOADTEST_USERS ?= 4
LOCUST := $(PY) -m locust -f loadtests/locustfile.py --headless -H $(LOADTEST_HOST) --only-summary

loadtest: $(PY)
	$(LOCUST) --shape steady -u $(LOADTEST_USERS) -r 2 -t 60s \
		--csv loadtests/reports/steady --html loadtests/reports/steady.html

loadtest-spike: $(PY)
	$(LOCUST) --shape spike -u $(LOADTEST_USERS) -r 2 \
		--csv loadtests/reports/spike --html loadtests/reports/spike.html

soak: $(PY)
	$(LOCUST) --shape soak -u $(LOADTEST_USERS) -r 1 -t 30m \
		--csv loadtests/reports/soak --html loadtests/reports/soak.html

bench-compare: $(PY)
	$(PY) -m benchmarks.compare_seed

autoscale-demo: $(PY)
	$(PY) -m benchmarks.autoscale_demo

clean:
	rm -rf .pytest_cache .ruff_cache build models/_generated
