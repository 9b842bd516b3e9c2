"""engine.synthesizer (Ray-free pipeline) and the ``python -m engine synth`` CLI on the tiny random model."""

from __future__ import annotations

import io
import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engine.orchestrator import StreamSettings, timestamps_from_durations
from engine.synthesizer import WORKER_CHUNK_FRAMES, Synthesizer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def synth(tiny_model_dir: Path) -> Synthesizer:
    return Synthesizer(tiny_model_dir, threads=1)


def test_synthesize_returns_audio_with_ordered_timestamps(synth: Synthesizer) -> None:
    res = synth.synthesize("你好，世界。今天天气不错！")
    assert res.sample_rate == 16000 and len(res.units) == 2
    assert res.audio.dtype == np.float32 and res.duration_s > 0.5
    texts = [t for t, _, _ in res.timestamps]
    assert texts == list("你好世界今天天气不错")
    starts = [s for _, s, _ in res.timestamps]
    assert starts == sorted(starts) and res.timestamps[-1][2] <= res.duration_s


def test_chunk_pipelined_units_equal_whole_units(synth: Synthesizer, tiny_model_dir: Path) -> None:
    """The server's low-load path (vocoder chunks while the decoder runs) gives the whole-unit audio."""
    text = "第一句。第二句话。第三句话更长一些。"
    piped = Synthesizer(tiny_model_dir, threads=1, stream=StreamSettings(pipeline_below=8))
    a = synth.synthesize(text).audio
    b = piped.synthesize(text).audio
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_units_of_a_request_are_decoded_in_one_batch(tiny_model_dir: Path) -> None:
    """On one thread the acoustic model sees a request's units once, together (its decoder reads each
    weight once per step for all of them); the audio equals the per-unit path
    (test_chunk_pipelined_units_equal_whole_units)."""
    s = Synthesizer(tiny_model_dir, threads=1)
    model = s.stages.acoustic_models[s.stages.default_voice]
    sizes: list[int] = []
    inner = model.synthesize
    model.synthesize = lambda inputs: (sizes.append(len(inputs)), inner(inputs))[1]  # type: ignore[method-assign]
    res = s.synthesize("第一句。第二句话。第三句话更长一些。")
    assert len(res.units) == 3 and sizes == [3]


def test_mels_of_a_request_are_vocoded_in_one_call_and_equal_one_by_one(tiny_model_dir: Path) -> None:
    """After their acoustic batch, a request's whole mels reach the vocoder together (equal pieces of
    different mels run as one batch); each unit's audio is bit-identical to vocoding its mel alone."""
    s = Synthesizer(tiny_model_dir, threads=1)
    voice = s.stages.default_voice
    vocoder = s.stages.vocoders[voice]
    calls: list[int] = []
    mels: list[np.ndarray] = []
    inner = vocoder.vocode_batch

    def spy(batch: list[np.ndarray]) -> list[np.ndarray]:
        calls.append(len(batch))
        mels.extend(batch)
        return inner(batch)

    vocoder.vocode_batch = spy  # type: ignore[method-assign]
    text = "第一句。第二句话。第三句话更长一些，还有一个逗号。"
    res = s.synthesize(text)
    assert len(res.units) == 3 and calls == [3]
    assert len({m.shape[0] for m in mels}) > 1  # different lengths: pieces of different mels shared calls
    alone = [vocoder.vocode(m) for m in mels]
    grouped = inner(mels)
    for a, g in zip(alone, grouped, strict=True):
        np.testing.assert_array_equal(a, g)
    joined = s.synthesize(text).audio
    np.testing.assert_array_equal(joined, res.audio)


def test_on_two_threads_units_are_vocoded_while_they_decode_and_the_audio_is_unchanged(
    synth: Synthesizer, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """threads=2: the units are decoded on the worker threads (in groups, :func:`decode_groups`), each
    handing its units' mel over in chunks as the decoder makes them final; a worker vocodes them while the
    longest unit still decodes (here the decoder's steps are slowed, so the order does not depend on the
    machine's speed), and the orchestrator's whole-mel vocoder calls get that audio instead of vocoding
    again. The audio equals the one-thread path's."""
    from engine.hifigan.spans import MelSpans
    from engine.sambert import infer

    text = "短句。第二句话稍长。第三句话更长一些，还有一个逗号，然后再说几个字才结束。"
    two = Synthesizer(tiny_model_dir, threads=2)
    assert two.stages.workers is not None and two.stages.workers.size == 2
    assert {v.chunk_frames for v in two.stages.vocoders.values()} == {WORKER_CHUNK_FRAMES}
    reference = synth.synthesize(text)
    events: list[str] = []
    step = infer._DecoderRun.__next__

    def slow_step(run: infer._DecoderRun) -> int:
        time.sleep(0.002)
        return step(run)

    monkeypatch.setattr(infer._DecoderRun, "__next__", slow_step)
    model = two.stages.acoustic_models[two.stages.default_voice]
    inner_synthesize, inner_vocode, inner_run = model.synthesize, two.stages._vocode._run, MelSpans._run

    batches_done = threading.Semaphore(0)

    def synthesize(*args: object, **kwargs: object) -> list:
        out = inner_synthesize(*args, **kwargs)  # type: ignore[arg-type]
        events.append("acoustic batch done")
        batches_done.release()
        return out

    def run(spans: MelSpans, span: object) -> None:
        events.append("vocoding")
        inner_run(spans, span)  # type: ignore[arg-type]

    monkeypatch.setattr(model, "synthesize", synthesize)
    monkeypatch.setattr(
        two.stages._vocode, "_run", lambda *a: events.append("vocoded again") or inner_vocode(*a)
    )
    monkeypatch.setattr(MelSpans, "_run", run)
    res = two.synthesize(text)
    assert len(res.units) == 3
    # the last unit is handed over at its last decoder step: a batch call may return after the audio
    assert batches_done.acquire(timeout=30) and batches_done.acquire(timeout=30)  # two groups, two workers
    assert events.count("acoustic batch done") == 2
    last_batch = len(events) - 1 - events[::-1].index("acoustic batch done")
    assert events.index("vocoding") < last_batch, events
    assert "vocoded again" not in events
    assert res.audio.shape == reference.audio.shape
    np.testing.assert_allclose(res.audio, reference.audio, atol=1e-4, rtol=0)
    two.close()


def test_decode_groups_balance_tokens_over_speed_longest_first() -> None:
    """A request's units split over the workers as decoder batches of about equal work."""
    from engine.messages import AcousticInput
    from engine.synthesizer import decode_groups

    def unit(tokens: int, speed: float = 1.0) -> AcousticInput:
        return AcousticInput(ids=np.zeros((tokens, 6), dtype=np.int64), speed=speed)

    para = [unit(n) for n in (25, 24, 41, 49, 35)]
    assert decode_groups(para, 2) == [[3, 0, 1], [2, 4]]  # 98 vs 76 tokens
    assert decode_groups(para, 1) == [[3, 2, 4, 0, 1]]
    assert decode_groups(para[:2], 4) == [[0], [1]]  # never more groups than units
    assert decode_groups([], 2) == []
    # speed divides the frames a token makes: a fast long unit is lighter than a slow short one
    assert decode_groups([unit(40, 2.0), unit(30), unit(12, 0.5)], 2) == [[1], [2, 0]]


def test_on_two_threads_a_requests_units_decode_on_both_workers_at_once(
    tiny_model_dir: Path, synth: Synthesizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """threads=2: the two decoder batches of a request run at the same time, one on each worker (each waits
    here until the other has started), and the audio equals the one-thread path's."""
    two = Synthesizer(tiny_model_dir, threads=2)
    model = two.stages.acoustic_models[two.stages.default_voice]
    inner = model.synthesize
    started = threading.Barrier(2, timeout=30)
    threads_seen: set[str] = set()
    sizes: list[int] = []

    def synthesize(inputs: list, *args: object, **kwargs: object) -> list:
        threads_seen.add(threading.current_thread().name)
        sizes.append(len(inputs))
        started.wait()  # a broken barrier (the other batch never started) fails the request
        return inner(inputs, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(model, "synthesize", synthesize)
    text = "第一句。第二句话。第三句话更长一些，还有一个逗号。"
    res = two.synthesize(text)
    assert sorted(sizes) == [1, 2] and len(threads_seen) == 2
    reference = synth.synthesize(text)
    assert res.audio.shape == reference.audio.shape
    np.testing.assert_allclose(res.audio, reference.audio, atol=1e-4, rtol=0)
    two.close()


def test_on_two_threads_a_single_units_tail_is_vocoded_while_it_decodes(
    synth: Synthesizer, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """threads=2, one unit shorter than a worker's vocoder chunk (170 frames < 256): its mel comes over in
    the vocoder's tail pieces (64 frames) as they are decoded, so the worker without a batch of its own
    vocodes the first of them before the decoder is done (its steps slowed here, so the order does not
    depend on the machine's speed). The audio equals the one-thread path's."""
    from engine.hifigan.spans import MelSpans
    from engine.sambert import infer

    text = "您好，请问有什么可以帮您？"
    two = Synthesizer(tiny_model_dir, threads=2)
    assert len(two.units(text)) == 1
    events: list[str] = []
    step, inner_run = infer._DecoderRun.__next__, MelSpans._run

    def slow_step(run: infer._DecoderRun) -> int:
        time.sleep(0.002)
        return step(run)

    def run(spans: MelSpans, span: object) -> None:
        events.append("vocoding")
        inner_run(spans, span)  # type: ignore[arg-type]

    def last_step(run: infer._DecoderRun) -> int:
        s = slow_step(run)
        if s == run.steps - 1:
            events.append("last decoder step")
        return s

    monkeypatch.setattr(infer._DecoderRun, "__next__", last_step)
    monkeypatch.setattr(MelSpans, "_run", run)
    res = two.synthesize(text)
    assert res.units[0].frames < WORKER_CHUNK_FRAMES
    assert events.index("vocoding") < events.index("last decoder step"), events
    reference = synth.synthesize(text)
    assert res.audio.shape == reference.audio.shape
    np.testing.assert_allclose(res.audio, reference.audio, atol=1e-4, rtol=0)
    two.close()


@pytest.mark.parametrize("threads", [1, 2])
def test_vocoder_precision_bf16_is_opt_in_and_changes_the_audio_by_rounding_only(
    synth: Synthesizer, tiny_model_dir: Path, threads: int
) -> None:
    """``Synthesizer(vocoder_precision="bf16")``: every vocoder in bf16 (on 2 threads the ones the workers
    built), ``model_version`` says so, and the audio is the fp32 audio up to bf16 rounding (equal to it
    where the CPU has no bf16 instructions: the oneDNN backend then runs fp32). Compared on one thread
    count: on AVX2, oneDNN's kernels (and their rounding) follow the chunk widths, which 2 workers cut
    differently from 1 (fp32 1 vs 2 threads: ~3e-7 apart)."""
    from engine.hifigan.layers import bf16_hardware

    text = "您好，欢迎致电。请问有什么可以帮您？"
    fp32 = synth if threads == 1 else Synthesizer(tiny_model_dir, threads=threads)
    low = Synthesizer(tiny_model_dir, threads=threads, vocoder_precision="bf16")
    assert {v.precision for v in low.stages.vocoders.values()} == {"bf16"}
    assert low.model_version == fp32.model_version + "+bf16"
    assert "+" not in fp32.model_version
    a, b = fp32.synthesize(text).audio, low.synthesize(text).audio
    assert a.shape == b.shape
    err = float(np.abs(a - b).max())
    if bf16_hardware():
        assert 0 < err < 0.05 * float(np.abs(a).max()), err
    else:
        assert err == 0, err
    low.close()
    if fp32 is not synth:
        fp32.close()
    with pytest.raises(ValueError, match="precision must be"):
        Synthesizer(tiny_model_dir, threads=1, vocoder_precision="fp16")


@pytest.mark.parametrize("threads", [1, 2])
def test_a_bad_mel_in_a_vocoder_batch_fails_alone(tiny_model_dir: Path, threads: int) -> None:
    """A mel the vocoder refuses gets its own error; the mels vocoded beside it still get their audio."""
    import asyncio

    from engine.hifigan import VocoderError
    from engine.messages import VocodeRequest

    stages = Synthesizer(tiny_model_dir, threads=threads).stages
    good = VocodeRequest(np.zeros((20, 80), np.float32))
    bad = VocodeRequest(np.full((20, 80), np.nan, np.float32))

    async def both() -> list[object]:
        return await asyncio.gather(stages.vocode(good), stages.vocode(bad), return_exceptions=True)

    ok, err = asyncio.run(both())
    assert isinstance(err, VocoderError) and "NaN" in str(err)
    assert isinstance(ok, np.ndarray) and ok.shape == (20 * stages.vocoders[stages.default_voice].hop_length,)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_bad_unit_in_a_batch_fails_alone(tiny_model_dir: Path, threads: int) -> None:
    """One unit the model refuses gets its own error; the units decoded beside it still get their mel."""
    import asyncio

    from engine.messages import AcousticInput, AcousticOutput
    from engine.symbols import SymbolError

    stages = Synthesizer(tiny_model_dir, threads=threads).stages
    good = AcousticInput(ids=np.zeros((4, 6), dtype=np.int64))
    bad = AcousticInput(ids=np.full((4, 6), 10_000, dtype=np.int64))

    async def both() -> list[object]:
        return await asyncio.gather(
            stages.acoustic(None, good), stages.acoustic(None, bad), return_exceptions=True
        )

    ok, err = asyncio.run(both())
    assert isinstance(err, SymbolError) and "out of range" in str(err)
    assert isinstance(ok, AcousticOutput) and ok.mel.shape[1] == 80


def test_event_loops_in_two_threads_batch_only_their_own_units(tiny_model_dir: Path) -> None:
    """A Synthesizer shared by threads (a threaded web server's): a unit queued on one thread's event loop
    while another loop's batch waits to run is decoded by its own loop, not handed across threads (where
    its loop would never wake up)."""
    import asyncio

    from engine.messages import AcousticInput

    stages = Synthesizer(tiny_model_dir, threads=1).stages
    inp = AcousticInput(ids=np.zeros((4, 6), dtype=np.int64))
    a_queued = threading.Event()
    results: dict[str, int] = {}

    async def a_side() -> None:
        task = asyncio.ensure_future(stages.acoustic(None, inp))
        await asyncio.sleep(0)  # the task queued its unit; its batch runs after this step
        a_queued.set()
        time.sleep(0.5)  # hold this loop (as a busy thread would) while the other thread queues
        results["a"] = (await task).mel.shape[0]

    def b_side() -> None:
        a_queued.wait(timeout=30)
        results["b"] = asyncio.run(stages.acoustic(None, inp)).mel.shape[0]

    b = threading.Thread(target=b_side, daemon=True)
    b.start()
    asyncio.run(a_side())
    b.join(timeout=30)
    assert not b.is_alive(), "the other thread's unit was never delivered"
    assert results["a"] == results["b"] > 0


def test_stream_matches_whole(synth: Synthesizer) -> None:
    text = "流式输出应该和整句合成一致。"
    chunks = list(synth.stream(text))
    assert len(chunks) >= 3
    whole = synth.synthesize(text).audio
    streamed = np.concatenate(chunks)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_speed_and_volume(synth: Synthesizer) -> None:
    base = synth.synthesize("速度测试。")
    fast = synth.synthesize("速度测试。", speed=2.0)
    quiet = synth.synthesize("速度测试。", volume=0.5)
    assert fast.duration_s < 0.75 * base.duration_s
    np.testing.assert_allclose(quiet.audio, np.clip(base.audio * 0.5, -1, 1), atol=1e-5)


def test_unknown_voice_is_a_clear_error(synth: Synthesizer) -> None:
    with pytest.raises(Exception, match="nobody"):
        synth.synthesize("你好", voice="nobody")


def test_timestamps_from_durations() -> None:
    stamps = timestamps_from_durations([("a", 0, 2), ("b", 2, 3)], np.array([2, 2, 4]), 1.0, 0.0125)
    assert stamps == [("a", 1.0, 1.05), ("b", 1.05, 1.1)]


def test_marks_split_shared_spans(synth: Synthesizer) -> None:
    marks = synth.units("2024年")[0].marks
    assert [m[0] for m in marks] == ["二", "零", "二", "四", "年"]
    assert all(a[2] <= b[1] for a, b in itertools.pairwise(marks))


def test_cli_writes_decodable_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.flac"
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "synth", "--model-dir", str(tiny_model_dir), "--text", "你好。",
         "--out", str(out), "--threads", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    audio, sr = sf.read(io.BytesIO(out.read_bytes()))
    assert sr == 16000 and len(audio) > 0 and "RTF" in proc.stdout
    low = tmp_path / "bf16.flac"
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "synth", "--model-dir", str(tiny_model_dir), "--text", "你好。",
         "--out", str(low), "--threads", "1", "--vocoder-precision", "bf16"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    from engine.hifigan.layers import bf16_hardware

    rounded, _ = sf.read(io.BytesIO(low.read_bytes()))
    assert rounded.shape == audio.shape
    assert (np.abs(rounded - audio).max() > 0) == bf16_hardware()  # README: bf16 needs bf16 instructions
    bad = subprocess.run(
        [sys.executable, "-m", "engine", "synth", "--model-dir", str(tmp_path / "missing"), "--text", "你好",
         "--out", str(tmp_path / "y.wav")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2 and "error:" in bad.stderr


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--text", ""], "text is empty"),
        (["--text", "  \n"], "text is empty"),
        (["--text", "。。。"], "text contains nothing speakable"),
        (["--text", "你好", "--voice", "nosuch"], "unknown voice 'nosuch'"),
        (["--text", "你好", "--speed", "99"], "outside 0.25..4"),
        (["--text", "你好", "--format", "m4a"], "invalid choice"),
        (["--text", "你好", "--vocoder-precision", "fp16"], "invalid choice"),
    ],
)
def test_cli_bad_input_is_an_error_line_and_writes_nothing(
    tiny_model_dir: Path, tmp_path: Path, args: list[str], error: str
) -> None:
    """As the HTTP API: an ``error:`` line, exit status 2 and no file, never a silent or empty one."""
    out = tmp_path / "x.wav"
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "synth", "--model-dir", str(tiny_model_dir), *args,
         "--out", str(out), "--threads", "1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2 and "error:" in proc.stderr and error in proc.stderr, proc.stderr
    assert not out.exists()
