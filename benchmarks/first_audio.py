"""Where a streamed request's first audio goes under load (docs/performance.md "First audio under load").

    python -m benchmarks.first_audio [--clients 8] [--duration 25] [--warmup 10] [--model-dir DIR]

Deploys the app as ``make bench-compare`` does (serve_app/config/local.yaml, result cache off, admission
limit lifted) on a 2-CPU Ray, then runs ``clients - 1`` of its closed-loop HTTP clients streaming wav (medium
corpus sentences) and one more client in this process: the same :class:`~engine.orchestrator.Orchestrator`
the ingress runs, over the app's stage handles, with the stage calls of its first audio timestamped. As in
``make bench-compare``, the first ``--warmup`` seconds (the start burst) are not counted: only requests that
start in the ``--duration`` seconds after them.
Prints the HTTP clients' time to first audio and, for the in-process client, when each step of the first
audio was reached (ms after the request started): the frontend's units, the acoustic stream's header
(durations; prefill done), its first mel chunk, the first vocoder chunk's return (= first audio).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from benchmarks.compare_seed import deploy_pipeline, post, run_level
from compat.ports import free_port
from engine.modeldir import VOCODER_PRECISIONS, benchmark_model_dir

MARKS = ("units", "header", "first mel", "first audio")


class _MarkedStages:
    """The ingress's stages, recording when the first audio's steps happen (first call of each kind)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.marks: dict[str, float] = {}

    def _mark(self, name: str) -> None:
        self.marks.setdefault(name, time.perf_counter())

    async def units(self, request: Any) -> Any:
        out = await self.inner.units(request)
        self._mark("units")
        return out

    def acoustic_stream(self, *args: Any) -> Any:
        return _MarkedStream(self.inner.acoustic_stream(*args), self)

    async def vocode_chunk(self, chunk: Any) -> Any:  # causal voices
        out = await self.inner.vocode_chunk(chunk)
        self._mark("first audio")
        return out

    async def vocode(self, request: Any) -> Any:  # non-causal voices stream mel windows
        out = await self.inner.vocode(request)
        self._mark("first audio")
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class _MarkedStream:
    def __init__(self, gen: Any, stages: _MarkedStages) -> None:
        self._gen, self._stages = gen, stages

    async def __aiter__(self) -> AsyncIterator[Any]:
        async for item in self._gen:
            self._stages._mark("first mel" if item.mel.shape[0] else "header")
            yield item

    def cancel(self) -> None:
        self._gen.cancel()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-dir", default=None, help="default: $TTS_MODEL_DIR, else the generated full voice")
    p.add_argument("--clients", type=int, default=8, help="concurrent streaming clients (>= 1)")
    p.add_argument("--duration", type=float, default=25.0, help="seconds of load counted")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds of load before the count starts")
    p.add_argument(
        "--vocoder-precision", default=None, choices=VOCODER_PRECISIONS, help="default: the config's"
    )
    args = p.parse_args(argv)
    if args.clients < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--clients must be >= 1, --duration > 0 and --warmup >= 0")

    import ray
    from ray import serve

    from engine.messages import SynthesisRequest
    from engine.orchestrator import Orchestrator, StreamSettings
    from loadtests.corpus import load_corpus
    from serve_app.stages import ServeStages

    texts = [s.text for s in load_corpus().of("medium")]
    port = free_port()
    try:
        app = deploy_pipeline(
            benchmark_model_dir(args.model_dir, "full"), port, precision=args.vocoder_precision
        )
        ingress = app["args"]["ingress"]

        def body(text: str) -> dict[str, Any]:
            return {"text": text, "stream": True, "format": "wav"}  # TTFA: first byte past the WAV header

        for text in texts[:3]:  # warm-up
            post(http.client.HTTPConnection("127.0.0.1", port, timeout=300), "/api/tts", body(text))
        pool = ThreadPoolExecutor(1)  # the HTTP clients beside this process's own
        others = pool.submit(
            run_level, "127.0.0.1", port, "/api/tts", body, texts, "http", args.clients - 1, args.duration,
            args.warmup,
        ) if args.clients > 1 else None  # fmt: skip
        count_from = time.perf_counter() + args.warmup
        stop = count_from + args.duration
        names = ("TextFrontend", "SambertAcoustic", "HifiGanVocoder")
        stages = ServeStages(*(serve.get_deployment_handle(n, "tts") for n in names))
        settings = StreamSettings(**ingress.get("stream", {}))
        rows: list[dict[str, float]] = []

        async def own_client() -> None:
            k = 0
            while time.perf_counter() < stop:
                marked = _MarkedStages(stages)
                orchestrator = Orchestrator(marked, settings)
                request = SynthesisRequest(texts[k % len(texts)], stream=True, format="pcm")
                k += args.clients
                t0 = time.perf_counter()
                async for _ in orchestrator.stream(request, await orchestrator.units(request)):
                    pass
                if t0 >= count_from:
                    rows.append({m: (t - t0) * 1000 for m, t in marked.marks.items()})

        asyncio.run(own_client())
        loaded = others.result() if others is not None else None
        pool.shutdown()
    finally:
        ray.shutdown()
    counted = f"{args.duration:g} s counted after {args.warmup:g} s"
    print(f"\n{args.clients} streaming clients, {counted}, load average {os.getloadavg()[0]:.1f}")
    if loaded is not None:
        h = loaded
        print(f"HTTP clients: {h.ok} requests, TTFA p50 {h.ttfa50:.0f} ms, p95 {h.ttfa95:.0f} ms")
    print(f"in-process client: {len(rows)} requests; ms after the request started")
    print("| step | p50 | p95 |\n|---|---:|---:|")
    for mark in MARKS:
        v = [r[mark] for r in rows if mark in r]
        if v:
            print(f"| {mark} | {np.median(v):.0f} | {np.percentile(v, 95):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
