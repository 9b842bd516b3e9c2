"""The orchestrator's :class:`~engine.orchestrator.Stages` over Serve deployment handles.

Each call goes through a :class:`~serve_app.resilience.ResilientHandle` (retried on replica death) and maps a
stage's queue-full rejection (``BackPressureError``) to the client-facing 503/429 + Retry-After.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import numpy as np
from ray.serve.exceptions import BackPressureError

from engine.frontend import SynthesisUnit
from engine.messages import (
    AcousticInput,
    AcousticOutput,
    MelChunk,
    SynthesisRequest,
    VocodeChunk,
    VocodeChunkResult,
    VocodeRequest,
    VocoderInfo,
)
from engine.orchestrator import MelStream
from serve_app.errors import TTSError
from serve_app.resilience import ResilientHandle

__all__ = ["ServeStages", "backpressure"]

T = TypeVar("T")


def backpressure(exc: BackPressureError, default_retry_s: float) -> TTSError:
    """Map a stage's queue-full rejection to the client-facing error (503/429 + Retry-After)."""
    status = getattr(exc, "_status_code", 503) or 503
    retry = getattr(exc, "_retry_after_s", None) or default_retry_s
    return TTSError(status, "overloaded", "the service is at capacity; retry later", retry_after_s=retry)


class _ServeMelStream:
    """An acoustic stage stream with backpressure mapped; ``cancel`` stops the decoder loop remotely."""

    def __init__(self, gen: MelStream, retry_after_s: float) -> None:
        self._gen = gen
        self._retry_after_s = retry_after_s

    async def __aiter__(self) -> AsyncIterator[MelChunk]:
        try:
            async for item in self._gen:
                yield item
        except BackPressureError as exc:
            raise backpressure(exc, self._retry_after_s) from None

    def cancel(self) -> None:
        """Stop the remote decoder loop; a call that was rejected or failed has nothing left to cancel
        (Serve's ``cancel`` re-raises its error, e.g. the ``BackPressureError`` already reported)."""
        with contextlib.suppress(Exception):  # the error itself reached the caller through iteration
            self._gen.cancel()


class ServeStages:
    """Frontend, acoustic and vocoder deployments as async stage calls."""

    def __init__(
        self,
        frontend: ResilientHandle,
        acoustic: ResilientHandle,
        vocoder: ResilientHandle,
        retry_after_s: float = 1.0,
    ) -> None:
        self.frontend = frontend
        self.acoustic_handle = acoustic
        self.vocoder = vocoder
        self.retry_after_s = retry_after_s

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except BackPressureError as exc:
            raise backpressure(exc, self.retry_after_s) from None

    async def units(self, request: SynthesisRequest) -> list[SynthesisUnit]:
        return await self._call(self.frontend.process.remote(request))

    async def acoustic(self, voice: str | None, inp: AcousticInput) -> AcousticOutput:
        return await self._call(self.acoustic_handle.synthesize.remote(voice, inp))

    def acoustic_stream(
        self, voice: str | None, inp: AcousticInput, chunk_frames: int, max_chunk_frames: int
    ) -> _ServeMelStream:
        gen = self.acoustic_handle.options(stream=True).stream.remote(
            voice, inp, chunk_frames, max_chunk_frames
        )
        return _ServeMelStream(gen, self.retry_after_s)

    async def vocode(self, request: VocodeRequest) -> np.ndarray:
        return await self._call(self.vocoder.vocode.remote(request))

    async def vocode_chunk(self, chunk: VocodeChunk) -> VocodeChunkResult:
        return await self._call(self.vocoder.vocode_chunk.remote(chunk))

    async def info(self) -> VocoderInfo:
        return await self._call(self.vocoder.info.remote())
