"""The application graph, built in one place: ``serve run serve_app/config/local.yaml`` or
``serve.run(build_app({...}))``. Import path ``serve_app.graph:build_app``, application name ``tts``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ray.serve import Application

from deployments.acoustic import SambertAcoustic, acoustic_batching
from deployments.text_frontend import TextFrontend
from deployments.vocoder import HifiGanVocoder
from engine.modeldir import check_vocoder_precision
from serve_app.ingress import IngressSettings, TTSIngress

__all__ = ["APP_NAME", "build_app", "ensure_model_dir"]

APP_NAME = "tts"
REPO_ROOT = Path(__file__).resolve().parent.parent
GENERATED_DIR = REPO_ROOT / "models" / "_generated"  # git-ignored (/models/)


def ensure_model_dir(model_dir: str | None, size: str = "full") -> str:
    """The model directory to serve (``engine.modeldir.resolve_model``): the argument or ``$TTS_MODEL_DIR``
    (a path or a ModelScope id), else the released voice (ModelScope cache, else download), else (only when
    the hub is unreachable) a generated random voice in ``models/_generated/<size>``, with a banner."""
    from engine.modeldir import random_weights_banner, resolve_model

    resolved = resolve_model(model_dir, random_dir=GENERATED_DIR / size, random_size=size, announce=False)
    if resolved.random_weights:
        # Serve's logger, not stderr: its log files are what `make run` prints, and `serve run` shows it too.
        logging.getLogger("ray.serve").warning(random_weights_banner(resolved))
    return str(resolved.path)


def build_app(args: dict[str, Any] | None = None) -> Application:
    """Bind TextFrontend → SambertAcoustic → HifiGanVocoder behind TTSIngress.

    ``args``: ``model_dir`` (null → ``$TTS_MODEL_DIR`` → released voice → random if offline), ``random_size``
    (``full``/``tiny``), ``threads`` (per stage, e.g. ``{acoustic: 1}``; default = the replica's num_cpus),
    ``ingress`` (:class:`IngressSettings` fields: ``limits``, cache bounds, ``max_inflight``, ``stream``...),
    ``options`` (``{deployment: Deployment.options kwargs}``, for Python-driven runs; YAML wins),
    ``vocoder_precision`` (``fp32``, default and faithful; ``bf16``: opt-in, quality-gated, for CPUs with
    AVX-512 BF16; see ``engine.hifigan.vocoder`` and ``make quality-gate``), ``acoustic``
    (``{batching: continuous|window}``: the decoder's running batch that utterances join and leave at any
    step, default; or ``@serve.batch`` windows).
    """
    args = dict(args or {})
    known = {"model_dir", "random_size", "threads", "ingress", "options", "vocoder_precision", "acoustic"}
    unknown = set(args) - known
    if unknown:
        raise ValueError(f"unknown build_app args: {sorted(unknown)}")
    precision = check_vocoder_precision(args.get("vocoder_precision") or "fp32")
    batching = acoustic_batching(args.get("acoustic"))
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
    acoustic = dep["SambertAcoustic"].bind(model_dir, threads.get("acoustic"), batching)
    vocoder = dep["HifiGanVocoder"].bind(model_dir, threads.get("vocoder"), precision)
    return dep["TTSIngress"].bind(frontend, acoustic, vocoder, model_dir, settings, precision)
