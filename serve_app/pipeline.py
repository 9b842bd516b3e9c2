"""Orchestration of the three stages over DeploymentHandles: bounded fan-out for whole requests and
frame-level streaming (acoustic mel chunks → windowed vocoder calls) for streamed ones."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from deployments.payloads import AcousticRequest, AcousticResult, MelChunk, UnitPayload, VocodeRequest
from engine.audio import silence
from engine.synthesizer import timestamps_from_durations
from serve_app.errors import TTSError

__all__ = ["Pipeline", "Synthesized", "Timestamps", "backpressure"]

log = logging.getLogger("tts.pipeline")
T = TypeVar("T")

Timestamps = list[tuple[str, float, float]]


@dataclass(frozen=True)
class StreamSettings:
    chunk_frames: int = 32  # mel frames per vocoder call after the first
    first_chunk_frames: int = 8  # emit the first audio as soon as this many frames are final
    acoustic_chunk_frames: int = 8  # mel frames per item of the acoustic stream
    left_context: int | None = None  # None → the vocoder's exact receptive context
    lookahead: int | None = None


@dataclass
class Synthesized:
    audio: np.ndarray  # float32 at the model rate, pauses included
    sample_rate: int
    timestamps: Timestamps
    timestamp_unit: str

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


def backpressure(exc: BackPressureError, default_retry_s: float) -> TTSError:
    """Map a stage's queue-full rejection to the client-facing error (503/429 + Retry-After)."""
    status = getattr(exc, "_status_code", 503) or 503
    retry = getattr(exc, "_retry_after_s", None) or default_retry_s
    return TTSError(status, "overloaded", "the service is at capacity; retry later", retry_after_s=retry)


class Pipeline:
    """Stage calls with backpressure mapping; owns no model, only handles."""

    def __init__(
        self,
        frontend: DeploymentHandle,
        acoustic: DeploymentHandle,
        vocoder: DeploymentHandle,
        max_concurrent_units: int = 4,
        retry_after_s: float = 1.0,
        stream: StreamSettings | None = None,
    ) -> None:
        self.frontend = frontend
        self.acoustic = acoustic
        self.vocoder = vocoder
        self.max_concurrent_units = max_concurrent_units
        self.retry_after_s = retry_after_s
        self.stream_settings = stream or StreamSettings()
        self._info: dict[str, int] | None = None

    async def _call(self, awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except BackPressureError as exc:
            raise backpressure(exc, self.retry_after_s) from None

    async def info(self) -> dict[str, int]:
        """Vocoder ``sample_rate``, ``hop_length`` and streaming context (fetched once)."""
        if self._info is None:
            self._info = await self._call(self.vocoder.info.remote())
        return self._info

    async def units(self, text: str, voice: str | None, emotion: str) -> list[UnitPayload]:
        return await self._call(self.frontend.process.remote(text, voice, emotion))

    async def _unit(self, unit: UnitPayload, voice: str | None, speed: float, pitch: float) -> tuple:
        acoustic: AcousticResult = await self._call(
            self.acoustic.synthesize.remote(AcousticRequest(unit.ids, voice, speed, pitch))
        )
        audio = await self._call(self.vocoder.vocode.remote(VocodeRequest(acoustic.mel, voice)))
        return acoustic.durations, audio

    async def synthesize_units(
        self, units: list[UnitPayload], voice: str | None, speed: float, pitch: float
    ) -> Synthesized:
        """All units concurrently (≤ ``max_concurrent_units`` in flight), joined in order with pauses."""
        info = await self.info()
        sr, frame_s = info["sample_rate"], info["hop_length"] / info["sample_rate"]
        gate = asyncio.Semaphore(self.max_concurrent_units)

        async def one(u: UnitPayload) -> tuple:
            async with gate:
                return await self._unit(u, voice, speed, pitch)

        tasks = [asyncio.ensure_future(one(u)) for u in units]
        try:
            results = await asyncio.gather(*tasks)
        finally:
            for t in tasks:  # on error/cancel, stop the siblings (cancellation cascades downstream)
                t.cancel()
        pieces: list[np.ndarray] = []
        stamps: Timestamps = []
        offset = 0
        for unit, (durations, audio) in zip(units, results, strict=True):
            stamps.extend(timestamps_from_durations(unit.marks, durations, offset / sr, frame_s))
            pad = silence(unit.pause_after_s, sr)
            pieces += [np.asarray(audio, dtype=np.float32), pad]
            offset += len(audio) + len(pad)
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        unit_kind = units[0].mark_unit if units else "syllable"
        return Synthesized(audio, sr, stamps, unit_kind)

    async def stream_unit(
        self, unit: UnitPayload, voice: str | None, speed: float, pitch: float
    ) -> AsyncIterator[np.ndarray]:
        """Audio for one unit, chunk by chunk, as the acoustic decoder produces mel frames.

        Every vocoder call gets a window (``left_context`` old frames + the new frames + ``lookahead``
        frames) and returns only the new frames' samples, so it is stateless and any replica can serve it.
        """
        cfg = self.stream_settings
        info = await self.info()
        left = info["left_context"] if cfg.left_context is None else cfg.left_context
        ahead = info["lookahead"] if cfg.lookahead is None else cfg.lookahead
        gen: Any = self.acoustic.options(stream=True).stream.remote(
            AcousticRequest(unit.ids, voice, speed, pitch), cfg.acoustic_chunk_frames
        )
        frames: list[np.ndarray] = []
        received = emitted = 0
        try:
            async for item in gen:
                chunk: MelChunk = item
                if chunk.mel.shape[0] == 0:
                    continue
                frames.append(chunk.mel)
                received += chunk.mel.shape[0]
                ready = received - ahead
                need = cfg.first_chunk_frames if emitted == 0 else cfg.chunk_frames
                if ready - emitted >= need:
                    yield await self._window(frames, emitted, ready, received, voice, left, ahead)
                    emitted = ready
            if received > emitted:
                yield await self._window(frames, emitted, received, received, voice, left, ahead)
        except BackPressureError as exc:
            raise backpressure(exc, self.retry_after_s) from None
        finally:
            gen.cancel()  # no-op when finished; stops the decoder loop if the client went away

    async def _window(
        self,
        frames: list[np.ndarray],
        start: int,
        end: int,
        available: int,
        voice: str | None,
        left: int,
        ahead: int,
    ) -> np.ndarray:
        mel = np.concatenate(frames) if len(frames) > 1 else frames[0]
        if len(frames) > 1:
            frames[:] = [mel]
        w0 = max(0, start - left)
        w1 = min(available, end + ahead)
        req = VocodeRequest(np.ascontiguousarray(mel[w0:w1]), voice, start - w0, end - w0)
        return await self._call(self.vocoder.vocode.remote(req))
