"""Orchestration of the three stages over DeploymentHandles: bounded fan-out for whole requests and
frame-level streaming (acoustic mel chunks → vocoder chunk calls) for streamed ones.

Causal voices stream with the vocoder state carried in each call (exact, no recomputed context, any
replica); non-causal voices with stateless mel windows. At low load a non-streamed unit takes the same
chunked path, so the vocoder works on the first frames while the decoder is still producing the rest
(lower latency); under load whole units go through the dynamically batched calls (higher throughput)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from deployments.payloads import (
    AcousticRequest,
    AcousticResult,
    MelChunk,
    UnitPayload,
    VocodeChunk,
    VocodeChunkResult,
    VocodeRequest,
)
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
    max_chunk_frames: int = 64  # stateful streams double their chunks from chunk_frames up to this
    acoustic_chunk_frames: int = 8  # mel frames per item of the acoustic stream
    left_context: int | None = None  # None → the vocoder's exact receptive context
    lookahead: int | None = None
    pipeline_below: int = 2  # a non-streamed unit is chunk-pipelined when at most this many are in flight

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_frames <= self.max_chunk_frames:
            raise ValueError("stream chunk sizes must satisfy 1 <= chunk_frames <= max_chunk_frames")
        if self.first_chunk_frames < 1 or self.acoustic_chunk_frames < 1 or self.pipeline_below < 0:
            raise ValueError("first_chunk_frames, acoustic_chunk_frames >= 1 and pipeline_below >= 0")


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
        self.active_units = 0  # non-streamed units in flight through this pipeline

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
        self.active_units += 1
        try:
            return await self._unit_audio(unit, voice, speed, pitch)
        except BackPressureError as exc:
            raise backpressure(exc, self.retry_after_s) from None
        finally:
            self.active_units -= 1

    async def _unit_audio(self, unit: UnitPayload, voice: str | None, speed: float, pitch: float) -> tuple:
        if self.active_units <= self.stream_settings.pipeline_below:
            meta: dict[str, Any] = {}
            try:
                pieces = [a async for a in self.stream_unit(unit, voice, speed, pitch, meta)]
            except TTSError as exc:
                if exc.code != "unavailable":
                    raise
                # a replica died after the stream started; nothing reached the client: redo the unit whole
                log.warning("pipelined unit lost a stage replica mid-stream; re-running it batched")
            else:
                audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
                return meta["durations"], audio
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
        self,
        unit: UnitPayload,
        voice: str | None,
        speed: float,
        pitch: float,
        meta: dict[str, Any] | None = None,
    ) -> AsyncIterator[np.ndarray]:
        """Audio for one unit, chunk by chunk, as the acoustic decoder produces mel frames.

        ``meta`` (optional) receives the unit's ``durations`` before the first audio.
        """
        info = await self.info()
        request = AcousticRequest(unit.ids, voice, speed, pitch)
        gen: Any = None
        try:
            cfg = self.stream_settings
            gen = self.acoustic.options(stream=True).stream.remote(
                request, cfg.acoustic_chunk_frames, max(cfg.acoustic_chunk_frames, cfg.max_chunk_frames)
            )
            if info.get("stateful_stream"):
                chunks = self._stateful_chunks(gen, voice, meta)
            else:
                chunks = self._windowed_chunks(gen, voice, info, meta)
            async for audio in chunks:
                yield audio
        except BackPressureError as exc:
            raise backpressure(exc, self.retry_after_s) from None
        finally:
            if gen is not None:
                gen.cancel()  # no-op when finished; stops the decoder loop if the client went away

    @staticmethod
    async def _mel_frames(gen: Any, meta: dict[str, Any] | None) -> AsyncIterator[np.ndarray]:
        """The non-empty mel chunks of an acoustic stream; its ``durations`` go into ``meta``."""
        async for item in gen:
            chunk: MelChunk = item
            if chunk.durations is not None and meta is not None:
                meta["durations"] = chunk.durations
            if chunk.mel.shape[0]:
                yield chunk.mel

    async def _stateful_chunks(
        self, gen: Any, voice: str | None, meta: dict[str, Any] | None
    ) -> AsyncIterator[np.ndarray]:
        """Causal vocoder: each call carries the state the previous one returned (exact, no overlap).

        Chunks are exactly ``first_chunk_frames``, then ``chunk_frames`` doubling up to ``max_chunk_frames``
        (few distinct shapes keep the vocoder's compiled kernels warm); the last one is flagged final.
        """
        cfg = self.stream_settings
        pending: list[np.ndarray] = []
        have = 0
        size = cfg.first_chunk_frames
        state: dict[str, np.ndarray] | None = None
        async for mel_in in self._mel_frames(gen, meta):
            pending.append(mel_in)
            have += mel_in.shape[0]
            while have >= size:
                mel = np.concatenate(pending) if len(pending) > 1 else pending[0]
                pending, have = [mel[size:]], have - size
                res: VocodeChunkResult = await self._call(
                    self.vocoder.vocode_chunk.remote(
                        VocodeChunk(np.ascontiguousarray(mel[:size]), state, False, voice)
                    )
                )
                state = res.state
                yield res.audio
                size = cfg.chunk_frames if size < cfg.chunk_frames else min(2 * size, cfg.max_chunk_frames)
        if have:
            mel = np.concatenate(pending) if len(pending) > 1 else pending[0]
            res = await self._call(self.vocoder.vocode_chunk.remote(VocodeChunk(mel, state, True, voice)))
            yield res.audio

    async def _windowed_chunks(
        self, gen: Any, voice: str | None, info: dict[str, int], meta: dict[str, Any] | None
    ) -> AsyncIterator[np.ndarray]:
        """Non-causal vocoder: every call gets a window (``left_context`` old frames + the new frames +
        ``lookahead`` frames) and returns only the new frames' samples, so any replica can serve it."""
        cfg = self.stream_settings
        left = info["left_context"] if cfg.left_context is None else cfg.left_context
        ahead = info["lookahead"] if cfg.lookahead is None else cfg.lookahead
        frames: list[np.ndarray] = []
        received = emitted = 0
        async for mel_in in self._mel_frames(gen, meta):
            frames.append(mel_in)
            received += mel_in.shape[0]
            ready = received - ahead
            need = cfg.first_chunk_frames if emitted == 0 else cfg.chunk_frames
            if ready - emitted >= need:
                yield await self._window(frames, emitted, ready, received, voice, left, ahead)
                emitted = ready
        if received > emitted:
            yield await self._window(frames, emitted, received, received, voice, left, ahead)

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
