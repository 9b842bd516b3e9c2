"""``SambertAcoustic`` deployment: :class:`AcousticInput` → mel (batched) or a stream of mel chunks.

Two batching modes (build arg ``acoustic.batching``), same methods either way:
- ``continuous`` (default): one :class:`engine.sambert.scheduler.ContinuousBatcher` thread decodes every
  utterance, whole and streamed, in one running batch: they join at a decoder step boundary, leave when done.
- ``window``: whole utterances are grouped by ``@serve.batch`` and decoded to the end together; each stream
  runs its own decoder on the torch thread, interleaved chunk by chunk.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np
from ray import serve

from deployments.common import (
    TRIM_IDLE_S,
    BatchSettings,
    TorchWorker,
    release_free_memory,
    replica_threads,
    route_logs_to_serve,
    timed_batch,
)
from deployments.metrics import StageMetrics
from engine.messages import AcousticInput, AcousticOutput, MelChunk
from engine.modeldir import load_model_dir
from engine.sambert import AcousticModel
from engine.sambert.scheduler import BatcherSettings, ContinuousBatcher, Event, StreamEnd, StreamStart, Ticket
from engine.stages import mel_chunks

__all__ = ["BATCHING_MODES", "SambertAcoustic", "acoustic_batching"]

log = logging.getLogger("tts.acoustic")
_END = object()
BATCHING_MODES = ("continuous", "window")  # the first is the default


def acoustic_batching(options: dict[str, Any] | None) -> str:
    """The batching mode from the ``acoustic`` build args (``{batching: continuous|window}``), checked."""
    options = dict(options or {})
    if set(options) - {"batching"}:
        raise ValueError(f"unknown acoustic args: {sorted(set(options) - {'batching'})}")
    mode = options.get("batching") or BATCHING_MODES[0]
    if mode not in BATCHING_MODES:
        raise ValueError(f"acoustic batching must be one of {BATCHING_MODES}, got {mode!r}")
    return str(mode)


@serve.deployment(name="SambertAcoustic", max_ongoing_requests=8, max_queued_requests=32)
class SambertAcoustic:
    """Owns one :class:`engine.sambert.AcousticModel` per voice; torch runs on a dedicated thread."""

    def __init__(self, model_dir: str, threads: int | None = None, batching: str | None = None) -> None:
        batching = acoustic_batching({"batching": batching})
        route_logs_to_serve()
        directory = load_model_dir(model_dir)
        self.default_voice = next(iter(directory.voices))
        self.worker = TorchWorker(replica_threads(threads), "acoustic")
        self.models: dict[str, AcousticModel] = {
            name: self.worker.run_sync(AcousticModel.from_voice, spec, self.worker.threads)
            for name, spec in directory.voices.items()
        }
        self.metrics = StageMetrics("acoustic")
        self.batcher: ContinuousBatcher | None = None
        if batching == "continuous":
            self.batcher = ContinuousBatcher(
                self.models,
                BatcherSettings(max_batch=BatchSettings().max_batch_size),
                threads=self.worker.threads,
                on_admit=self.metrics.batch,
                on_idle=release_free_memory,
                idle_s=TRIM_IDLE_S,
            )

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Apply ``max_batch_size`` / ``batch_wait_timeout_s`` from the Serve config without a restart
        (continuous batching admits at the next decoder step and has no wait window)."""
        cfg = BatchSettings.from_user_config(user_config)
        if self.batcher is not None:
            self.batcher.set_max_batch(cfg.max_batch_size)
            return
        self._synthesize_batch.set_max_batch_size(cfg.max_batch_size)
        self._synthesize_batch.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    def _model(self, voice: str | None) -> AcousticModel:
        try:
            return self.models[voice or self.default_voice]
        except KeyError:
            raise ValueError(f"unknown voice {voice!r}") from None

    def _run_batch(self, reqs: list[tuple[str | None, AcousticInput]]) -> list[AcousticOutput]:
        out: list[AcousticOutput | None] = [None] * len(reqs)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, (voice, _) in enumerate(reqs):
            groups[voice or self.default_voice].append(i)
        for voice, idx in groups.items():
            results = self.models[voice].synthesize([reqs[i][1] for i in idx])
            for i, res in zip(idx, results, strict=True):
                out[i] = res
        return [o for o in out if o is not None]

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=0.005)
    async def _synthesize_batch(self, reqs: list[tuple[str | None, AcousticInput]]) -> list[AcousticOutput]:
        return await timed_batch(self.worker, self.metrics, "synthesize_batch", self._run_batch, reqs)

    async def synthesize(self, voice: str | None, inp: AcousticInput) -> AcousticOutput:
        """Whole-utterance mel, durations and pitch (batched with concurrent callers)."""
        self._model(voice)
        if self.batcher is None:
            return await self._synthesize_batch((voice, inp))
        start = time.perf_counter()
        async with _Events(self.batcher, voice, inp) as events:
            out = await events.next()
        self.metrics.observe("synthesize_batch", time.perf_counter() - start)
        if not isinstance(out, AcousticOutput):
            raise RuntimeError(f"acoustic batcher answered {type(out).__name__} to a whole utterance")
        return out

    async def stream(
        self,
        voice: str | None,
        inp: AcousticInput,
        chunk_frames: int = 16,
        max_chunk_frames: int | None = None,
    ) -> AsyncGenerator[MelChunk, None]:
        """Mel chunks straight from the AR decoder; the first item carries durations, pitch and frame count.

        Chunks are ``chunk_frames`` long, doubling up to ``max_chunk_frames`` when given. Cancelling the
        caller stops the utterance's decoding at the next chunk (window) or decoder step (continuous).
        """
        model = self._model(voice)
        start = time.perf_counter()
        if self.batcher is None:
            stream = await self.worker.run(model.stream, inp, chunk_frames, max_chunk_frames)
            chunks = mel_chunks(stream)
            while True:
                chunk = await self.worker.run(next, chunks, _END)
                if chunk is _END:
                    break
                yield chunk
        else:
            async with _Events(self.batcher, voice, inp, chunk_frames, max_chunk_frames) as events:
                while not isinstance(event := await events.next(), StreamEnd):
                    if isinstance(event, StreamStart):
                        yield MelChunk(
                            mel=np.zeros((0, 80), np.float32),
                            durations=event.durations,
                            pitch=event.pitch,
                            num_frames=event.num_frames,
                        )
                    else:
                        yield MelChunk(mel=np.asarray(event, dtype=np.float32))
        self.metrics.observe("stream", time.perf_counter() - start)

    async def check_health(self) -> None:
        """A real tiny inference (two tokens) on the default voice; through the batcher when there is one,
        admitted at its next step even when the batch is full (a busy replica is not an unhealthy one)."""
        ids = np.zeros((2, 6), dtype=np.int64)
        if self.batcher is None:
            res = await self.worker.run(self._run_batch, [(None, AcousticInput(ids=ids))])
            mel = res[0].mel
        else:
            self.batcher.check()
            async with _Events(self.batcher, None, AcousticInput(ids=ids), urgent=True) as events:
                out = await events.next()
            mel = out.mel if isinstance(out, AcousticOutput) else np.zeros(0)
        if mel.ndim != 2 or mel.shape[1] != 80:
            raise RuntimeError(f"acoustic health check produced mel of shape {mel.shape}")


class _Events:
    """One utterance submitted to the batcher, its events read on this event loop; leaving the block cancels
    it. A wait longer than the batcher's ``step_timeout_s`` checks the batcher, so a stalled or dead decoder
    loop raises instead of hanging the caller."""

    def __init__(
        self,
        batcher: ContinuousBatcher,
        voice: str | None,
        inp: AcousticInput,
        chunk_frames: int | None = None,
        max_chunk_frames: int | None = None,
        urgent: bool = False,
    ) -> None:
        self._batcher = batcher
        self._args = (voice, inp, chunk_frames, max_chunk_frames)
        self._urgent = urgent
        self._queue: asyncio.Queue[Event] = asyncio.Queue(batcher.settings.max_events)
        self._lost = False
        self._ticket: Ticket | None = None

    def _put(self, event: Event) -> None:
        """(on this event loop) Queue one event; a reader too far behind loses the utterance."""
        if self._queue.full():
            self._lost = True
            if self._ticket is not None:
                self._ticket.cancel()
        else:
            self._queue.put_nowait(event)

    async def __aenter__(self) -> _Events:
        voice, inp, chunk_frames, max_chunk_frames = self._args
        loop = asyncio.get_running_loop()

        def sink(event: Event) -> None:
            loop.call_soon_threadsafe(self._put, event)

        stream = chunk_frames is not None
        self._ticket = self._batcher.submit(
            voice,
            inp,
            stream=stream,
            chunk_frames=chunk_frames or 1,
            max_chunk_frames=max_chunk_frames,
            sink=sink,
            urgent=self._urgent,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ticket is not None:
            self._ticket.cancel()

    async def next(self) -> Event:
        while True:
            if self._lost and self._queue.empty():
                raise RuntimeError(f"the reader fell {self._queue.maxsize} events behind; utterance dropped")
            try:
                event = await asyncio.wait_for(self._queue.get(), self._batcher.settings.step_timeout_s)
            except TimeoutError:
                self._batcher.check()  # raises when the loop is dead or stuck; else keep waiting
                continue
            if isinstance(event, BaseException):
                raise event
            return event
