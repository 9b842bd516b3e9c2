"""Retry idempotent stage calls when the replica serving them dies.

Every stage method the ingress calls (``TextFrontend.process``, ``SambertAcoustic.synthesize``,
``HifiGanVocoder.vocode``/``vocode_chunk``/``info``) is a pure function of its arguments (a streamed chunk
carries its vocoder state), so re-issuing it on another replica is safe. :class:`ResilientHandle` wraps a
``DeploymentHandle``: a call that fails with an actor-death or replica-unavailable error is re-sent (bounded
attempts, exponential backoff with jitter); after the last attempt the caller gets a 503 ``TTSError`` with
``Retry-After``. Backpressure (``BackPressureError``) and application errors are never retried.

Streams (``options(stream=True)``) are retried only until their first item arrives: after that, part of the
output may already be on its way to the client and a replay could duplicate or skip audio, so the error is
raised instead (the HTTP stream is cut, never silently resumed). A non-streamed unit that was being
pipelined through a stream is re-run whole instead (engine/orchestrator.py): none of it reached the client.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass
from typing import Any

from ray.exceptions import RayActorError
from ray.serve.exceptions import ReplicaUnavailableError

from serve_app.errors import UnavailableError

__all__ = ["RETRYABLE_ERRORS", "ResilientHandle", "RetryPolicy", "is_retryable"]

log = logging.getLogger("tts.resilience")

# ActorDiedError and ActorUnavailableError are RayActorError subclasses.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (RayActorError, ReplicaUnavailableError)


def is_retryable(exc: BaseException) -> bool:
    """True for a dead/unreachable replica (also when Ray wraps the cause in a task error)."""
    if isinstance(exc, RETRYABLE_ERRORS):
        return True
    cause = getattr(exc, "cause", None)
    return isinstance(cause, RETRYABLE_ERRORS)


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` includes the first try. Backoff: initial × multiplier^n, capped, ± jitter."""

    max_attempts: int = 4
    initial_backoff_s: float = 0.05
    multiplier: float = 2.0
    max_backoff_s: float = 1.0
    jitter: float = 0.2
    retry_after_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or self.initial_backoff_s < 0 or self.max_backoff_s < 0:
            raise ValueError("max_attempts must be >= 1 and backoffs >= 0")

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> RetryPolicy:
        raw = dict(raw or {})
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown retry settings: {sorted(unknown)}")
        return cls(**raw)

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based)."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        return max(0.0, base * (1 + random.uniform(-self.jitter, self.jitter)))


@dataclass
class RetryStats:
    retries: int = 0
    gave_up: int = 0


def _unavailable(stage: str, exc: BaseException, policy: RetryPolicy) -> UnavailableError:
    return UnavailableError(
        f"stage {stage} is unavailable ({type(exc).__name__}); retry later", policy.retry_after_s
    )


class _RetryingCall:
    """Awaitable for one unary call; the first attempt is dispatched at once, like a DeploymentResponse."""

    def __init__(self, make: Callable[[], Any], stage: str, policy: RetryPolicy, stats: RetryStats) -> None:
        self._make = make
        self._stage = stage
        self._policy = policy
        self._stats = stats
        self._first = make()

    async def _run(self) -> Any:
        response = self._first
        attempt = 1
        while True:
            try:
                return await response
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                if attempt >= self._policy.max_attempts:
                    self._stats.gave_up += 1
                    log.error("%s: giving up after %d attempts: %s", self._stage, attempt, type(exc).__name__)
                    raise _unavailable(self._stage, exc, self._policy) from exc
                self._stats.retries += 1
                delay = self._policy.backoff(attempt)
                log.warning(
                    "%s: replica died (%s); retry %d in %.3fs",
                    self._stage,
                    type(exc).__name__,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)
                attempt += 1
                response = self._make()

    def __await__(self) -> Generator[Any, None, Any]:
        return self._run().__await__()

    def cancel(self) -> None:
        cancel = getattr(self._first, "cancel", None)
        if cancel is not None:
            cancel()


class _RetryingStream:
    """Async iterator over a streaming call; retried on replica death only before the first item."""

    def __init__(self, make: Callable[[], Any], stage: str, policy: RetryPolicy, stats: RetryStats) -> None:
        self._make = make
        self._stage = stage
        self._policy = policy
        self._stats = stats
        self._gen = make()
        self._iter: AsyncIterator[Any] | None = None
        self._started = False
        self._attempt = 1

    def __aiter__(self) -> _RetryingStream:
        return self

    async def __anext__(self) -> Any:
        while True:
            if self._iter is None:
                self._iter = self._gen.__aiter__()
            try:
                item = await self._iter.__anext__()
            except StopAsyncIteration:
                raise
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                if self._started or self._attempt >= self._policy.max_attempts:
                    self._stats.gave_up += 1
                    why = "after output started" if self._started else f"after {self._attempt} attempts"
                    log.error("%s stream: replica failed %s: %s", self._stage, why, type(exc).__name__)
                    raise _unavailable(self._stage, exc, self._policy) from exc
                self._stats.retries += 1
                delay = self._policy.backoff(self._attempt)
                log.warning("%s stream: replica failed before output; retry in %.3fs", self._stage, delay)
                await asyncio.sleep(delay)
                self._attempt += 1
                self._gen, self._iter = self._make(), None
                continue
            self._started = True
            return item

    def cancel(self) -> None:
        self._gen.cancel()


class _Method:
    def __init__(self, owner: ResilientHandle, name: str) -> None:
        self._owner = owner
        self._name = name

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        owner = self._owner

        def make() -> Any:
            return getattr(owner._handle, self._name).remote(*args, **kwargs)

        stage = f"{owner._stage}.{self._name}"
        cls = _RetryingStream if owner._streaming else _RetryingCall
        return cls(make, stage, owner._policy, owner._stats)


class ResilientHandle:
    """A ``DeploymentHandle`` look-alike (``.method.remote(...)``, ``.options(...)``) with retries.

    Its own attributes are underscored so they never shadow a deployment method (``stream``...).
    """

    def __init__(
        self,
        handle: Any,
        stage: str,
        policy: RetryPolicy | None = None,
        streaming: bool = False,
        stats: RetryStats | None = None,
    ) -> None:
        self._handle = handle
        self._stage = stage
        self._policy = policy or RetryPolicy()
        self._streaming = streaming
        self._stats = stats or RetryStats()

    def options(self, **kwargs: Any) -> ResilientHandle:
        streaming = bool(kwargs.get("stream", self._streaming))
        return ResilientHandle(
            self._handle.options(**kwargs), self._stage, self._policy, streaming, self._stats
        )

    def __getattr__(self, name: str) -> _Method:
        if name.startswith("_"):
            raise AttributeError(name)
        return _Method(self, name)
