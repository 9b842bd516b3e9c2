"""Overload: ≥5× capacity for a bounded time against a deliberately small deployment (shared Serve instance).

Capacity = 2 admitted syntheses (ingress ``max_inflight``), stage queues of 4 (each stage replica takes
every call of the admitted syntheses: only the door refuses). SLOs asserted here:
  * every excess request is shed with 429/503 + Retry-After, p95 rejection latency < 1 s;
  * admitted requests: p95 < 10 × the unloaded median + 2 s (queues are bounded, so waiting is too);
  * no other error; replica RSS grows < 150 MB; afterwards requests succeed again at near-unloaded latency.
Goodput against 4 clients is reported here and gated in ``make reliability`` (full-size model): with the tiny
model the Serve round trip, not the model, is the work, so the ratio says little.

Designed order at the door: security checks, then admission, then body validation: an overloaded ingress
answers an invalid body with 503, not 422 (tests/test_admission.py, at the ASGI level). Behind it, Ray
Serve's own queue limit at the proxy (``TTSIngress`` ``max_ongoing_requests``/``max_queued_requests``) is
the backstop: Ray 2.60 answers 503 + Retry-After (``backpressure_config``) with a plain-text body.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest

from benchmarks import reliability as rel
from tests._reliability import deploy, undeploy

pytestmark = pytest.mark.serve
APP = "reloverload"
CAPACITY = 2


@pytest.fixture(scope="module")
def small(serve_instance) -> Iterator[str]:  # type: ignore[no-untyped-def]
    deploy(APP, f"/{APP}", rel.overload_args(str(serve_instance.model_dir), CAPACITY))
    try:
        yield serve_instance.url + f"/{APP}"
    finally:
        undeploy(APP)


def check_overload(row: rel.Row) -> None:
    x = row.extra
    print(rel.table([row]), x)
    assert row.failed == 0, x  # only 200 or a shed 429/503: no 500/504/connection error
    assert x["admitted"] >= 3 and x["rejected"] >= x["admitted"], x  # ≥5× capacity really overloads
    assert x["rejected_without_retry_after"] == 0, x
    assert x["reject_p95_s"] < 1.0, x
    assert row.p95_s < 10 * x["baseline_p50_s"] + 2.0, x
    assert x["rss_growth_mb"] < 150, x
    assert x["after_ok"] == 3 and x["after_p50_s"] < 3 * x["baseline_p50_s"] + 1.0, x


def test_overload_sheds_fast_and_recovers(small: str) -> None:
    check_overload(rel.overload(small, APP, capacity=CAPACITY, factor=6, duration_s=8.0))


@pytest.mark.slow
def test_overload_long(small: str) -> None:
    check_overload(rel.overload(small, APP, capacity=CAPACITY, factor=8, duration_s=45.0))


async def _timed_posts(
    url: str, bodies: list[dict], delays: list[float]
) -> list[tuple[float, httpx.Response]]:
    """POST each body after its delay; (arrival time of the response, response) in the same order."""
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:

        async def one(body: dict, delay: float) -> tuple[float, httpx.Response]:
            await asyncio.sleep(delay)
            r = await client.post("/api/tts", json=body)
            return time.monotonic(), r

        return list(await asyncio.gather(*[one(b, d) for b, d in zip(bodies, delays, strict=True)]))


BACKSTOP = "relbackstop"


def test_ray_proxy_backstop_is_503_with_retry_after(serve_instance) -> None:  # type: ignore[no-untyped-def]
    """Ray 2.60 at the proxy (ingress replica full, its proxy queue full): 503 + Retry-After, plain text."""
    args = rel.overload_args(str(serve_instance.model_dir), 1)
    args["ingress"]["max_waiting"] = 4
    args["ingress"]["max_wait_s"] = 30.0  # requests wait inside the replica, so the replica stays full
    args["options"]["TTSIngress"].update(
        max_ongoing_requests=2,
        max_queued_requests=1,
        backpressure_config={"status_code": 503, "retry_after_s": 2},
    )
    deploy(BACKSTOP, f"/{BACKSTOP}", args)
    try:
        body = {"text": rel.LONG_TEXT * 3, "format": "pcm"}
        bodies = [dict(body, text=body["text"] + f"第{i}次。") for i in range(8)]
        out = asyncio.run(_timed_posts(serve_instance.url + f"/{BACKSTOP}", bodies, [0.0] * 8))
    finally:
        undeploy(BACKSTOP)
    statuses = [r.status_code for _, r in out]
    proxy = [
        r
        for _, r in out
        if r.status_code != 200 and not r.headers.get("content-type", "").startswith("application/json")
    ]
    # The point is the proxy's refusal (how many the replica served depends on timing in a busy suite).
    assert statuses.count(200) >= 1 and proxy, [(r.status_code, r.text[:100]) for _, r in out]
    for r in proxy:
        assert r.status_code == 503 and r.headers["retry-after"] == "2", (r.status_code, r.headers, r.text)
