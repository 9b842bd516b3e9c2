"""Served-pipeline benchmark (``make bench-serve``): RTF, streamed time-to-first-audio, throughput vs clients,
served ÷ raw-engine 1-client RTF and throughput, with the full-size random model on this machine.

The 1-client RTF pair is measured in the same minute: the raw engine (this process, ``--raw-threads``) and the
served request alternate text by text, after Serve is up (its replicas idle between requests).

Where the CPU goes: over each load level, the CPU time of every process of the Ray instance this benchmark
starts (and of this process, the load generator) is read before and after; the table for the best level (the
saturation point) lists each role's share of a core and its core-ms per second of audio served.

Usage: ``python -m benchmarks.bench_serve [--model-dir DIR] [--seconds 15] [--clients 1 4 8 16]``.
The Serve deployment options come from ``serve_app/config/local.yaml`` (the ``make run`` config).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import yaml

from benchmarks.bench_memory import process_tree, role
from compat.ports import free_port
from engine.modeldir import VOCODER_PRECISIONS, benchmark_model_dir

REPO = Path(__file__).resolve().parent.parent
SENTENCES = [
    "您好，这里是智能客服中心，请问有什么可以帮您？",
    "您的订单已经发货，预计明天下午三点前送达。",
    "今天天气晴朗，最高气温二十六度，适合外出散步。",
    "为了保障您的账户安全，请不要向任何人透露验证码。",
    "感谢您的耐心等待，我们会尽快为您处理这个问题。",
    "会议将在下午两点半开始，请各位提前十分钟到场。",
]
RTF_TEXTS = [s + "好的。" for s in SENTENCES]  # 1-client RTF requests (two units each), served and raw alike
LONG_200 = (
    "欢迎使用中文语音合成服务。本系统采用声学模型与神经声码器相结合的方案，能够将任意中文文本转换为自然流畅的语音。"
    "在客服、导航、有声读物和智能助手等场景中，低延迟的流式合成尤为重要：用户希望在提交请求后立刻听到声音，"
    "而不是等待整段文本全部合成完毕。因此我们在服务端逐帧输出音频，让第一段声音尽快到达客户端，同时保证整体吞吐量。"
)


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def raw_engine(synth: Any, seconds: float) -> dict[str, float]:
    """Ray-free Synthesizer throughput (audio seconds per wall second) on the same sentences."""
    synth.synthesize(SENTENCES[0])  # warm-up (jieba, allocator)
    audio_s, n, start = 0.0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        audio_s += synth.synthesize(SENTENCES[n % len(SENTENCES)]).duration_s
        n += 1
    wall = time.perf_counter() - start
    return {
        "requests": n,
        "audio_s": audio_s,
        "wall_s": wall,
        "throughput": audio_s / wall,
        "rtf": wall / audio_s,
    }


def _serve_args(model_dir: str) -> dict[str, Any]:
    cfg = yaml.safe_load((REPO / "serve_app/config/local.yaml").read_text("utf-8"))
    app = cfg["applications"][0]
    args = dict(app["args"])
    args["model_dir"] = model_dir
    args.setdefault("ingress", {})["cache_max_entries"] = 0  # measure synthesis, not the cache
    args["ingress"]["max_inflight"] = 1024  # saturation throughput, not admission control (shedding)
    options = {}
    for dep in app["deployments"]:
        opts = {k: v for k, v in dep.items() if k != "name"}
        options[dep["name"]] = opts
    args["options"] = options
    return args


def _pcm_request(text: str) -> dict[str, Any]:
    """The whole-file request every served measurement sends."""
    return {"text": text, "format": "pcm"}


def _pcm_seconds(response: httpx.Response) -> float:
    """Audio seconds in a 16 kHz, 16-bit mono pcm response (raising on an error status)."""
    response.raise_for_status()
    return len(response.content) / 2 / 16000


async def _one(client: httpx.AsyncClient, url: str, text: str) -> tuple[float, float]:
    start = time.perf_counter()
    audio_s = _pcm_seconds(await client.post(url + "/api/tts", json=_pcm_request(text)))
    return time.perf_counter() - start, audio_s


async def _ttfa(client: httpx.AsyncClient, url: str, text: str) -> tuple[float, float]:
    start = time.perf_counter()
    first = None
    async with client.stream(
        "POST", url + "/api/tts", json={"text": text, "format": "pcm", "stream": True}
    ) as r:
        r.raise_for_status()
        async for chunk in r.aiter_raw():
            if chunk and first is None:
                first = time.perf_counter() - start
    return first or float("nan"), time.perf_counter() - start


LOAD_GENERATOR = "this benchmark (load generator)"


CpuReading = dict[int, tuple[str, float]]


def cpu_seconds() -> CpuReading:
    """``{pid: (role, CPU seconds so far)}`` (user + system) of this process and every process under it (the
    Ray instance it started: daemons, Serve controller, proxy, replicas)."""
    me = psutil.Process()
    out: CpuReading = {}
    for proc in process_tree(me):
        try:
            t = proc.cpu_times()
            out[proc.pid] = (LOAD_GENERATOR if proc.pid == me.pid else role(proc), t.user + t.system)
        except psutil.Error:  # gone meanwhile
            continue
    return out


def cores_by_role(before: CpuReading, after: CpuReading, wall: float) -> dict[str, float]:
    """Cores each role used between two :func:`cpu_seconds` readings ``wall`` seconds apart (processes alive
    at both, under their later role: an idle worker may have become a replica; a role's replicas summed),
    largest first."""
    used: dict[str, float] = {}
    for pid, (name, t) in after.items():
        if pid in before:
            used[name] = used.get(name, 0.0) + (t - before[pid][1]) / wall
    return dict(sorted(used.items(), key=lambda kv: -kv[1]))


async def _load(url: str, clients: int, seconds: float) -> dict[str, Any]:
    lat: list[float] = []
    audio = 0.0
    stop = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal audio
        i = k
        async with httpx.AsyncClient(timeout=120) as client:
            while time.perf_counter() < stop:
                t, a = await _one(client, url, SENTENCES[i % len(SENTENCES)] + f"第{i}号。")
                lat.append(t)
                audio += a
                i += clients

    cpu0 = cpu_seconds()
    start = time.perf_counter()
    await asyncio.gather(*[worker(k) for k in range(clients)])
    wall = time.perf_counter() - start
    cores = cores_by_role(cpu0, cpu_seconds(), wall)
    return {"clients": clients, "requests": len(lat), "rps": len(lat) / wall, "throughput": audio / wall,
            "p50": _pct(lat, 50), "p95": _pct(lat, 95), "cores": cores}  # fmt: skip


def rtf_pair(url: str, synth: Any, rounds: int) -> dict[str, float]:
    """1-client RTF, served and raw, text by text in the same minute, ``rounds`` times over the texts: the
    median of each, and the median of the pairs' ratios (a pair runs within a second: the host's speed,
    which drifts on a shared box, is the same for both).

    The raw engine runs on this process's main thread, as a user of the engine would call it: torch run from
    another thread (``asyncio.to_thread``) after the model ran here gets a second OpenMP team and, on this
    box, ran 1.6-3.5x slower with 2 threads (docs/performance.md, "Re-measured on this session's machine").
    """
    rtfs, raw_rtfs = [], []
    with httpx.Client(timeout=120) as client:
        for i in range(2):  # warm-up
            _pcm_seconds(client.post(url + "/api/tts", json=_pcm_request(SENTENCES[i])))
        for _ in range(rounds):
            for text in RTF_TEXTS:
                start = time.perf_counter()
                audio_s = synth.synthesize(text).duration_s
                raw_rtfs.append((time.perf_counter() - start) / audio_s)
                start = time.perf_counter()
                audio_s = _pcm_seconds(client.post(url + "/api/tts", json=_pcm_request(text)))
                rtfs.append((time.perf_counter() - start) / audio_s)
    ratios = [s / r for s, r in zip(rtfs, raw_rtfs, strict=True)]
    return {
        "rtf": statistics.median(rtfs),
        "raw_rtf": statistics.median(raw_rtfs),
        "pair_ratio": statistics.median(ratios),
    }


async def served(url: str, seconds: float, client_levels: list[int], ttfa_runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(timeout=120) as client:
        firsts, totals = [], []
        for i in range(ttfa_runs):
            f, t = await _ttfa(client, url, LONG_200[i:] + LONG_200[:i])
            firsts.append(f)
            totals.append(t)
        out["ttfa_p50"], out["ttfa_p95"] = _pct(firsts, 50), _pct(firsts, 95)
        out["stream_total_p50"] = _pct(totals, 50)
    out["load"] = [await _load(url, c, seconds) for c in client_levels]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default=os.environ.get("TTS_MODEL_DIR"))
    parser.add_argument("--seconds", type=float, default=15.0, help="per concurrency level")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--ttfa-runs", type=int, default=10)
    parser.add_argument("--raw-threads", type=int, default=2)
    parser.add_argument(
        "--rtf-rounds", type=int, default=4, help="1-client RTF: passes over its texts (served, raw)"
    )
    parser.add_argument(
        "--vocoder-precision", choices=VOCODER_PRECISIONS, default=None, help="override the config's (fp32)"
    )
    args = parser.parse_args(argv)
    if args.rtf_rounds < 1:
        parser.error(f"--rtf-rounds must be >= 1, got {args.rtf_rounds}")

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    sys.path.insert(0, str(REPO))
    from engine.synthesizer import Synthesizer
    from serve_app.graph import build_app
    from serve_app.ray_system import system_config

    model_dir = benchmark_model_dir(args.model_dir, "full")
    print(f"model: {model_dir}  cores: {os.cpu_count()}", flush=True)
    serve_args = _serve_args(model_dir)
    if args.vocoder_precision:
        serve_args["vocoder_precision"] = args.vocoder_precision
    precision = serve_args.get("vocoder_precision") or "fp32"  # the raw engine's too: like against like
    synth = Synthesizer(model_dir, threads=args.raw_threads, vocoder_precision=precision)
    raw = raw_engine(synth, args.seconds)
    print(
        f"raw engine ({args.raw_threads} threads, {precision}): RTF {raw['rtf']:.3f}, "
        f"{raw['throughput']:.2f} audio-s/s",
        flush=True,
    )

    import ray
    from ray import serve

    port = free_port()
    env = {"RAY_AUTH_MODE": "disabled", "PYTHONPATH": os.environ["PYTHONPATH"]}
    ray.init(
        num_cpus=os.cpu_count(),
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": env},
        _system_config=system_config(),
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        print(f"served vocoder precision: {precision}", flush=True)
        serve.run(build_app(serve_args), name="tts", route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        res = rtf_pair(url, synth, args.rtf_rounds)
        res |= asyncio.run(served(url, args.seconds, args.clients, args.ttfa_runs))
    finally:
        ray.shutdown()

    best = max(level["throughput"] for level in res["load"])
    print()
    print("| metric | value | target |")
    print("|---|---|---|")
    print(f"| end-to-end RTF, 1 client (median) | {res['rtf']:.3f} | ≤ 0.15 |")
    print(f"| raw engine RTF, same texts, alternated ({args.raw_threads} thr) | {res['raw_rtf']:.3f} | |")
    print(f"| served ÷ raw RTF, 1 client | {res['rtf'] / res['raw_rtf']:.2f} | ≤ 1.15 |")
    pairs = len(RTF_TEXTS) * args.rtf_rounds
    print(f"| served ÷ raw RTF, median of {pairs} same-text pairs | {res['pair_ratio']:.2f} | ≤ 1.15 |")
    ttfa = f"{res['ttfa_p50'] * 1000:.0f} / {res['ttfa_p95'] * 1000:.0f} ms"
    print(f"| streamed TTFA p50 / p95, 200 chars | {ttfa} | p50 ≤ 250 ms |")
    print(f"| streamed total p50, 200 chars | {res['stream_total_p50']:.2f} s | |")
    print(f"| raw engine throughput ({args.raw_threads} thr) | {raw['throughput']:.2f} audio-s/s | |")
    print(f"| served ÷ raw throughput (best level) | {best / raw['throughput']:.2f} | ≥ 0.9 |")
    print()
    print("| clients | requests | req/s | audio-s/s | p50 s | p95 s |")
    print("|---|---|---|---|---|---|")
    for lv in res["load"]:
        print(f"| {lv['clients']} | {lv['requests']} | {lv['rps']:.2f} | {lv['throughput']:.2f} | "
              f"{lv['p50']:.2f} | {lv['p95']:.2f} |")  # fmt: skip
    top = max(res["load"], key=lambda lv: lv["throughput"])
    print()
    print(cpu_table(top["cores"], top["throughput"], top["clients"]))
    return 0


def cpu_table(cores: dict[str, float], throughput: float, clients: int) -> str:
    """Markdown: each role's share of a core and core-ms per audio second at one load level."""
    lines = [
        f"CPU at {clients} clients ({throughput:.2f} audio-s/s; {os.cpu_count()} cores = "
        f"{100 * (os.cpu_count() or 1)} %):",
        "",
        "| process | % of a core | core-ms per audio s |",
        "|---|---:|---:|",
    ]
    for name, used in [*cores.items(), ("= all", sum(cores.values()))]:
        per_audio = 1000 * used / throughput if throughput else float("nan")
        lines.append(f"| {name} | {100 * used:.1f} | {per_audio:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
