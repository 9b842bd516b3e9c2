"""Ray-free end-to-end synthesis for the CLI and benchmarks: the shared orchestrator
(:class:`~engine.orchestrator.Orchestrator`) over :class:`LocalStages`: the models in this process."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from engine import audio as audio_mod
from engine.frontend import Frontend, SynthesisUnit
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
from engine.orchestrator import Orchestrator, StreamSettings, Synthesized
from engine.stages import frontend_units, mel_chunks, vocode_request, vocoder_info

if TYPE_CHECKING:
    from engine.sambert import AcousticModel

__all__ = ["LocalStages", "Synthesizer", "decode_groups"]

WORKER_CHUNK_FRAMES = 256
"""Piece length of the vocoders on :class:`~engine.cores.CoreWorkers` (one thread each; the same as the
vocoder's default chunk since session 25, which measured it on a lone thread too). Beside the decoder on
the other core, longer pieces read the vocoder's weights less often per frame:
128 vs 64 frames, the reference line 2.095 vs 2.186 s, 10 of 11 alternations (2026-12-05, Zen 4); 256 vs
128, medians of 12 alternations: 0.998 vs 1.015 s in bf16, 1.531 vs 1.573 s in fp32 (2026-12-05, AMX Xeon;
1 thread alone, 1024 frames: 0.76 vs 0.82 ms a frame in bf16), with a wider spread: a piece still running
at the end leaves the other thread idle longer (one KAN-TTS harness run read fp32 1.650 s against 1.569 s
for 128 at another hour). The audio is bit-identical."""


def decode_groups(inputs: Sequence[AcousticInput], workers: int) -> list[list[int]]:
    """Indices of ``inputs`` in at most ``workers`` groups of about equal decoding work (tokens ÷ speed), the
    longest first, each to the lightest group so far; each group is one decoder batch on its own worker.

    Why not one batch for all: its first mel chunk comes only after the front and ~90 decoder steps, and
    until then the other workers idle (the reference line in bf16: 181 of 945 ms on one of two cores).
    Decoded apart, every worker starts at once and vocodes as soon as its own group is decoded. The compiled
    step's cost grows about linearly with rows beyond two, so splitting adds little decoder work (at two
    rows ~15 %: the reference line's acoustic work 464 → 538 ms). 2 threads, separate processes alternated,
    medians of 9 (2026-12-05, AMX Xeon): four short sentences fp32 319 / 305 → 267 / 273 ms, bf16 243 / 236
    → 199 / 204 ms; a 5-unit paragraph fp32 1015 / 988 → 949 / 952 ms, bf16 709 / 705 → 672 / 683 ms; the
    reference line (2 units) fp32 1496 / 1511 → 1445 / 1406 ms, bf16 unchanged (4 pairs: 878-917 vs
    875-923 ms: the added decoder work there equals the idle time saved).
    """
    groups: list[list[int]] = [[] for _ in range(max(1, min(workers, len(inputs))))]
    load = [0.0] * len(groups)
    work = [len(inp.ids) / inp.speed for inp in inputs]
    for i in sorted(range(len(inputs)), key=lambda i: -work[i]):
        lightest = load.index(min(load))
        groups[lightest].append(i)
        load[lightest] += work[i]
    return [g for g in groups if g]


In = TypeVar("In")
Out = TypeVar("Out")


class _Gathered(Generic[In, Out]):
    """Calls made by the tasks that are ready at the same time, run as one batch per voice.

    A call queues until the event loop's next turn (the tasks ready now have asked by then), then
    ``run(voice, items)`` answers the whole queue, one result per item: the result itself, or a
    :class:`concurrent.futures.Future` a worker thread settles. When it raises, the items run one by one, so a
    bad item fails alone. Queues are per event loop: requests run from several threads (each with
    its own loop) never batch or deliver across threads.
    """

    def __init__(self, run: Callable[[str, list[In]], list[Out]]) -> None:
        self._run = run
        self._queues: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, list[tuple[str, In, asyncio.Future[Out]]]
        ] = weakref.WeakKeyDictionary()

    async def __call__(self, voice: str, item: In) -> Out:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Out] = loop.create_future()
        queue = self._queues.setdefault(loop, [])
        queue.append((voice, item, future))
        if len(queue) == 1:
            loop.call_soon(self._flush, loop)
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        queued = self._queues.pop(loop, [])
        for voice in dict.fromkeys(v for v, _, _ in queued):
            jobs = [(item, fut) for v, item, fut in queued if v == voice and not fut.cancelled()]
            if not jobs:
                continue
            try:
                outs = self._run(voice, [item for item, _ in jobs])
            except Exception as exc:
                if len(jobs) == 1:
                    jobs[0][1].set_exception(exc)
                    continue
                for item, fut in jobs:  # one by one: only the bad item fails
                    try:
                        _deliver(loop, self._run(voice, [item])[0], fut)
                    except Exception as one_exc:
                        fut.set_exception(one_exc)
                continue
            for (_, fut), out in zip(jobs, outs, strict=True):
                _deliver(loop, out, fut)


def _deliver(loop: asyncio.AbstractEventLoop, out: Any, fut: asyncio.Future[Any]) -> None:
    """Set ``fut`` to ``out``, or, when ``out`` is a worker thread's future, to its outcome once it has
    one."""
    if not isinstance(out, concurrent.futures.Future):
        fut.set_result(out)
        return

    def settle(done: concurrent.futures.Future[Any]) -> None:
        if fut.cancelled():
            return
        if (exc := done.exception()) is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(done.result())

    out.add_done_callback(lambda done: loop.call_soon_threadsafe(settle, done))


class _LocalMelStream:
    """An acoustic stream run step by step in this process (cancel = stop iterating)."""

    def __init__(self, chunks: Iterator[MelChunk]) -> None:
        self._chunks = chunks
        self._cancelled = False

    async def __aiter__(self) -> AsyncIterator[MelChunk]:
        for chunk in self._chunks:
            if self._cancelled:
                return
            yield chunk

    def cancel(self) -> None:
        self._cancelled = True


def _synthesize_into(
    model: AcousticModel,
    inputs: list[AcousticInput],
    futures: list[concurrent.futures.Future[AcousticOutput]],
    on_mel: Callable[[int, np.ndarray, int], None] | None = None,
    mel_chunk_frames: int = 64,
    before_settling: Callable[[int, AcousticOutput], None] | None = None,
    mel_tail_frames: int | None = None,
) -> None:
    """Decode ``inputs`` as one batch, settling each future as its utterance is finished (``on_mel``: its
    mel chunks as they are final, the frames after the last whole chunk in chunks of at most
    ``mel_tail_frames``; ``before_settling`` sees each output first); when the batch fails, the items not
    yet settled run one by one (a bad item fails alone)."""

    def settle(i: int, out: AcousticOutput) -> None:
        if before_settling is not None:
            before_settling(i, out)
        futures[i].set_result(out)

    try:
        model.synthesize(
            inputs,
            on_output=settle,
            on_mel=on_mel,
            mel_chunk_frames=mel_chunk_frames,
            mel_tail_frames=mel_tail_frames,
        )
        return
    except Exception as exc:
        if len(inputs) == 1:
            futures[0].set_exception(exc)
            return
    for inp, future in zip(inputs, futures, strict=True):
        if future.done():
            continue
        try:
            future.set_result(model.synthesize([inp])[0])
        except Exception as exc:
            future.set_exception(exc)


class _EarlyAudio:
    """Audio already being vocoded for a mel object that :meth:`LocalStages.acoustic` returned; the entry
    goes when the mel is collected (or taken)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._audio: dict[int, tuple[weakref.ref[np.ndarray], concurrent.futures.Future[np.ndarray]]] = {}

    def remember(self, mel: np.ndarray, audio: concurrent.futures.Future[np.ndarray]) -> None:
        key = id(mel)

        def forget(_: object) -> None:
            with self._lock:
                self._audio.pop(key, None)

        with self._lock:
            self._audio[key] = (weakref.ref(mel, forget), audio)

    def take(self, mel: object) -> concurrent.futures.Future[np.ndarray] | None:
        with self._lock:
            entry = self._audio.get(id(mel))
            if entry is None or entry[0]() is not mel:
                return None
            del self._audio[id(mel)]
            return entry[1]


class LocalStages:
    """The three stages on models loaded in this process (blocking calls).

    The orchestrator asks for a request's units concurrently; their acoustic calls are decoded together, as
    one batch per voice (:meth:`AcousticModel.synthesize`: each output equals one-by-one synthesis, ≤1e-4 on
    mel), so the AR decoder reads its weights once per step for all of them. Batches never cross threads
    (:class:`_Gathered`).

    On one thread the calls run in the caller's thread, and a request's whole-mel vocoder calls run together
    too (:meth:`Vocoder.vocode_batch`: equal pieces of different mels in one call, bit-identical to one by
    one on oneDNN). On ``threads`` ≥ 2, whole-text synthesis runs on :class:`~engine.cores.CoreWorkers`, one
    torch thread each: the batch is cut into one decoder batch per worker (:func:`decode_groups`), all
    starting at once, each handing its units' mel over in chunks as the decoder makes them final, and a
    worker whose batch is done vocodes those chunks (:class:`~engine.hifigan.spans.MelSpans`,
    bit-identical to vocoding the finished mel); :meth:`vocode` of a mel this object returned then gets that
    audio. Streaming and windowed calls stay in the caller's thread, on ``threads`` torch threads.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        vocoder_precision: str = "fp32",
    ) -> None:
        import torch

        from engine.cores import CoreWorkers
        from engine.hifigan import Vocoder
        from engine.modeldir import check_vocoder_precision, load_model_dir, resolve_model_dir
        from engine.sambert import AcousticModel

        self.vocoder_precision = check_vocoder_precision(vocoder_precision)  # before any model is loaded
        self.directory = load_model_dir(resolve_model_dir(model_dir))
        if threads:
            torch.set_num_threads(threads)
        cores = torch.get_num_threads()
        self.workers = CoreWorkers(cores) if cores > 1 else None
        self.frontend = Frontend()
        voices = self.directory.voices
        # with workers the models get no thread count of their own: each thread keeps its own
        model_threads = threads if self.workers is None else None
        self.acoustic_models = {n: AcousticModel.from_voice(v, model_threads) for n, v in voices.items()}
        if self.workers is None:
            self.vocoders = {n: Vocoder.from_voice(v, threads, vocoder_precision) for n, v in voices.items()}
        else:  # built (and prepacked) on a worker's one thread, where they run
            build = functools.partial(
                Vocoder.from_voice, precision=vocoder_precision, chunk_frames=WORKER_CHUNK_FRAMES
            )
            building = {n: self.workers.submit(build, v) for n, v in voices.items()}
            self.vocoders = {n: f.result() for n, f in building.items()}
        self.default_voice = next(iter(voices))
        self._acoustic: _Gathered[AcousticInput, AcousticOutput] = _Gathered(self._acoustic_batch)
        self._vocode: _Gathered[np.ndarray, np.ndarray] = _Gathered(self._vocode_batch)
        self._early = _EarlyAudio()

    def _acoustic_batch(self, voice: str, inputs: list[AcousticInput]) -> list[Any]:
        model = self.acoustic_models[voice]
        workers = self.workers
        if workers is None:
            return model.synthesize(inputs)
        from engine.hifigan.spans import MelSpans

        vocoder = self.vocoders[voice]
        futures: list[concurrent.futures.Future[AcousticOutput]] = [
            concurrent.futures.Future() for _ in inputs
        ]
        streamed = vocoder.causal and vocoder.chunk_frames
        groups = decode_groups(inputs, workers.size)
        # a worker with no batch of its own can start on a unit's tail pieces while it decodes (one postnet
        # call per piece instead of one for the whole tail, so only then)
        tail = vocoder.tail_frames if len(groups) < workers.size else None
        spans: dict[int, MelSpans] = {}  # each index is only ever touched by its own group's thread

        def on_mel(i: int, chunk: np.ndarray, frames: int) -> None:
            if i not in spans:
                spans[i] = MelSpans(vocoder, frames, workers)
            spans[i].extend(chunk)

        def remember(i: int, out: AcousticOutput) -> None:
            if i in spans:  # before the caller can ask to vocode this mel
                self._early.remember(out.mel, spans[i].future)

        def decode(group: list[int]) -> None:
            batch, settled = [inputs[i] for i in group], [futures[i] for i in group]
            if not streamed:
                _synthesize_into(model, batch, settled)
                return
            _synthesize_into(
                model,
                batch,
                settled,
                lambda j, chunk, frames: on_mel(group[j], chunk, frames),
                vocoder.chunk_frames,
                lambda j, out: remember(group[j], out),
                tail,
            )

        for group in groups:
            workers.run(functools.partial(decode, group))
        return futures

    def _vocode_batch(self, voice: str, mels: list[np.ndarray]) -> list[Any]:
        vocoder = self.vocoders[voice]
        if self.workers is None:
            return vocoder.vocode_batch(mels)
        if not (vocoder.causal and vocoder.chunk_frames):
            return [self.workers.submit(vocoder.vocode, mel) for mel in mels]
        from engine.hifigan.spans import MelSpans

        return [MelSpans.whole(vocoder, mel, self.workers).future for mel in mels]  # validated here

    def _name(self, voice: str | None) -> str:
        return self.directory.voice(voice).name

    async def units(self, request: SynthesisRequest) -> list[SynthesisUnit]:
        return frontend_units(self.frontend, self.directory, request)

    async def acoustic(self, voice: str | None, inp: AcousticInput) -> AcousticOutput:
        """Decoded in one batch with the acoustic calls of the tasks ready now."""
        return await self._acoustic(self._name(voice), inp)

    def acoustic_stream(
        self, voice: str | None, inp: AcousticInput, chunk_frames: int, max_chunk_frames: int
    ) -> _LocalMelStream:
        model = self.acoustic_models[self._name(voice)]
        return _LocalMelStream(mel_chunks(model.stream(inp, chunk_frames, max_chunk_frames)))

    async def vocode(self, request: VocodeRequest) -> np.ndarray:
        """A whole mel: vocoded in one batch with the whole-mel calls of the tasks ready now."""
        if request.start is not None or request.end is not None:  # a window: only some frames' samples
            return vocode_request(self.vocoders[self._name(request.voice)], request)
        early = self._early.take(request.mel)
        if early is not None:  # vocoded while it was decoded
            return await asyncio.wrap_future(early)
        return await self._vocode(self._name(request.voice), np.asarray(request.mel, dtype=np.float32))

    async def vocode_chunk(self, chunk: VocodeChunk) -> VocodeChunkResult:
        model = self.vocoders[self._name(chunk.voice)]
        audio, state = model.vocode_continue(chunk.mel, chunk.state, chunk.final)
        return VocodeChunkResult(audio, state)

    async def info(self) -> VocoderInfo:
        return vocoder_info(self.vocoders, self.default_voice)

    def close(self) -> None:
        """Stop the worker threads (also done when the stages are garbage-collected or at exit)."""
        if self.workers is not None:
            self.workers.close()


class Synthesizer:
    """Loads every voice of a model directory once; ``synthesize`` / ``synthesize_bytes`` / ``stream``.

    Keyword controls are the fields of :class:`~engine.messages.SynthesisRequest` (units in
    :mod:`engine.controls`). ``pipeline_below`` 0 = whole units (fastest in one process); raise it to take the
    chunked path the server takes at low load (same audio). ``vocoder_precision``: ``fp32`` (faithful) or the
    opt-in, quality-gated ``bf16`` (README "bf16 vocoder"; :attr:`model_version` then ends in ``+bf16``).
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        threads: int | None = None,
        stream: StreamSettings | None = None,
        vocoder_precision: str = "fp32",
    ) -> None:
        self.stages = LocalStages(model_dir, threads, vocoder_precision)
        self.directory = self.stages.directory
        self.orchestrator = Orchestrator(self.stages, stream or StreamSettings(pipeline_below=0))
        first = next(iter(self.stages.vocoders.values()))
        self.sample_rate = int(first.sample_rate)
        self.hop_length = int(first.hop_length)

    @property
    def voices(self) -> list[str]:
        return list(self.directory.voices)

    def close(self) -> None:
        """Stop the worker threads of ``threads`` ≥ 2 (see :class:`LocalStages`)."""
        self.stages.close()

    @property
    def model_version(self) -> str:
        return self.directory.audio_version(self.stages.vocoder_precision)

    def request(self, text: str, **controls: Any) -> SynthesisRequest:
        return SynthesisRequest(text=text, **controls)

    def units(self, text: str, **controls: Any) -> list[SynthesisUnit]:
        return asyncio.run(self.stages.units(self.request(text, **controls)))

    def synthesize(self, text: str | SynthesisRequest, **controls: Any) -> Synthesized:
        """Whole-text synthesis: float32 audio at the model rate, timestamps and per-unit reports."""
        req = text if isinstance(text, SynthesisRequest) else self.request(text, **controls)
        return asyncio.run(self.orchestrator.synthesize(req))

    def synthesize_bytes(self, text: str, fmt: str = "wav", **controls: Any) -> tuple[bytes, int]:
        """Encoded audio (formats: :mod:`engine.audio`); ``sample_rate`` resamples."""
        req = replace(self.request(text, **controls), format=fmt)
        result = self.synthesize(req)
        return audio_mod.encode(result.audio, result.sample_rate, req.format, req.sample_rate)

    def stream(self, text: str | SynthesisRequest, **controls: Any) -> Iterator[np.ndarray]:
        """Float32 audio chunks as the decoder produces mel frames (the served streaming path)."""
        req = text if isinstance(text, SynthesisRequest) else self.request(text, **controls)
        loop = asyncio.new_event_loop()
        try:
            units = loop.run_until_complete(self.orchestrator.units(req))
            agen = self.orchestrator.stream(req, units)
            while True:
                try:
                    chunk = loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
                if chunk.size:
                    yield chunk
        finally:
            loop.close()
