"""The application graph, built in one place: ``serve run serve_app/config/local.yaml`` or
``serve.run(build_app({...}))``. Import path ``serve_app.graph:build_app``, application name ``tts``."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ray.serve import Application

from deployments.acoustic import SambertAcoustic
from deployments.text_frontend import TextFrontend
from deployments.vocoder import HifiGanVocoder
from serve_app.ingress import IngressSettings, TTSIngress

__all__ = ["APP_NAME", "build_app", "ensure_model_dir"]

APP_NAME = "tts"
log = logging.getLogger("tts.graph")
REPO_ROOT = Path(__file__).resolve().parent.parent
GENERATED_DIR = REPO_ROOT / "models" / "_generated"  # git-ignored (/models/)

_NOISE_BANNER = """
################################################################################
#  NO MODEL GIVEN - serving a RANDOMLY INITIALISED full-size voice.            #
#  Every request will return NOISE, not speech.                                #
#  To serve real speech, point TTS_MODEL_DIR (or args.model_dir in the Serve   #
#  config, or `make run MODEL_DIR=...`) at a released model directory, e.g.    #
#  the ModelScope snapshot of damo/speech_sambert-hifigan_tts_zhitian_emo_zh-cn_16k.
################################################################################
"""


def ensure_model_dir(model_dir: str | None, size: str = "full") -> str:
    """The model directory to serve: the argument, else ``$TTS_MODEL_DIR``, else a generated random voice."""
    chosen = model_dir or os.environ.get("TTS_MODEL_DIR")
    if chosen:
        from engine.modeldir import resolve_model_dir

        return str(resolve_model_dir(chosen))
    target = GENERATED_DIR / size
    if not (target / ".complete").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "engine.testing.make_model_dir", str(target), "--size", size, "--force"],
            check=True,
            cwd=REPO_ROOT,
        )
        (target / ".complete").write_text("generated random weights\n")
    print(_NOISE_BANNER, file=sys.stderr, flush=True)
    log.warning("serving random weights from %s: audio will be noise", target)
    return str(target)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Bind TextFrontend → SambertAcoustic → HifiGanVocoder behind TTSIngress.

    ``args``: ``model_dir`` (null → ``$TTS_MODEL_DIR`` → generated random voice), ``random_size``
    (``full``/``tiny``), ``threads`` (per stage, e.g. ``{acoustic: 1}``; default = the replica's num_cpus),
    ``ingress`` (:class:`IngressSettings` fields: ``limits``, cache bounds, ``max_inflight``, ``stream``...),
    ``options`` (``{deployment: Deployment.options kwargs}``, for Python-driven runs; YAML wins),
    ``vocoder_precision`` (``fp32``, default and faithful; ``bf16``: opt-in, ~1.7x faster vocoder on CPUs with
    AVX-512 BF16, max waveform error ~1e-2).
    """
    args = dict(args or {})
    unknown = set(args) - {"model_dir", "random_size", "threads", "ingress", "options", "vocoder_precision"}
    if unknown:
        raise ValueError(f"unknown build_app args: {sorted(unknown)}")
    precision = args.get("vocoder_precision") or "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"vocoder_precision must be 'fp32' or 'bf16', got {precision!r}")
    model_dir = ensure_model_dir(args.get("model_dir"), args.get("random_size") or "full")
    threads = dict(args.get("threads") or {})
    settings = args.get("ingress") or {}
    IngressSettings.from_dict(settings)  # fail fast on typos, before any replica starts
    options = dict(args.get("options") or {})
    stages = {d.name: d for d in (TextFrontend, SambertAcoustic, HifiGanVocoder, TTSIngress)}
    if set(options) - set(stages):
        raise ValueError(f"options for unknown deployments: {sorted(set(options) - set(stages))}")
    dep = {name: d.options(**options[name]) if name in options else d for name, d in stages.items()}
    frontend = dep["TextFrontend"].bind(model_dir, threads.get("frontend"))
    acoustic = dep["SambertAcoustic"].bind(model_dir, threads.get("acoustic"))
    vocoder = dep["HifiGanVocoder"].bind(model_dir, threads.get("vocoder"), precision)
    return dep["TTSIngress"].bind(frontend, acoustic, vocoder, model_dir, settings, precision)
