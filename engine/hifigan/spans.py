"""One mel vocoded by several worker threads at once, as its frames arrive, exactly (causal generators).

A causal generator's audio at a frame depends on the :meth:`~.generator.Generator.left_context_frames`
frames before it only. So a thread can run frames ``[split - context, end)`` with empty caches, drop the
audio of the first ``context`` frames, and the rest equals one run of the whole mel (bit-identical on oneDNN:
each piece runs the same kernels). :class:`MelSpans` starts a mel as one span that a thread vocodes piece by
piece as frames arrive (:meth:`MelSpans.extend`: a decoder still producing them); once all frames are in, an
idle thread may take the back part of what a span has not started yet (:class:`engine.cores.CoreWorkers`
asks through ``split``). A split costs ``context`` frames of extra work (37 of the released voice's frames).

The end of a mel is where threads idle: a piece already running cannot be shared, and a 256-frame piece is
~0.33 s of one core in float32. So a split counts what the running piece still has to do (from the pieces'
measured pace) and cuts where both threads would finish together, down to taking every frame not yet
started (before, it took half of those, and none when fewer than 148 were left: a thread idled through the
other's last 256-frame piece). Halving a span's last pieces to keep more of it shareable was measured too:
float32 gained, bf16 lost more to the smaller pieces' overheads (docs/performance.md, session 24).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from ..steps import finish
from .vocoder import Vocoder, VocoderError, _padded

MIN_SPLIT_GAIN_CONTEXTS = 1
"""A split must bring the span's end forward by at least this many ``context`` lengths (what it costs)."""

Job = Callable[[], None]


class Workers(Protocol):
    """Where spans run (:class:`engine.cores.CoreWorkers`)."""

    def run(self, job: Job) -> None: ...

    def offer(self, splittable: MelSpans) -> None: ...


@dataclass
class _Span:
    pos: int  # next frame to run (context frames before ``keep`` are run and dropped)
    keep: int  # first frame whose audio is kept
    end: int  # end of the span (a split lowers it)
    claimed: int  # frames before this are running or done
    waiting: bool = False  # stopped for frames that have not arrived; extend() queues it again
    started: float = 0.0  # when the running piece started (time.perf_counter)
    size: int = 0  # frames the running piece is padded to; 0 while none runs
    cache: dict[str, Tensor] = field(default_factory=dict)


class MelSpans:
    """A mel of ``frames`` frames → its audio in :attr:`future`, in spans run on ``workers``.

    :meth:`extend` adds the next frames (validated; a thread is queued as soon as a piece can run). Once all
    frames are in, :meth:`split` hands an idle thread the back part of the span that would finish last, cut
    so that both finish together (or None). Errors go to the future, and the other spans stop at their next
    piece.
    """

    def __init__(self, vocoder: Vocoder, frames: int, workers: Workers) -> None:
        if not (vocoder.causal and vocoder.chunk_frames):
            raise VocoderError("MelSpans needs a causal vocoder that runs in chunks")
        if frames < 1:
            raise VocoderError("mel has 0 frames")
        self._vocoder, self._workers = vocoder, workers
        self.frames = frames
        self.context = vocoder.model.left_context_frames()  # type: ignore[union-attr]
        self._x = torch.empty(vocoder.n_mels, frames)
        self._arrived = 0
        self._audio = torch.empty(frames * vocoder.hop_length)
        self._lock = threading.Lock()
        self._spans = [_Span(0, 0, frames, 0, waiting=True)]  # spans with frames not yet claimed
        self._running = 1  # spans not finished
        self._failed = False
        self._frame_seconds: float | None = None  # a thread's time per padded frame, last piece run
        self.future: Future[np.ndarray] = Future()
        self.future.set_running_or_notify_cancel()

    @classmethod
    def whole(cls, vocoder: Vocoder, mel: np.ndarray, workers: Workers) -> MelSpans:
        """A mel whose frames are all here (validated now)."""
        x = vocoder._to_tensor(mel)
        spans = cls(vocoder, x.shape[1], workers)
        spans._add(x)
        return spans

    def extend(self, chunk: np.ndarray) -> None:
        """The next ``[n, n_mels]`` frames of the mel."""
        self._add(self._vocoder._to_tensor(chunk, "mel chunk"))

    def _add(self, x: Tensor) -> None:
        n = x.shape[1]
        with self._lock:
            if self._arrived + n > self.frames:
                raise VocoderError(f"mel chunks exceed the announced {self.frames} frames")
            self._x[:, self._arrived : self._arrived + n] = x
            self._arrived += n
            ready = [s for s in self._spans if s.waiting and self._piece(s) is not None]
            for span in ready:
                span.waiting = False
            complete = self._arrived == self.frames
        for span in ready:
            self._workers.run(lambda span=span: self._run(span))
        if complete:
            self._workers.offer(self)  # idle threads may now split what is left

    def _piece(self, span: _Span) -> tuple[int, int] | None:
        """The next piece of ``span`` that can run now (frames, size zero-padded to), as the vocoder cuts a
        whole mel; None while its frames have not arrived. Within the span's last, shorter-than-a-chunk
        part, the vocoder's tail pieces run as soon as their frames are here."""
        chunk, tail = self._vocoder.chunk_frames, self._vocoder.tail_frames
        if span.end <= self._arrived:
            return self._vocoder._cuts(span.end - span.pos, final=True)[0]
        if span.pos + chunk <= self._arrived:
            return chunk, chunk
        if span.end - span.pos < chunk and span.pos + tail <= self._arrived:
            return tail, tail  # what the whole-mel cut makes here too: the span has more than ``tail`` left
        return None

    def split(self) -> Job | None:
        """A job for the back part of the span that would finish last, cut so that both threads finish
        together (counting what its running piece has left); None when that gains less than
        :data:`MIN_SPLIT_GAIN_CONTEXTS` context lengths, or before all frames are in."""
        with self._lock:
            if self._failed or self._arrived < self.frames or not self._spans:
                return None
            now = time.perf_counter()
            span = max(self._spans, key=lambda s: self._running_left(s, now) + s.end - s.claimed)
            running = self._running_left(span, now)
            alone = running + span.end - span.claimed  # frames of work until the span ends, unsplit
            even = math.ceil((span.claimed + span.end + self.context - running) / 2)  # both finish together
            cut = min(span.end, max(span.claimed, even))
            start = max(0, cut - self.context)
            shared = max(running + cut - span.claimed, span.end - start)
            if cut >= span.end or alone - shared < MIN_SPLIT_GAIN_CONTEXTS * self.context:
                return None
            new = _Span(start, cut, span.end, start)
            span.end = cut
            if span.claimed >= cut:
                self._spans.remove(span)  # its running piece is its last
            self._spans.append(new)
            self._running += 1
        return lambda: self._run(new)

    def _running_left(self, span: _Span, now: float) -> float:
        """Frames of work the running piece of ``span`` has left, at the pace measured so far (half the
        piece before any piece has finished)."""
        if not span.size:
            return 0.0
        if self._frame_seconds is None:
            return span.size / 2
        return max(0.0, span.size - (now - span.started) / self._frame_seconds)

    def _run(self, span: _Span) -> None:
        """Run ``span`` until it ends, or until it waits for frames (then :meth:`extend` queues it again)."""
        voc, hop = self._vocoder, self._vocoder.hop_length
        try:
            with torch.inference_mode():
                while True:
                    with self._lock:
                        if self._failed or span.pos >= span.end:
                            break
                        cut = self._piece(span)
                        if cut is None:
                            span.waiting = True
                            return
                        n, size = cut
                        span.claimed = span.pos + n
                        span.started, span.size = time.perf_counter(), size
                        if span.claimed >= span.end:
                            self._spans.remove(span)  # nothing left to split off
                    pos = span.pos
                    piece = _padded(self._x[None, :, pos : pos + n].to(voc._dtype), size)
                    y = finish(voc._piece_steps(piece, span.cache))[0, 0, : n * hop]
                    keep = max(pos, span.keep)
                    if keep < pos + n:
                        self._audio[keep * hop : (pos + n) * hop] = y[(keep - pos) * hop :]
                    with self._lock:
                        self._frame_seconds = (time.perf_counter() - span.started) / size
                        span.pos, span.size = pos + n, 0
        except BaseException as exc:
            with self._lock:
                failed, self._failed = self._failed, True
                if span in self._spans:
                    self._spans.remove(span)
            if not failed:
                self.future.set_exception(exc)
            return
        with self._lock:
            self._running -= 1
            done = self._running == 0 and not self._failed
        if done:
            self.future.set_result(self._audio.numpy())
