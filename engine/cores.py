"""Threads that each run torch on one core, sharing a queue of jobs and splitting each other's long ones.

Why: on 2+ cores a request's stages can overlap. The acoustic model gains nothing from a second thread (its
autoregressive decoder is bound by memory and dispatch: on the Zen 4, 1 thread 0.69-0.72 s vs 2 threads
0.75 s for the reference line), while the vocoder scales; so one thread decodes while another vocodes the
mel chunks already decoded, and an idle thread takes the back part of a complete mel another thread is
vocoding, cut so that both finish together (:mod:`engine.hifigan.spans`). One torch thread per worker keeps
the two from fighting over the cores (an OpenMP team of 2 beside a busy thread would oversubscribe them).

torch's intra-op thread count is per OS thread (OpenMP's ``nthreads`` setting; MKL's local setting), so each
worker sets 1 for itself; its first parallel call must not re-read the process default afterwards, which is
why a worker reads the count once before setting it (torch initialises a thread's count lazily, from the
process-wide value, on that thread's first parallel call).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

import torch

__all__ = ["CoreWorkers", "Splittable"]

log = logging.getLogger("tts.cores")
T = TypeVar("T")
Job = Callable[[], None]


class Splittable(Protocol):
    """Work that idle workers may share: ``split()`` hands out a job for part of what is left, or None once
    nothing is left worth splitting (it then never becomes splittable again)."""

    def split(self) -> Job | None: ...


class _State:
    """What the worker threads share (kept apart from :class:`CoreWorkers` so that dropping the pool stops
    them)."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.jobs: deque[Job] = deque()
        self.splittable: list[Splittable] = []
        self.closed = False

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def add(self, queue: deque[Job] | list[Splittable], item: Any) -> None:
        """Append ``item`` to ``queue`` (:attr:`jobs` or :attr:`splittable`) and wake the idle workers."""
        with self.cond:
            if self.closed:
                raise RuntimeError("CoreWorkers is closed")
            queue.append(item)
            self.cond.notify_all()

    def next_job(self) -> Job | None:
        """The oldest queued job, else a part split off running work; blocks while there is neither (None:
        closed)."""
        with self.cond:
            while not self.closed:
                if self.jobs:
                    return self.jobs.popleft()
                while self.splittable:
                    job = self.splittable[0].split()
                    if job is not None:
                        return job
                    self.splittable.pop(0)
                self.cond.wait()
            return None


def _work(state: _State, ready: threading.Barrier) -> None:
    torch.get_num_threads()  # torch's lazy per-thread initialisation, from the process default, happens now
    torch.set_num_threads(1)
    ready.wait()
    while (job := state.next_job()) is not None:
        try:
            job()  # jobs deliver their own results and errors
        except Exception:  # a job that did not: the thread stays
            log.exception("a CoreWorkers job raised")


class CoreWorkers:
    """``n`` daemon threads running torch on one intra-op thread each, FIFO jobs, idle ones splitting running
    :class:`Splittable` work. Stopped by :meth:`close` or when the pool is garbage-collected."""

    def __init__(self, n: int, name: str = "tts-core") -> None:
        if n < 1:
            raise ValueError(f"CoreWorkers needs at least 1 thread, got {n}")
        self.size = n
        self._state = _State()
        process_default = torch.get_num_threads()
        ready = threading.Barrier(n + 1)
        self._threads = [
            threading.Thread(target=_work, args=(self._state, ready), name=f"{name}-{i}", daemon=True)
            for i in range(n)
        ]
        for thread in self._threads:
            thread.start()
        ready.wait()
        torch.set_num_threads(process_default)  # the workers' setting changed the default for new threads
        weakref.finalize(self, _stop, self._state, self._threads)  # also at interpreter exit

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """``fn(*args)`` on a worker; its result or exception in the future."""
        future: Future[T] = Future()

        def job() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # delivered to the caller
                future.set_exception(exc)

        self.run(job)
        return future

    def run(self, job: Job) -> None:
        """Queue ``job`` (it delivers its own result)."""
        self._state.add(self._state.jobs, job)

    def offer(self, splittable: Splittable) -> None:
        """Let idle workers split ``splittable`` from now on, until its ``split()`` returns None."""
        self._state.add(self._state.splittable, splittable)

    def close(self) -> None:
        """Stop the threads once they finish their current job (queued jobs are dropped)."""
        _stop(self._state, self._threads)


def _stop(state: _State, threads: list[threading.Thread]) -> None:
    state.close()
    for thread in threads:
        if thread is not threading.current_thread():
            thread.join(timeout=30)
