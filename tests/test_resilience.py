"""Stage-call retries (fake handles, no Ray cluster): what is retried, how often, and never after output."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError
from ray.serve.exceptions import BackPressureError

from serve_app.errors import TTSError
from serve_app.resilience import ResilientHandle, RetryPolicy, is_retryable

FAST = RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.002)


class FakeResponse:
    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.cancelled = False

    def __await__(self) -> Any:
        async def go() -> Any:
            if isinstance(self.outcome, BaseException):
                raise self.outcome
            return self.outcome

        return go().__await__()

    def cancel(self) -> None:
        self.cancelled = True


class FakeStream:
    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.cancelled = False

    def __aiter__(self) -> AsyncIterator[Any]:
        async def gen() -> AsyncIterator[Any]:
            for item in self.items:
                if isinstance(item, BaseException):
                    raise item
                yield item

        return gen()

    def cancel(self) -> None:
        self.cancelled = True


class FakeHandle:
    """``outcomes`` are consumed one per ``.remote()`` call (the last one repeats)."""

    def __init__(self, outcomes: list[Any], stream: bool = False) -> None:
        self.outcomes = outcomes
        self.calls = 0
        self._stream_mode = stream

    def options(self, **kw: Any) -> FakeHandle:
        self._stream_mode = kw.get("stream", self._stream_mode)
        return self

    def __getattr__(self, name: str) -> Any:
        handle = self

        class M:
            def remote(self, *a: Any, **k: Any) -> Any:
                out = handle.outcomes[min(handle.calls, len(handle.outcomes) - 1)]
                handle.calls += 1
                return FakeStream(out) if handle._stream_mode else FakeResponse(out)

        return M()


def died() -> ActorDiedError:
    return ActorDiedError()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_retries_replica_death_then_succeeds() -> None:
    fake = FakeHandle([died(), ActorUnavailableError("gone", None), "ok"])
    h = ResilientHandle(fake, "vocoder", FAST)

    async def go() -> Any:
        return await h.vocode.remote(1)

    assert run(go()) == "ok" and fake.calls == 3 and h._stats.retries == 2


def test_gives_up_with_503_after_max_attempts() -> None:
    fake = FakeHandle([died()])
    h = ResilientHandle(fake, "acoustic", FAST)

    async def go() -> Any:
        return await h.synthesize.remote(1)

    with pytest.raises(TTSError) as err:
        run(go())
    assert err.value.status == 503 and err.value.retry_after_s and fake.calls == 3 and h._stats.gave_up == 1


@pytest.mark.parametrize(
    "exc", [ValueError("bad text"), BackPressureError(num_queued_requests=1, max_queued_requests=1)]
)
def test_application_errors_and_backpressure_are_not_retried(exc: Exception) -> None:
    fake = FakeHandle([exc, "ok"])
    h = ResilientHandle(fake, "frontend", FAST)

    async def go() -> Any:
        return await h.process.remote("x")

    with pytest.raises(type(exc)):
        run(go())
    assert fake.calls == 1 and not is_retryable(exc)


def test_first_attempt_is_dispatched_eagerly() -> None:
    fake = FakeHandle(["ok"])
    ResilientHandle(fake, "vocoder", FAST).vocode.remote(1)
    assert fake.calls == 1  # like a DeploymentResponse: sent before it is awaited


def test_stream_retried_only_before_first_item() -> None:
    fake = FakeHandle([[died()], ["a", "b"]])
    h = ResilientHandle(fake, "acoustic", FAST).options(stream=True)

    async def collect() -> list[Any]:
        return [x async for x in h.stream.remote(1)]

    assert run(collect()) == ["a", "b"] and fake.calls == 2

    fake2 = FakeHandle([["a", died()], ["a", "b"]])
    h2 = ResilientHandle(fake2, "acoustic", FAST).options(stream=True)

    async def collect2() -> list[Any]:
        got = []
        with pytest.raises(TTSError):
            async for x in h2.stream.remote(1):
                got.append(x)
        return got

    assert run(collect2()) == ["a"] and fake2.calls == 1  # output started: no replay, no duplicate audio


def test_stream_cancel_reaches_generator() -> None:
    fake = FakeHandle([["a"]])
    gen = ResilientHandle(fake, "acoustic", FAST).options(stream=True).stream.remote(1)
    gen.cancel()
    assert gen._gen.cancelled


def test_policy_backoff_bounds() -> None:
    p = RetryPolicy(initial_backoff_s=0.1, multiplier=2, max_backoff_s=0.3, jitter=0)
    assert [p.backoff(i) for i in (1, 2, 3, 4)] == [0.1, 0.2, 0.3, 0.3]
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="unknown"):
        RetryPolicy.from_dict({"attempts": 3})
