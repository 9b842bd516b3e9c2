"""deployments.common.TorchWorker: one torch thread per replica, and the idle-time heap trim."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from deployments import common
from deployments.common import TorchWorker

pytestmark = pytest.mark.skipif(common._MALLOC_TRIM is None, reason="glibc malloc_trim not available")


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
