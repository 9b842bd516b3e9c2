"""Benchmark helpers: seed-design server semantics, ratio tables, metrics parsing, autoscaling plot."""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import threading
import time
from http.server import HTTPServer, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchmarks import autoscale_demo as demo
from benchmarks import compare_seed as cmp
from benchmarks.seed_server import make_handler


class CountingSynth:
    """Stands in for Synthesizer: records how many calls overlap."""

    def __init__(self) -> None:
        self.active = 0
        self.max_active = 0
        self.guard = threading.Lock()

    def synthesize_bytes(self, text: str, fmt: str, **kw: object) -> tuple[bytes, int]:
        with self.guard:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        time.sleep(0.05)
        with self.guard:
            self.active -= 1
        return b"RIFF" + bytes(40) + text.encode() * 20, 16000


def test_seed_server_serialises_on_one_global_lock() -> None:
    synth = CountingSynth()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(synth))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        res = cmp.run_level(
            "127.0.0.1",
            port,
            "/tts",
            lambda t: {"text": t},
            ["您好。", "再见。"],
            "seed",
            clients=4,
            duration=0.5,
        )
        assert res.ok >= 8 and res.errors == 0
        assert synth.max_active == 1  # four clients, yet never two syntheses at once
        assert res.rps < 1 / 0.05 + 1  # throughput capped by the lock
        conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("POST", "/tts", body=json.dumps({}).encode())
        resp = conn.getresponse()
        assert resp.status == 500 and b"text" in resp.read()  # missing field → error JSON, not a crash
    finally:
        server.shutdown()
        server.server_close()


class ThreadRecordingSynth(CountingSynth):
    """Also records which thread ran each synthesis."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def synthesize_bytes(self, text: str, fmt: str, **kw: object) -> tuple[bytes, int]:
        self.threads.add(threading.get_ident())
        return super().synthesize_bytes(text, fmt, **kw)


def test_seed_main_thread_serves_every_client_in_turn_on_one_thread() -> None:
    """The gunicorn-sync-worker shape: one thread runs every synthesis, and each response closes its
    connection, so 3 keep-alive clients all get served (none holds the one-at-a-time server)."""
    synth = ThreadRecordingSynth()
    server = HTTPServer(("127.0.0.1", 0), make_handler(synth, close_each=True))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        served: list[int] = []

        def client() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
            for _ in range(3):
                conn.request("POST", "/tts", body=json.dumps({"text": "您好。"}).encode())
                resp = conn.getresponse()
                assert resp.getheader("Connection") == "close"
                served.append(resp.status)
                resp.read()

        clients = [threading.Thread(target=client) for _ in range(3)]
        for t in clients:
            t.start()
        for t in clients:
            t.join(timeout=20)
        assert served == [200] * 9
        assert len(synth.threads) == 1 and synth.max_active == 1
    finally:
        server.shutdown()
        server.server_close()


def _chunked_wav_server(parts: list[tuple[int, float]], first_delay_s: float = 0.0) -> ThreadingHTTPServer:
    """Answers every POST with a chunked response: per ``(size, wait)`` of ``parts``, ``size`` bytes (the
    first part includes the 44-byte WAV header), then a ``wait`` pause; the server's first response starts
    ``first_delay_s`` late."""
    from http.server import BaseHTTPRequestHandler

    served = itertools.count()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if next(served) == 0:
                time.sleep(first_delay_s)
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for size, wait in parts:
                self.wfile.write(f"{size:x}\r\n".encode() + bytes(size) + b"\r\n")
                self.wfile.flush()
                time.sleep(wait)
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _streaming_server(first_s: float, pause_s: float) -> ThreadingHTTPServer:
    """The header and ``first_s`` of audio, a ``pause_s`` pause, then one more second of audio (16-bit mono,
    16 kHz)."""
    return _chunked_wav_server([(44 + int(first_s * 32000), pause_s), (32000, 0.0)])


@pytest.mark.parametrize(("first_s", "pause_s", "stalled"), [(0.1, 0.4, True), (0.6, 0.2, False)])
def test_the_stall_is_how_far_a_stream_falls_behind_its_playback(
    first_s: float, pause_s: float, stalled: bool
) -> None:
    """A stream whose next audio comes after the audio already sent has played out stalls by the
    difference (0.1 s sent, 0.4 s pause: ~0.3 s); one that stays ahead of playback does not."""
    server = _streaming_server(first_s, pause_s)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        m = cmp.post(conn, "/tts", {"text": "您好。"})
        assert m.ok and m.nbytes == 44 + int(first_s * 32000) + 32000
        if stalled:
            assert 0.25 <= m.stall <= 0.6, m.stall
        else:
            assert m.stall <= 0.05, m.stall
    finally:
        server.shutdown()
        server.server_close()


def _paced_server(first_delay_s: float, chunks: int, interval_s: float) -> ThreadingHTTPServer:
    """The header, then ``chunks`` pieces of 0.1 s of audio (16-bit mono, 16 kHz) ``interval_s`` apart; the
    server's first response starts ``first_delay_s`` late."""
    parts = [(3200 + (44 if i == 0 else 0), interval_s) for i in range(chunks)]
    return _chunked_wav_server(parts, first_delay_s)


def test_a_level_counts_only_requests_started_after_its_warmup() -> None:
    """The start burst is not measured: a slow first request (0.6 s to its first audio), started during
    the 0.3 s warm-up, is in no percentile; the fast ones after it are."""
    server = _paced_server(first_delay_s=0.6, chunks=2, interval_s=0.005)
    try:
        port = server.server_address[1]
        res = cmp.run_level("127.0.0.1", port, "/tts", lambda t: {"text": t}, ["您好。"], "x", 1, 0.5, 0.3)
        assert res.ok >= 3 and res.errors == 0
        assert res.ttfa95 < 300 and res.p99 < 300, res  # the 600 ms one is not among them
    finally:
        server.shutdown()
        server.server_close()


def test_a_level_throughput_is_the_audio_that_arrived_inside_its_window() -> None:
    """One stream delivering 0.1 s of audio every 50 ms (2x real time) for 2 s, started in the warm-up and
    finishing after the window: the window's throughput is ~2 audio-s/s, and no request started in it."""
    server = _paced_server(first_delay_s=0.0, chunks=40, interval_s=0.05)
    try:
        port = server.server_address[1]
        res = cmp.run_level("127.0.0.1", port, "/tts", lambda t: {"text": t}, ["您好。"], "x", 1, 1.0, 0.5)
        assert res.ok == 0 and res.rps == 0
        assert 1.3 < res.audio_x < 2.7, res
    finally:
        server.shutdown()
        server.server_close()


def test_audio_bytes_until_counts_what_had_arrived_past_the_header() -> None:
    m = cmp.Measured(True, 1.0, 0.1, 3244, started=10.0, arrivals=[(0.1, 1644), (0.5, 3244)])
    assert [m.audio_bytes_until(t) for t in (10.05, 10.1, 10.3, 10.5, 11.0)] == [0, 1600, 1600, 3200, 3200]


def _level(variant: str, clients: int, rps: float, p95: float) -> cmp.LevelResult:
    return cmp.LevelResult(
        variant, clients, 10, 0, 10.0, rps, rps * 3, p95 / 2, p95, p95 * 1.2, p95 / 3, p95 / 2
    )


def test_ratio_table() -> None:
    stream = cmp.LevelResult("pipeline-stream", 8, 10, 0, 10.0, 1.0, 3.0, 1, 2, 3, 4, 5, 250.4, 1200.6)
    table = cmp.format_tables(
        [
            _level("seed", 8, 0.5, 8000),
            _level("pipeline", 8, 1.0, 6000),
            _level("monolith", 8, 0.75, 9000),
            stream,
        ]
    )
    assert "| pipeline-stream | 8 | 1.00 | 3.00 | 1 | 2 | 3 | 4 | 5 | 250 | 1201 | 0 |" in table
    assert "| 8 | pipeline | 2.00 | 0.75 | 0.75 |" in table
    assert "| 8 | monolith | 1.50 | 1.12 | 1.12 |" in table
    assert "× seed-main" not in table  # a baseline that did not run gets no table


def test_ratio_table_per_seed_baseline() -> None:
    levels = [
        _level("seed", 8, 0.5, 8000),
        _level("seed-main", 8, 0.8, 4000),
        _level("pipeline", 8, 1.0, 6000),
    ]
    table = cmp.format_tables(levels)
    assert "| clients | variant | throughput × seed | p95 × seed | TTFA p95 × seed |" in table
    assert "| clients | variant | throughput × seed-main | p95 × seed-main | TTFA p95 × seed-main |" in table
    assert "| 8 | pipeline | 2.00 | 0.75 | 0.75 |" in table
    assert "| 8 | pipeline | 1.25 | 1.50 | 1.50 |" in table


def test_parse_prometheus_sums_per_deployment() -> None:
    text = "\n".join(
        [
            "# HELP ray_serve_deployment_queued_queries queued",
            'ray_serve_deployment_queued_queries{app="tts",deployment="SambertAcoustic",handle="a"} 3.0',
            'ray_serve_deployment_queued_queries{app="tts",deployment="SambertAcoustic",handle="b"} 2.0',
            'ray_serve_replica_processing_queries{deployment="HifiGanVocoder",replica="x"} 1.0',
            'ray_serve_other{deployment="HifiGanVocoder"} 9.0',
        ]
    )
    names = {"ray_serve_deployment_queued_queries", "ray_serve_replica_processing_queries"}
    got = demo.parse_prometheus(text, names)
    assert got["ray_serve_deployment_queued_queries"] == {"SambertAcoustic": 5.0}
    assert got["ray_serve_replica_processing_queries"] == {"HifiGanVocoder": 1.0}


def test_autoscale_summary_and_plot(tmp_path: Path) -> None:
    args = argparse.Namespace(warmup_seconds=10.0, spike_seconds=20.0)
    counts = [1] * 12 + [2, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4] + [4] * 5 + [2] * 5 + [1] * 10
    samples = [
        demo.Sample(float(t), {"SambertAcoustic": n, "TTSIngress": 1}, {"SambertAcoustic": n * 2.0}, {})
        for t, n in enumerate(counts)
    ]
    summary = demo.summarize(samples, args)
    assert summary["acoustic_before_spike"] == 1
    assert summary["acoustic_max_during_spike"] == 4
    assert summary["acoustic_min_after_spike"] == 1
    history = [{"t": float(t), "users": 2.0 if t < 10 else 10.0, "rps": 1.0, "p95": 500.0} for t in range(40)]
    png = tmp_path / "a.png"
    demo.plot(samples, history, png, "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_compare_deploys_the_shipped_config_with_the_asked_vocoder_precision() -> None:
    """bench-compare measures the shipped config with only the cache off, admission lifted and, when asked,
    the vocoder precision every variant runs in; the result is a config Serve accepts."""
    from ray.serve.schema import ServeDeploySchema

    default = cmp.pipeline_config(cmp.DEFAULT_CONFIG, "/m", 8123)
    bf16 = cmp.pipeline_config(cmp.DEFAULT_CONFIG, "/m", 8123, "bf16")
    for raw in (default, bf16):
        ServeDeploySchema.model_validate(raw)
        args = raw["applications"][0]["args"]
        assert args["model_dir"] == "/m" and raw["http_options"]["port"] == 8123
        assert args["ingress"]["cache_max_entries"] == 0 and args["ingress"]["max_inflight"] == 1024
    assert default["applications"][0]["args"]["vocoder_precision"] == "fp32"  # the shipped default
    assert bf16["applications"][0]["args"]["vocoder_precision"] == "bf16"


@pytest.mark.serve
def test_monolith_variant_deploys_and_answers_a_wav(serve_instance) -> None:  # type: ignore[no-untyped-def]
    """bench-compare's one-deployment variant must run on the Serve we ship (its sync constructor runs inside
    the replica's event loop): one replica, one request, a WAV of the right length class back."""
    import httpx
    from ray import serve

    from benchmarks.monolith_app import MonolithTTS
    from tests.conftest import _wait_running

    app = MonolithTTS.options(num_replicas=1, ray_actor_options={"num_cpus": 0.1}).bind(
        str(serve_instance.model_dir), 1
    )
    serve._run(app, name="monolith", route_prefix="/monolith", _blocking=False)
    try:
        _wait_running("monolith", 180)
        r = httpx.post(serve_instance.url + "/monolith", json={"text": "您好，欢迎致电。"}, timeout=120)
        assert r.status_code == 200 and r.content[:4] == b"RIFF", r.text[:200]
        assert len(r.content) > 44 + 16000 // 4  # a quarter second of 16-bit audio at least
    finally:
        serve.delete("monolith", _blocking=True)


def test_first_audio_marks_each_step_once_in_order(tiny_model_dir: Path) -> None:
    """bench-first-audio's timestamps come from the real orchestrator's stage calls, in the order the first
    audio is made (units, acoustic header, first mel, first vocoder chunk), and the audio is unchanged."""
    import asyncio

    import numpy as np

    from benchmarks.first_audio import MARKS, _MarkedStages
    from engine.messages import SynthesisRequest
    from engine.orchestrator import Orchestrator
    from engine.synthesizer import LocalStages

    local = LocalStages(tiny_model_dir)
    request = SynthesisRequest("您好，这里是客服中心。请问有什么可以帮您？", stream=True, format="pcm")

    async def run(stages: object) -> tuple[np.ndarray, float, float]:
        orchestrator = Orchestrator(stages)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        units = await orchestrator.units(request)
        audio = [a async for a in orchestrator.stream(request, units)]
        return np.concatenate(audio), t0, time.perf_counter()

    marked = _MarkedStages(local)
    audio, t0, t1 = asyncio.run(run(marked))
    reference, _, _ = asyncio.run(run(local))
    np.testing.assert_array_equal(audio, reference)
    times = [marked.marks[m] for m in MARKS]
    assert times == sorted(times) and t0 <= times[0] and times[-1] <= t1


def test_bench_serve_cpu_split_attributes_a_busy_child_to_its_role() -> None:
    """bench-serve's CPU table: a child process that burns CPU during the window shows up under its role
    with the share of a core it took; the benchmark's own process is the load generator; the table sums."""
    import subprocess
    import sys

    from benchmarks import bench_serve

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.8: pass\ntime.sleep(5)\n"
    child = subprocess.Popen([sys.executable, "-c", burn])
    try:
        before = bench_serve.cpu_seconds()
        start = time.perf_counter()
        time.sleep(1.5)
        after = bench_serve.cpu_seconds()
        wall = time.perf_counter() - start
    finally:
        child.kill()
        child.wait(timeout=10)
    cores = bench_serve.cores_by_role(before, after, wall)
    burner = after[child.pid][0]
    assert 0.2 < cores[burner] <= 1.05, cores  # ~0.8 CPU s over ~1.5 s (less on a loaded box), not idle
    assert bench_serve.LOAD_GENERATOR in cores
    table = bench_serve.cpu_table(cores, throughput=2.0, clients=8)
    assert f"| {burner} | {100 * cores[burner]:.1f} | {1000 * cores[burner] / 2.0:.0f} |" in table
    assert "| = all |" in table


def test_bench_role_of_a_busy_ray_worker_drops_the_method_ray_appends() -> None:
    """Ray retitles a worker ``ray::<actor>.<method>`` while a method runs (the Serve controller, the proxy
    and the ingress nearly always): the CPU and memory tables keep one role per process, the actor's."""
    import subprocess
    import sys

    import psutil

    from benchmarks.bench_memory import role

    titles = ("ray::ServeController.listen_for_change", "ray::ServeReplica:tts:TTSIngress", "ray::IDLE")
    sleep = "import time; time.sleep(30)"
    # Popen returns once the child has exec'd: its argv (title first) is in place
    children = [subprocess.Popen([title, "-c", sleep], executable=sys.executable) for title in titles]
    try:
        roles = [role(psutil.Process(c.pid)) for c in children]
    finally:
        for c in children:
            c.kill()
            c.wait(timeout=10)
    assert roles == ["ray::ServeController", "ray::ServeReplica:tts:TTSIngress", "ray::IDLE"]


def test_bench_serve_cpu_split_follows_a_process_whose_role_changed() -> None:
    """A worker that was idle at the first reading and a replica at the second counts under the replica."""
    from benchmarks import bench_serve

    before = {7: ("ray::IDLE", 1.0), 8: ("raylet", 3.0), 9: ("gone", 5.0)}
    after = {7: ("ray::ServeReplica:tts:HifiGanVocoder", 2.5), 8: ("raylet", 3.5), 10: ("new", 1.0)}
    cores = bench_serve.cores_by_role(before, after, wall=2.0)
    assert cores == {"ray::ServeReplica:tts:HifiGanVocoder": 0.75, "raylet": 0.25}


def test_actor_title_keeps_the_actor_of_a_replica_title() -> None:
    """The one rule both the memory/CPU tables and `make reliability`'s replica lookup read titles with."""
    from benchmarks.bench_memory import actor_title

    busy = "ray::ServeReplica:tts:Vocoder.handle_request_streaming"
    assert actor_title(busy) == "ray::ServeReplica:tts:Vocoder"
    assert actor_title("ray::ServeReplica:tts:Acoustic") == "ray::ServeReplica:tts:Acoustic"
    assert actor_title("ray::IDLE") == "ray::IDLE"
