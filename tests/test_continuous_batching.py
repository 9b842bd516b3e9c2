"""Continuous batching in the acoustic stage (engine/sambert/scheduler.py; the deployment's ``continuous``
mode): batched == one-by-one with utterances joining at different steps; streaming, priority, bounds and
failures."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.messages import AcousticInput, AcousticOutput
from engine.modeldir import load_model_dir
from engine.sambert import AcousticModel
from engine.sambert import scheduler as sched
from engine.sambert.scheduler import (
    BatcherSettings,
    BatcherStalled,
    ContinuousBatcher,
    StreamEnd,
    StreamStart,
)
from engine.symbols import SymbolError
from tests.test_sambert_infer import random_ids
from tests.test_sambert_model import GOLDEN

TIMEOUT_S = 60.0


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def am(tiny_model_dir: Path) -> AcousticModel:
    return AcousticModel.from_voice(load_model_dir(tiny_model_dir).default_voice, threads=1)


@pytest.fixture(scope="module")
def golden(am: AcousticModel) -> np.ndarray:
    assert am.vocab is not None
    return am.vocab.encode_line(GOLDEN)


def assert_same(got: AcousticOutput, alone: AcousticOutput) -> None:
    np.testing.assert_array_equal(got.durations, alone.durations)
    assert got.mel.shape == alone.mel.shape
    np.testing.assert_allclose(got.mel, alone.mel, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got.pitch, alone.pitch, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.energy, alone.energy, atol=1e-5, rtol=0)


def wait_idle(cb: ContinuousBatcher) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while cb.active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cb.active == 0


class Recorder:
    """Sinks that record every event (on the worker thread) and can run an action on the n-th chunk."""

    def __init__(self) -> None:
        self.events: dict[str, list[object]] = {}
        self.order: list[tuple[str, str]] = []
        self.done = threading.Event()
        self.expected = 0
        self._finished = 0

    def sink(self, name: str, on_chunk: dict[int, Callable[[], None]] | None = None) -> sched.Sink:
        self.events[name] = []
        self.expected += 1
        actions = dict(on_chunk or {})

        def put(event: sched.Event) -> None:
            got = self.events[name]
            got.append(event)
            self.order.append((name, type(event).__name__))
            chunks = sum(isinstance(e, np.ndarray) for e in got)
            if isinstance(event, np.ndarray) and chunks in actions:
                actions.pop(chunks)()
            if isinstance(event, AcousticOutput | StreamEnd | BaseException):
                self._finished += 1
                if self._finished == self.expected:
                    self.done.set()

        return put

    def wait(self) -> None:
        assert self.done.wait(TIMEOUT_S), self.order

    def output(self, name: str) -> AcousticOutput:
        (event,) = self.events[name]
        assert isinstance(event, AcousticOutput), event
        return event

    def streamed(self, name: str) -> tuple[StreamStart, list[np.ndarray]]:
        start, *chunks, end = self.events[name]
        assert isinstance(start, StreamStart) and isinstance(end, StreamEnd), (start, end)
        return start, chunks  # type: ignore[return-value]


def test_joining_at_different_steps_equals_one_by_one(am: AcousticModel, golden: np.ndarray) -> None:
    """Utterances of different lengths and bands join a running batch at different decoder steps (a stream's
    n-th chunk submits the next ones, on the worker thread, so each joins at a known boundary) and leave at
    their own ends; every mel equals one-by-one synthesis."""
    whole = {
        "w31": AcousticInput(random_ids(am, 31, 2), speed=0.7),
        "w5": AcousticInput(random_ids(am, 5, 1)),
        "w1": AcousticInput(random_ids(am, 1, 3)),
        "wide": AcousticInput(golden[:9], pitch_shift=0.3, speaker=2, durations=np.full(9, 19.0)),  # band 6
        "slow": AcousticInput(random_ids(am, 40, 4), speed=0.5),  # > 64 steps: the window wraps
    }
    streamed = {"s_gold": AcousticInput(golden), "s_late": AcousticInput(golden[:12], speed=1.3)}
    sizes: list[int] = []
    rec = Recorder()
    with ContinuousBatcher({"v": am}, BatcherSettings(max_batch=8), threads=1, on_admit=sizes.append) as cb:

        def submit(*names: str) -> Callable[[], None]:
            def go() -> None:
                for n in names:
                    inp = whole.get(n) or streamed[n]
                    kw = {"stream": True, "chunk_frames": 4, "max_chunk_frames": 16} if n in streamed else {}
                    cb.submit(None, inp, sink=rec.sink(n), **kw)  # type: ignore[arg-type]

            return go

        first = {1: submit("w31"), 2: submit("w5", "s_late"), 4: submit("wide", "w1"), 5: submit("slow")}
        cb.submit(None, streamed["s_gold"], stream=True, chunk_frames=4, sink=rec.sink("s_gold", first))
        rec.wait()
    assert len(sizes) >= 5 and max(sizes) >= 3, sizes  # joins into a running batch, not one by one
    for name, inp in whole.items():
        assert_same(rec.output(name), am.synthesize([inp])[0])
    for name, inp in streamed.items():
        start, chunks = rec.streamed(name)
        alone = am.synthesize([inp])[0]
        np.testing.assert_array_equal(start.durations, alone.durations)
        assert start.num_frames == alone.mel.shape[0]
        np.testing.assert_allclose(np.concatenate(chunks), alone.mel, atol=1e-4, rtol=0)


def test_stream_chunks_match_the_engine_stream(am: AcousticModel, golden: np.ndarray) -> None:
    inp = AcousticInput(golden, speed=0.8)
    expected = list(am.stream(inp, chunk_frames=4, max_chunk_frames=16))
    with ContinuousBatcher({"v": am}, threads=1) as cb:
        others = [cb.submit(None, AcousticInput(random_ids(am, n, n))) for n in (7, 20)]
        ticket = cb.submit(None, inp, stream=True, chunk_frames=4, max_chunk_frames=16)
        start, *chunks = list(ticket.events(TIMEOUT_S))
        for t in others:
            t.result(TIMEOUT_S)
    assert isinstance(start, StreamStart)
    assert [c.shape[0] for c in chunks] == [c.shape[0] for c in expected]  # 4, 8, 16, 16, ...
    for got, want in zip(chunks, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_a_very_long_utterance_grows_the_buffers_then_releases_them(
    am: AcousticModel, golden: np.ndarray
) -> None:
    long = AcousticInput(golden, durations=np.full(len(golden), 90.0))  # 1980 frames, 660 steps
    short = AcousticInput(golden[:6])
    with ContinuousBatcher({"v": am}, threads=1, idle_s=3600) as cb:  # no idle shrink during the test
        tickets = [cb.submit(None, long), cb.submit(None, short)]
        outs = [t.result(TIMEOUT_S) for t in tickets]
        batch = cb._batches["v"]
        wait_idle(cb)
        deadline = time.monotonic() + TIMEOUT_S  # the worker releases the buffers just after the last leaves
        while batch.rows != batch.KEEP_ROWS and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batch.rows == batch.KEEP_ROWS
        again = cb.synthesize(None, short, TIMEOUT_S)
    assert outs[0].mel.shape == (1980, 80)
    for inp, out in zip([long, short, short], [*outs, again], strict=True):
        assert_same(out, am.synthesize([inp])[0])


def test_an_idle_spell_shrinks_the_step_buffers(am: AcousticModel, golden: np.ndarray) -> None:
    """After work and ``idle_s`` of nothing, the empty batch holds a new batch's buffers; results are
    unchanged."""
    longer = AcousticInput(golden, durations=np.full(len(golden), 20.0))  # 440 frames, 147 steps
    with ContinuousBatcher({"v": am}, threads=1, idle_s=0.05) as cb:
        first = cb.synthesize(None, longer, TIMEOUT_S)
        batch = cb._batches["v"]
        deadline = time.monotonic() + TIMEOUT_S
        while batch.rows != batch.IDLE_ROWS and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batch.rows == batch.IDLE_ROWS < 147
        assert batch.memrows.size(1) == batch.IDLE_ROWS
        again = cb.synthesize(None, longer, TIMEOUT_S)
    assert_same(first, am.synthesize([longer])[0])
    assert_same(again, first)


def test_several_voices_decode_in_their_own_batches(tiny_model_dir: Path, am: AcousticModel) -> None:
    directory = load_model_dir(tiny_model_dir)
    models = {name: AcousticModel.from_voice(spec, threads=1) for name, spec in directory.voices.items()}
    assert len(models) == 2
    inputs = [AcousticInput(random_ids(am, n, n)) for n in (6, 14, 25)]
    with ContinuousBatcher(models, threads=1) as cb:
        tickets = [(v, x, cb.submit(v, x)) for v in models for x in inputs]
        got = [(v, x, t.result(TIMEOUT_S)) for v, x, t in tickets]
    for voice, inp, out in got:
        assert_same(out, models[voice].synthesize([inp])[0])
    a, b = (np.concatenate([o.mel for v, _, o in got if v == name]) for name in models)
    assert a.shape != b.shape or np.abs(a - b).max() > 1e-3  # different weights, really used


def test_streams_waiting_for_first_chunk_are_admitted_first(am: AcousticModel, golden: np.ndarray) -> None:
    """One slot: while a long utterance decodes, a whole one and then a stream queue up; the stream gets the
    slot first (and its first chunk) even though it came later."""
    rec = Recorder()
    with ContinuousBatcher({"v": am}, BatcherSettings(max_batch=1), threads=1) as cb:
        queued = threading.Event()

        def queue_more(size: int) -> None:
            if not queued.is_set():
                queued.set()
                cb.submit(None, AcousticInput(golden[:10]), sink=rec.sink("whole"))
                cb.submit(
                    None, AcousticInput(golden[:10]), stream=True, chunk_frames=4, sink=rec.sink("stream")
                )

        cb.on_admit = queue_more
        cb.submit(None, AcousticInput(golden), sink=rec.sink("long"))
        rec.wait()
    names = [n for n, _ in rec.order]
    assert names.index("long") < names.index("stream") < names.index("whole"), rec.order
    assert rec.order[-1] == ("whole", "AcousticOutput")


def test_an_urgent_probe_runs_at_once_with_a_full_batch(am: AcousticModel, golden: np.ndarray) -> None:
    """Health probes must not wait for a slot: a busy replica is not an unhealthy one."""
    rec = Recorder()
    with ContinuousBatcher({"v": am}, BatcherSettings(max_batch=1), threads=1) as cb:
        probe = AcousticInput(np.zeros((2, 6), np.int64))

        def send_probe(size: int) -> None:
            if "probe" not in rec.events:
                cb.submit(None, AcousticInput(golden[:10]), sink=rec.sink("queued"))
                cb.submit(None, probe, sink=rec.sink("probe"), urgent=True)

        cb.on_admit = send_probe
        cb.submit(None, AcousticInput(golden, speed=0.5), sink=rec.sink("long"))
        rec.wait()
    assert [n for n, _ in rec.order] == ["probe", "long", "queued"], rec.order
    assert_same(rec.output("probe"), am.synthesize([probe])[0])


def test_a_probe_leaves_the_running_utterances_bit_identical(am: AcousticModel, golden: np.ndarray) -> None:
    """A health probe decodes outside the batch: a stream's mel is the same bytes whether or not a probe came
    while it ran (a probe joining the batch changed it by ~1e-6 from the step it joined: run-to-run
    differences in the served audio)."""
    stream_inp = AcousticInput(golden)
    probe = AcousticInput(np.zeros((2, 6), np.int64))

    def stream_mel(with_probe: bool) -> np.ndarray:
        rec = Recorder()
        with ContinuousBatcher({"v": am}, threads=1) as cb:

            def send_probe() -> None:  # mid-stream: after its second chunk
                cb.submit(None, probe, sink=rec.sink("probe"), urgent=True)

            on_chunk = {2: send_probe} if with_probe else {}
            cb.submit(None, stream_inp, stream=True, chunk_frames=4, sink=rec.sink("stream", on_chunk))
            rec.wait()
        if with_probe:
            assert_same(rec.output("probe"), am.synthesize([probe])[0])
        return np.concatenate([e for e in rec.events["stream"] if isinstance(e, np.ndarray)])

    alone, probed = stream_mel(False), stream_mel(True)
    np.testing.assert_array_equal(probed, alone)


def test_a_bad_input_fails_alone(am: AcousticModel, golden: np.ndarray) -> None:
    good = [AcousticInput(golden), AcousticInput(random_ids(am, 9, 5))]
    with ContinuousBatcher({"v": am}, threads=1) as cb:
        tickets = [cb.submit(None, good[0]), cb.submit(None, AcousticInput(np.full((3, 6), 200)))]
        tickets.append(cb.submit(None, AcousticInput(golden[:3], emotion="ecstatic")))
        tickets.append(cb.submit(None, good[1]))
        assert_same(tickets[0].result(TIMEOUT_S), am.synthesize([good[0]])[0])
        with pytest.raises(SymbolError, match="sy id 200"):
            tickets[1].result(TIMEOUT_S)
        with pytest.raises(SymbolError, match="emotion"):
            tickets[2].result(TIMEOUT_S)
        assert_same(tickets[3].result(TIMEOUT_S), am.synthesize([good[1]])[0])
        with pytest.raises(ValueError, match="unknown voice"):
            cb.submit("nobody", good[0])


def test_zero_frames(am: AcousticModel, golden: np.ndarray) -> None:
    zero = AcousticInput(golden[:3], durations=[0, 0, 0])
    with ContinuousBatcher({"v": am}, threads=1) as cb:
        assert cb.synthesize(None, zero, TIMEOUT_S).mel.shape == (0, 80)
        start, *chunks = list(cb.submit(None, zero, stream=True).events(TIMEOUT_S))
    assert isinstance(start, StreamStart) and start.num_frames == 0 and chunks == []


def test_cancel_and_a_failing_sink_drop_only_that_utterance(am: AcousticModel, golden: np.ndarray) -> None:
    rec = Recorder()
    inputs = {"a": AcousticInput(golden), "b": AcousticInput(random_ids(am, 30, 8))}
    with ContinuousBatcher({"v": am}, threads=1) as cb:
        gone = cb.submit(None, AcousticInput(golden), stream=True, chunk_frames=4)

        def broken(event: sched.Event) -> None:
            raise RuntimeError("client went away")

        cb.submit(None, AcousticInput(golden), stream=True, chunk_frames=4, sink=broken)
        for name, inp in inputs.items():
            cb.submit(None, inp, sink=rec.sink(name))
        events = gone.events(TIMEOUT_S)
        assert isinstance(next(events), StreamStart)
        next(events)
        gone.cancel()
        rec.wait()
        wait_idle(cb)  # the cancelled and the broken stream left the batch
    for name, inp in inputs.items():
        assert_same(rec.output(name), am.synthesize([inp])[0])


def test_a_failing_step_fails_its_batch_and_the_loop_goes_on(
    am: AcousticModel, golden: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sched._Batch.step
    calls = {"n": 0}

    def flaky(self: sched._Batch) -> None:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected step failure")
        real(self)

    monkeypatch.setattr(sched._Batch, "step", flaky)
    with ContinuousBatcher({"v": am}, threads=1) as cb:
        first = cb.submit(None, AcousticInput(golden))
        with pytest.raises(RuntimeError, match="injected"):
            first.result(TIMEOUT_S)
        assert_same(
            cb.synthesize(None, AcousticInput(golden), TIMEOUT_S), am.synthesize([AcousticInput(golden)])[0]
        )


def test_bounds_timeout_and_live_batch_size(am: AcousticModel, golden: np.ndarray) -> None:
    sizes: list[int] = []
    with ContinuousBatcher({"v": am}, BatcherSettings(max_batch=1, max_pending=4), 1, sizes.append) as cb:
        tickets = [cb.submit(None, AcousticInput(golden)) for _ in range(4)]  # one may be admitted already
        with pytest.raises(queue.Full):
            for _ in range(3):
                tickets.append(cb.submit(None, AcousticInput(golden)))
        for t in tickets:
            t.result(TIMEOUT_S)
        assert set(sizes) == {1}
        cb.set_max_batch(4)
        sizes.clear()
        tickets = [cb.submit(None, AcousticInput(random_ids(am, 20, i))) for i in range(4)]
        for t in tickets:
            t.result(TIMEOUT_S)
        assert max(sizes) > 1, sizes
        late = cb.submit(None, AcousticInput(random_ids(am, 60, 9), speed=0.3), timeout_s=0.0)
        with pytest.raises(TimeoutError):
            late.result(TIMEOUT_S)
    with pytest.raises(ValueError, match="max_batch"):
        BatcherSettings(max_batch=0)


def test_a_reader_too_far_behind_loses_only_its_utterance(am: AcousticModel, golden: np.ndarray) -> None:
    with ContinuousBatcher({"v": am}, BatcherSettings(max_events=3), threads=1) as cb:
        slow = cb.submit(None, AcousticInput(golden), stream=True, chunk_frames=1)  # 144 chunks
        other = cb.submit(None, AcousticInput(golden[:7]))
        assert_same(other.result(TIMEOUT_S), am.synthesize([AcousticInput(golden[:7])])[0])
        wait_idle(cb)
        events = slow.events(TIMEOUT_S)
        assert isinstance(next(events), StreamStart)
        next(events), next(events)  # what fitted in the buffer
        with pytest.raises(RuntimeError, match="fell 3 events behind"):
            next(events)


def test_check_reports_a_stuck_step_and_a_stopped_loop(
    am: AcousticModel, golden: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = sched._Batch.step
    stuck = threading.Event()

    def slow(self: sched._Batch) -> None:
        stuck.set()
        time.sleep(0.5)
        real(self)

    monkeypatch.setattr(sched._Batch, "step", slow)
    cb = ContinuousBatcher({"v": am}, BatcherSettings(step_timeout_s=0.2), threads=1)
    cb.check()
    ticket = cb.submit(None, AcousticInput(golden[:2]))
    assert stuck.wait(TIMEOUT_S)
    time.sleep(0.3)
    with pytest.raises(BatcherStalled, match="step has run"):
        cb.check()
    cb.close()
    with pytest.raises(BatcherStalled):
        cb.check()
    with pytest.raises(BatcherStalled):
        cb.submit(None, AcousticInput(golden))
    with contextlib.suppress(BatcherStalled):
        ticket.result(1.0)  # finished before the close, or failed by it: never left hanging


# ------------------------------------------------------------- the deployment's continuous mode, Ray-free
def test_deployment_continuous_mode_equals_the_engine(tiny_model_dir: Path, golden: np.ndarray) -> None:
    from deployments.acoustic import SambertAcoustic, acoustic_batching

    assert acoustic_batching(None) == "continuous"
    assert acoustic_batching({"batching": "window"}) == "window"
    with pytest.raises(ValueError, match="batching must be one of"):
        acoustic_batching({"batching": "dynamic"})
    with pytest.raises(ValueError, match="unknown acoustic args"):
        acoustic_batching({"batchig": "window"})

    dep = SambertAcoustic.func_or_class(str(tiny_model_dir), 1)  # the class itself, no Serve needed here
    assert dep.batcher is not None
    dep.reconfigure({"max_batch_size": 8, "batch_wait_timeout_s": 0.01})
    assert dep.batcher.max_batch == 8
    model = dep.models[dep.default_voice]
    inputs = [AcousticInput(golden[: 4 + 6 * i]) for i in range(4)]

    async def run() -> tuple[list[AcousticOutput], list]:
        outs = await asyncio.gather(*[dep.synthesize(None, x) for x in inputs])
        chunks = [c async for c in dep.stream(None, AcousticInput(golden), 8, 32)]
        await dep.check_health()
        with pytest.raises(ValueError, match="unknown voice"):
            await dep.synthesize("nobody", inputs[0])
        return list(outs), chunks

    outs, chunks = asyncio.run(run())
    dep.batcher.close()
    for inp, out in zip(inputs, outs, strict=True):
        assert_same(out, model.synthesize([inp])[0])
    full = model.synthesize([AcousticInput(golden)])[0]
    head, *rest = chunks
    assert head.mel.shape == (0, 80) and head.num_frames == full.mel.shape[0]
    np.testing.assert_array_equal(head.durations, full.durations)
    np.testing.assert_allclose(np.concatenate([c.mel for c in rest]), full.mel, atol=1e-4, rtol=0)


def test_build_app_rejects_bad_acoustic_args() -> None:
    from serve_app.graph import build_app

    with pytest.raises(ValueError, match="acoustic batching must be one of"):
        build_app({"acoustic": {"batching": "sometimes"}})


def test_on_idle_runs_once_per_idle_spell_after_work(am: AcousticModel, golden: np.ndarray) -> None:
    """The memory-release hook: never before any work, once after work has gone idle, again only after more
    work (so an idle replica does not trim every second)."""
    calls: list[float] = []

    def idle() -> None:
        calls.append(time.monotonic())

    with ContinuousBatcher({"v": am}, threads=1, on_idle=idle, idle_s=0.05) as cb:
        time.sleep(0.3)
        assert calls == []  # no work yet
        cb.synthesize(None, AcousticInput(golden), TIMEOUT_S)
        done = time.monotonic()
        deadline = done + TIMEOUT_S
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        assert len(calls) == 1 and calls[0] >= done, calls
        cb.synthesize(None, AcousticInput(golden), TIMEOUT_S)
        deadline = time.monotonic() + TIMEOUT_S
        while len(calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(calls) == 2, calls
