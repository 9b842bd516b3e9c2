"""Helpers that observe the service from outside: HTTP/1.1 chunk framing, Ray's Prometheus endpoint, logs."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import h11
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class ChunkedResponse:
    status: int
    headers: dict[str, str]
    chunks: list[bytes] = field(default_factory=list)  # one entry per HTTP/1.1 transfer chunk
    arrivals: list[float] = field(default_factory=list)  # seconds from the request to each chunk's end
    chunked: bool = False  # Transfer-Encoding: chunked (not a Content-Length body)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


def post_chunks(
    url: str, body: dict, headers: dict[str, str] | None = None, timeout_s: float = 120.0
) -> ChunkedResponse:
    """POST JSON over a raw socket and keep the body's HTTP/1.1 chunk boundaries and arrival times.

    httpx hides the transfer framing (a buffered body split by TCP reads looks like a stream); h11 reports
    where each chunk the server wrote starts and ends.
    """
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    conn = h11.Connection(our_role=h11.CLIENT)
    request = h11.Request(
        method="POST",
        target=parts.path or "/",
        headers=[
            ("Host", parts.netloc),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(payload))),
            ("Connection", "close"),
            *(headers or {}).items(),
        ],
    )
    start = time.perf_counter()
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout_s) as sock:
        sock.sendall(conn.send(request) + conn.send(h11.Data(data=payload)) + conn.send(h11.EndOfMessage()))
        out: ChunkedResponse | None = None
        current = bytearray()
        deadline = start + timeout_s
        while time.perf_counter() < deadline:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(sock.recv(65536))
                continue
            if isinstance(event, h11.Response):
                hdrs = {k.decode().lower(): v.decode() for k, v in event.headers}
                out = ChunkedResponse(event.status_code, hdrs)
                out.chunked = hdrs.get("transfer-encoding", "").lower() == "chunked"
            elif isinstance(event, h11.Data):
                assert out is not None
                current += event.data
                if event.chunk_end or not out.chunked:
                    out.chunks.append(bytes(current))
                    out.arrivals.append(time.perf_counter() - start)
                    current.clear()
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                break
        else:
            raise TimeoutError(f"no complete response from {url} within {timeout_s}s")
    assert out is not None, "no response"
    return out


# ------------------------------------------------------------------ Prometheus (Ray's metrics export port)
def metrics_url() -> str:
    """Ray's per-node Prometheus endpoint (the port Ray publishes in ``ray.nodes()``)."""
    import ray

    node = next(n for n in ray.nodes() if n["Alive"])
    return f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"


def scrape() -> dict[str, list[tuple[dict[str, str], float]]]:
    """``{sample name: [(labels, value), ...]}`` from one scrape of the real metrics endpoint."""
    import httpx

    text = httpx.get(metrics_url(), timeout=10).text
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return out


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    """Sum of a sample over every series whose labels include ``labels``."""
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def batch_counts(stage: str, **labels: str) -> tuple[float, float]:
    """(batches run, batches of more than one call) so far, from the tts_stage_batch_size histogram.

    Uses the buckets, not ``_sum``: Ray's exporter approximates a histogram's sum from bucket midpoints."""
    samples = scrape()
    count = total(samples, "ray_tts_stage_batch_size_count", stage=stage, **labels)
    singles = sum(
        v
        for lab, v in samples.get("ray_tts_stage_batch_size_bucket", [])
        if lab.get("stage") == stage
        and float(lab.get("le", "nan")) == 1.0
        and all(lab.get(k) == x for k, x in labels.items())
    )
    return count, count - singles


def wait_for(check: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.5) -> object:
    """Poll ``check`` until it returns a truthy value (metrics are exported periodically); bounded."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(every_s)
    raise AssertionError(f"{what}: not seen within {timeout_s}s (last: {last!r})")


def settled(read: Callable[[], object], timeout_s: float = 20.0, period_s: float = 1.5) -> object:
    """``read()`` once two reads one export period apart agree: calls made before now are all counted
    (a baseline taken earlier could miss observations still waiting for the periodic export)."""
    last = read()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(period_s)
        now = read()
        if now == last:
            return now
        last = now
    raise AssertionError(f"metrics still changing after {timeout_s}s: {last!r}")


# ------------------------------------------------------------------ logs
def serve_log_text(app: str, deployment: str) -> str:
    """Everything this Ray session logged for ``app``'s ``deployment`` replicas (Serve logs, workers)."""
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    texts = [
        f.read_text("utf-8", "replace")
        for f in [*logs.glob(f"serve/replica_{app}_{deployment}_*.log"), *logs.glob("worker-*")]
        if f.is_file()
    ]
    return "\n".join(texts)
