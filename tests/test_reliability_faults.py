"""Replica kills under load (ingress retries stage calls) and graceful drain, on the shared Serve instance.

The short vocoder-kill test runs in `make test`; killing every stage, the ingress (behind the chart's nginx
gateway, and without it), and the drain test are slow (`make test-full`). Budget: at most 1 % of client
requests may fail.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import numpy as np
import pytest

from benchmarks import reliability as rel
from tests._reliability import deploy, undeploy

pytestmark = pytest.mark.serve
APP = "relchaos"
MAX_FAIL_PCT = 1.0


@pytest.fixture(scope="module")
def chaos(serve_instance) -> Iterator[tuple[str, dict]]:  # type: ignore[no-untyped-def]
    args = rel.chaos_args(str(serve_instance.model_dir))
    deploy(APP, f"/{APP}", args)
    try:
        yield serve_instance.url + f"/{APP}", args
    finally:
        undeploy(APP)


def _check(row: rel.Row) -> None:
    print(rel.table([row]), row.extra)
    assert row.sent >= 20, row.extra
    assert row.extra["fail_pct"] <= MAX_FAIL_PCT, row.extra
    assert row.recovery_s is not None and row.recovery_s < 90, row.extra


def test_in_flight_stage_calls_survive_replica_kill(chaos: tuple[str, dict]) -> None:
    """Deterministic core of the failover: 16 vocoder calls in flight on 2 replicas, one replica killed.
    Through ResilientHandle every call succeeds; at least one was retried (the kill hit in-flight work)."""
    from ray import serve

    from engine.messages import VocodeRequest
    from serve_app.resilience import ResilientHandle, RetryPolicy

    raw = serve.get_deployment_handle("HifiGanVocoder", app_name=APP)
    handle = ResilientHandle(raw, "vocoder", RetryPolicy(max_attempts=4, initial_backoff_s=0.05))
    mel = np.random.default_rng(0).standard_normal((3000, 80)).astype(np.float32)

    async def run() -> list[object]:
        calls = [handle.vocode.remote(VocodeRequest(mel)) for _ in range(16)]

        async def wait(call: object) -> object:
            return await call  # type: ignore[misc]

        tasks = [asyncio.ensure_future(wait(c)) for c in calls]
        await asyncio.sleep(0.3)
        rel.kill_replica(APP, "HifiGanVocoder")
        return await asyncio.gather(*tasks, return_exceptions=True)

    t0 = time.monotonic()
    results = asyncio.run(run())
    errors = [r for r in results if isinstance(r, BaseException)]
    print(f"16 calls, retries={handle._stats.retries}, errors={errors[:2]}, {time.monotonic() - t0:.1f}s")
    assert not errors, errors[:3]
    assert handle._stats.retries >= 1, "the kill hit no in-flight call: the test did not exercise failover"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and rel.running_replicas(APP, "HifiGanVocoder") < 2:
        time.sleep(0.2)


def test_kill_vocoder_and_acoustic_replica_under_load(chaos: tuple[str, dict]) -> None:
    url, _ = chaos
    row = rel.faults(url, APP, ["HifiGanVocoder", "SambertAcoustic"], concurrency=4, warmup_s=2.0, gap_s=5.0)
    _check(row)


@pytest.mark.slow
def test_kill_every_stage_under_load(chaos: tuple[str, dict]) -> None:
    url, _ = chaos
    _check(rel.faults(url, APP, ["SambertAcoustic", "TextFrontend", "HifiGanVocoder"], concurrency=3))


@pytest.mark.slow
def test_kill_ingress_behind_gateway_under_load(chaos: tuple[str, dict], serve_instance) -> None:  # type: ignore[no-untyped-def]
    """The production path: clients -> the chart's nginx gateway (real nginx, rendered from the chart) -> the
    Serve proxy. The requests in flight on the killed ingress replica get a 500 from the proxy; the gateway
    replays them on the same cluster (whose proxy routes them to the surviving replica). The gateway's standby
    is a closed port here, so only that same-cluster replay can save a request. Budget: <=1 % failed.
    Slow (~20 s: load until the replacement replica runs); tests/test_reliability_gateway.py pins the
    gateway's replay rules in `make test`."""
    with rel.gateway(serve_instance.url, f"/{APP}") as gw:
        row = rel.faults(gw.url, APP, ["TTSIngress"], concurrency=4, warmup_s=3.0, gap_s=10.0)
        row.extra["gateway"] = gw.replays()
    _check(row)
    assert row.extra["gateway"]["replayed_ok"] >= 1, "no request was replayed: the kill hit no in-flight work"
    assert not row.extra["late_failures"], row.extra


@pytest.mark.slow
def test_kill_ingress_without_gateway_loses_its_in_flight_requests(chaos: tuple[str, dict]) -> None:
    """Why the gateway is needed: without it, an ingress replica that dies takes its in-flight HTTP requests
    with it (the Serve proxy cannot replay them; it answers 500). The peer serves everything after, so loss is
    bounded by the concurrency, but it is ~2-3 % of requests at this load, over the 1 % budget."""
    url, _ = chaos
    concurrency = 3
    row = rel.faults(url, APP, ["TTSIngress"], concurrency=concurrency, gap_s=10.0)
    print(rel.table([row]), row.extra)
    assert row.sent >= 20 and row.failed <= concurrency, row.extra
    assert not row.extra["late_failures"], row.extra  # after recovery, no more failures
    assert row.recovery_s is not None and row.recovery_s < 90, row.extra


@pytest.mark.slow
def test_graceful_drain_completes_in_flight_requests(chaos: tuple[str, dict]) -> None:
    url, args = chaos
    row = rel.drain(url, APP, "TTSIngress", 2, args["options"]["TTSIngress"], args)
    print(rel.table([row]), row.extra)
    assert row.sent >= 4 and row.failed == 0, row.extra
