"""Admission at the ingress door (serve_app/admission.py): slots, newest-first hand-over, bounded
wait, and a refusal answered before the request body is read (so before validation: 503, not 422)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from serve_app import admission as adm
from serve_app.ingress import IngressSettings


def make(capacity: int = 1, max_waiting: int = 4, max_wait_s: float = 0.2, **kw: Any) -> adm.Admission:
    return adm.Admission(
        capacity=capacity,
        max_waiting=max_waiting,
        max_wait_s=max_wait_s,
        wait_fraction=kw.pop("wait_fraction", 0.5),
        retry_after_s=kw.pop("retry_after_s", 1.0),
        max_retry_after_s=kw.pop("max_retry_after_s", 30.0),
        **kw,
    )


def test_slots_then_refusal_after_the_wait_budget() -> None:
    async def run() -> None:
        refused: list[int] = []
        a = make(capacity=2, max_wait_s=0.05, on_refuse=lambda: refused.append(1))
        t1, t2 = await a.acquire(), await a.acquire()
        assert t1 and t2 and a.inflight == 2
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await a.acquire() is None  # nobody finished within the budget
        assert 0.04 <= loop.time() - start < 1.0 and refused == [1] and a.waiting == 0
        t1.release()
        t1.release()  # idempotent
        assert a.inflight == 1

    asyncio.run(run())


def test_freed_slot_goes_to_the_newest_waiter() -> None:
    async def run() -> None:
        a = make(capacity=1, max_wait_s=5.0)
        first = await a.acquire()
        assert first is not None
        waiters = [asyncio.create_task(a.acquire()) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert a.waiting == 3 and a.inflight == 1
        first.release()  # handed over: still one in flight, the newest waiter has it
        await asyncio.sleep(0)
        assert waiters[2].done() and not waiters[0].done() and a.inflight == 1 and a.waiting == 2
        (await waiters[2]).release()
        (await waiters[1]).release()
        (await waiters[0]).release()
        assert a.inflight == 0 and a.waiting == 0 and a.service_s is not None

    asyncio.run(run())


def test_full_waiting_room_refuses_at_once() -> None:
    async def run() -> None:
        a = make(capacity=1, max_waiting=1, max_wait_s=5.0)
        held = await a.acquire()
        waiter = asyncio.create_task(a.acquire())
        await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await a.acquire() is None and loop.time() - start < 0.05
        assert held is not None
        held.release()
        assert (await waiter) is not None

    asyncio.run(run())


def test_cancelled_waiter_leaks_no_slot() -> None:
    async def run() -> None:
        a = make(capacity=1, max_wait_s=5.0)
        held = await a.acquire()
        assert held is not None
        gone = asyncio.create_task(a.acquire())
        await asyncio.sleep(0.01)
        gone.cancel()  # the client disconnected while waiting
        await asyncio.sleep(0.01)
        assert a.waiting == 0
        held.release()
        assert a.inflight == 0
        # cancelled right after the hand-over: the slot passes on instead of leaking
        held = await a.acquire()
        assert held is not None
        late = asyncio.create_task(a.acquire())
        await asyncio.sleep(0.01)
        held.release()  # sets late's future; cancel before the task resumes
        late.cancel()
        with pytest.raises(asyncio.CancelledError):
            await late
        assert a.inflight == 0

    asyncio.run(run())


def test_wait_budget_follows_service_time_and_retry_after_the_expected_wait() -> None:
    a = make(capacity=2, max_wait_s=0.5, wait_fraction=0.5, retry_after_s=1.0, max_retry_after_s=30.0)
    assert a.wait_budget() == 0.5 and a.retry_after() == 1.0  # nothing observed yet
    a.service_s = 0.2  # fast model: wait at most half a service time
    assert a.wait_budget() == pytest.approx(0.1)
    a.service_s = 4.0
    assert a.wait_budget() == 0.5
    loop = asyncio.new_event_loop()
    try:
        a._waiters.extend(loop.create_future() for _ in range(9))
        assert a.retry_after() == pytest.approx(20.0)  # (9 waiting + 1) x 4 s / 2 slots
        a.service_s = 100.0
        assert a.retry_after() == 30.0
    finally:
        loop.close()


class Downstream:
    """The app behind the gate: records whether it ran and whether the body was read."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls += 1
        await receive()
        await send({"type": "http.response.start", "status": 422, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def test_gate_refuses_before_the_body_is_read() -> None:
    async def run() -> None:
        a = make(capacity=1, max_wait_s=0.0, retry_after_s=1.0)
        a.service_s = 2.5
        adm.configure(a)
        try:
            down = Downstream()
            gate = adm.AdmissionGate(down)
            received: list[int] = []
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                received.append(1)
                return {"type": "http.request", "body": b'{"text": 5}', "more_body": False}  # invalid

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {"type": "http", "method": "POST", "path": "/api/tts", "headers": []}
            held = await a.acquire()  # every slot busy
            await gate(scope, receive, send)
            assert down.calls == 0 and received == []  # no body read, no validation, no stage
            start, body = sent
            assert start["status"] == 503
            headers = dict(start["headers"])
            assert headers[b"retry-after"] == b"3"  # (0 waiting + 1) x 2.5 s / 1 slot, rounded up
            assert json.loads(body["body"])["error"]["code"] == "overloaded"
            assert held is not None
            held.release()
            service = a.service_s
            sent.clear()
            await gate(scope, receive, send)  # a free slot: FastAPI's validation answers
            assert down.calls == 1 and sent[0]["status"] == 422 and a.inflight == 0
            assert a.service_s == service  # a quick error is not a service time
            await gate({**scope, "method": "GET"}, receive, send)  # not a synthesis: never gated
            assert down.calls == 2 and a.inflight == 0
        finally:
            adm.configure(None)

    asyncio.run(run())


def test_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        IngressSettings(max_inflight=0)
    with pytest.raises(ValueError):
        IngressSettings(max_wait_s=-1)
