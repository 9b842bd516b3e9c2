"""Shared helpers for the stage deployments: thread budgets, a one-thread torch executor, batch settings."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import heapq
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from engine.steps import Steps

__all__ = [
    "BULK_SLACK_S",
    "TRIM_IDLE_S",
    "BatchSettings",
    "TorchWorker",
    "release_free_memory",
    "replica_threads",
    "route_logs_to_serve",
    "timed_batch",
]

T = TypeVar("T")
log = logging.getLogger("tts.deployments")
TRIM_IDLE_S = 1.0  # idle time after which a model replica returns freed heap memory to the system
BULK_SLACK_S = 1.0
"""A call no listener waits on yet (a whole unit, a non-streamed chunk) is due this long after it arrives: a
live stream's chunk due sooner goes first, one due later waits (so neither starves the other)."""


def _libc_malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None elsewhere, e.g. musl or macOS)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _libc_malloc_trim()


def release_free_memory() -> bool:
    """Hand the heap memory glibc keeps after frees back to the system; False without glibc."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True


def route_logs_to_serve() -> None:
    """Send the app's ``tts.*`` records through Serve's replica logger (its JSON encoding, files, context).

    Serve configures handlers on ``ray.serve`` only; without this, ``tts.*`` INFO records (the structured
    per-request log) have no handler inside a replica and are dropped.
    """
    app_logger = logging.getLogger("tts")
    app_logger.setLevel(logging.INFO)
    app_logger.parent = logging.getLogger("ray.serve")


def replica_threads(requested: int | None = None) -> int:
    """Torch threads for this replica: explicit value, else the replica's CPU reservation (at least 1)."""
    if requested:
        return max(1, int(requested))
    cpus: float | None = None
    try:
        import ray

        if ray.is_initialized():
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # outside a Ray worker
        cpus = None
    if not cpus:
        cpus = float(os.environ.get("OMP_NUM_THREADS", "1") or 1)
    return max(1, round(cpus))


class TorchWorker:
    """Runs blocking torch work on ONE dedicated thread so the replica's event loop stays responsive.

    One thread per replica serialises model calls (the models are not re-entrant) while ``threads`` sets the
    intra-op parallelism torch uses inside each call. Queued calls run earliest ``due`` first (a
    ``time.monotonic()`` instant, :meth:`due_in`), then in arrival order: a live stream's next chunk is due
    when its listener will have played the audio before it (its first chunk: now), a call nobody listens to
    yet :data:`BULK_SLACK_S` after it arrives. A steppable call (:meth:`run_steps`) also lets a call due
    sooner that arrives while it runs go at its next step.

    Once no call has been pending for ``trim_idle_s``, the thread hands the memory glibc's allocator keeps
    after freeing (activations of the largest call so far) back to the system: ``malloc_trim(0)``, ~1–3 ms,
    never while calls are queued, so it costs nothing under load (docs/performance.md, Memory).
    """

    IDLE = math.inf  # due: after everything else

    def __init__(self, threads: int, name: str, trim_idle_s: float | None = TRIM_IDLE_S) -> None:
        import torch

        self.threads = threads
        torch.set_num_threads(threads)
        self._queue: list[tuple[float, int, Callable[[], None]]] = []
        self._cond = threading.Condition()
        self._seq = itertools.count()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()
        self._trim_idle_s = trim_idle_s if _MALLOC_TRIM is not None else None
        self._pending = 0
        self._trim_timer: asyncio.TimerHandle | None = None
        self.trims = 0
        self.preemptions = 0  # times a steppable call paused for a more urgent one

    def _loop(self) -> None:
        import torch

        torch.set_num_threads(self.threads)
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                _, _, job = heapq.heappop(self._queue)
            job()

    @staticmethod
    def due_in(seconds: float | None) -> float:
        """The ``due`` of a call needed ``seconds`` from now (None: nobody listens to it yet, so
        :data:`BULK_SLACK_S`)."""
        return time.monotonic() + (BULK_SLACK_S if seconds is None else seconds)

    def _submit(self, due: float | None, fn: Callable[..., T], args: tuple[Any, ...]) -> Future[T]:
        """A plain call: a steppable computation of one step."""
        return self._submit_steps(due, _one_step, (fn, args))

    def _push(self, due: float, seq: int, job: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._queue, (due, seq, job))
            self._cond.notify()

    def _submit_steps(
        self, due: float | None, fn: Callable[..., Steps[T]], args: tuple[Any, ...]
    ) -> Future[T]:
        """Queue ``fn(*args)``, a steppable computation (:mod:`engine.steps`) run under
        ``torch.inference_mode``, due at ``due`` (None: :meth:`due_in` ``(None)``): between two steps, a
        queued call due sooner runs first, and this one resumes in its old place in the queue."""
        import torch

        future: Future[T] = Future()
        seq = next(self._seq)
        key = self.due_in(None) if due is None else due
        steps: list[Steps[T]] = []  # created on the worker thread, when the call first runs

        def job() -> None:
            try:
                with torch.inference_mode():
                    if not steps:
                        if not future.set_running_or_notify_cancel():
                            return
                        steps.append(fn(*args))
                    while True:
                        next(steps[0])
                        with self._cond:
                            if self._queue and self._queue[0][0] < key:
                                self.preemptions += 1
                                heapq.heappush(self._queue, (key, seq, job))
                                return
            except StopIteration as stop:
                future.set_result(stop.value)
            except BaseException as exc:  # delivered to the caller
                future.set_exception(exc)

        self._push(key, seq, job)
        return future

    async def run(self, fn: Callable[..., T], *args: Any, due: float | None = None) -> T:
        """``fn(*args)`` on the torch thread (under ``torch.inference_mode``), queued by ``due``."""
        return await self._await(self._submit(due, fn, args))

    async def run_steps(self, fn: Callable[..., Steps[T]], *args: Any, due: float | None = None) -> T:
        """The steppable ``fn(*args)`` (:mod:`engine.steps`) on the torch thread: a call due sooner that
        arrives meanwhile runs at its next step instead of after the whole of it."""
        return await self._await(self._submit_steps(due, fn, args))

    async def _await(self, future: Future[T]) -> T:
        loop = asyncio.get_running_loop()
        self._pending += 1
        if self._trim_timer is not None:
            self._trim_timer.cancel()
            self._trim_timer = None
        try:
            return await asyncio.wrap_future(future, loop=loop)
        finally:
            self._pending -= 1
            if self._pending == 0 and self._trim_idle_s is not None:
                self._trim_timer = loop.call_later(self._trim_idle_s, self._trim_if_idle)

    def _trim_if_idle(self) -> None:
        self._trim_timer = None
        if self._pending == 0:
            self._submit(self.IDLE, self._trim, ())

    def _trim(self) -> None:
        if release_free_memory():
            self.trims += 1

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return self._submit(None, fn, args).result()


async def timed_batch(
    worker: TorchWorker,
    metrics: Any,
    name: str,
    fn: Callable[[list], T],
    reqs: list,
    due: float | None = None,
    steppable: bool = False,
) -> T:
    """Run one batch on the torch thread, due at ``due`` (``steppable``: ``fn`` returns
    :mod:`engine.steps`, see :meth:`TorchWorker.run_steps`), recording its size and latency as ``name``."""
    start = time.perf_counter()
    run = worker.run_steps if steppable else worker.run
    try:
        return await run(fn, reqs, due=due)
    finally:
        metrics.batch(len(reqs))
        metrics.observe(name, time.perf_counter() - start)


def _one_step(fn: Callable[..., T], args: tuple[Any, ...]) -> Steps[T]:
    """``fn(*args)`` as a computation of one step (it cannot pause)."""
    return fn(*args)
    yield  # unreachable: makes this a generator


@dataclass(frozen=True)
class BatchSettings:
    """``user_config`` keys understood by the batched stages."""

    max_batch_size: int = 4
    batch_wait_timeout_s: float = 0.005

    @classmethod
    def from_user_config(cls, cfg: dict[str, Any] | None) -> BatchSettings:
        cfg = dict(cfg or {})
        unknown = set(cfg) - {"max_batch_size", "batch_wait_timeout_s"}
        if unknown:
            raise ValueError(f"unknown user_config keys: {sorted(unknown)}")
        out = cls(**cfg)
        if out.max_batch_size < 1 or not 0 <= out.batch_wait_timeout_s <= 1:
            raise ValueError("max_batch_size must be >= 1 and batch_wait_timeout_s in [0, 1]")
        return out
