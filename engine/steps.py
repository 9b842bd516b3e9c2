"""Steppable computations: a generator that yields ``None`` at points where it may be paused, and returns its
result. A one-thread executor can then run more urgent work between two steps (``deployments.common``
``TorchWorker.run_steps``) without changing what the computation produces."""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

__all__ = ["Steps", "finish"]

T = TypeVar("T")
Steps = Generator[None, None, T]


def finish(steps: Steps[T]) -> T:
    """Run every remaining step; the computation's result."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
