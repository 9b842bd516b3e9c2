"""The chart's nginx gateway replays a synthesis that hit a dying ingress replica (real nginx, loopback).

When the ingress replica holding a request dies, the Serve proxy answers 500 before any response byte (it
cannot replay: the request body lived in the dead replica). The gateway lists the primary
`gateway.primaryAttempts` times (3), so nginx replays the POST on the primary again - where Serve routes it
to a live replica - before the standby. These tests pin that behaviour with a scripted backend; the
end-to-end ingress kill under load is tests/test_reliability_faults.py::test_kill_ingress_behind_gateway_*.
"""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import yaml

from tests.k8s.failover import gateway_nginx_conf, start_nginx
from tests.k8s.render import CHART_DIR

PRIMARY_ATTEMPTS = int(yaml.safe_load((CHART_DIR / "values.yaml").read_text())["gateway"]["primaryAttempts"])

pytestmark = pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx missing: apt-get install -y nginx"
)


class Scripted:
    """Loopback HTTP backend: answers from a script of modes, then ``default``.

    Modes: ``ok`` (200 + name), ``500`` (what the Serve proxy answers when the ingress replica dies),
    ``partial`` (200 headers and half the body, then the connection drops: bytes already reached the client).
    """

    def __init__(self, name: str, default: str = "ok") -> None:
        self.name, self.default = name, default
        self.script: list[str] = []
        self.hits: list[str] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _next(self) -> str:
        with self._lock:
            mode = self.script.pop(0) if self.script else self.default
            self.hits.append(mode)
            return mode

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                mode = backend._next()
                body = backend.name.encode() * 64 if mode != "500" else b"Internal Server Error"
                self.send_response(500 if mode == "500" else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if mode == "partial":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(body)

        return Handler

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def gw() -> Iterator[tuple[str, Scripted, Scripted]]:
    """Chart-rendered nginx (default gateway values) in front of a scripted primary and standby."""
    primary, standby = Scripted("P"), Scripted("S")
    try:
        nginx, listen = start_nginx(lambda port: gateway_nginx_conf(primary.port, standby.port, port))
    except RuntimeError:
        primary.close()
        standby.close()
        raise
    try:
        yield f"http://127.0.0.1:{listen}/api/tts", primary, standby
    finally:
        nginx.stop()
        primary.close()
        standby.close()


def test_dying_ingress_500_is_replayed_on_the_same_cluster(gw: tuple[str, Scripted, Scripted]) -> None:
    url, primary, standby = gw
    primary.script = ["500"]
    with httpx.Client(timeout=10) as client:
        r = client.post(url, json={"text": "你好"})
        assert (r.status_code, r.text[:1]) == (200, "P"), "replayed on the primary, not the standby"
        assert primary.hits == ["500", "ok"] and standby.hits == []
        # One dying replica does not flip the cluster: the next requests still go to the primary.
        assert [client.post(url, json={"text": "你好"}).text[:1] for _ in range(3)] == ["P"] * 3
    assert standby.hits == []


def test_standby_gets_the_replay_when_every_primary_attempt_fails(gw: tuple[str, Scripted, Scripted]) -> None:
    url, primary, standby = gw
    attempts = PRIMARY_ATTEMPTS
    primary.script = ["500"] * attempts
    with httpx.Client(timeout=10) as client:
        r = client.post(url, json={"text": "你好"})
    assert (r.status_code, r.text[:1]) == (200, "S")
    assert primary.hits == ["500"] * attempts and standby.hits == ["ok"]


def test_two_failed_primary_attempts_are_saved_on_the_primary(gw: tuple[str, Scripted, Scripted]) -> None:
    """A node loss can reset two attempts (the dead ingress replica, then a kept-alive connection to the dead
    proxy): the third primary slot still serves it, the standby is not needed."""
    url, primary, standby = gw
    primary.script = ["500", "500"]
    with httpx.Client(timeout=10) as client:
        r = client.post(url, json={"text": "你好"})
    assert (r.status_code, r.text[:1]) == (200, "P")
    assert primary.hits == ["500", "500", "ok"] and standby.hits == []


def test_no_replay_once_bytes_reached_the_client(gw: tuple[str, Scripted, Scripted]) -> None:
    """nginx's own rule: a response that already started is never replayed (the client sees the break)."""
    url, primary, standby = gw
    primary.script = ["partial"]
    with httpx.Client(timeout=10) as client, pytest.raises(httpx.HTTPError):
        client.post(url, json={"text": "你好"}).read()
    assert primary.hits == ["partial"] and standby.hits == []


@pytest.mark.parametrize("how", ["picked", "given"])
def test_gateway_start_takes_a_fresh_port_when_its_pick_was_taken(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A port picked free (or given, picked earlier) can be bound by another process before nginx binds it:
    the start picks again."""
    from tests.k8s import failover

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        if how == "picked":
            picks = iter([busy])
            real = failover.free_port
            monkeypatch.setattr(failover, "free_port", lambda: next(picks, None) or real())
        given = busy if how == "given" else None
        nginx, port = failover.start_nginx(lambda p: gateway_nginx_conf(1, 2, p), port=given)
        try:
            assert port != busy
            assert httpx.get(f"http://127.0.0.1:{port}/gateway/healthz", timeout=5).status_code == 200
        finally:
            nginx.stop()
