"""Helpers for security/reliability tests: a real redis-server, extra apps on the shared Serve instance."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from compat.ports import free_port

REDIS_BIN = shutil.which("redis-server")


@dataclass
class RedisServer:
    url: str
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_redis(workdir: Path) -> RedisServer:
    """A throwaway redis-server on 127.0.0.1:<free port>, no persistence; waits until it answers PING."""
    if REDIS_BIN is None:
        pytest.skip(
            "redis-server binary not installed (apt-get install -y redis-server); Redis backend untested"
        )
    port = free_port()
    proc = subprocess.Popen(
        [
            REDIS_BIN,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return RedisServer(f"redis://127.0.0.1:{port}/0", proc)
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("redis-server did not start")


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


def deploy(name: str, prefix: str, args: dict[str, Any], timeout_s: float = 180.0) -> None:
    """Deploy ``build_app(args)`` as another app on the shared instance and wait until it is RUNNING."""
    from ray import serve

    from serve_app.graph import build_app
    from tests.conftest import _wait_running

    serve._run(build_app(args), name=name, route_prefix=prefix, _blocking=False)
    _wait_running(name, timeout_s)


def undeploy(name: str) -> None:
    from ray import serve

    serve.delete(name, _blocking=True)


def stage_options(num_cpus: float = 0.1, **extra: Any) -> dict[str, Any]:
    return {"ray_actor_options": {"num_cpus": num_cpus}, **extra}
