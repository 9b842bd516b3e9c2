"""The one orchestrator: request → units → acoustic → vocoder → audio joined with pauses and timestamps.

Ray-free. The stage calls are injected (:class:`Stages`): :class:`engine.synthesizer.LocalStages` runs the
models in this process (CLI, benchmarks, :class:`~engine.synthesizer.Synthesizer`); ``serve_app.stages``
calls the Serve deployments through retrying handles. Both paths run this code, so served audio equals local
audio for the same request.

Per unit, the vocoder runs either on the whole mel (``vocode``), or chunk by chunk while the acoustic decoder
is still producing frames: causal voices carry the vocoder state in each chunk (exact, no recomputed context,
any replica); non-causal voices get stateless mel windows. Streamed requests always take the chunked path for
their first unit; non-streamed units take it while at most ``pipeline_below`` units are in flight (lower
latency at low load; under load whole units go through the batched calls for throughput). A non-streamed
chunked unit of a causal voice is split into ``vocoder_lanes`` stateful chains over consecutive frame ranges
that run concurrently (on different vocoder replicas); each later chain starts from zero state on its range
plus ``left_context`` frames before it, which makes its audio exact, so the vocoder work of one unit is
spread over the replicas while the decoder still runs.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from engine.audio import apply_volume, silence
from engine.controls import pitch_to_model_units
from engine.frontend.units import Mark, SynthesisUnit
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

__all__ = [
    "MelStream",
    "Orchestrator",
    "StageUnavailable",
    "Stages",
    "StreamSettings",
    "Synthesized",
    "UnitReport",
    "acoustic_input",
    "lane_bounds",
    "timestamps_from_durations",
]

log = logging.getLogger("tts.orchestrator")
Timestamps = list[tuple[str, float, float]]


class StageUnavailable(Exception):
    """A stage replica died after a chunked unit started; the unit can be re-run whole."""


class MelStream(Protocol):
    """An acoustic stream: async iterator of :class:`MelChunk` that can be cancelled."""

    def __aiter__(self) -> AsyncIterator[MelChunk]: ...

    def cancel(self) -> None: ...


class Stages(Protocol):
    """The three stages as async calls (each idempotent, so adapters may retry them)."""

    async def units(self, request: SynthesisRequest) -> list[SynthesisUnit]: ...

    async def acoustic(self, voice: str | None, inp: AcousticInput) -> AcousticOutput: ...

    def acoustic_stream(
        self, voice: str | None, inp: AcousticInput, chunk_frames: int, max_chunk_frames: int
    ) -> MelStream: ...

    async def vocode(self, request: VocodeRequest) -> np.ndarray: ...

    async def vocode_chunk(self, chunk: VocodeChunk) -> VocodeChunkResult: ...

    async def info(self) -> VocoderInfo: ...


@dataclass(frozen=True)
class StreamSettings:
    """Chunking knobs (the Serve config's ``ingress.stream`` mapping; defaults declared here only)."""

    chunk_frames: int = 32  # mel frames per vocoder call after the first
    first_chunk_frames: int = 8  # emit the first audio as soon as this many frames are final
    max_chunk_frames: int = 64  # stateful streams double their chunks from chunk_frames up to this
    acoustic_chunk_frames: int = 8  # mel frames per item of the acoustic stream
    left_context: int | None = None  # None → the vocoder's exact receptive context
    lookahead: int | None = None
    pipeline_below: int = 2  # a non-streamed unit is chunk-pipelined when at most this many are in flight
    vocoder_lanes: int = 2  # concurrent stateful vocoder chains per chunk-pipelined non-streamed causal unit

    def __post_init__(self) -> None:
        if not 1 <= self.chunk_frames <= self.max_chunk_frames:
            raise ValueError("stream chunk sizes must satisfy 1 <= chunk_frames <= max_chunk_frames")
        if self.first_chunk_frames < 1 or self.acoustic_chunk_frames < 1 or self.pipeline_below < 0:
            raise ValueError("first_chunk_frames, acoustic_chunk_frames >= 1 and pipeline_below >= 0")
        if self.vocoder_lanes < 1:
            raise ValueError("vocoder_lanes must be >= 1")


@dataclass(frozen=True)
class UnitReport:
    """What the model was given and predicted for one unit (the JSON response's ``units``)."""

    text: str
    pinyin: list[str]
    emotion: str
    emotion_intensity: float
    speaker: str | None
    rate: float
    pitch: float  # semitones
    volume: float
    frames: int  # mel frames predicted by the acoustic model
    mean_pitch: float  # mean predicted F0 over the unit's tokens (normalised units, shift included)
    pause_after_s: float


@dataclass
class Synthesized:
    audio: np.ndarray  # float32 at the model rate: per-unit volume and pauses applied
    sample_rate: int
    timestamps: Timestamps
    timestamp_unit: str = "syllable"
    units: list[UnitReport] = field(default_factory=list)

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


@dataclass
class _UnitAudio:
    audio: np.ndarray  # float32, before volume
    durations: np.ndarray
    pitch: np.ndarray


async def _cancel(tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Cancel unfinished tasks and wait for them, so none outlives the request or leaves an error unread
    (cancellation cascades to the stage calls they await)."""
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def acoustic_input(unit: SynthesisUnit) -> AcousticInput:
    """The acoustic model's input for a unit: the only place unit controls become model inputs."""
    return AcousticInput(
        ids=np.ascontiguousarray(np.asarray(unit.ids, dtype=np.int64)),
        speed=float(unit.prosody.rate),
        pitch_shift=pitch_to_model_units(float(unit.prosody.pitch)),
        emotion_intensity=float(unit.emotion_intensity),
    )


# A laned unit's mel comes in items of one vocoder piece (the first lane starts after it), then of this many
# pieces: fewer acoustic stream items (hops), and a later lane whose start has been decoded takes all it can.
# (~300-frame units, 1 client, alternated: served RTF 6 % lower with 64- then 128-frame items than with 64
# throughout; 32- or 16-frame items 7-9 % higher; an earlier first piece, 16 or 32 frames, 3-6 % higher.)
_LANE_ITEM_PIECES = 2

# Each later lane gets this fraction of the previous lane's frames: it starts once the decoder has reached its
# range, so equal finishing times need shorter later lanes (2 lanes: the split falls at ~69 % of the frames).
_LANE_RATIO = 0.45


def lane_bounds(frames: int, lanes: int, piece: int) -> list[tuple[int, int]]:
    """Consecutive frame ranges ``[start, end)`` covering ``frames``, one per vocoder lane: geometrically
    shorter (``_LANE_RATIO``), boundaries on multiples of ``piece``, no lane shorter than ``piece``."""
    weights = [_LANE_RATIO**i for i in range(lanes)]
    cuts = [0]
    for i in range(1, lanes):
        cut = round(frames * sum(weights[:i]) / sum(weights) / piece) * piece
        if cut - cuts[-1] >= piece and frames - cut >= piece:
            cuts.append(cut)
    cuts.append(frames)
    return list(itertools.pairwise(cuts))


class _MelBuffer:
    """A unit's mel as the acoustic stream fills it (the frame count is known from its first item)."""

    def __init__(self, frames: int) -> None:
        self.mel = np.empty((frames, 0), np.float32)
        self.frames = 0
        self.done = False
        self._changed = asyncio.Condition()
        self._total = frames

    async def fill(self, chunks: AsyncIterator[MelChunk]) -> None:
        async for chunk in chunks:
            n = chunk.mel.shape[0]
            if not n:
                continue
            if self.frames + n > self._total:
                raise RuntimeError("the acoustic stream produced more frames than it announced")
            if self.mel.shape[1] != chunk.mel.shape[1]:
                self.mel = np.empty((self._total, chunk.mel.shape[1]), np.float32)
            self.mel[self.frames : self.frames + n] = chunk.mel
            async with self._changed:
                self.frames += n
                self._changed.notify_all()
        async with self._changed:
            self.done = True
            self._changed.notify_all()

    async def wait(self, frames: int) -> int:
        """Frames available once at least ``frames`` are (or the stream ended)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.frames >= frames or self.done)
            if self.frames < frames:
                raise RuntimeError("the acoustic stream ended before its announced frames")
            return self.frames


def timestamps_from_durations(
    marks: Sequence[Mark], durations: np.ndarray, offset_s: float, frame_s: float
) -> Timestamps:
    """(text, start_s, end_s) per mark from predicted frames per token."""
    cum = np.concatenate([[0.0], np.cumsum(np.asarray(durations, dtype=np.float64))])
    last = len(cum) - 1
    return [
        (
            text,
            round(offset_s + cum[min(s, last)] * frame_s, 4),
            round(offset_s + cum[min(e, last)] * frame_s, 4),
        )
        for text, s, e in marks
    ]


def _report(unit: SynthesisUnit, out: _UnitAudio) -> UnitReport:
    pitch = np.asarray(out.pitch, dtype=np.float64)
    return UnitReport(
        text=unit.text,
        pinyin=[s.pinyin for s in unit.syllables],
        emotion=unit.emotion,
        emotion_intensity=float(unit.emotion_intensity),
        speaker=unit.speaker,
        rate=float(unit.prosody.rate),
        pitch=float(unit.prosody.pitch),
        volume=float(unit.prosody.volume),
        frames=int(np.asarray(out.durations).sum()),
        mean_pitch=round(float(pitch.mean()) if pitch.size else 0.0, 6),
        pause_after_s=float(unit.pause_after_s),
    )


class Orchestrator:
    """Plans and runs a request over injected :class:`Stages`; owns no model."""

    def __init__(
        self, stages: Stages, stream: StreamSettings | None = None, max_concurrent_units: int = 4
    ) -> None:
        if max_concurrent_units < 1:
            raise ValueError("max_concurrent_units must be >= 1")
        self.stages = stages
        self.settings = stream or StreamSettings()
        self.max_concurrent_units = max_concurrent_units
        self._info: VocoderInfo | None = None
        self.active_units = 0  # non-streamed units in flight through this orchestrator

    async def info(self) -> VocoderInfo:
        """The vocoder's rate, hop and streaming context (fetched once)."""
        if self._info is None:
            self._info = await self.stages.info()
        return self._info

    async def units(self, request: SynthesisRequest) -> list[SynthesisUnit]:
        return await self.stages.units(request)

    # ------------------------------------------------------------------ whole requests
    async def synthesize(
        self, request: SynthesisRequest, units: list[SynthesisUnit] | None = None
    ) -> Synthesized:
        """All units concurrently (≤ ``max_concurrent_units`` in flight), joined in order with pauses."""
        if units is None:
            units = await self.units(request)
        info = await self.info()
        tasks = self._unit_tasks(units, request.voice)
        try:
            results = await asyncio.gather(*tasks)
        finally:
            await _cancel(tasks)  # on error/cancel, stop the siblings before the request ends
        return self.join(units, results, info)

    def _unit_tasks(
        self, units: Sequence[SynthesisUnit], voice: str | None
    ) -> list[asyncio.Future[_UnitAudio]]:
        """One task per unit, at most ``max_concurrent_units`` of them running; the caller cancels them."""
        gate = asyncio.Semaphore(self.max_concurrent_units)

        async def one(unit: SynthesisUnit) -> _UnitAudio:
            async with gate:
                return await self._unit(unit, voice)

        return [asyncio.ensure_future(one(u)) for u in units]

    @staticmethod
    def join(units: Sequence[SynthesisUnit], results: Sequence[_UnitAudio], info: VocoderInfo) -> Synthesized:
        """Units in order: each at its volume, then its pause; timestamps offset by what came before."""
        sr = int(info["sample_rate"])
        frame_s = info["hop_length"] / sr
        pieces: list[np.ndarray] = []
        stamps: Timestamps = []
        offset = 0
        for unit, out in zip(units, results, strict=True):
            stamps.extend(timestamps_from_durations(unit.marks, out.durations, offset / sr, frame_s))
            audio = apply_volume(out.audio, unit.prosody.volume)
            pad = silence(unit.pause_after_s, sr)
            pieces += [audio, pad]
            offset += len(audio) + len(pad)
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        return Synthesized(
            audio, sr, stamps, "syllable", [_report(u, r) for u, r in zip(units, results, strict=True)]
        )

    async def _unit(self, unit: SynthesisUnit, voice: str | None) -> _UnitAudio:
        self.active_units += 1
        try:
            if self.active_units <= self.settings.pipeline_below:
                try:
                    return await self._pipelined(unit, voice)
                except StageUnavailable:
                    # a replica died after the chunked unit started; nothing reached the client: redo it whole
                    log.warning("pipelined unit lost a stage replica mid-stream; re-running it whole")
            out = await self.stages.acoustic(voice, acoustic_input(unit))
            audio = await self.stages.vocode(VocodeRequest(out.mel, voice))
            return _UnitAudio(np.asarray(audio, dtype=np.float32), out.durations, out.pitch)
        finally:
            self.active_units -= 1

    async def _pipelined(self, unit: SynthesisUnit, voice: str | None) -> _UnitAudio:
        info = await self.info()
        if info["stateful_stream"] and self.settings.vocoder_lanes > 1:
            return await self._laned(unit, voice, info)
        meta: dict[str, Any] = {}
        pieces = [a async for a in self.unit_chunks(unit, voice, meta)]
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        return _UnitAudio(audio, meta["durations"], meta["pitch"])

    async def _laned(self, unit: SynthesisUnit, voice: str | None, info: VocoderInfo) -> _UnitAudio:
        """A causal unit as the decoder produces it, vocoded by concurrent stateful lanes."""
        cfg = self.settings
        # mel in whole vocoder pieces: no first-audio latency to win here, and fewer stream items (hops)
        piece = cfg.max_chunk_frames
        gen = self.stages.acoustic_stream(voice, acoustic_input(unit), piece, piece * _LANE_ITEM_PIECES)
        tasks: list[asyncio.Future[Any]] = []
        try:
            items = gen.__aiter__()
            head = await items.__anext__()  # durations, pitch and the frame count come first
            if head.num_frames is None or head.durations is None:
                raise RuntimeError("the acoustic stream must announce its frames first")
            buf = _MelBuffer(int(head.num_frames))
            tasks.append(asyncio.ensure_future(buf.fill(items)))
            for start, end in lane_bounds(int(head.num_frames), cfg.vocoder_lanes, piece):
                tasks.append(asyncio.ensure_future(self._lane(buf, start, end, voice, info)))
            results = await asyncio.gather(*tasks)
        finally:
            await _cancel(tasks)
            gen.cancel()
        audio = np.concatenate(results[1:])
        return _UnitAudio(audio, head.durations, head.pitch)

    async def _lane(
        self, buf: _MelBuffer, start: int, end: int, voice: str | None, info: VocoderInfo
    ) -> np.ndarray:
        """Audio of frames ``[start, end)``: a stateful chain in whole ``max_chunk_frames`` pieces; a lane
        that starts mid-unit begins from zero state ``left_context`` frames early and drops their audio."""
        piece = self.settings.max_chunk_frames
        hop = int(info["hop_length"])
        skip = min(start, int(info["left_context"]))
        pos, state = start, None
        out: list[np.ndarray] = []
        while pos < end:
            lo = pos - skip
            target = lo + piece * max(1, -(-(pos + 1 - lo) // piece))  # whole pieces, at least one new frame
            ready = min(end, await buf.wait(min(end, target)))
            stop = ready if ready == end else lo + (ready - lo) // piece * piece
            final = stop == end
            res = await self.stages.vocode_chunk(VocodeChunk(buf.mel[lo:stop], state, final, voice))
            out.append(res.audio[skip * hop :] if skip else res.audio)
            pos, state, skip = stop, res.state, 0
        return np.concatenate(out) if len(out) > 1 else (out[0] if out else np.zeros(0, np.float32))

    # ------------------------------------------------------------------ streamed requests
    async def stream(
        self, request: SynthesisRequest, units: list[SynthesisUnit]
    ) -> AsyncIterator[np.ndarray]:
        """Float32 audio chunks (volume applied, pauses included): unit 0 frame by frame as the decoder runs;
        the later units are synthesised concurrently once audio is flowing, and each follows, in order, as
        soon as it and the ones before it are done (a long last unit does not hold back a short second)."""
        info = await self.info()
        sr = int(info["sample_rate"])
        first, rest = units[0], units[1:]
        later: list[asyncio.Future[_UnitAudio]] = []
        try:
            async for chunk in self.unit_chunks(first, request.voice, live=True):
                if not later and rest:
                    later = self._unit_tasks(rest, request.voice)
                yield apply_volume(chunk, first.prosody.volume)
            yield silence(first.pause_after_s, sr)
            if rest and not later:
                later = self._unit_tasks(rest, request.voice)
            for unit, task in zip(rest, later, strict=True):
                out = await task
                yield apply_volume(out.audio, unit.prosody.volume)
                yield silence(unit.pause_after_s, sr)
        finally:
            await _cancel(later)

    async def unit_chunks(
        self, unit: SynthesisUnit, voice: str | None, meta: dict[str, Any] | None = None, live: bool = False
    ) -> AsyncIterator[np.ndarray]:
        """Audio of one unit (before volume), chunk by chunk as the acoustic decoder produces mel frames.

        ``meta`` (optional) receives the unit's ``durations`` and ``pitch`` before the first audio. ``live``:
        a listener plays the chunks as they come, from the first one on (each chunk tells the vocoder when
        it is due).
        """
        info = await self.info()
        cfg = self.settings
        gen = self.stages.acoustic_stream(
            voice,
            acoustic_input(unit),
            cfg.acoustic_chunk_frames,
            max(cfg.acoustic_chunk_frames, cfg.max_chunk_frames),
        )
        try:
            frames = self._mel_frames(gen, meta)
            chunks = (
                self._stateful_chunks(frames, voice, int(info["sample_rate"]) if live else None)
                if info["stateful_stream"]
                else self._windowed_chunks(frames, voice, info)
            )
            async for audio in chunks:
                yield audio
        finally:
            gen.cancel()  # no-op when finished; stops the decoder loop if the consumer went away

    @staticmethod
    async def _mel_frames(gen: MelStream, meta: dict[str, Any] | None) -> AsyncIterator[np.ndarray]:
        """The non-empty mel chunks of an acoustic stream; its ``durations``/``pitch`` go into ``meta``."""
        async for chunk in gen:
            if chunk.durations is not None and meta is not None:
                meta["durations"], meta["pitch"] = chunk.durations, chunk.pitch
            if chunk.mel.shape[0]:
                yield chunk.mel

    async def _stateful_chunks(
        self, frames: AsyncIterator[np.ndarray], voice: str | None, live_rate: int | None = None
    ) -> AsyncIterator[np.ndarray]:
        """Causal vocoder: each call carries the state the previous one returned (exact, no overlap).

        Chunks are exactly ``first_chunk_frames``, then ``chunk_frames`` doubling up to ``max_chunk_frames``
        (few distinct shapes keep the vocoder's compiled kernels warm); the last one is flagged final.
        ``live_rate`` (the audio's sample rate) when a listener plays the chunks from the first one on: each
        is due when the audio before it will have played out (the first one now), so the vocoder serves a
        stream about to run dry before streams seconds ahead.
        """
        cfg = self.settings
        pending: list[np.ndarray] = []
        have = 0
        size = cfg.first_chunk_frames
        state: dict[str, np.ndarray] | None = None
        playing_since: float | None = None  # monotonic time the listener got the first audio
        played = 0.0  # seconds of audio handed over before the next chunk

        def chunk(mel: np.ndarray, final: bool) -> VocodeChunk:
            due = None
            if live_rate is not None:
                due = 0.0 if playing_since is None else playing_since + played - time.monotonic()
            return VocodeChunk(mel, state, final, voice, due)

        async for mel_in in frames:
            pending.append(mel_in)
            have += mel_in.shape[0]
            while have >= size:
                mel = np.concatenate(pending) if len(pending) > 1 else pending[0]
                pending, have = [mel[size:]], have - size
                res = await self.stages.vocode_chunk(chunk(np.ascontiguousarray(mel[:size]), False))
                state = res.state
                if live_rate is not None:
                    playing_since = playing_since or time.monotonic()
                    played += res.audio.shape[0] / live_rate
                yield res.audio
                size = cfg.chunk_frames if size < cfg.chunk_frames else min(2 * size, cfg.max_chunk_frames)
        if have:
            mel = np.concatenate(pending) if len(pending) > 1 else pending[0]
            res = await self.stages.vocode_chunk(chunk(mel, True))
            yield res.audio

    async def _windowed_chunks(
        self, frames: AsyncIterator[np.ndarray], voice: str | None, info: VocoderInfo
    ) -> AsyncIterator[np.ndarray]:
        """Non-causal vocoder: every call gets a window (``left_context`` old frames + the new frames +
        ``lookahead`` frames) and returns only the new frames' samples, so any replica can serve it."""
        cfg = self.settings
        left = info["left_context"] if cfg.left_context is None else cfg.left_context
        ahead = info["lookahead"] if cfg.lookahead is None else cfg.lookahead
        mel = np.zeros((0, 0), np.float32)
        received = emitted = 0
        async for mel_in in frames:
            mel = mel_in if received == 0 else np.concatenate([mel, mel_in])
            received += mel_in.shape[0]
            ready = received - ahead
            need = cfg.first_chunk_frames if emitted == 0 else cfg.chunk_frames
            if ready - emitted >= need:
                yield await self._window(mel, emitted, ready, voice, left, ahead)
                emitted = ready
        if received > emitted:
            yield await self._window(mel, emitted, received, voice, left, ahead)

    async def _window(
        self, mel: np.ndarray, start: int, end: int, voice: str | None, left: int, ahead: int
    ) -> np.ndarray:
        w0 = max(0, start - left)
        w1 = min(mel.shape[0], end + ahead)
        req = VocodeRequest(np.ascontiguousarray(mel[w0:w1]), voice, start - w0, end - w0)
        return await self.stages.vocode(req)
