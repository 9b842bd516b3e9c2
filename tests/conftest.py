"""Shared fixtures. Serve tests share ONE Ray + Serve instance per session (start ≈10 s; ray.shutdown()).

Apps on the shared instance (each with its own route prefix, all on the tiny random model):
  ``tts``      at ``/``         default settings (the app every endpoint test talks to)
  ``limited``  at ``/limited``  tiny stage queues (429 + Retry-After), short deadline (504), small text limit
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from compat.ports import free_port

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random model directory (two voices), generated once per session."""
    from engine.testing.make_model_dir import write_model_dir

    return write_model_dir(tmp_path_factory.mktemp("models") / "tiny", size="tiny")


@dataclass(frozen=True)
class ServeInstance:
    url: str  # http://127.0.0.1:<port>
    model_dir: Path

    def app_url(self, prefix: str) -> str:
        return self.url + prefix


def _stage(num_cpus: float = 0.1, **extra: Any) -> dict[str, Any]:
    return {"ray_actor_options": {"num_cpus": num_cpus}, "num_replicas": 1, **extra}


def test_apps(model_dir: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, route prefix, build_app args) for every app on the shared instance."""
    threads = {"frontend": 1, "acoustic": 1, "vocoder": 1}
    main = {
        "model_dir": model_dir,
        "threads": threads,
        "ingress": {
            "limits": {"max_text_chars": 600},
            "stream": {"first_chunk_frames": 4, "chunk_frames": 8},
            # Functional tests queue at the door instead of being shed (overload has its own apps/tests).
            "max_wait_s": 60.0,
            "wait_fraction": 1000.0,
        },
        "options": {
            name: _stage(max_ongoing_requests=16)
            for name in ("TTSIngress", "TextFrontend", "SambertAcoustic", "HifiGanVocoder")
        },
    }
    tiny_queue = {"max_ongoing_requests": 1, "max_queued_requests": 1}
    limited = {
        "model_dir": model_dir,
        "threads": threads,
        "ingress": {
            "limits": {"max_text_chars": 2000, "request_timeout_s": 0.25, "max_concurrent_units": 1},
            "cache_max_entries": 0,
            "audio_store": {"ttl_s": 1.0},
        },
        "options": {
            "TTSIngress": _stage(max_ongoing_requests=64),
            "TextFrontend": _stage(max_ongoing_requests=16),
            "SambertAcoustic": _stage(
                **tiny_queue, backpressure_config={"status_code": 429, "retry_after_s": 2}
            ),
            # one call at a time, but room in the queue for one request's two vocoder lanes (whose calls
            # briefly overlap Serve's ongoing count): a lone slow request meets its deadline, not a 503
            "HifiGanVocoder": _stage(max_ongoing_requests=1, max_queued_requests=4),
        },
    }
    return [("tts", "/", main), ("limited", "/limited", limited)]


LIMITED_SLOW_TEXT = "这是一个很长的句子，用来测试请求超时的处理是否正确。" * 30


def post_limited(url: str, body: dict[str, object], attempts: int = 3) -> httpx.Response:
    """POST ``body`` to the ``limited`` app. Its tiny stage queues may refuse it (429/503 overloaded) while
    calls of earlier timed-out requests still occupy them: then wait a second and try again (bounded)."""
    for _ in range(attempts):
        r = httpx.post(url + "/limited/api/tts", json=body, timeout=60)
        if r.status_code not in (429, 503):
            break
        time.sleep(1.0)
    return r


def post_past_limited_deadline(url: str) -> httpx.Response:
    """A request that outlives the ``limited`` app's 0.25 s deadline (expect 504)."""
    return post_limited(url, {"text": LIMITED_SLOW_TEXT})


@pytest.fixture(scope="session")
def serve_instance(tiny_model_dir: Path) -> Iterator[ServeInstance]:
    """Start Ray (fixed logical CPUs) and Serve once; deploy the test apps; tear down with ray.shutdown()."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    import ray
    from ray import serve

    from serve_app.graph import build_app
    from serve_app.ray_system import system_config

    port = free_port()
    ray.init(
        num_cpus=8,  # logical slots for fractional replicas; the box has 2 real cores
        include_dashboard=False,
        log_to_driver=False,
        namespace="tts-tests",
        runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled", "PYTHONPATH": os.environ["PYTHONPATH"]}},
        # metrics reach the Prometheus endpoint within ~1 s (default 10 s), so scrape tests stay short
        _system_config=system_config(metrics_report_interval_ms=1000),
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        apps = test_apps(str(tiny_model_dir))
        for name, prefix, args in apps:  # deploy concurrently, then wait for all
            serve._run(build_app(args), name=name, route_prefix=prefix, _blocking=False)
        for name, _, _ in apps:
            _wait_running(name)
        yield ServeInstance(url=f"http://127.0.0.1:{port}", model_dir=tiny_model_dir)
    finally:
        ray.shutdown()


def _wait_running(name: str, timeout_s: float = 300.0) -> None:
    import time

    from ray import serve

    deadline = time.monotonic() + timeout_s
    status = None
    while time.monotonic() < deadline:
        status = serve.status().applications.get(name)
        if status is not None and status.status == "RUNNING":
            return
        if status is not None and status.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise RuntimeError(f"app {name} failed: {status.message}")
        time.sleep(0.2)
    print(f"app {name} not running after {timeout_s}s: {status}", file=sys.stderr)
    raise TimeoutError(f"app {name} did not become RUNNING")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """One line naming the tests skipped for a missing system package, and the command that fixes it."""
    import re

    packages: set[str] = set()
    count = 0
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        found = re.search(r"apt-get install -y ([a-z0-9 .+-]+)", reason)
        if found:
            count += 1
            packages.update(found.group(1).split())
    if packages:
        names = " ".join(sorted(packages))
        terminalreporter.write_line(
            f"SKIPPED {count} test(s) needing system packages ({names}); fix: `make system-deps` "
            f"as root/sudo, or sudo apt-get install -y {names}",
            yellow=True,
        )
