"""Side-by-side benchmark: the seeds' design vs our three-stage Ray Serve pipeline vs a one-deployment
(monolithic) Ray Serve variant — same engine (``engine.synthesizer.Synthesizer``), same model, same
machine, one run. Closed-loop clients at 1, 4, 8, 16 concurrency measure throughput, p50/p95/p99
latency, time to first audio (TTFA: first body byte past the 44-byte WAV header) and the stall: how far
the audio fell behind a player that starts at the first byte with no buffer (0: every byte came before it
was due). A streamed response that starts early and then stalls plays with gaps.

Each level measures steady state: its clients all start at once and run ``--warmup`` seconds uncounted (the
start burst: every client's first request arriving in the same millisecond), then ``--duration`` seconds
counted. Throughput is the audio (and the responses) that arrived inside that window; latency, TTFA and
stall are those of the requests that started inside it (they may finish after it).

    python -m benchmarks.compare_seed [--duration 20] [--warmup 10] [--levels 1,4,8,16] [--model-dir DIR]

Variants
  seed             one process, threaded HTTP server, ONE global lock (benchmarks/seed_server.py)
  seed-main        the same, requests served one by one on the main thread (one gunicorn sync worker)
  monolith         Ray Serve, one deployment = whole engine, 2 replicas × 1 CPU (benchmarks/monolith_app.py)
  pipeline         our app (serve_app/config/local.yaml as shipped, result cache off), whole-file responses
  pipeline-stream  the same app, ``stream: true`` (TTFA is what streaming buys)

Prints a table and ratios; writes ``benchmarks/results/compare_seed-YYYY-MM-DD.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import itertools
import json
import os
import platform
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compat.ports import free_port
from engine.modeldir import VOCODER_PRECISIONS, benchmark_model_dir
from serve_app.ray_system import system_config

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
DEFAULT_CONFIG = ROOT / "serve_app" / "config" / "local.yaml"
WAV_HEADER = 44


@dataclass
class Measured:
    """One request's outcome (seconds)."""

    ok: bool
    latency: float
    ttfa: float
    nbytes: int
    error: str = ""
    stall: float = 0.0  # longest lag of the audio behind playback from its first byte, no client buffer
    started: float = 0.0  # time.perf_counter() when the request was sent
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (s after start, bytes so far)

    def audio_bytes_until(self, when: float) -> int:
        """Audio bytes (past the WAV header) that had arrived by ``when`` (a ``time.perf_counter()``)."""
        n = 0
        for at, total in self.arrivals:
            if self.started + at > when:
                break
            n = total
        return max(n - WAV_HEADER, 0)


@dataclass
class LevelResult:
    variant: str
    clients: int
    ok: int
    errors: int
    seconds: float
    rps: float
    audio_x: float  # seconds of audio produced per wall-clock second
    p50: float
    p95: float
    p99: float
    ttfa50: float
    ttfa95: float
    stall50: float = 0.0
    stall95: float = 0.0


AUDIO_BYTES_PER_S = 2 * 16000  # 16-bit mono at 16 kHz


def post(conn: http.client.HTTPConnection, path: str, body: dict[str, Any]) -> Measured:
    """POST JSON, read the body incrementally; TTFA = first byte past the WAV header; stall = the most any
    chunk arrived after a player started at TTFA would have needed it."""
    start = time.perf_counter()
    ttfa = None
    n = 0
    stall = 0.0
    error = ""
    arrivals: list[tuple[float, int]] = []
    try:
        conn.request(
            "POST", path, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        resp = conn.getresponse()
        while chunk := resp.read1(65536):
            now = time.perf_counter() - start
            if ttfa is not None:  # the audio before this chunk has played out by ttfa + its duration
                stall = max(stall, now - ttfa - (n - WAV_HEADER) / AUDIO_BYTES_PER_S)
            n += len(chunk)
            arrivals.append((now, n))
            if ttfa is None and n > WAV_HEADER:
                ttfa = now
        resp.close()  # read1 leaves a fully read Content-Length response open: close it to reuse conn
        ok = resp.status == 200 and n > WAV_HEADER
        if not ok:
            error = f"HTTP {resp.status}, {n} bytes"
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        ok, error = False, f"{type(exc).__name__}: {exc}"
    end = time.perf_counter() - start
    return Measured(ok, end, ttfa if ttfa is not None else end, n, error, stall, start, arrivals)


def run_level(
    host: str, port: int, path: str, make_body: Callable[[str], dict[str, Any]], texts: list[str],
    variant: str, clients: int, duration: float, warmup: float = 0.0,
) -> LevelResult:  # fmt: skip
    """``clients`` closed-loop clients, all started at once: ``warmup`` seconds not counted, then ``duration``
    seconds counted (module docstring). No new request starts after the window; those in flight complete."""
    counter = itertools.count()
    lock = threading.Lock()
    results: list[Measured] = []
    t0 = time.perf_counter()
    window = (t0 + warmup, t0 + warmup + duration)

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=300)
        while time.perf_counter() < window[1]:
            with lock:
                text = texts[next(counter) % len(texts)]
            m = post(conn, path, make_body(text))
            with lock:
                results.append(m)
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counted = [m for m in results if window[0] <= m.started < window[1]]
    good = [m for m in counted if m.ok]
    errors = sorted({m.error for m in results if not m.ok})  # the warm-up's too
    if errors:
        print(f"  {variant} @{clients}: errors seen: {errors[:3]}", flush=True)
    lat = np.array([m.latency for m in good]) * 1000 if good else np.array([np.nan])
    ttfa = np.array([m.ttfa for m in good]) * 1000 if good else np.array([np.nan])
    stall = np.array([m.stall for m in good]) * 1000 if good else np.array([np.nan])
    audio = sum(m.audio_bytes_until(window[1]) - m.audio_bytes_until(window[0]) for m in results if m.ok)
    done = sum(1 for m in results if m.ok and window[0] <= m.started + m.latency < window[1])
    return LevelResult(
        variant, clients, len(good), len(counted) - len(good), duration, done / duration,
        audio / AUDIO_BYTES_PER_S / duration, *np.percentile(lat, [50, 95, 99]).tolist(),
        *np.percentile(ttfa, [50, 95]).tolist(), *np.percentile(stall, [50, 95]).tolist(),
    )  # fmt: skip


def wait_http(
    url_host: str, port: int, path: str, timeout: float, proc: subprocess.Popen[Any] | None = None
) -> None:
    start = time.time()
    while time.time() - start < timeout:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection(url_host, port, timeout=10)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(2)
    raise TimeoutError(f"http://{url_host}:{port}{path} not ready after {timeout:.0f} s")


def measure_variant(
    variant: str, port: int, path: str, make_body: Callable[[str], dict[str, Any]],
    texts: list[str], levels: list[int], duration: float, warmup: float,
) -> list[LevelResult]:  # fmt: skip
    for text in texts[:3]:  # warm-up: first-call allocations, JIT-free but cache-cold
        post(http.client.HTTPConnection("127.0.0.1", port, timeout=300), path, make_body(text))
    out = []
    for clients in levels:
        r = run_level("127.0.0.1", port, path, make_body, texts, variant, clients, duration, warmup)
        print(
            f"{variant:<16}{clients:>3} clients: {r.rps:6.2f} req/s  p50 {r.p50:7.0f}  p95 {r.p95:7.0f}  "
            f"p99 {r.p99:7.0f}  TTFA p50 {r.ttfa50:7.0f} ms  stall p95 {r.stall95:5.0f} ms  "
            f"errors {r.errors}",
            flush=True,
        )
        out.append(r)
    return out


def run_seed(
    model_dir: str,
    texts: list[str],
    levels: list[int],
    duration: float,
    warmup: float,
    main_thread: bool = False,
    precision: str = "fp32",
) -> list[LevelResult]:
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.seed_server", "--model-dir", model_dir, "--port", str(port)]
    cmd += ["--vocoder-precision", precision]
    proc = subprocess.Popen(cmd + (["--main-thread"] if main_thread else []), cwd=ROOT)
    try:
        wait_http("127.0.0.1", port, "/health", 600, proc)
        body = lambda text: {"text": text, "emotion": "neutral", "speed": 1.0}  # noqa: E731
        name = "seed-main" if main_thread else "seed"
        return measure_variant(name, port, "/tts", body, texts, levels, duration, warmup)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def start_ray(port: int) -> Any:
    import ray
    from ray.serve._private import api as serve_api

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # private local cluster on 127.0.0.1
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        _system_config=system_config(),
    )
    return serve_api.serve_start(http_options={"host": "127.0.0.1", "port": port})


def pipeline_config(config: Path, model_dir: str, port: int, precision: str | None = None) -> dict[str, Any]:
    """The Serve config file ``config`` as bench-compare deploys it: on 127.0.0.1:``port``, ``model_dir``, the
    result cache off and the admission limit lifted (this measures saturation throughput and latency, not
    shedding), and the vocoder in ``precision`` if given (else the config's)."""
    import yaml

    raw = yaml.safe_load(config.read_text())
    raw["http_options"] = {**raw.get("http_options", {}), "host": "127.0.0.1", "port": port}
    app = raw["applications"][0]
    args = app.get("args") or {}
    ingress = {**(args.get("ingress") or {}), "cache_max_entries": 0, "max_inflight": 1024}
    app["args"] = {**args, "model_dir": model_dir, "ingress": ingress}
    if precision is not None:
        app["args"]["vocoder_precision"] = precision
    return raw


def deploy_pipeline(
    model_dir: str, port: int, config: Path = DEFAULT_CONFIG, precision: str | None = None
) -> dict[str, Any]:
    """Start a 2-CPU Ray and deploy :func:`pipeline_config`; returns the application's config entry once
    ``/ready`` answers."""
    from ray.serve.schema import ServeDeploySchema

    client = start_ray(port)
    raw = pipeline_config(config, model_dir, port, precision)
    client.deploy_apps(ServeDeploySchema.model_validate(raw), _blocking=False)
    wait_http("127.0.0.1", port, "/ready", 900)
    return raw["applications"][0]


def run_ray_variants(
    model_dir: str,
    texts: list[str],
    levels: list[int],
    duration: float,
    warmup: float,
    config: Path,
    precision: str = "fp32",
) -> list[LevelResult]:
    import ray
    from ray import serve

    from benchmarks.monolith_app import build as build_monolith

    port = free_port()
    results: list[LevelResult] = []
    try:
        app = deploy_pipeline(model_dir, port, config, precision)

        def body(stream: bool) -> Callable[[str], dict[str, Any]]:
            return lambda text: {
                "text": text,
                "emotion": "neutral",
                "speed": 1.0,
                "format": "wav",
                "stream": stream,
            }

        results += measure_variant("pipeline", port, "/api/tts", body(False), texts, levels, duration, warmup)
        results += measure_variant(
            "pipeline-stream", port, "/api/tts", body(True), texts, levels, duration, warmup
        )
        serve.delete(app["name"])
        serve.run(build_monolith(model_dir, vocoder_precision=precision), name="monolith", route_prefix="/")
        body_seed = lambda text: {"text": text, "emotion": "neutral", "speed": 1.0}  # noqa: E731
        results += measure_variant("monolith", port, "/", body_seed, texts, levels, duration, warmup)
    finally:
        ray.shutdown()
    return results


def machine_description() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "?"
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024**2:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    import ray
    import torch

    return (
        f"{platform.platform()}; {cpu}; {os.cpu_count()} logical CPUs; {mem} RAM; "
        f"Python {platform.python_version()}; "
        f"torch {torch.__version__}; ray {ray.__version__}; load average at start {os.getloadavg()[0]:.2f}"
    )


def format_tables(results: list[LevelResult]) -> str:
    lines = [
        "| variant | clients | req/s | audio s/s | p50 ms | p95 ms | p99 ms | TTFA p50 ms | TTFA p95 ms "
        "| stall p50 ms | stall p95 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.variant} | {r.clients} | {r.rps:.2f} | {r.audio_x:.2f} | {r.p50:.0f} | {r.p95:.0f} "
            f"| {r.p99:.0f} "
            f"| {r.ttfa50:.0f} | {r.ttfa95:.0f} | {r.stall50:.0f} | {r.stall95:.0f} | {r.errors} |"
        )
    by = {(r.variant, r.clients): r for r in results}
    for baseline in ("seed", "seed-main"):
        if not any(r.variant == baseline for r in results):
            continue
        lines += [
            "",
            f"| clients | variant | throughput × {baseline} | p95 × {baseline} | TTFA p95 × {baseline} |",
            "|---:|---|---:|---:|---:|",
        ]
        for clients in sorted({r.clients for r in results}):
            base = by.get((baseline, clients))
            if base is None:
                continue
            for variant in ("monolith", "pipeline", "pipeline-stream"):
                r = by.get((variant, clients))
                if r is None:
                    continue
                lines.append(
                    f"| {clients} | {variant} | {r.rps / base.rps if base.rps else float('nan'):.2f} "
                    f"| {r.p95 / base.p95:.2f} | {r.ttfa95 / base.ttfa95:.2f} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model-dir", default=None, help="default: $TTS_MODEL_DIR, else the generated full random voice"
    )
    p.add_argument("--levels", default="1,4,8,16")
    p.add_argument("--duration", type=float, default=20.0, help="seconds counted per concurrency level")
    p.add_argument("--warmup", type=float, default=10.0, help="seconds run before each level's count starts")
    p.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    p.add_argument(
        "--vocoder-precision",
        default="fp32",
        choices=VOCODER_PRECISIONS,
        help="every variant's vocoder (bf16: opt-in, quality-gated; gains only with AVX512-BF16 or AMX)",
    )
    p.add_argument(
        "--variants",
        default="seed,seed-main,ray",
        help="comma list of: seed, seed-main, ray (pipeline, monolith)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="results markdown (default: dated file in results/)"
    )
    args = p.parse_args(argv)
    try:
        levels = [int(x) for x in args.levels.split(",") if x.strip()]
    except ValueError:
        p.error(f"--levels must be comma-separated integers, got {args.levels!r}")
    if not levels or min(levels) < 1:
        p.error("--levels must be positive integers")
    if args.duration <= 0 or args.warmup < 0:
        p.error("--duration must be > 0 and --warmup >= 0")

    from loadtests.corpus import load_corpus

    model_dir = benchmark_model_dir(args.model_dir, "full")
    texts = [s.text for s in load_corpus().of("medium")]
    machine = machine_description()
    print(f"machine: {machine}\nmodel: {model_dir}\ntexts: {len(texts)} medium corpus sentences", flush=True)
    variants = set(args.variants.split(","))
    started = dt.datetime.now(dt.UTC)
    results: list[LevelResult] = []
    if "seed" in variants:
        results += run_seed(
            model_dir, texts, levels, args.duration, args.warmup, precision=args.vocoder_precision
        )
    if "seed-main" in variants:
        results += run_seed(
            model_dir,
            texts,
            levels,
            args.duration,
            args.warmup,
            main_thread=True,
            precision=args.vocoder_precision,
        )
    if "ray" in variants:
        results += run_ray_variants(
            model_dir, texts, levels, args.duration, args.warmup, args.config, args.vocoder_precision
        )
    tables = format_tables(results)
    print("\n" + tables)
    out = args.out or RESULTS_DIR / f"compare_seed-{started:%Y-%m-%d}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    config_name = args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config
    out.write_text(
        f"# Seed design vs pipeline vs monolith — {started:%Y-%m-%d %H:%M} UTC\n\n"
        f"Command: `python -m benchmarks.compare_seed --levels {args.levels} "
        f"--duration {args.duration:g} --warmup {args.warmup:g} "
        f"--vocoder-precision {args.vocoder_precision}`\n\n"
        f"Machine: {machine}; load average at end {os.getloadavg()[0]:.2f}\n\n"
        f"Model: `{model_dir}` (full-size random weights unless TTS_MODEL_DIR is set). Texts: {len(texts)} "
        f"medium customer-service sentences, cycled identically for every variant. Pipeline config: "
        f"`{config_name}` with the result cache off.\n\n{tables}\n"
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
