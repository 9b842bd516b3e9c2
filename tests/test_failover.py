"""Failover through the chart's own nginx gateway (real Debian nginx, loopback only).

Fast: the rendered nginx.conf in front of two tiny Python backends (failover, POST replay, 404 during a
restart, failback, no replay of non-idempotent routes). Slow: the real drill with two Ray clusters
(tests/k8s/failover.py, shortened; `make failover-test` runs the full one).
"""

from __future__ import annotations

import functools
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from compat.ports import free_port
from tests.k8s.failover import (
    ClusterExited,
    RayCluster,
    check,
    drill,
    gateway_nginx_conf,
    start_nginx,
)

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx missing: apt-get install -y nginx"
)


class Backend:
    """A loopback HTTP server answering as `name`, whose behaviour can be switched: ok | 404 | 503 | down."""

    def __init__(self, name: str, port: int) -> None:
        self.name, self.port, self.mode = name, port, "ok"
        self.hits = 0
        self.server: ThreadingHTTPServer | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                if backend.mode == "down":  # a killed cluster: drop kept-alive connections unanswered
                    self.close_connection = True
                    return
                backend.hits += 1
                code = {"ok": 200, "404": 404, "503": 503}[backend.mode]
                body = backend.name.encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        return Handler

    def up(self, mode: str = "ok") -> None:
        self.mode = mode
        if self.server is None:
            self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
            threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self) -> None:
        self.mode = "down"
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


@pytest.fixture(scope="module")
def rendered_gateway() -> tuple[Callable[[int], str], int, int, int]:
    """The chart's nginx.conf for two free backend ports, by listen port (each rendered once per module),
    and the listen port to try first."""
    primary_port, standby_port = free_port(), free_port()
    conf_for = functools.cache(
        lambda listen: gateway_nginx_conf(
            primary_port, standby_port, listen, {"failTimeout": "1s", "connectTimeout": "1s"}
        )
    )
    listen = free_port()
    conf_for(listen)
    return conf_for, primary_port, standby_port, listen


@pytest.fixture
def gateway(
    rendered_gateway: tuple[Callable[[int], str], int, int, int],
) -> Iterator[tuple[str, Backend, Backend]]:
    conf_for, primary_port, standby_port, first_listen = rendered_gateway
    a, b = Backend("primary", primary_port), Backend("standby", standby_port)
    a.up()
    b.up()
    nginx, listen = start_nginx(conf_for, port=first_listen)
    try:
        yield f"http://127.0.0.1:{listen}", a, b
    finally:
        nginx.stop()
        a.down()
        b.down()


def _post(client: httpx.Client, url: str) -> tuple[int, str]:
    r = client.post(url, json={"text": "你好"})
    return r.status_code, r.text


def test_gateway_fails_over_replays_post_and_fails_back(gateway: tuple[str, Backend, Backend]) -> None:
    base, primary, standby = gateway
    with httpx.Client(timeout=10) as client:
        assert _post(client, f"{base}/api/tts") == (200, "primary")
        assert standby.hits == 0, "the backup gets no traffic while the primary is healthy"

        primary.down()  # connection refused: POST replayed on the backup, client sees 200
        for path in ("/api/tts", "/tts", "/v1/audio/speech"):
            assert _post(client, f"{base}{path}") == (200, "standby")

        primary.up("404")  # proxy up, app not deployed yet
        time.sleep(
            2.2
        )  # past fail_timeout (1 s granularity): nginx probes the primary with live requests again
        assert [_post(client, f"{base}/api/tts") for _ in range(3)] == [(200, "standby")] * 3

        primary.mode = "503"  # Serve "no replicas" / backpressure (404s did not mark the primary failed)
        assert _post(client, f"{base}/api/tts") == (200, "standby")

        primary.mode = "ok"
        time.sleep(2.2)
        assert _post(client, f"{base}/api/tts") == (200, "primary"), "traffic fails back"


def test_gateway_does_not_replay_non_idempotent_routes(gateway: tuple[str, Backend, Backend]) -> None:
    base, primary, standby = gateway
    primary.mode = "503"
    with httpx.Client(timeout=10) as client:
        # A POST outside the synthesis paths is not replayed on the backup ...
        assert _post(client, f"{base}/api/other") == (503, "primary")
        assert standby.hits == 0
        time.sleep(2.2)
        # ... while a GET (idempotent by definition) is.
        r = client.get(f"{base}/ready")
        assert (r.status_code, r.text) == (200, "standby")
        assert r.headers["x-request-id"] and "," not in r.headers["x-request-id"]


@pytest.mark.slow
def test_failover_drill_two_ray_clusters() -> None:
    """Two real Ray clusters (tiny model) behind nginx: kill the primary under load, restart, fail back."""
    report = drill(steady_s=5.0, after_kill_s=8.0, after_failback_s=5.0, workers=3, keep=False)
    print("\n".join(report.lines()))
    assert not check(report), check(report)
    # the primary died with requests in flight: the gateway replayed at least one on the standby
    assert report.retried_on_backup >= 1, report.lines()
    assert report.failover_s < 15


def test_a_cluster_that_exits_while_booting_is_started_again_once_and_its_log_is_reported(
    tmp_path: Path,
) -> None:
    """The drill's harness: a cluster process that dies before /ready is restarted (bounded), and the error
    carries its log's tail (the drill deletes its work directory, so the CI output must hold the cause)."""
    cluster = RayCluster("standby", free_port(), tmp_path, tmp_path, config=tmp_path / "missing.yaml")
    with pytest.raises(ClusterExited) as err:
        cluster.start_ready(attempts=2)
    assert cluster.starts == 2
    assert "standby cluster exited (code 1)" in str(err.value)
    assert "missing.yaml" in str(err.value)  # the log's own error line
