"""``make run`` (``python -m serve_app.run``): its log rendering, and the real command end to end (slow)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from benchmarks.bench_memory import process_tree, role, run_config, wait_ready
from compat.ports import free_port
from serve_app.ray_system import RAY_SYSTEM_CONFIG, SERVE_ENV
from serve_app.run import LogFollower, log_line

REPO = Path(__file__).resolve().parent.parent


def _record(message: str, **extra: object) -> str:
    record = {
        "asctime": "2026-12-03 00:11:24,401",
        "levelname": "INFO",
        "message": message,
        "actor_name": "SERVE_REPLICA::tts#TTSIngress#e5d4v49e",
        **extra,
    }
    return json.dumps(record)


def test_log_line_renders_serve_json_records() -> None:
    assert (
        log_line(_record("POST /api/tts 200 372.5ms"))
        == "00:11:24,401 INFO TTSIngress: POST /api/tts 200 372.5ms"
    )
    failed = log_line(_record("boom", levelname="ERROR", exc_text="Traceback ...\nValueError: x"))
    assert failed == "00:11:24,401 ERROR TTSIngress: boom\nTraceback ...\nValueError: x"
    controller = json.dumps({"asctime": "2026-12-03 00:11:24,401", "levelname": "INFO", "message": "up"})
    assert log_line(controller) == "00:11:24,401 INFO serve: up"
    assert (
        log_line("INFO 2026-12-03 proxy -- POST /api/tts 200") == "INFO 2026-12-03 proxy -- POST /api/tts 200"
    )
    assert log_line('["not", "a record"]') == '["not", "a record"]'


def test_log_follower_prints_complete_lines_once_and_finds_new_files(tmp_path: Path) -> None:
    out = io.StringIO()
    follower = LogFollower(tmp_path, out)
    assert follower.poll() == 0
    first = tmp_path / "replica_tts_TTSIngress_a.log"
    two = _record("two")
    first.write_text(_record("one") + "\n" + two[:20], "utf-8")  # the second record is half written
    assert follower.poll() == 1
    with first.open("a", encoding="utf-8") as f:
        f.write(two[20:] + "\n")
    (tmp_path / "controller_1.log").write_text("plain line\n", "utf-8")
    (tmp_path / "notes.txt").write_text("not a log\n", "utf-8")
    assert follower.poll() == 2
    assert follower.poll() == 0
    lines = out.getvalue().splitlines()
    assert lines[0] == "00:11:24,401 INFO TTSIngress: one"
    assert sorted(lines[1:]) == ["00:11:24,401 INFO TTSIngress: two", "plain line"]


def test_a_missing_config_is_a_cli_error_before_ray_starts(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-m", "serve_app.run", str(tmp_path / "nope.yaml")],
        cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"error: no such config file: {tmp_path / 'nope.yaml'}" in done.stderr


def _serve_controllers(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if role(p) == "ray::ServeController"]


def test_serve_env_names_settings_this_ray_reads() -> None:
    """SERVE_ENV's variables are the ones this Ray's Serve reads (a renamed one would silently do nothing)."""
    probe = "from ray.serve._private import constants as c; print(repr(c.CONTROL_LOOP_INTERVAL_S))"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, **SERVE_ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout) == float(SERVE_ENV["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"])  # Ray's default: 0.1


@pytest.mark.serve
def test_the_serve_controller_runs_with_serve_env(serve_instance) -> None:  # type: ignore[no-untyped-def]
    """The test session's Ray (started like every serving node) runs its Serve controller with SERVE_ENV."""
    controllers = _serve_controllers(psutil.Process().children(recursive=True))
    assert controllers
    for p in controllers:
        assert SERVE_ENV.items() <= p.environ().items()


@pytest.mark.slow
def test_make_run_serves_logs_and_stops_cleanly(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The command `make run` runs: /ready, a synthesis, its log line on the console; Ctrl-C: the replicas
    drain and the whole node is gone."""
    import yaml

    port = free_port()
    cfg = run_config(str(tiny_model_dir), port, replicas=1)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False), "utf-8")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", PYTHONPATH=str(REPO))
    log = tmp_path / "console.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serve_app.run", str(config)], cwd=REPO, env=env, stdout=out, stderr=out
        )
    root = psutil.Process(proc.pid)
    children: list[psutil.Process] = []
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, proc, timeout_s=240)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{exc}\n{log.read_text('utf-8', 'replace')[-3000:]}")
        r = httpx.post(f"{url}/api/tts", json={"text": "你好，世界。"}, timeout=60)
        assert r.status_code == 200 and r.content[:4] == b"RIFF"
        children = process_tree(root)[1:]
        names = " ".join(" ".join(p.cmdline()[:2]) for p in children)
        assert "raylet" in names and "gcs_server" in names
        for absent in ("monitor.py", "log_monitor.py", "ray.util.client.server", "dashboard.py"):
            assert absent not in names  # what `make run` leaves out (docs/performance.md, Memory)
        (gcs,) = [p.cmdline() for p in children if "gcs_server" in " ".join(p.cmdline()[:1])]
        (config_arg,) = [a for a in gcs if a.startswith("--config_list=")]
        system = json.loads(base64.b64decode(config_arg.split("=", 1)[1]))
        assert RAY_SYSTEM_CONFIG.items() <= system.items()  # serve_app/ray_system.py reaches the cluster
        controllers = _serve_controllers(children)
        assert controllers and all(SERVE_ENV.items() <= p.environ().items() for p in controllers)
        deadline = time.monotonic() + 30
        while '"event": "synthesis"' not in log.read_text("utf-8", "replace") and time.monotonic() < deadline:
            time.sleep(0.5)
        console = log.read_text("utf-8", "replace")
        assert "TTSIngress: " in console and '"event": "synthesis"' in console, console[-3000:]
        assert "RANDOM WEIGHTS - this voice is untrained" in console  # the tiny test voice is random
        metrics_url = re.search(r"Prometheus metrics at (\S+);", console)
        assert metrics_url, console[:3000]
        deadline, scraped = time.monotonic() + 60, ""
        while "ray_tts_request_latency_ms" not in scraped and time.monotonic() < deadline:
            time.sleep(2)  # the agent exports the replicas' metrics every few seconds
            scraped = httpx.get(metrics_url.group(1), timeout=10).text
        assert "ray_tts_request_latency_ms" in scraped and "ray_tts_stage_latency_ms" in scraped

        proc.send_signal(signal.SIGINT)
        assert proc.wait(120) == 0, log.read_text("utf-8", "replace")[-3000:]
        assert "Graceful shutdown complete" in log.read_text("utf-8", "replace")  # replicas drained
        _, alive = psutil.wait_procs(children, timeout=90)
        assert not alive, alive  # the whole node went with it
    finally:
        if proc.poll() is None:
            children += process_tree(root)[1:]
            proc.kill()
            proc.wait(30)
        for p in children:
            with contextlib.suppress(psutil.Error):
                p.kill()
