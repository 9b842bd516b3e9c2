# syntax=docker/dockerfile:1.7
# Chinese TTS (SAmBERT + HiFi-GAN) on Ray Serve. One image for both modes:
#   standalone:  docker run -p 8000:8000 -v /srv/models/voice:/models/current:ro IMAGE
#                (serves the whole pipeline on one node from serve_app/config/local.yaml, the `make run` config)
#   KubeRay:     the Helm chart (helm/tts) uses it for head and worker pods; KubeRay supplies the command.
#
# Dependencies come from the SAME hash-pinned lock CI installs (requirements.lock, `make install`): its runtime
# subset (scripts/image/runtime_lock.py), with --require-hashes and --no-deps: nothing is resolved at build
# time, so no unpinned/CUDA torch can get in.
# The lock pins torch==2.13.0+cpu, which lives on PyTorch's CPU wheel index: TORCH_INDEX_URL points pip at
# it (override with a mirror; a --find-links directory works through PIP_FIND_LINKS).
#
# Model: mount it at /models/current (default TTS_MODEL_DIR), or bake it in at build time with a named build
# context:  docker build --build-context model=/path/to/model_dir --build-arg TTS_MODEL_DIR=/opt/models/baked .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Replaced by `--build-context model=DIR`; empty by default (nothing baked).
FROM scratch AS model

FROM ${PYTHON_IMAGE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
# Compilers only here, for the few sdists in the lock (e.g. jieba); the final stage has none.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /build
COPY requirements.lock scripts/image/runtime_lock.py ./
# Install the runtime subset of the CI lock (what requirements.txt pulls in, per pip-compile's `# via`; same
# pins and hashes, no test/lint tools or their dependencies), check that every package has its dependencies,
# and refuse anything but a CPU torch. An empty TORCH_INDEX_URL means "no extra index" (wheel via find-links).
RUN python runtime_lock.py requirements.lock > runtime.lock \
    && pip install --no-deps --require-hashes ${TORCH_INDEX_URL:+--extra-index-url "${TORCH_INDEX_URL}"} \
        -r runtime.lock \
    && pip check \
    && python -c "import torch; v = torch.__version__; assert v.endswith('+cpu') and torch.version.cuda is None, v" \
    && ! pip list --format=freeze | grep -i '^nvidia-'

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="sambert-serve" \
      org.opencontainers.image.description="Chinese TTS (SAmBERT + HiFi-GAN) on Ray Serve, CPU"
# wget + bash for KubeRay's readiness probes and the HEALTHCHECK; tini as PID 1. (No libsndfile1: the
# soundfile wheel bundles its own libsndfile.) KubeRay starts Ray with `bash -lc`, whose /etc/profile resets
# PATH: profile.d puts the venv (ray, serve, python) back.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends wget tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 10001 tts \
    && useradd --uid 10001 --gid tts --home-dir /home/tts --create-home --shell /usr/sbin/nologin tts \
    && mkdir -p /models /opt/models \
    && chown tts:tts /models \
    && echo "export PATH=/opt/venv/bin:\$PATH" > /etc/profile.d/venv.sh
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY engine/ engine/
COPY compat/ compat/
COPY deployments/ deployments/
COPY serve_app/ serve_app/
COPY --from=model / /opt/models/baked/
# Declared late: a different value (baked model) reuses every layer above.
ARG TTS_MODEL_DIR=/models/current
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/app \
    TTS_MODEL_DIR=${TTS_MODEL_DIR} \
    RAY_USAGE_STATS_ENABLED=0 \
    HOME=/home/tts
USER 10001:10001
EXPOSE 8000
# /health is the ingress liveness route; start-period covers Ray start + model load.
HEALTHCHECK --interval=30s --timeout=10s --start-period=180s --retries=3 \
    CMD ["wget", "-q", "-T", "8", "-O", "/dev/null", "http://127.0.0.1:8000/health"]
ENTRYPOINT ["tini", "--"]
# Standalone mode: check the dependency stack and the model first (fail fast with a clear report), then
# serve the local Serve config on this one node.
# Like `make run`: Ray token auth off (single node; only the Serve port 8000 is published).
CMD ["sh", "-c", "python -m compat doctor && RAY_AUTH_MODE=disabled exec serve run serve_app/config/local.yaml"]
