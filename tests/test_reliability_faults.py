"""Replica kills under load (ingress retries stage calls) and graceful drain, on the shared Serve instance.

Order matters: the drain test (last) redeploys the chaos app; the tests before it use it as deployed.

The short vocoder-kill test runs in `make test`; killing every stage, the ingress (behind the chart's nginx
gateway, and without it), and the drain test are slow (`make test-full`). Budget: at most 1 % of client
requests may fail.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from benchmarks import reliability as rel
from tests._reliability import deploy, undeploy

pytestmark = pytest.mark.serve
APP = "relchaos"
MAX_FAIL_PCT = 1.0
MIN_SENT_PER_CLIENT = 3  # the load kept flowing through the kills and recoveries (a 2-core box sends 5-8)


@pytest.fixture(scope="module")
def chaos(serve_instance) -> Iterator[tuple[str, dict]]:  # type: ignore[no-untyped-def]
    args = rel.chaos_args(str(serve_instance.model_dir))
    deploy(APP, f"/{APP}", args)
    try:
        yield serve_instance.url + f"/{APP}", args
    finally:
        undeploy(APP)


class AudioProbe:
    """Fixed requests sent beside the load while replicas die; every answer must be the reference audio
    (the chaos app has no result cache, so each one is a fresh synthesis through the stages)."""

    TEXTS = ("您好，这里是客服中心。", "您的订单已经发货，请注意查收。")

    def __init__(self, url: str) -> None:
        self.url = url
        self.reference = {t: self._get(t) for t in self.TEXTS}
        self.checked = 0
        self.wrong: list[str] = []
        self.failed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _get(self, text: str) -> np.ndarray | int:
        r = httpx.post(self.url + "/api/tts", json={"text": text, "format": "pcm"}, timeout=120)
        return np.frombuffer(r.content, "<i2").astype(np.int32) if r.status_code == 200 else r.status_code

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            text = self.TEXTS[i % len(self.TEXTS)]
            got = self._get(text)
            if isinstance(got, int):
                self.failed.append(got)
            else:
                ref = self.reference[text]
                if len(got) != len(ref) or np.abs(got - ref).max() > 2:  # batching: <= 2 LSB
                    self.wrong.append(text)
                self.checked += 1
            i += 1

    def __enter__(self) -> AudioProbe:
        for ref in self.reference.values():
            assert not isinstance(ref, int), f"reference request failed: {ref}"
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(180)


def _check(row: rel.Row, clients: int, probe: AudioProbe | None = None, stage_kill: bool = True) -> None:
    print(rel.table([row]), row.extra)
    assert row.sent >= MIN_SENT_PER_CLIENT * clients, row.extra
    healing = row.extra["ok_while_recovering"]  # answers while each replacement started: no outage
    assert all(n >= 1 for n in healing.values()), row.extra
    assert row.extra["fail_pct"] <= MAX_FAIL_PCT, row.extra
    assert row.recovery_s is not None and row.recovery_s < 90, row.extra
    if stage_kill:  # the kills hit in-flight stage calls (only a retry could save them), not idle replicas
        assert row.extra["stage_call_retries"] >= 1, row.extra
    if probe is not None:
        print(f"audio probe: {probe.checked} checked, wrong={probe.wrong}, failed={probe.failed}")
        assert probe.checked >= 3 and not probe.wrong, (probe.checked, probe.wrong)
        assert len(probe.failed) <= 1, probe.failed


def test_in_flight_stage_calls_survive_replica_kill(chaos: tuple[str, dict]) -> None:
    """Deterministic core of the failover: 16 vocoder calls in flight on 2 replicas, one replica killed.
    Through ResilientHandle every call succeeds; at least one was retried (the kill hit in-flight work)."""
    from ray import serve

    from engine.messages import VocodeRequest
    from serve_app.resilience import ResilientHandle, RetryPolicy

    raw = serve.get_deployment_handle("HifiGanVocoder", app_name=APP)
    handle = ResilientHandle(raw, "vocoder", RetryPolicy(max_attempts=4, initial_backoff_s=0.05))
    mel = np.random.default_rng(0).standard_normal((3000, 80)).astype(np.float32)
    reference = raw.vocode.remote(VocodeRequest(mel)).result()

    async def run() -> list[object]:
        calls = [handle.vocode.remote(VocodeRequest(mel)) for _ in range(16)]

        async def wait(call: object) -> object:
            return await call  # type: ignore[misc]

        tasks = [asyncio.ensure_future(wait(c)) for c in calls]
        await asyncio.sleep(0.3)
        rel.kill_replica(APP, "HifiGanVocoder")
        return await asyncio.gather(*tasks, return_exceptions=True)

    def both_replicas_up() -> None:
        assert rel.settled_replicas(APP, "HifiGanVocoder", at_least=2) >= 2

    for attempt in range(3):  # a kill can land on the replica that just finished its share: try again
        both_replicas_up()
        t0, retries0 = time.monotonic(), handle._stats.retries
        results = asyncio.run(run())
        errors = [r for r in results if isinstance(r, BaseException)]
        retries = handle._stats.retries - retries0
        took = time.monotonic() - t0
        print(f"attempt {attempt}: 16 calls, retries={retries}, errors={errors[:2]}, {took:.1f}s")
        assert not errors, errors[:3]
        for audio in results:  # the retried calls (and the rest) give the right audio, not just an answer
            np.testing.assert_allclose(np.asarray(audio), reference, atol=1e-4)
        if retries >= 1:
            break
    else:
        pytest.fail("in 3 tries the kill hit no in-flight call: the test did not exercise failover")
    both_replicas_up()


def test_kill_vocoder_and_acoustic_replica_under_load(chaos: tuple[str, dict]) -> None:
    """Every drill: no failed request, right audio. A kill that lands between requests proves nothing, so the
    drill is repeated (at most 3 times) until a logged stage-call retry shows a kill hit in-flight work."""
    url, _ = chaos
    for _ in range(3):
        for stage in ("HifiGanVocoder", "SambertAcoustic"):  # a kill of a lone replica is an outage by design
            assert rel.settled_replicas(APP, stage, at_least=2) >= 2, stage
        with AudioProbe(url) as probe:
            row = rel.faults(
                url, APP, ["HifiGanVocoder", "SambertAcoustic"], concurrency=4, warmup_s=2.0, gap_s=5.0
            )
        _check(row, 4, probe, stage_kill=False)
        if row.extra["stage_call_retries"] >= 1:
            return
    pytest.fail(f"in 3 drills no kill hit an in-flight stage call: failover not exercised ({row.extra})")


def _kill_vocoder_during(
    url: str, body: dict, streamed: bool, kill_after_s: float, clients: int = 3
) -> tuple[list[bytes], int]:
    """Send ``body`` from ``clients`` clients at once; once under way (streamed: every client has audio;
    pipelined: ``kill_after_s`` after sending), kill a vocoder replica. Returns the bodies received and the
    stage-call retries the ingress logged."""
    # both vocoder replicas up (a previous kill may still be healing)
    assert rel.settled_replicas(APP, "HifiGanVocoder", at_least=2) >= 2
    retries0 = rel.retry_log_lines(APP)
    actors = rel.replica_actors(APP, "HifiGanVocoder")  # looked up now: the kill must land on time
    started = [threading.Event() for _ in range(clients)]
    out: list[dict] = [{} for _ in range(clients)]

    def client(i: int) -> None:
        try:
            with httpx.stream("POST", url + "/api/tts", json=body, timeout=120) as r:
                out[i]["status"] = r.status_code
                data = bytearray()
                for chunk in r.iter_raw():
                    data += chunk
                    started[i].set()
                out[i]["body"] = bytes(data)
        finally:
            started[i].set()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    if streamed:
        for e in started:
            e.wait(60)
    else:
        time.sleep(kill_after_s)  # the units are being vocoded (pipelined chunk by chunk, or whole)
    rel.kill_busy_replica(actors, wait_s=2.0)  # the replica with a chunk in flight, if any
    for t in threads:
        t.join(150)
    assert all(o.get("status") == 200 for o in out), [o.get("status") for o in out]
    time.sleep(1.0)  # the ingress's retry warnings reach its log file
    return [o["body"] for o in out], rel.retry_log_lines(APP) - retries0


@pytest.mark.slow
@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "pipelined"])
def test_vocoder_chunk_retried_on_another_replica_after_a_crash(
    chaos: tuple[str, dict], streamed: bool
) -> None:
    """README: a vocoder chunk carries its state, so a chunk in flight on a replica that dies is retried on
    the other replica, and the audio is exactly the uninterrupted audio (streamed body and pipelined unit)."""
    url, _ = chaos
    text = "这是一个用来测试故障恢复的长句子，我们在合成的过程中杀掉一个声码器副本，然后检查音频是否完整正确"
    body = {"text": text, "format": "pcm", "stream": streamed}
    expected = np.frombuffer(
        httpx.post(url + "/api/tts", json={**body, "stream": False}, timeout=120).content, "<i2"
    )

    # Pipelined, the vocoder is busy only in part of a request (after the decoder's first frames): the kill
    # lands at a different share of this box's own 3-client request time on each try (a fixed delay missed
    # the window on a fast box 5 times out of 5).
    def three_clients() -> float:
        t0 = time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda _: httpx.post(url + "/api/tts", json=body, timeout=120), range(3)))
        return time.monotonic() - t0

    took = sorted(three_clients() for _ in range(3))[1]
    for attempt, share in enumerate((0.4, 0.3, 0.5, 0.25, 0.6, 0.35, 0.45, 0.2)):  # kills between chunks miss
        bodies, retries = _kill_vocoder_during(url, body, streamed, share * took)
        for got in bodies:
            a = np.frombuffer(got, "<i2").astype(np.int32)
            assert len(a) == len(expected), (len(a), len(expected))
            assert np.abs(a - expected).max() <= 2
        print(f"attempt {attempt}: kill at {share:.2f}×{took:.2f}s, {len(bodies)} exact, retries {retries}")
        if retries >= 1:
            return
    pytest.fail("no kill hit an in-flight vocoder call in 8 tries: the retry path was not exercised")


@pytest.mark.slow
def test_kill_every_stage_under_load(chaos: tuple[str, dict]) -> None:
    """Kill a replica of every stage; repeated (at most 3 drills) until a kill hits in-flight work."""
    url, _ = chaos
    for _ in range(3):
        with AudioProbe(url) as probe:
            row = rel.faults(url, APP, ["SambertAcoustic", "TextFrontend", "HifiGanVocoder"], concurrency=3)
        _check(row, 3, probe, stage_kill=False)
        if row.extra["stage_call_retries"] >= 1:
            return
    pytest.fail(f"in 3 drills no kill hit an in-flight stage call: failover not exercised ({row.extra})")


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
    _check(row, 4, stage_kill=False)  # in-flight work is proven by the gateway's replays below
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
    assert row.sent >= MIN_SENT_PER_CLIENT * concurrency and row.failed <= concurrency, row.extra
    assert not row.extra["late_failures"], row.extra  # after recovery, no more failures
    assert row.recovery_s is not None and row.recovery_s < 90, row.extra


@pytest.mark.slow
def test_graceful_drain_completes_in_flight_requests(chaos: tuple[str, dict]) -> None:
    url, args = chaos
    row = rel.drain(url, APP, "TTSIngress", 2, args["options"]["TTSIngress"], args)
    print(rel.table([row]), row.extra)
    assert row.sent >= 4 and row.failed == 0, row.extra
