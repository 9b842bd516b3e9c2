"""Continuous batching for the PNCA decoder: one worker thread advances all active utterances step by step.

Utterances join the running batch at a step boundary (prefill = encoder, variance adaptor, length regulator
for the newcomers, batched) and leave when their last step is done, so nobody waits for a batch window or for
a longer neighbour. Each utterance's result equals one-by-one synthesis (≤1e-4 on mel).

Decoder state (one :class:`_Batch` per voice, active utterances compacted into slots ``[0, n)``):
- one K/V buffer ``[2, layers, slots, 2H, columns, E]`` laid out like ``infer._DecoderRun``'s: a step reads
  the window of columns ``[c, c+W]`` for every slot (self-attention heads: the last W frames and the new one
  at ``c+W``; memory heads: memory times ``s .. s+W`` of each slot's own step ``s``), W = the largest band in
  the batch; narrower bands and utterance ends are masked per slot. ``c`` advances one column per step; the
  window moves back to column 0 when the buffer's spare columns run out (a copy of W columns);
- per slot, the memory's input projection and every layer's memory K/V by utterance step (one gather per step
  brings in the next memory column), the prenet input of the next step and the decoder output by step.
Streamed utterances get their mel in chunks (:class:`~engine.sambert.infer.MelChunker`, the exact incremental
postnet); whole ones get the postnet over their full mel when they finish (per utterance, as one-by-one).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from engine.messages import AcousticInput, AcousticOutput
from engine.sambert.infer import AcousticModel, MelChunker, _Front, decoder_step

__all__ = [
    "BatcherSettings",
    "BatcherStalled",
    "ContinuousBatcher",
    "Event",
    "StreamEnd",
    "StreamStart",
    "Ticket",
]

log = logging.getLogger("tts.acoustic.batcher")


@dataclass(frozen=True)
class StreamStart:
    """First event of a streamed utterance (after its prefill): what the model predicted, before any mel."""

    durations: np.ndarray
    pitch: np.ndarray
    energy: np.ndarray
    num_frames: int


@dataclass(frozen=True)
class StreamEnd:
    """Last event of a streamed utterance that finished normally."""


# Whole utterance: one AcousticOutput or one exception. Streamed: StreamStart, mel chunks (np.float32[n, 80]),
# then StreamEnd — or an exception at any point (nothing follows it).
Event = AcousticOutput | StreamStart | np.ndarray | StreamEnd | BaseException
Sink = Callable[[Event], None]


class BatcherStalled(RuntimeError):
    """The worker loop stopped, or one step (or prefill) has run longer than ``step_timeout_s``."""


@dataclass(frozen=True)
class BatcherSettings:
    """Bounds of a :class:`ContinuousBatcher`."""

    max_batch: int = 8  # utterances decoding at once (all voices together); more wait for a free slot
    max_pending: int = 256  # utterances waiting for a slot; beyond this, submit raises queue.Full
    step_timeout_s: float = 30.0  # a step or prefill running longer than this makes check() raise
    priority_steps: int = 16  # whole utterances wait at most this many steps for a stream's first chunk
    max_events: int = 1024  # events buffered for a slow reader of one utterance; beyond, it is dropped

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_pending < 0 or self.priority_steps < 0 or self.max_events < 3:
            raise ValueError("max_batch >= 1, max_pending >= 0, priority_steps >= 0 and max_events >= 3")
        if not self.step_timeout_s > 0:
            raise ValueError("step_timeout_s must be > 0")


@dataclass(eq=False)
class _Job:
    voice: str
    inp: AcousticInput
    sink: Sink
    stream: bool
    chunk_frames: int
    max_chunk_frames: int
    deadline: float | None
    urgent: bool = False  # admitted at the next boundary, even beyond max_batch (health probes)
    cancelled: bool = False
    deferred: int = 0  # boundaries this whole utterance waited behind a stream's first chunk


class Ticket:
    """A submitted utterance: cancel it, or (when submitted without a sink) read its events."""

    def __init__(self, job: _Job | None = None, max_events: int = 0) -> None:
        self._job = job
        self._events: queue.Queue[Event] | None = queue.Queue(max_events) if max_events else None
        self._lost = False

    def _put(self, event: Event) -> None:
        """The sink of a ticket read with result() / events(): a reader too far behind loses the utterance."""
        assert self._events is not None
        try:
            self._events.put_nowait(event)
        except queue.Full:
            self._lost = True
            self.cancel()

    def cancel(self) -> None:
        """Drop the utterance at the next step boundary; no further events are delivered."""
        if self._job is not None:
            self._job.cancelled = True

    def _next(self, timeout_s: float | None) -> Event:
        if self._events is None:
            raise RuntimeError("this ticket's events go to the sink it was submitted with")
        if self._lost and self._events.empty():
            raise RuntimeError(f"the reader fell {self._events.maxsize} events behind; utterance dropped")
        try:
            event = self._events.get(timeout=timeout_s)
        except queue.Empty:
            self.cancel()
            raise TimeoutError(f"no acoustic result within {timeout_s} s") from None
        if isinstance(event, BaseException):
            raise event
        return event

    def result(self, timeout_s: float | None = None) -> AcousticOutput:
        """The whole utterance's output (blocking)."""
        event = self._next(timeout_s)
        if not isinstance(event, AcousticOutput):
            raise TypeError(f"result() on a streamed ticket (got {type(event).__name__})")
        return event

    def events(self, timeout_s: float | None = None) -> Iterator[StreamStart | np.ndarray]:
        """A streamed utterance's StreamStart, then its mel chunks (blocking; each wait ≤ timeout_s)."""
        try:
            while not isinstance(event := self._next(timeout_s), StreamEnd):
                yield event  # type: ignore[misc]
        finally:
            self.cancel()


@dataclass(eq=False)
class _Active:
    """An utterance in a decoder batch."""

    job: _Job
    front: _Front  # its prefill (index 0)
    steps: int  # decoder steps (memory length)
    band: int
    chunker: MelChunker | None  # streamed utterances only
    s: int = 0  # next step
    handed: int = 0  # steps already pushed to the chunker
    first_sent: bool = False

    @property
    def awaiting_first(self) -> bool:
        return self.chunker is not None and not self.first_sent


class _Batch:
    """The continuous decoder of one voice (layout in the module docstring)."""

    KEEP_ROWS = 512  # per-slot step buffers kept when the batch empties (longer ones are released)
    IDLE_ROWS = 64  # per-slot step buffers after an idle spell (8 slots x 512 rows of memory K/V = 53 MB)

    def __init__(self, model: AcousticModel, slots: int, spare_columns: int = 64) -> None:
        w = model._dec
        self.model, self.w = model, w
        self.items: list[_Active] = []
        self.spare = spare_columns
        self.band = 0
        self.col = 0
        self.d_mem = w.w_mem.size(0)
        self.kv_dim = 2 * w.layers * w.nh * w.e
        # every layer's memory K/V projection in one GEMM: [d_mem, layers * 2 * H * dh]
        self.w_hkv = torch.cat([wh.t() for wh, _ in w.h_kv], dim=1).contiguous()
        self.b_hkv = torch.cat([bh for _, bh in w.h_kv]).contiguous()
        self.slots, self.rows = 0, 0
        self.memrows = torch.zeros(0, 0, w.d + self.kv_dim)  # [slot, step, memproj | memory K/V]
        self.outbuf = torch.zeros(0, 0, w.out_dim)  # [slot, step, r * num_mels]
        self.prev = torch.zeros(0, w.w_out.size(1) - w.out_dim)  # prenet first-layer input of the next step
        self.kv = torch.zeros(2, w.layers, 0, 2 * w.nh, 1 + spare_columns, w.e)
        self._grow(slots, self.IDLE_ROWS)
        self._mask_rows: dict[tuple[int, int], Tensor] = {}
        self._mask_key: tuple[tuple[int, int], ...] | None = None
        self._mask: Tensor | None = None
        self._sync()

    # ------------------------------------------------------------------ layout
    def _grow(self, slots: int, rows: int) -> None:
        """Room for ``slots`` utterances of up to ``rows`` steps (existing contents kept)."""
        slots, rows = max(slots, self.slots), max(rows, self.rows)
        if (slots, rows) == (self.slots, self.rows):
            return
        w, n = self.w, len(self.items)
        memrows = torch.zeros(slots, rows, self.memrows.size(2))
        outbuf = torch.zeros(slots, rows, w.out_dim)
        prev = torch.zeros(slots, self.prev.size(1))
        if n:
            memrows[:n, : self.rows] = self.memrows[:n]
            outbuf[:n, : self.rows] = self.outbuf[:n]
            prev[:n] = self.prev[:n]
        self.memrows, self.outbuf, self.prev = memrows, outbuf, prev
        if slots != self.slots:
            kv = torch.zeros(*self.kv.shape[:2], slots, *self.kv.shape[3:])
            kv[:, :, :n] = self.kv[:, :, :n]
            self.kv = kv
        self.slots, self.rows = slots, rows
        self.ar = torch.arange(slots)

    def _relayout(self, band: int) -> None:
        """Window of ``band + 1`` columns starting at column 0: self-attention history carried over, memory
        columns rewritten (called when the band changes or the spare columns ran out)."""
        w, n, c, old = self.w, len(self.items), self.col, self.band
        keep = min(old, band)
        if band != old:
            kv = torch.zeros(2, w.layers, self.slots, 2 * w.nh, band + 1 + self.spare, w.e)
            if n and keep:
                kv[:, :, :n, : w.nh, band - keep : band] = self.kv[:, :, :n, : w.nh, c + old - keep : c + old]
            self.kv, self.band = kv, band
            self._mask_rows.clear()
            self._mask_key = None
        elif n and keep:
            hist = self.kv[:, :, :n, : w.nh, c : c + keep].clone()
            self.kv[:, :, :n, : w.nh, :keep] = hist
        self.col = 0
        if n:
            self._fill_memory(0, n)

    def _fill_memory(self, lo: int, hi: int) -> None:
        """Memory heads of slots ``[lo, hi)``, columns ``[c, c+W)``: memory times ``s .. s+W-1`` (clamped)."""
        w, W, c = self.w, self.band, self.col
        if not W or hi <= lo:
            return
        idx = torch.minimum(self.s_t[lo:hi, None] + torch.arange(W), self.last_t[lo:hi, None])
        rows = self.memrows[self.ar[lo:hi, None], idx, w.d :]
        self.kv[:, :, lo:hi, w.nh :, c : c + W] = rows.view(hi - lo, W, 2, w.layers, w.nh, w.e).permute(
            2, 3, 0, 4, 1, 5
        )

    def _sync(self) -> None:
        """Per-slot tensors from the item list (after joins and leaves)."""
        self.s_t = torch.tensor([a.s for a in self.items] + [0] * (self.slots - len(self.items)))
        self.last_t = torch.tensor([a.steps - 1 for a in self.items] + [0] * (self.slots - len(self.items)))
        self._mask_key = None

    # ------------------------------------------------------------------ membership
    def join(self, new: list[tuple[_Active, Tensor]]) -> None:
        """Add utterances (with their memory ``[steps, d_mem]``) at this step boundary."""
        if not new:
            return
        w, n0 = self.w, len(self.items)
        n1 = n0 + len(new)
        self._grow(n1, max(a.steps for a, _ in new))
        band = max([self.band] + [a.band for a, _ in new])
        if band != self.band or self.col + band + 1 > self.kv.size(4):
            self._relayout(band)
        mem = torch.cat([m for _, m in new])
        proj = torch.addmm(w.b_mem, mem, w.w_mem)
        hkv = torch.addmm(self.b_hkv, mem, self.w_hkv).view(-1, w.layers, 2, w.nh, w.dh).transpose(1, 2)
        start = 0
        for k, (_, m) in enumerate(new):
            b, steps = n0 + k, m.size(0)
            rows = self.memrows[b, :steps]
            rows[:, : w.d] = proj[start : start + steps]
            kvrows = rows[:, w.d :].view(steps, 2, w.layers, w.nh, w.e)
            kvrows[..., : w.dh] = hkv[start : start + steps]
            kvrows[:, 0, :, :, w.dh] = 0.0
            kvrows[:, 1, :, :, w.dh] = 1.0  # the constant channel that carries the output bias
            start += steps
            self.prev[b] = w.pre0_b  # relu(pre0_b) is the prenet's first layer on the go frame
            self.kv[:, :, b, :, self.col : self.col + self.band + 1] = 0.0  # nothing stale in its window
        self.items.extend(a for a, _ in new)
        self._sync()
        self._fill_memory(n0, n1)

    def leave(self, gone: list[int]) -> None:
        """Remove the utterances at these slots; the last slots move into the holes."""
        c, W = self.col, self.band
        for b in sorted(gone, reverse=True):
            last = len(self.items) - 1
            if b != last:
                a = self.items[last]
                self.kv[:, :, b, :, c : c + W + 1] = self.kv[:, :, last, :, c : c + W + 1]
                self.memrows[b, a.s : a.steps] = self.memrows[last, a.s : a.steps]
                self.outbuf[b, a.handed : a.s] = self.outbuf[last, a.handed : a.s]
                self.prev[b] = self.prev[last]
                self.items[b] = a
            self.items.pop()
        self._sync()
        if not self.items:  # an empty batch starts over with the next utterance's band (and sizes)
            self.band, self.col = 0, 0
            self.kv = torch.zeros(2, self.w.layers, self.slots, 2 * self.w.nh, 1 + self.spare, self.w.e)
            self._mask_rows.clear()
            if self.rows > self.KEEP_ROWS:  # a very long utterance does not pin its buffers for good
                slots, self.slots, self.rows = self.slots, 0, 0
                self._grow(slots, self.KEEP_ROWS)

    def shrink(self) -> None:
        """(empty batch) Back to a new batch's buffers, ``IDLE_ROWS`` steps per slot."""
        if not self.items and self.rows > self.IDLE_ROWS:
            slots, self.slots, self.rows = self.slots, 0, 0
            self._grow(slots, self.IDLE_ROWS)

    # ------------------------------------------------------------------ one step
    def _step_mask(self) -> Tensor | None:
        """Additive mask [n, 2H, 1, W+1]: per slot, its own band and its utterance's end (None: all valid)."""
        W = self.band
        key = tuple((W - min(a.s, a.band), min(a.band, a.steps - 1 - a.s)) for a in self.items)
        if all(lo == 0 and hi == W for lo, hi in key):
            return None
        if key != self._mask_key:
            self._mask = torch.stack([self._mask_row(lo, hi) for lo, hi in key])
            self._mask_key = key
        return self._mask

    def _mask_row(self, lo: int, hi: int) -> Tensor:
        row = self._mask_rows.get((lo, hi))
        if row is None:
            nh, j = self.w.nh, torch.arange(self.band + 1)
            bad = torch.cat([(j < lo).expand(nh, -1), (j > hi).expand(nh, -1)])
            row = torch.zeros(2 * nh, 1, self.band + 1).masked_fill_(bad[:, None, :], float("-inf"))
            self._mask_rows[(lo, hi)] = row
        return row

    def step(self) -> None:
        """Advance every utterance by one decoder step (one batched pass over the layers)."""
        n, w = len(self.items), self.w
        if self.col + self.band + 1 > self.kv.size(4):
            self._relayout(self.band)
        W, c = self.band, self.col
        nh, e, d = w.nh, w.e, w.d
        ar, s = self.ar[:n], self.s_t[:n]
        # the memory column entering the window at c+W: time s+W of each slot (clamped; masked past the end)
        idx = torch.minimum(s + W, self.last_t[:n])
        self.kv[:, :, :n, nh:, c + W] = (
            self.memrows[ar, idx, d:].view(n, 2, w.layers, nh, e).permute(1, 2, 0, 3, 4)
        )
        out = decoder_step(w, self.prev[:n], self.memrows[ar, s, :d], self.kv, c, W, self._step_mask())
        self.prev[:n] = out[:, w.out_dim :]
        self.outbuf[ar, s] = out[:, : w.out_dim]
        self.s_t[:n] += 1
        for a in self.items:
            a.s += 1
        self.col = c + 1

    def frames(self, b: int, start: int, stop: int) -> Tensor:
        """Decoder frames of slot ``b``'s steps ``[start, stop)``: ``[(stop-start)*r, num_mels]``, a copy."""
        return self.outbuf[b, start:stop].reshape(-1, self.model.num_mels).clone()


class ContinuousBatcher:
    """Owns the acoustic models of a replica (or process) and decodes every submitted utterance on one thread.

    ``submit`` is thread-safe and returns at once; results go to the ``sink`` (called on the worker thread: it
    must not block) or, without one, to the returned :class:`Ticket`. Streamed utterances waiting for their
    first chunk are admitted first, and whole ones are not admitted while a stream awaits its first chunk (for
    at most ``priority_steps`` boundaries): their prefill would delay it.
    """

    def __init__(
        self,
        models: Mapping[str, AcousticModel],
        settings: BatcherSettings | None = None,
        threads: int | None = None,
        on_admit: Callable[[int], None] | None = None,
        on_idle: Callable[[], object] | None = None,
        idle_s: float = 1.0,
    ) -> None:
        if not models:
            raise ValueError("ContinuousBatcher needs at least one model")
        self.models = dict(models)
        self.default_voice = next(iter(self.models))
        self.settings = settings or BatcherSettings()
        self.max_batch = self.settings.max_batch
        self.threads = threads
        self.on_admit = on_admit  # called with the decoder batch size each time utterances (not probes) join
        self.on_idle = on_idle  # called on the worker thread once per idle spell of ``idle_s`` after work,
        # after the empty batches shrank their step buffers
        self.idle_s = idle_s
        self._worked = False  # work ran since on_idle was last called
        with torch.inference_mode():
            self._batches = {v: _Batch(m, self.max_batch) for v, m in self.models.items()}
        self._pending: list[_Job] = []
        self._cond = threading.Condition()
        self._stop = False
        self._busy_since: float | None = None
        self._thread = threading.Thread(target=self._run, name="acoustic-batcher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API
    def submit(
        self,
        voice: str | None,
        inp: AcousticInput,
        *,
        stream: bool = False,
        chunk_frames: int = 30,
        max_chunk_frames: int | None = None,
        sink: Sink | None = None,
        timeout_s: float | None = None,
        urgent: bool = False,
    ) -> Ticket:
        """Queue one utterance: ``stream`` delivers StreamStart + mel chunks (as ``AcousticModel.stream``),
        else one AcousticOutput. ``timeout_s``: the utterance fails with TimeoutError if not done by then.
        ``urgent`` (tiny health probes): admitted at the next step boundary even when the batch is full."""
        name = voice or self.default_voice
        if name not in self.models:
            raise ValueError(f"unknown voice {voice!r}")
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        if max_chunk_frames is not None and max_chunk_frames < chunk_frames:
            raise ValueError(
                f"max_chunk_frames ({max_chunk_frames}) must be >= chunk_frames ({chunk_frames})"
            )
        ticket = Ticket(None, 0 if sink is not None else self.settings.max_events)
        deadline = time.monotonic() + timeout_s if timeout_s is not None else None
        job = _Job(
            name,
            inp,
            sink or ticket._put,
            stream,
            chunk_frames,
            max_chunk_frames or chunk_frames,
            deadline,
            urgent,
        )
        ticket._job = job
        with self._cond:
            if self._stop:
                raise BatcherStalled("the acoustic batcher is closed")
            if len(self._pending) >= self.settings.max_pending:
                raise queue.Full(f"{len(self._pending)} utterances already wait for the acoustic decoder")
            self._pending.append(job)
            self._cond.notify()
        return ticket

    def synthesize(
        self, voice: str | None, inp: AcousticInput, timeout_s: float | None = None
    ) -> AcousticOutput:
        """Blocking convenience: one whole utterance."""
        return self.submit(voice, inp, timeout_s=timeout_s).result(timeout_s)

    def set_max_batch(self, max_batch: int) -> None:
        """Change the batch bound live (applies at the next admission; running utterances are not evicted)."""
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        with self._cond:
            self.max_batch = max_batch
            self._cond.notify()

    def check(self) -> None:
        """Raise :class:`BatcherStalled` if the worker loop died or is stuck in one step or prefill."""
        if not self._thread.is_alive():
            raise BatcherStalled("the acoustic batcher's worker thread is not running")
        since = self._busy_since
        if since is not None and time.monotonic() - since > self.settings.step_timeout_s:
            raise BatcherStalled(
                f"one acoustic decoder step has run for {time.monotonic() - since:.1f} s "
                f"(step_timeout_s {self.settings.step_timeout_s})"
            )

    @property
    def active(self) -> int:
        """Utterances decoding now."""
        return sum(len(b.items) for b in self._batches.values())

    def close(self, timeout_s: float = 10.0) -> None:
        """Stop the worker (pending and active utterances fail with BatcherStalled)."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout_s)

    def __enter__(self) -> ContinuousBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ worker loop
    def _run(self) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                while self._iteration():
                    pass
        except BaseException as exc:  # a bug in the loop itself: fail everyone rather than hang them
            log.exception("acoustic batcher loop failed")
            self._fail_all(BatcherStalled(f"acoustic batcher loop failed: {exc!r}"))
            raise
        self._fail_all(BatcherStalled("the acoustic batcher is closed"))

    def _iteration(self) -> bool:
        idle = False
        with self._cond:
            while not self._stop and not self._pending and not self.active:
                woke = self._cond.wait(timeout=self.idle_s)
                if not woke and self._worked:
                    idle, self._worked = True, False
                    break
            if not idle:
                if self._stop:
                    return False
                admit = self._choose()
        if idle:  # shrink the step buffers, then e.g. hand the allocator's freed memory back to the system
            for batch in self._batches.values():
                batch.shrink()
            if self.on_idle is not None:
                self.on_idle()
            return True
        if admit:
            self._worked = True
            self._admit(admit)
        for batch in self._batches.values():
            if batch.items:
                self._advance(batch)
        return True

    def _choose(self) -> list[_Job]:
        """(under the lock) Jobs to admit now: streams first, then whole utterances unless an admitted stream
        still awaits its first chunk; at most ``max_batch`` active in all."""
        now = time.monotonic()
        for job in self._pending:
            if not job.cancelled and job.deadline is not None and now > job.deadline:
                self._deliver(job, TimeoutError("acoustic synthesis timed out while queued"))
                job.cancelled = True
        self._pending = [j for j in self._pending if not j.cancelled]
        urgent = [j for j in self._pending if j.urgent]
        room = self.max_batch - self.active
        if room <= 0 or len(urgent) == len(self._pending):
            self._pending = [j for j in self._pending if not j.urgent]
            return urgent
        streams = [j for j in self._pending if j.stream and not j.urgent]
        whole = [j for j in self._pending if not j.stream and not j.urgent]
        waiting_first = any(a.awaiting_first for b in self._batches.values() for a in b.items)
        chosen = streams[:room]
        if whole and len(chosen) < room:
            if (waiting_first or streams) and whole[0].deferred < self.settings.priority_steps:
                for j in whole:
                    j.deferred += 1
            else:
                chosen += whole[: room - len(chosen)]
        chosen = urgent + chosen
        taken = set(map(id, chosen))
        self._pending = [j for j in self._pending if id(j) not in taken]
        return chosen

    def _deliver(self, job: _Job, event: Event) -> None:
        """Hand one event to the job's sink; a failing sink (caller gone) cancels the job, nothing else."""
        if job.cancelled:
            return
        try:
            job.sink(event)
        except Exception:
            log.warning("acoustic result sink failed; dropping the utterance", exc_info=True)
            job.cancelled = True

    def _fail_all(self, exc: BaseException) -> None:
        with self._cond:
            pending, self._pending = self._pending, []
        for job in pending + [a.job for b in self._batches.values() for a in b.items]:
            self._deliver(job, exc)
            job.cancelled = True

    def _admit(self, jobs: list[_Job]) -> None:
        """Prefill the newcomers (batched per voice) and let them join their voice's decoder batch. A whole
        urgent probe is synthesized on its own right here instead: a step's float rounding depends on which
        rows share its batch, so a probe joining at a timing-dependent step would change the running
        utterances' mel by ~1e-6 (and their 16-bit audio by 1 LSB here and there) from run to run."""
        self._busy_since = time.monotonic()
        try:
            by_voice: dict[str, list[_Job]] = {}
            for job in jobs:
                if job.urgent and not job.stream:
                    self._run_alone(job)
                    continue
                by_voice.setdefault(job.voice, []).append(job)
            for voice, group in by_voice.items():
                batch = self._batches[voice]
                joined = [x for x in self._prefill(batch.model, group) if x is not None]
                if joined:
                    batch.join(joined)
                    if self.on_admit is not None and any(not a.job.urgent for a, _ in joined):
                        self.on_admit(sum(not a.job.urgent for a in batch.items))  # probes not counted
        finally:
            self._busy_since = None

    def _run_alone(self, job: _Job) -> None:
        """A whole utterance decoded outside the batches (health probes: a few tokens, a few ms)."""
        try:
            out = self.models[job.voice].synthesize([job.inp])[0]
        except Exception as exc:
            self._deliver(job, exc)
            return
        self._deliver(job, out)

    def _prefill(self, model: AcousticModel, jobs: list[_Job]) -> list[tuple[_Active, Tensor] | None]:
        """Encoder + variance adaptor for several jobs at once; a job whose input fails fails alone."""
        prepared, ok = [], []
        for job in jobs:
            try:
                prepared.append(model._prepare(job.inp))
                ok.append(job)
            except Exception as exc:
                self._deliver(job, exc)
        if not ok:
            return []
        fronts: list[_Front | None]
        try:
            front = model._front(prepared)
            fronts = [front.item(i) for i in range(len(ok))]
        except Exception as exc:
            if len(ok) == 1:
                self._deliver(ok[0], exc)
                return []
            fronts = []  # retry one by one so only the failing input fails
            for job, item in zip(ok, prepared, strict=True):
                try:
                    fronts.append(model._front([item]))
                except Exception as exc:
                    self._deliver(job, exc)
                    fronts.append(None)
        return [self._activate(model, job, f) for job, f in zip(ok, fronts, strict=True) if f is not None]

    def _activate(self, model: AcousticModel, job: _Job, front: _Front) -> tuple[_Active, Tensor] | None:
        """The job's decoder entry, after its stream header; None when it has nothing to decode."""
        frames = front.frames[0]
        if job.stream:
            header = front.output(0, torch.zeros(0, model.num_mels))
            self._deliver(job, StreamStart(header.durations, header.pitch, header.energy, frames))
        if frames == 0:
            self._deliver(job, StreamEnd() if job.stream else front.output(0, torch.zeros(0, model.num_mels)))
            return None
        if job.cancelled:
            return None
        memory = front.memory[0]
        chunker = (
            MelChunker(model.model, frames, job.chunk_frames, job.max_chunk_frames) if job.stream else None
        )
        return _Active(job, front, memory.size(0), front.bands[0], chunker), memory

    def _advance(self, batch: _Batch) -> None:
        """One step of a voice's batch, then chunks out (streams awaiting their first chunk first) and
        finished or dropped utterances out."""
        self._busy_since = time.monotonic()
        try:
            try:
                batch.step()
            except Exception as exc:  # cannot be pinned on one utterance: the whole batch fails
                log.exception("acoustic decoder step failed for a batch of %d", len(batch.items))
                for a in batch.items:
                    self._deliver(a.job, exc)
                batch.leave(list(range(len(batch.items))))
                return
            now = time.monotonic()
            gone: list[int] = []
            order = sorted(range(len(batch.items)), key=lambda b: not batch.items[b].awaiting_first)
            for b in order:
                a = batch.items[b]
                if not a.job.cancelled and a.job.deadline is not None and now > a.job.deadline:
                    self._deliver(a.job, TimeoutError("acoustic synthesis timed out"))
                    a.job.cancelled = True
                if a.job.cancelled:
                    gone.append(b)
                    continue
                try:
                    if self._emit(batch, b, a):
                        gone.append(b)
                except Exception as exc:
                    self._deliver(a.job, exc)
                    gone.append(b)
            if gone:
                batch.leave(gone)
        finally:
            self._busy_since = None

    def _emit(self, batch: _Batch, b: int, a: _Active) -> bool:
        """Deliver what slot ``b`` has ready; True when the utterance is finished."""
        final = a.s >= a.steps
        if a.chunker is not None:
            if final or a.s * batch.model.r >= a.chunker.needed:
                chunks = a.chunker.push(batch.frames(b, a.handed, a.s), final=final)
                a.handed = a.s
                for chunk in chunks:
                    self._deliver(a.job, chunk)
                    a.first_sent = True
            if final:
                self._deliver(a.job, StreamEnd())
            return final
        if final:
            dec = batch.frames(b, 0, a.steps)[: a.front.frames[0]]
            mel = batch.model._postnet_batch([dec])[0]
            self._deliver(a.job, a.front.output(0, mel))
        return final
