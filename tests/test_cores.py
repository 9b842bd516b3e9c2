"""engine.cores.CoreWorkers: one torch thread per worker, results and errors through futures, idle workers
splitting running work, and a clean stop."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
import torch

from engine.cores import CoreWorkers


def test_each_worker_runs_torch_on_one_thread_and_the_caller_keeps_its_count() -> None:
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        workers = CoreWorkers(2)
        try:
            counts = [workers.submit(torch.get_num_threads).result(timeout=10) for _ in range(4)]
            assert counts == [1, 1, 1, 1]
            assert torch.get_num_threads() == 2
            # a thread started later still gets the process default, not the workers' setting
            seen: list[int] = []
            later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
            later.start()
            later.join()
            assert seen == [2]
        finally:
            workers.close()
    finally:
        torch.set_num_threads(previous)


def test_results_and_errors_come_back_through_the_future() -> None:
    workers = CoreWorkers(1)
    try:
        assert workers.submit(lambda a, b: a + b, 2, 3).result(timeout=10) == 5
        with pytest.raises(ZeroDivisionError):
            workers.submit(lambda: 1 / 0).result(timeout=10)
        assert workers.submit(lambda: "still working").result(timeout=10) == "still working"
    finally:
        workers.close()


class _Halves:
    """Splittable work for the test: a job that waits until an idle worker has split off its other half."""

    def __init__(self) -> None:
        self.split_off = threading.Event()
        self.first_done = threading.Event()
        self.done: list[str] = []
        self.splits = 0

    def job(self) -> None:
        assert self.split_off.wait(timeout=10), "no idle worker split the running job"
        self.done.append("first half")
        self.first_done.set()

    def split(self) -> Callable[[], None] | None:
        if self.splits:
            return None  # nothing left worth splitting
        self.splits += 1

        def other_half() -> None:
            self.done.append("second half")
            self.split_off.set()

        return other_half


def test_an_idle_worker_splits_running_work() -> None:
    work = _Halves()
    workers = CoreWorkers(2)
    try:
        workers.run(work.job)
        workers.offer(work)
        assert work.split_off.wait(timeout=10) and work.first_done.wait(timeout=10)
        assert workers.submit(lambda: None).result(timeout=10) is None  # the workers are free again
        assert sorted(work.done) == ["first half", "second half"] and work.splits == 1
    finally:
        workers.close()


def test_close_stops_the_threads_and_refuses_new_work() -> None:
    workers = CoreWorkers(2)
    threads = list(workers._threads)
    workers.close()
    assert not any(t.is_alive() for t in threads)
    with pytest.raises(RuntimeError, match="closed"):
        workers.submit(lambda: None)
    with pytest.raises(ValueError):
        CoreWorkers(0)
