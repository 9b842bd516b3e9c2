# One entry point per job. Everything runs inside .venv (created by `make install`).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
MODEL_DIR ?= $(TTS_MODEL_DIR)
PYTEST_FLAGS ?=

.PHONY: install lock lock-upgrade run system-deps test test-full test-slow bench bench-engine bench-frontend bench-serve lint doctor clean \
	loadtest loadtest-spike soak bench-compare autoscale-demo helm-lint helm-render tools security-scan failover-test \
	reliability soak-rss image image-test

$(PY):
	python3.11 -m venv $(VENV)

# Install exactly the lock (hash-checked, no resolution, so no surprise CUDA torch); `make lock` regenerates it.
# helm-sdkpy's wheel claims Python >=3.12 but works on 3.11: it has its own small lock installed without deps.
LOCK := requirements.lock
NODEPS_LOCK := requirements-nodeps.lock
PIP_INSTALL_FLAGS ?=
PIP_COMPILE := $(PY) -m piptools compile -q --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links

install: $(PY)
	$(PIP) install -q --no-deps --require-hashes $(PIP_INSTALL_FLAGS) -r $(LOCK)
	$(PIP) install -q --no-deps --ignore-requires-python --require-hashes $(PIP_INSTALL_FLAGS) -r $(NODEPS_LOCK)
	$(PIP) check

lock: $(PY)
	$(PIP_COMPILE) -o $(LOCK) requirements.txt requirements-dev.txt
	$(PY) -m compat.lock nodeps requirements-nodeps.txt -o $(NODEPS_LOCK)
	$(PY) -m compat.lock check

lock-upgrade: $(PY)
	$(PIP_COMPILE) --upgrade -o $(LOCK) requirements.txt requirements-dev.txt
	$(PY) -m compat.lock nodeps requirements-nodeps.txt -o $(NODEPS_LOCK)
	$(PY) -m compat.lock check

doctor: $(PY)
	$(PY) -m compat doctor $(if $(MODEL_DIR),--model-dir $(MODEL_DIR))

# Debian packages the tests need (nginx, redis, alsa-utils, chromium): installed when root/sudo, else named.
system-deps:
	@tools/system-deps

test: $(PY) system-deps
	$(PY) -m pytest -m "not slow" $(PYTEST_FLAGS)

test-full: $(PY) system-deps
	$(PY) -m pytest $(PYTEST_FLAGS)

# Only the slow drills (replica kills, drain, soak, failover, WebUI in Chromium): CI runs them after `make test`.
# The multi-node drills (marker `cluster`) run in `make test-full` and `make reliability-cluster`.
test-slow: $(PY) system-deps
	$(PY) -m pytest -m "slow and not cluster" $(PYTEST_FLAGS)

lint: $(PY)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: bench-engine bench-frontend

# FLOPs per audio second per stage (from the models' layer shapes), measured fp32/bf16 peaks, achieved GFLOPS.
.PHONY: bench-roofline
bench-roofline: $(PY)
	$(PY) -m benchmarks.bench_roofline

bench-engine: $(PY)
	$(PY) -m benchmarks.bench_engine

bench-frontend: $(PY)
	$(PY) -m benchmarks.bench_frontend $(if $(CPP_TEST),--cpp-test $(CPP_TEST))

# bf16 vocoder vs fp32 on real weights and real speech: LSD <= 0.2 dB and |dDNSMOS| <= 0.02 per clip (exit 1 on
# FAIL), then fp32/bf16 speed on the universal and the released architectures.
.PHONY: quality-gate
quality-gate: $(PY) system-deps
	$(PY) -m benchmarks.quality_gate

# Served pipeline (full-size random model unless MODEL_DIR/TTS_MODEL_DIR): RTF, streamed TTFA, 1/4/8/16 clients.
bench-serve: $(PY)
	RAY_AUTH_MODE=disabled $(PY) -m benchmarks.bench_serve $(if $(MODEL_DIR),--model-dir $(MODEL_DIR))

# Where a streamed request's first audio goes at 8 concurrent streaming clients (per step: units, acoustic header,
# first mel chunk, first vocoder chunk). BENCH_FIRST_AUDIO_FLAGS: --clients N --duration S.
.PHONY: bench-first-audio
bench-first-audio: $(PY)
	RAY_AUTH_MODE=disabled $(PY) -m benchmarks.first_audio $(if $(MODEL_DIR),--model-dir $(MODEL_DIR)) $(BENCH_FIRST_AUDIO_FLAGS)

# Local single-node Ray + Serve with serve_app/config/local.yaml on :8000. MODEL_DIR=/path or TTS_MODEL_DIR;
# without one a full-size RANDOM voice is generated (models/_generated, git-ignored) and the audio is noise.
# A Ray head node with only what serving needs (no driver, monitors or dashboard head; serve_app/run.py), the
# replicas' logs on the console, Ctrl-C drains them; DASHBOARD=1 adds the dashboard (:8265, `serve status`).
run: $(PY)
	RAY_AUTH_MODE=disabled TTS_MODEL_DIR=$(MODEL_DIR) PYTHONPATH=$(CURDIR) \
		$(PY) -m serve_app.run serve_app/config/local.yaml $(if $(DASHBOARD),--dashboard)

# Memory per process of the `make run` stack (Ray daemons, Serve actors, one replica per stage): RSS, PSS, USS,
# torch's share and totals (docs/performance.md "Memory"). BENCH_MEMORY_FLAGS: --replicas 0 (config sizes), --dashboard.
.PHONY: bench-memory
bench-memory: $(PY)
	RAY_AUTH_MODE=disabled $(PY) -m benchmarks.bench_memory $(if $(MODEL_DIR),--model-dir $(MODEL_DIR)) $(BENCH_MEMORY_FLAGS)

# Load tests (locust) against a running service (`make run`); reports in loadtests/reports/ (git-ignored).
LOADTEST_HOST ?= http://127.0.0.1:8000
LOADTEST_USERS ?= 4
# During a 5x spike on a 2-core box most attempts are refused (503 + Retry-After, clients retry after 1 s):
# the spike gates admitted requests' latency, quick refusals and failures, not the refusal count.
SPIKE_SHED_RATIO ?= 0.95
LOCUST := $(PY) -m locust -f loadtests/locustfile.py --headless -H $(LOADTEST_HOST) --only-summary

loadtest: $(PY)
	$(LOCUST) --shape steady -u $(LOADTEST_USERS) -r 2 -t 60s \
		--csv loadtests/reports/steady --html loadtests/reports/steady.html

loadtest-spike: $(PY)
	$(LOCUST) --shape spike -u $(LOADTEST_USERS) -r 2 --slo-shed-ratio $(SPIKE_SHED_RATIO) \
		--csv loadtests/reports/spike --html loadtests/reports/spike.html

soak: $(PY)
	$(LOCUST) --shape soak -u $(LOADTEST_USERS) -r 1 -t 30m \
		--csv loadtests/reports/soak --html loadtests/reports/soak.html

bench-compare: $(PY)
	$(PY) -m benchmarks.compare_seed

autoscale-demo: $(PY)
	$(PY) -m benchmarks.autoscale_demo

# Reliability table (overload, replica kills, graceful drain, soak) on a private local Ray with the full-size
# random model (MODEL_DIR to override); soak-rss: 30 min steady load, fails on any error or replica RSS > +5 %.
reliability: $(PY)
	RAY_AUTH_MODE=disabled $(PY) -m benchmarks.reliability $(if $(MODEL_DIR),--model-dir $(MODEL_DIR))

soak-rss: $(PY)
	RAY_AUTH_MODE=disabled $(PY) -m benchmarks.reliability --soak-minutes 30 $(if $(MODEL_DIR),--model-dir $(MODEL_DIR))

clean:
	rm -rf .pytest_cache .ruff_cache build models/_generated

# Multi-node drills on loopback (tiny model; settings from the rendered chart, see benchmarks/cluster_settings.py):
# SIGKILL a worker node under load, GCS outage >= 20 s with a real redis-server, spike -> fake-provider nodes
# 1 -> 3 -> 1. Prints the table; plot in benchmarks/results/reliability-cluster-autoscale.png. Never `ray start`.
.PHONY: reliability-cluster
reliability-cluster: $(PY)
	RAY_AUTH_MODE=disabled $(PY) -m benchmarks.reliability_cluster $(if $(MODEL_DIR),--model-dir $(MODEL_DIR))

# Helm chart (helm/tts) with the real Helm v4 engine from the helm-sdkpy wheel, offline (see helm/README.md).
HELM_OUT ?= build/helm
helm-lint: $(PY)
	$(PY) -m tests.k8s.render lint

helm-render: $(PY)
	$(PY) -m tests.k8s.render render --out $(HELM_OUT)

# checkov lives in its own venv: its pins (packaging, networkx, ...) conflict with the app's.
TOOLS_VENV ?= .venv-tools
$(TOOLS_VENV)/bin/checkov: requirements-tools.lock
	python3.11 -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/pip install -q --no-deps --require-hashes -r requirements-tools.lock
	touch $@

tools: $(TOOLS_VENV)/bin/checkov

security-scan: helm-render tools
	$(TOOLS_VENV)/bin/checkov -d $(HELM_OUT) --config-file helm/checkov.yaml

# Loopback failover drill: two Ray clusters behind the chart's nginx gateway; kill, fail over, fail back.
failover-test: $(PY)
	$(PY) -m tests.k8s.failover

# Container image without a Docker daemon: buildah builds the real Dockerfile (making a stand-in base where no
# registry answers), podman runs it (scripts/image/imagectl.py, README "Container image").
IMAGE ?= localhost/sambert-serve:dev
image: $(PY)
	$(PY) -m scripts.image.imagectl build --tag $(IMAGE)

image-test: $(PY)
	TTS_IMAGE=$(IMAGE) TTS_IMAGE_REQUIRED=1 $(PY) -m pytest -m slow -s -p no:cacheprovider tests/test_image_run.py
