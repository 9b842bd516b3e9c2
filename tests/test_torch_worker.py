"""deployments.common.TorchWorker: one torch thread per replica, and the idle-time heap trim."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from deployments import common
from deployments.common import TorchWorker

needs_glibc = pytest.mark.skipif(common._MALLOC_TRIM is None, reason="glibc malloc_trim not available")


@needs_glibc
def test_worker_trims_once_after_going_idle_and_never_while_calls_are_queued() -> None:
    worker = TorchWorker(1, "test", trim_idle_s=0.05)
    names: list[str] = []

    async def scenario() -> None:
        await asyncio.sleep(0.2)
        assert worker.trims == 0  # nothing ran yet: nothing to give back
        # a queue of calls, each shorter than the idle time: no trim between them
        for _ in range(3):
            await asyncio.gather(*(worker.run(lambda: time.sleep(0.03)) for _ in range(3)))
            await asyncio.sleep(0.01)
        assert worker.trims == 0
        await worker.run(lambda: names.append(threading.current_thread().name))
        await asyncio.sleep(0.3)
        assert worker.trims == 1  # once per idle spell, not every idle_s
        await worker.run(lambda: None)
        await asyncio.sleep(0.3)
        assert worker.trims == 2

    asyncio.run(scenario())
    assert names and names[0].startswith("test")  # the model calls ran on the worker's own thread


def test_trim_can_be_disabled() -> None:
    worker = TorchWorker(1, "test", trim_idle_s=None)

    async def scenario() -> None:
        await worker.run(lambda: None)
        await asyncio.sleep(0.2)

    asyncio.run(scenario())
    assert worker.trims == 0


def test_queued_calls_run_earliest_due_first_then_in_arrival_order() -> None:
    """A stream's first chunk (due now) and a stream about to run dry pass calls nobody listens to yet (due
    BULK_SLACK_S after they arrive), which pass a stream seconds ahead; a late chunk goes first; equal dues
    keep their order; an exception reaches its caller and the thread goes on."""
    worker = TorchWorker(1, "prio", trim_idle_s=None)
    order: list[str] = []
    gate = threading.Event()

    def record(name: str) -> str:
        order.append(name)
        return name

    def boom() -> None:
        raise ValueError("boom")

    async def scenario() -> list[object]:
        blocker = asyncio.ensure_future(worker.run(gate.wait, 10))
        await asyncio.sleep(0.05)  # the thread is busy: everything below queues
        now = TorchWorker.due_in(0)
        calls = [
            worker.run(record, "a"),
            worker.run(record, "b"),
            worker.run(boom),
            worker.run(record, "first-1", due=now),
            worker.run(record, "ahead-3s", due=TorchWorker.due_in(3.0)),
            worker.run(record, "c"),
            worker.run(record, "dry-0.2s", due=TorchWorker.due_in(0.2)),
            worker.run(record, "first-2", due=now),
            worker.run(record, "late", due=TorchWorker.due_in(-0.1)),
        ]
        tasks = [asyncio.ensure_future(c) for c in calls]
        await asyncio.sleep(0.05)
        gate.set()
        await blocker
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    assert order == ["late", "first-1", "first-2", "dry-0.2s", "a", "b", "c", "ahead-3s"]
    assert isinstance(results[2], ValueError) and results[0] == "a" and results[3] == "first-1"
    assert worker.run_sync(record, "sync") == "sync"


def test_steppable_call_lets_a_more_urgent_call_pass_at_its_next_step() -> None:
    """A long steppable call (a whole unit's vocoding) pauses for a call due sooner (a stream's first chunk)
    that arrives while it runs, then resumes ahead of the calls queued after it with its own due; its result
    and errors reach the caller."""
    worker = TorchWorker(1, "steps", trim_idle_s=None)
    order: list[str] = []
    running = threading.Event()

    def long_call(n: int):  # type: ignore[no-untyped-def]
        import torch

        for i in range(n):
            assert torch.is_inference_mode_enabled()
            order.append(f"long-{i}")
            running.set()
            time.sleep(0.02)
            yield
        return "long-done"

    def failing():  # type: ignore[no-untyped-def]
        yield
        raise ValueError("step failed")

    async def scenario() -> list[object]:
        long = asyncio.ensure_future(worker.run_steps(long_call, 10))
        while not running.is_set():
            await asyncio.sleep(0.001)
        later = asyncio.ensure_future(worker.run(order.append, "normal"))
        await asyncio.sleep(0.005)
        first = asyncio.ensure_future(worker.run(order.append, "first", due=TorchWorker.due_in(0)))
        bad = asyncio.ensure_future(worker.run_steps(failing))
        return await asyncio.gather(long, later, first, bad, return_exceptions=True)

    results = asyncio.run(scenario())
    assert results[0] == "long-done"
    assert isinstance(results[3], ValueError)
    i = order.index("first")
    assert 0 < i < 10, order  # ran inside the long call, not after it
    assert order.index("normal") == 11, order  # the long call kept its place ahead of the later bulk call
    assert [x for x in order if x.startswith("long")] == [f"long-{k}" for k in range(10)]
    assert worker.preemptions >= 1
