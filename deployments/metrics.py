"""Custom Prometheus metrics via ``ray.serve.metrics`` (exported with a ``ray_`` prefix by every node).

Serve adds the ``deployment``/``replica``/``application`` tags itself. Create these objects inside a replica.
"""

from __future__ import annotations

from ray.serve.metrics import Counter, Histogram

__all__ = ["IngressMetrics", "StageMetrics"]

_LATENCY_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000]
_RTF = [0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0]
_BATCH = [1, 2, 4, 8, 16, 32]


class StageMetrics:
    """Per-stage latency histogram and batch-size histogram (one per deployment)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.latency = Histogram(
            "tts_stage_latency_ms",
            description="Latency of one pipeline stage call (ms), by stage and method.",
            boundaries=_LATENCY_MS,
            tag_keys=("stage", "method"),
        )
        self.batch_size = Histogram(
            "tts_stage_batch_size",
            description="Number of requests per @serve.batch execution.",
            boundaries=_BATCH,
            tag_keys=("stage",),
        )
        self.errors = Counter(
            "tts_stage_errors", description="Stage failures by kind.", tag_keys=("stage", "kind")
        )

    def observe(self, method: str, seconds: float) -> None:
        self.latency.observe(seconds * 1000.0, tags={"stage": self.stage, "method": method})

    def batch(self, size: int) -> None:
        self.batch_size.observe(size, tags={"stage": self.stage})

    def error(self, kind: str) -> None:
        self.errors.inc(tags={"stage": self.stage, "kind": kind})


class IngressMetrics:
    """End-to-end metrics: latency, RTF, audio seconds, time to first audio, cache, errors by kind."""

    def __init__(self) -> None:
        self.latency = Histogram(
            "tts_request_latency_ms",
            description="End-to-end synthesis latency in the ingress (ms).",
            boundaries=_LATENCY_MS,
            tag_keys=("endpoint", "stream"),
        )
        self.rtf = Histogram(
            "tts_rtf", description="Real-time factor (wall time / audio time).", boundaries=_RTF
        )
        self.ttfa = Histogram(
            "tts_time_to_first_audio_ms",
            description="Streaming: request start to first audio chunk (ms).",
            boundaries=_LATENCY_MS,
        )
        self.audio_seconds = Counter("tts_audio_seconds", description="Seconds of audio produced.")
        self.requests = Counter("tts_requests", description="Requests by endpoint.", tag_keys=("endpoint",))
        self.cache = Counter("tts_cache", description="Result cache lookups.", tag_keys=("result",))
        self.errors = Counter("tts_errors", description="Failed requests by error kind.", tag_keys=("kind",))

    def request(self, endpoint: str) -> None:
        self.requests.inc(tags={"endpoint": endpoint})

    def done(self, endpoint: str, stream: bool, seconds: float, audio_s: float) -> None:
        self.latency.observe(seconds * 1000.0, tags={"endpoint": endpoint, "stream": str(stream).lower()})
        if audio_s > 0:
            self.rtf.observe(seconds / audio_s)
            self.audio_seconds.inc(audio_s)

    def first_audio(self, seconds: float) -> None:
        self.ttfa.observe(seconds * 1000.0)

    def cache_lookup(self, hit: bool) -> None:
        self.cache.inc(tags={"result": "hit" if hit else "miss"})

    def error(self, kind: str) -> None:
        self.errors.inc(tags={"kind": kind})
