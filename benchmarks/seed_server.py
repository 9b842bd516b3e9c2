"""The seeds' serving architecture, rebuilt for comparison: ONE process, a threaded HTTP server (what
Flask's dev server does) and ONE global lock around the same engine and model.

    python -m benchmarks.seed_server --model-dir DIR --port 5000 [--main-thread]

Each request runs on its own new thread, as under Flask's dev server; the model was loaded (and warmed) on
the main thread. Torch's OpenMP then gives each request thread a second thread team, which on a 2-core box
made a 2-thread synthesis 1.6-3.5x slower (docs/performance.md). ``--main-thread`` serves one request at a
time on the main thread instead, closing each connection (the shape of one gunicorn sync worker): the same
design without that cost.

``POST /tts {text, emotion, speed}`` → WAV (seed request shape); ``GET /health``. Not for production use.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer
from typing import Any

from engine.modeldir import VOCODER_PRECISIONS

LOCK = threading.Lock()  # the seeds' design: every request serialises on one model lock


def make_handler(synth: Any, close_each: bool = False) -> type[BaseHTTPRequestHandler]:
    """``close_each``: close the connection after every response (a gunicorn sync worker does; one
    keep-alive client would otherwise hold a one-at-a-time server)."""

    class SeedHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if close_each:
                self.send_header("Connection", "close")  # also sets close_connection
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            ok = self.path == "/health"
            self._send(200 if ok else 404, b'{"status":"ok"}' if ok else b"{}", "application/json")

        def do_POST(self) -> None:
            if self.path != "/tts":
                self._send(404, b'{"error":"not found"}', "application/json")
                return
            try:
                req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with LOCK:
                    wav, _ = synth.synthesize_bytes(
                        req["text"], "wav", emotion=req.get("emotion", "neutral"), speed=req.get("speed", 1.0)
                    )
            except Exception as exc:  # the seeds return 500 with the message
                self._send(500, json.dumps({"error": str(exc)}).encode(), "application/json")
                return
            self._send(200, wav, "audio/wav")

    return SeedHandler


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, all cores)")
    p.add_argument("--main-thread", action="store_true", help="serve requests one by one on the main thread")
    p.add_argument("--vocoder-precision", default="fp32", choices=VOCODER_PRECISIONS)
    args = p.parse_args(argv)
    from engine.synthesizer import Synthesizer

    synth = Synthesizer(args.model_dir, threads=args.threads, vocoder_precision=args.vocoder_precision)
    synth.synthesize_bytes("您好。", "wav")  # warm up before accepting traffic
    server_class = HTTPServer if args.main_thread else ThreadingHTTPServer
    server_class.request_queue_size = 128  # werkzeug's (Flask's) listen backlog; stdlib default is 5
    server = server_class(("127.0.0.1", args.port), make_handler(synth, close_each=args.main_thread))
    if isinstance(server, ThreadingHTTPServer):
        server.daemon_threads = True
    print(f"seed server ready on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
