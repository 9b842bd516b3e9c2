"""Where a served request's time goes (docs/performance.md "Serving overheads").

Usage: ``python -m benchmarks.serve_overheads [--model-dir DIR] [--runs 3] [--pipeline-below N ...]``.

Deploys the app twice in one Ray instance: ``after`` (serve_app/config/local.yaml as it is) and ``before``
(main's settings before this work: one vocoder chain per unit, vocoder batches of 4 waiting 5 ms), then
alternates request by request: the raw engine (2 threads), HTTP to each app. Then it runs the shared
orchestrator with a recording wrapper around its stages, in this process on the models (1 torch thread, the
stage replicas' setting: the compute of each call) and over each app's stage handles (what the ingress does:
compute + hop). Per stage method it prints calls per request, mean latency, pickled bytes each way and the
time to pickle/unpickle them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from benchmarks.bench_serve import REPO, SENTENCES, _serve_args
from compat.ports import free_port
from serve_app.ray_system import system_config


@dataclass
class Call:
    method: str
    seconds: float
    sent: Any
    received: Any


@dataclass
class Recorder:
    calls: list[Call] = field(default_factory=list)

    def add(self, method: str, start: float, sent: Any, received: Any) -> None:
        self.calls.append(Call(method, time.perf_counter() - start, sent, received))


class _TimedStream:
    """Records each item of an acoustic stream as one hop (time since the previous item)."""

    def __init__(self, gen: Any, rec: Recorder, sent: Any) -> None:
        self._gen, self._rec, self._sent = gen, rec, sent

    async def __aiter__(self) -> AsyncIterator[Any]:
        start = time.perf_counter()
        sent = self._sent
        async for item in self._gen:
            self._rec.add("acoustic.stream item", start, sent, item)
            sent = None
            yield item
            start = time.perf_counter()

    def cancel(self) -> None:
        self._gen.cancel()


class TimedStages:
    """Any :class:`~engine.orchestrator.Stages` with every call recorded."""

    def __init__(self, inner: Any, rec: Recorder) -> None:
        self.inner, self.rec = inner, rec

    async def _timed(self, method: str, coro: Any, sent: Any) -> Any:
        start = time.perf_counter()
        out = await coro
        self.rec.add(method, start, sent, out)
        return out

    async def units(self, request: Any) -> Any:
        return await self._timed("frontend.process", self.inner.units(request), request)

    async def acoustic(self, voice: Any, inp: Any) -> Any:
        return await self._timed("acoustic.synthesize", self.inner.acoustic(voice, inp), (voice, inp))

    def acoustic_stream(self, voice: Any, inp: Any, chunk_frames: int, max_chunk_frames: int) -> Any:
        gen = self.inner.acoustic_stream(voice, inp, chunk_frames, max_chunk_frames)
        return _TimedStream(gen, self.rec, (voice, inp, chunk_frames, max_chunk_frames))

    async def vocode(self, request: Any) -> Any:
        return await self._timed("vocoder.vocode", self.inner.vocode(request), request)

    async def vocode_chunk(self, chunk: Any) -> Any:
        return await self._timed("vocoder.vocode_chunk", self.inner.vocode_chunk(chunk), chunk)

    async def info(self) -> Any:
        return await self.inner.info()

    def __getattr__(self, name: str) -> Any:  # optional stage methods pass through, timed
        inner = getattr(self.inner, name)

        async def call(*args: Any) -> Any:
            return await self._timed(name, inner(*args), args)

        return call


def _pickled(obj: Any) -> tuple[int, float, float]:
    """Pickle-5 size (bytes, out-of-band buffers included) and dumps/loads seconds."""
    if obj is None:
        return 0, 0.0, 0.0
    buffers: list[pickle.PickleBuffer] = []
    t0 = time.perf_counter()
    data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    t1 = time.perf_counter()
    pickle.loads(data, buffers=buffers)
    t2 = time.perf_counter()
    return len(data) + sum(b.raw().nbytes for b in buffers), t1 - t0, t2 - t1


def summarise(rec: Recorder, requests: int) -> dict[str, dict[str, float]]:
    by: dict[str, list[Call]] = defaultdict(list)
    for c in rec.calls:
        by[c.method].append(c)
    out = {}
    for method, calls in by.items():
        sizes = [(_pickled(c.sent), _pickled(c.received)) for c in calls]
        out[method] = {
            "calls": len(calls) / requests,
            "mean_ms": 1000 * statistics.fmean(c.seconds for c in calls),
            "total_ms": 1000 * sum(c.seconds for c in calls) / requests,
            "kb_out": statistics.fmean(s[0][0] for s in sizes) / 1024,
            "kb_back": statistics.fmean(s[1][0] for s in sizes) / 1024,
            "pickle_ms": 1000 * statistics.fmean(s[0][1] + s[0][2] + s[1][1] + s[1][2] for s in sizes),
        }
    return out


async def run_requests(orch: Any, texts: list[str]) -> list[float]:
    from engine.messages import SynthesisRequest

    times = []
    for text in texts:
        start = time.perf_counter()
        await orch.synthesize(SynthesisRequest(text))
        times.append(time.perf_counter() - start)
    return times


def _print_table(title: str, served: dict[str, Any], local: dict[str, Any]) -> None:
    print(f"\n{title}\n")
    print("| stage call | calls/request | served ms/call | local compute ms/call | hop ms/call | "
          "KiB out / back | pickle+unpickle ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for method, s in served.items():
        loc = local.get(method, {}).get("mean_ms", float("nan"))
        print(f"| {method} | {s['calls']:.1f} | {s['mean_ms']:.1f} | {loc:.1f} | {s['mean_ms'] - loc:.1f} | "
              f"{s['kb_out']:.0f} / {s['kb_back']:.0f} | {s['pickle_ms']:.2f} |")  # fmt: skip


# main's settings before this work: one stateful vocoder chain per unit, vocoder calls batched (4, 5 ms)
BEFORE_STREAM = {"vocoder_lanes": 1}
BEFORE_VOCODER_BATCH = {"max_batch_size": 4, "batch_wait_timeout_s": 0.005}


def _app_args(model_dir: str, before: bool) -> dict[str, Any]:
    args = _serve_args(model_dir)
    args["ingress"].setdefault("limits", {})["request_timeout_s"] = 600  # no 504s on a busy box
    if before:
        args["ingress"]["stream"] = dict(BEFORE_STREAM)
        args["options"]["HifiGanVocoder"]["user_config"] = dict(BEFORE_VOCODER_BATCH)
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=os.environ.get("TTS_MODEL_DIR"))
    parser.add_argument("--runs", type=int, default=2, help="passes over the sentences")
    parser.add_argument("--texts", type=int, default=len(SENTENCES), help="sentences per pass")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=["before:2:1", "after:2:2", "after:2:1", "after:0:1"],
        help="app:pipeline_below:vocoder_lanes, run alternately request by request",
    )
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    sys.path.insert(0, str(REPO))
    import httpx
    import ray
    from ray import serve

    from engine.audio import encode
    from engine.messages import SynthesisRequest
    from engine.modeldir import benchmark_model_dir
    from engine.orchestrator import Orchestrator, StreamSettings
    from engine.synthesizer import LocalStages, Synthesizer
    from serve_app.graph import build_app
    from serve_app.stages import ServeStages

    model_dir = benchmark_model_dir(args.model_dir, "full")
    texts = [s + "好的。" for s in SENTENCES[: args.texts]] * args.runs
    n = len(texts)
    raw = Synthesizer(model_dir, threads=2)
    local_stages = LocalStages(model_dir, threads=1)

    port = free_port()
    env = {"RAY_AUTH_MODE": "disabled", "PYTHONPATH": os.environ["PYTHONPATH"]}
    # logical CPUs: both apps' reservations fit; the box's real cores are shared by all replicas
    ray.init(
        num_cpus=8,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
        _system_config=system_config(),
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        apps = {"after": "/", "before": "/before"}
        for app, prefix in apps.items():
            serve.run(build_app(_app_args(model_dir, app == "before")), name=app, route_prefix=prefix)
        stages = {
            app: ServeStages(
                *(
                    serve.get_deployment_handle(name, app)
                    for name in ("TextFrontend", "SambertAcoustic", "HifiGanVocoder")
                )
            )
            for app in apps
        }
        base = f"http://127.0.0.1:{port}"
        raw.synthesize(texts[0])  # warm-up
        times: dict[str, list[float]] = defaultdict(list)
        audio_s: list[float] = []
        with httpx.Client(timeout=300) as client:
            for prefix in apps.values():  # warm-up
                client.post(base + prefix.rstrip("/") + "/api/tts", json={"text": texts[0], "format": "pcm"})
            for text in texts:  # raw and both apps alternate request by request
                start = time.perf_counter()
                audio_s.append(raw.synthesize(text).duration_s)
                times["raw engine (2 threads, whole units)"].append(time.perf_counter() - start)
                for app, prefix in apps.items():
                    start = time.perf_counter()
                    url = base + prefix.rstrip("/") + "/api/tts"
                    client.post(url, json={"text": text, "format": "pcm"}).raise_for_status()
                    times[f"HTTP /api/tts, {app}"].append(time.perf_counter() - start)
        total_audio = sum(audio_s)

        async def hop_floor() -> float:
            t = []
            for _ in range(20):
                start = time.perf_counter()
                await stages["after"].info()
                t.append(time.perf_counter() - start)
            return statistics.median(t)

        floor = asyncio.run(hop_floor())
        print(f"\nmodel: {model_dir}  requests: {n}  audio: {total_audio / n:.2f} s/request")
        print(f"empty round trip (vocoder.info, median): {floor * 1000:.2f} ms")
        for name, t in times.items():
            print(f"{name}: RTF {sum(t) / total_audio:.3f}")

        runs = {}
        for cfg in args.configs:
            app, below, lanes = cfg.split(":")
            settings = StreamSettings(pipeline_below=int(below), vocoder_lanes=int(lanes))
            rec_local, rec_served = Recorder(), Recorder()
            local = Orchestrator(TimedStages(local_stages, rec_local), settings)
            over = Orchestrator(TimedStages(stages[app], rec_served), settings)
            asyncio.run(run_requests(over, texts[:1]))  # warm-up
            rec_served.calls.clear()
            runs[cfg] = (local, over, rec_local, rec_served, [], [])
        for text in texts:  # configs alternate request by request (same load for each)
            for local, over, _, _, t_local, t_served in runs.values():
                t_local += asyncio.run(run_requests(local, [text]))
                t_served += asyncio.run(run_requests(over, [text]))
        for cfg, (_, _, rec_local, rec_served, t_local, t_served) in runs.items():
            app, below, lanes = cfg.split(":")
            name = f"{app}: pipeline_below={below}, vocoder_lanes={lanes}"
            print(f"\n{name}: orchestrator over handles RTF {sum(t_served) / total_audio:.3f}, "
                  f"local 1-thread stages RTF {sum(t_local) / total_audio:.3f}")  # fmt: skip
            _print_table(name, summarise(rec_served, n), summarise(rec_local, n))

        # the ingress's own CPU per request: join + encode
        orch = Orchestrator(local_stages, StreamSettings(pipeline_below=0))
        req = SynthesisRequest(texts[0])
        units = asyncio.run(orch.units(req))
        results = [asyncio.run(orch._unit(u, None)) for u in units]
        info = asyncio.run(orch.info())
        start = time.perf_counter()
        for _ in range(20):
            out = Orchestrator.join(units, results, info)
        join_ms = (time.perf_counter() - start) / 20 * 1000
        start = time.perf_counter()
        for _ in range(20):
            encode(out.audio, out.sample_rate, "pcm", None)
        enc_ms = (time.perf_counter() - start) / 20 * 1000
        print(f"\ningress CPU per request: join {join_ms:.2f} ms, pcm encode {enc_ms:.2f} ms "
              f"({len(out.audio) / out.sample_rate:.2f} s audio)")  # fmt: skip
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
