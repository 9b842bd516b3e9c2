"""The locust harness end to end: real `locust` subprocesses, exit codes from the SLO gate.

A tiny stdlib HTTP server speaking the `/api/tts` contract stands in for the service here so the harness
is tested on its own in about 5 s; `test_loadtests_serve.py` runs it against the real test service (a
lenient run that must pass and a tight-SLO run that must fail on real latencies).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"
MAGIC = {"wav": b"RIFF", "flac": b"fLaC", "ogg": b"OggS", "mp3": b"ID3\x04"}


def fake_audio(fmt: str, sample_rate: int) -> bytes:
    """Bytes that pass the harness's format checks (magic, wav sample rate, WAV data chunk)."""
    if fmt in ("wav", "mulaw", "alaw"):
        fact = b"fact" + bytes(8) if fmt != "wav" else b""  # G.711 WAVs carry a fact chunk
        fmt_chunk = b"fmt " + bytes(4) + bytes(4) + sample_rate.to_bytes(4, "little") + bytes(12)
        return b"RIFF" + bytes(4) + b"WAVE" + fmt_chunk + fact + b"data" + bytes(4) + bytes(3200)
    return MAGIC.get(fmt, b"") + bytes(1600)


class FakeTTS(BaseHTTPRequestHandler):
    """Implements just enough of the API contract for the harness; 20 ms per request."""

    def log_message(self, *args: object) -> None:  # keep test output quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/api/voices":
            info = {"voices": [{"name": "zhitian_emo"}], "emotions": ["neutral", "happy", "sad", "gentle"]}
            self._send(200, json.dumps(info).encode(), "application/json")
        else:
            self._send(404, b'{"error":{"code":"not_found","message":"no route"}}', "application/json")

    def do_POST(self) -> None:
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        time.sleep(0.02)
        fmt = req.get("format") or req.get("response_format") or "wav"
        audio = fake_audio(fmt, int(req.get("sample_rate") or 16000))
        if not req.get("stream"):
            self._send(200, audio, f"audio/{fmt}")
            return
        self.send_response(200)  # HTTP/1.0: body runs until the connection closes
        self.send_header("Content-Type", f"audio/{fmt}")
        self.end_headers()
        for i in range(0, len(audio), 800):
            self.wfile.write(audio[i : i + 800])
            self.wfile.flush()
            time.sleep(0.005)


class FakeServer(ThreadingHTTPServer):
    """A listen backlog for every user at once (the default 5 makes the rest wait for a SYN retry, 1 s)."""

    request_queue_size = 128


@pytest.fixture(scope="module")
def fake_service() -> Iterator[str]:
    server = FakeServer(("127.0.0.1", 0), FakeTTS)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# The mix is random: with 9 users a 3 s run missed every short IVR stream about once in 30 runs (each IVR
# user starts 1-2 tasks, half of them short). 40 users (~22 IVR callers) make a miss ~0.5**22 unlikely.
USERS = "40"


def locust_cmd(host: str, report: Path, *extra: str) -> list[str]:
    """Headless steady run of the project's locustfile with CSV + HTML reports."""
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-H", host,
        "-u", USERS, "-r", USERS, "-t", "3s", "--shape", "steady", "--only-summary",
        "--csv", str(report), "--html", f"{report}.html", *extra,
    ]  # fmt: skip


def test_harness_passes_and_fails_on_slo(fake_service: str, tmp_path: Path) -> None:
    lenient = ("--slo-p95-ms", "short=60000,medium=60000,long=60000", "--slo-ttfa-p95-ms", "60000")
    ok_cmd = locust_cmd(fake_service, tmp_path / "ok", *lenient, "--slo-rtf-p95", "100")
    ok = subprocess.Popen(ok_cmd, stdout=subprocess.PIPE, text=True)
    tight_cmd = locust_cmd(fake_service, tmp_path / "tight", "--slo-p95-ms", "short=1,medium=1,long=1")
    tight = subprocess.Popen([*tight_cmd, "--slo-ttfa-p95-ms", "1"], stdout=subprocess.PIPE, text=True)
    ok_out, _ = ok.communicate(timeout=60)
    tight_out, _ = tight.communicate(timeout=60)

    assert ok.returncode == 0, ok_out
    assert "SLO result: PASS" in ok_out
    # every request kind of the customer-service mix ran, streaming ones with TTFA and total
    for name in ("stream-ttfa short", "stream-total short", "stream-total medium", "voices"):
        assert name in ok_out, ok_out
    stats_csv = (tmp_path / "ok_stats.csv").read_text()
    assert "stream-ttfa" in stats_csv and (tmp_path / "ok.html").stat().st_size > 1000

    assert tight.returncode == 3, tight_out
    assert "MISSED" in tight_out and "SLO result: FAIL" in tight_out
