"""AcousticModel on the tiny random model: batching, streaming, controls, input errors, regression pins."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.modeldir import load_model_dir
from engine.sambert import AcousticInput, AcousticModel
from engine.symbols import SymbolError
from tests.test_sambert_model import GOLDEN


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


def random_ids(am: AcousticModel, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cols = [rng.integers(0, 65, n), rng.integers(0, 7, n), rng.integers(0, 5, n), rng.integers(0, 5, n)]
    return np.stack([*cols, np.ones(n, np.int64), np.zeros(n, np.int64)], axis=1)


def test_golden_line_end_to_end(am: AcousticModel, golden: np.ndarray) -> None:
    out = am.synthesize([AcousticInput(golden)])[0]
    assert golden.shape == (22, 6)
    assert out.mel.dtype == np.float32 and out.mel.shape == (int(out.durations.sum()), 80)
    assert 4 <= out.durations.mean() <= 8
    assert out.durations.min() >= 1
    assert np.isfinite(out.mel).all() and out.mel.std() > 0.1
    assert out.pitch.shape == out.energy.shape == (22,)


def test_batched_equals_one_by_one(am: AcousticModel, golden: np.ndarray) -> None:
    items = [
        AcousticInput(golden),
        AcousticInput(random_ids(am, 5, 1)),
        AcousticInput(random_ids(am, 31, 2), speed=0.7),
        AcousticInput(golden[:9], pitch_shift=0.3, speaker=2),
        AcousticInput(random_ids(am, 1, 3)),
    ]
    batch = am.synthesize(items)
    for item, got in zip(items, batch, strict=True):
        alone = am.synthesize([item])[0]
        np.testing.assert_array_equal(got.durations, alone.durations)
        assert got.mel.shape == alone.mel.shape
        np.testing.assert_allclose(got.mel, alone.mel, atol=1e-4, rtol=0)
        np.testing.assert_allclose(got.pitch, alone.pitch, atol=1e-5, rtol=0)


def test_the_front_pads_only_items_of_similar_length_together(
    am: AcousticModel, golden: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Padded front batches hold items of similar lengths (the encoder's padding costs as much as tokens);
    the rest run apart. Each item's result is the one it gets alone, and the outputs keep the input order."""
    from engine.sambert import infer

    groups: list[list[int]] = []
    padded = infer.AcousticModel._front_padded

    def recorded(model: AcousticModel, items: list) -> object:
        groups.append([t.size(0) for t, _, _ in items])
        return padded(model, items)

    monkeypatch.setattr(infer.AcousticModel, "_front_padded", recorded)
    items = [
        AcousticInput(golden),  # 22 tokens
        AcousticInput(random_ids(am, 5, 1)),
        AcousticInput(golden[:20], speed=0.8),
        AcousticInput(random_ids(am, 31, 2)),
        AcousticInput(random_ids(am, 18, 3), pitch_shift=0.3),
    ]
    batch = am.synthesize(items)
    assert sorted(map(tuple, groups)) == [(5,), (22, 20, 18), (31,)]
    for item, got in zip(items, batch, strict=True):
        alone = am.synthesize([item])[0]
        np.testing.assert_array_equal(got.durations, alone.durations)
        np.testing.assert_allclose(got.mel, alone.mel, atol=1e-4, rtol=0)
        np.testing.assert_allclose(got.energy, alone.energy, atol=1e-5, rtol=0)


def count_decoder_steps(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A one-item list that holds how many decoder steps the current run has taken."""
    from engine.sambert import infer

    steps = [0]
    step = infer._DecoderRun.__next__

    def counted(run: infer._DecoderRun) -> int:
        s = step(run)
        steps[0] = s + 1
        return s

    monkeypatch.setattr(infer._DecoderRun, "__next__", counted)
    return steps


def test_outputs_are_handed_over_as_the_decoder_finishes_each_utterance(
    am: AcousticModel, golden: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``on_output`` each utterance arrives once, right after the decoder step that finishes it
    (shortest first, so a vocoder can start on it while the longer ones decode), equal to the outputs
    without it; a zero-frame utterance arrives before the first step."""
    items = [
        AcousticInput(golden),
        AcousticInput(random_ids(am, 5, 1)),
        AcousticInput(golden[:3], durations=[0, 0, 0]),
        AcousticInput(random_ids(am, 31, 2), speed=0.7),
    ]
    plain = am.synthesize(items)
    steps = count_decoder_steps(monkeypatch)
    handed: list[tuple[int, int, int]] = []  # (index, steps run by then, steps the utterance needs)
    got = am.synthesize(
        items, on_output=lambda i, out: handed.append((i, steps[0], -(-out.mel.shape[0] // am.r)))
    )
    assert sorted(i for i, _, _ in handed) == [0, 1, 2, 3]
    assert [needed for _, _, needed in handed] == sorted(needed for _, _, needed in handed)
    assert all(ran == needed for _, ran, needed in handed), handed  # not one step later
    assert handed[0][1] == 0 and handed[-1][1] > handed[1][1] > 0
    for a, b in zip(plain, got, strict=True):
        np.testing.assert_array_equal(a.durations, b.durations)
        np.testing.assert_allclose(a.mel, b.mel, atol=1e-5, rtol=0)


def test_mel_chunks_are_handed_over_as_they_are_decoded(
    am: AcousticModel, golden: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``on_mel`` every utterance of the batch streams its postnet mel in ``mel_chunk_frames`` chunks
    (the last shorter) as soon as the decoder has made them final, before its last step; they concatenate
    to its output's mel, which equals the whole-utterance postnet to ≤1e-5."""
    items = [
        AcousticInput(golden),
        AcousticInput(random_ids(am, 9, 4)),
        AcousticInput(golden[:12], speed=1.3),
    ]
    plain = am.synthesize(items)
    steps = count_decoder_steps(monkeypatch)
    chunks: dict[int, list[tuple[np.ndarray, int, int]]] = {0: [], 1: [], 2: []}
    got = am.synthesize(items, on_mel=lambda i, c, n: chunks[i].append((c, n, steps[0])), mel_chunk_frames=16)
    for i, (a, b) in enumerate(zip(plain, got, strict=True)):
        sizes = [c.shape[0] for c, _, _ in chunks[i]]
        assert all(n == a.mel.shape[0] for _, n, _ in chunks[i])
        assert sizes[:-1] == [16] * (len(sizes) - 1) and 0 < sizes[-1] <= 16
        np.testing.assert_array_equal(np.concatenate([c for c, _, _ in chunks[i]]), b.mel)
        np.testing.assert_allclose(b.mel, a.mel, atol=1e-5, rtol=0)
        assert chunks[i][0][2] < -(-a.mel.shape[0] // am.r)  # the first chunk before the last step


def test_mel_tail_frames_hand_the_rest_after_whole_chunks_over_in_smaller_chunks(
    am: AcousticModel, golden: np.ndarray
) -> None:
    """``mel_tail_frames``: whole ``mel_chunk_frames`` chunks while that many frames are left, then chunks of
    at most ``mel_tail_frames``; the same mel."""
    items = [AcousticInput(golden), AcousticInput(golden[:12], speed=1.3)]
    plain = am.synthesize(items)
    chunks: dict[int, list[np.ndarray]] = {0: [], 1: []}
    got = am.synthesize(
        items, on_mel=lambda i, c, n: chunks[i].append(c), mel_chunk_frames=16, mel_tail_frames=5
    )
    for i, (a, b) in enumerate(zip(plain, got, strict=True)):
        total = a.mel.shape[0]
        sizes = [c.shape[0] for c in chunks[i]]
        whole = total // 16
        assert sizes[:whole] == [16] * whole, sizes
        tail = sizes[whole:]
        assert (
            sum(tail) == total % 16 and all(0 < n <= 5 for n in tail) and tail[:-1] == [5] * (len(tail) - 1)
        )
        np.testing.assert_array_equal(np.concatenate(chunks[i]), b.mel)
        np.testing.assert_allclose(b.mel, a.mel, atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunk", [1, 4, 7, 30, 10_000])
def test_stream_concatenation_equals_full(am: AcousticModel, golden: np.ndarray, chunk: int) -> None:
    full = am.synthesize([AcousticInput(golden)])[0]
    stream = am.stream(AcousticInput(golden), chunk_frames=chunk)
    assert stream.num_frames == full.mel.shape[0]
    np.testing.assert_array_equal(stream.durations, full.durations)
    chunks = list(stream)
    assert all(c.dtype == np.float32 and c.shape[1] == 80 for c in chunks)
    assert all(c.shape[0] == chunk for c in chunks[:-1]) and 0 < chunks[-1].shape[0] <= chunk
    np.testing.assert_allclose(np.concatenate(chunks), full.mel, atol=1e-5, rtol=0)


def test_stream_chunks_grow_up_to_the_cap(am: AcousticModel, golden: np.ndarray) -> None:
    full = am.synthesize([AcousticInput(golden)])[0].mel
    chunks = list(am.stream(AcousticInput(golden), chunk_frames=4, max_chunk_frames=16))
    sizes = [c.shape[0] for c in chunks]
    assert sizes[:4] == [4, 8, 16, 16] and all(n <= 16 for n in sizes), sizes
    np.testing.assert_allclose(np.concatenate(chunks), full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="max_chunk_frames"):
        am.stream(AcousticInput(golden), chunk_frames=8, max_chunk_frames=4)


def test_a_stream_chunk_leaves_at_the_first_step_that_finishes_it(
    am: AcousticModel, golden: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The postnet needs ``lookahead`` decoder frames past each mel frame: a chunk goes out at the first
    decoder step that has its frames plus the look-ahead, and the postnet runs once per chunk (before, frames
    were pushed every chunk-sized batch, so an 8-frame first chunk waited 9 steps instead of 4 here)."""
    from engine.sambert import infer

    full = am.synthesize([AcousticInput(golden)])[0].mel
    postnet_calls: list[int] = []
    real_postnet = infer._PostnetStream.push

    def counting_postnet(self: infer._PostnetStream, dec: torch.Tensor, final: bool = False) -> torch.Tensor:
        postnet_calls.append(dec.size(0))
        return real_postnet(self, dec, final)

    monkeypatch.setattr(infer._PostnetStream, "push", counting_postnet)
    lookahead = sum(m.right_padding for m in am.model.mel_postnet.fsmn.memory_block_lst)
    received, first_at = 0, None
    real_push = infer.MelChunker.push

    def watching_push(self: infer.MelChunker, frames: torch.Tensor, final: bool = False) -> list[np.ndarray]:
        nonlocal received, first_at
        received += frames.size(0)
        out = real_push(self, frames, final)
        if out and first_at is None:
            first_at = received
        return out

    monkeypatch.setattr(infer.MelChunker, "push", watching_push)
    chunks = list(am.stream(AcousticInput(golden), chunk_frames=8, max_chunk_frames=16))
    assert lookahead > 0
    r = am.r
    assert first_at == r * -(-(8 + lookahead) // r)  # the first whole step past 8 + look-ahead frames
    assert len(postnet_calls) == len(chunks)  # once per chunk (the last one with the final frames)
    np.testing.assert_allclose(np.concatenate(chunks), full, atol=1e-5, rtol=0)


def test_stream_yields_before_decoding_ends(am: AcousticModel, golden: np.ndarray) -> None:
    stream = am.stream(AcousticInput(golden), chunk_frames=6)
    it = iter(stream)
    first = next(it)
    assert first.shape == (6, 80)
    assert stream.num_frames > 60  # plenty still to come
    with pytest.raises(RuntimeError, match="only once"):
        iter(stream)


def test_speed_scales_frames(am: AcousticModel, golden: np.ndarray) -> None:
    base = am.synthesize([AcousticInput(golden)])[0]
    fast = am.synthesize([AcousticInput(golden, speed=2.0)])[0]
    slow = am.synthesize([AcousticInput(golden, speed=0.5)])[0]
    n = base.mel.shape[0]
    assert abs(fast.mel.shape[0] - n / 2) <= len(golden) / 2 + 1
    assert abs(slow.mel.shape[0] - 2 * n) <= len(golden) / 2 + 1


def test_duration_override(am: AcousticModel, golden: np.ndarray) -> None:
    frames = np.arange(22) % 4 + 1.0
    out = am.synthesize([AcousticInput(golden, durations=frames)])[0]
    np.testing.assert_array_equal(out.durations, frames.astype(np.int64))
    assert out.mel.shape[0] == frames.sum()
    base = am.synthesize([AcousticInput(golden)])[0]
    partial = np.full(22, -1.0)
    partial[3] = 0.0  # drop one token, keep the predictions elsewhere
    out = am.synthesize([AcousticInput(golden, durations=partial)])[0]
    expected = base.durations.copy()
    expected[3] = 0
    np.testing.assert_array_equal(out.durations, expected)


def test_pitch_energy_shift_and_overrides(am: AcousticModel, golden: np.ndarray) -> None:
    base = am.synthesize([AcousticInput(golden)])[0]
    shifted = am.synthesize([AcousticInput(golden, pitch_shift=1.0, energy_shift=-0.5)])[0]
    np.testing.assert_allclose(shifted.pitch, base.pitch + 1.0, atol=1e-5)
    np.testing.assert_allclose(shifted.energy, base.energy - 0.5, atol=1e-5)
    n = min(shifted.mel.shape[0], base.mel.shape[0])
    assert np.abs(shifted.mel[:n] - base.mel[:n]).max() > 1e-3
    by_name = am.synthesize([AcousticInput(golden, emotion="happy", speaker="M7")])[0]
    by_id = am.synthesize([AcousticInput(golden, emotion=5, speaker=4)])[0]
    np.testing.assert_array_equal(by_name.mel, by_id.mel)
    n = min(by_id.mel.shape[0], base.mel.shape[0])
    assert np.abs(by_id.mel[:n] - base.mel[:n]).max() > 1e-3
    # the emotion override keeps emotion_none on break tokens
    ids = golden.copy()
    ids[:, 4] = np.where(ids[:, 4] == 0, 0, 5)
    ids[:, 5] = 4
    np.testing.assert_array_equal(am.synthesize([AcousticInput(ids)])[0].mel, by_id.mel)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"ids": np.zeros((0, 6), np.int64)}, ValueError, "shape"),
        ({"ids": np.zeros((3, 5), np.int64)}, ValueError, "shape"),
        ({"ids": np.zeros((3, 6))}, ValueError, "integers"),
        ({"ids": np.full((3, 6), 200)}, SymbolError, "sy id 200"),
        ({"speed": 0.0}, ValueError, "speed"),
        ({"pitch_shift": float("nan")}, ValueError, "pitch_shift"),
        ({"durations": [1.0, 2.0]}, ValueError, "durations"),
        ({"emotion": "ecstatic"}, SymbolError, "emotion"),
        ({"speaker": 99}, SymbolError, "speaker id 99"),
    ],
)
def test_bad_input_is_named(
    am: AcousticModel, golden: np.ndarray, kwargs: dict, error: type, match: str
) -> None:
    args = {"ids": golden[:3]} | kwargs
    with pytest.raises(error, match=match):
        am.synthesize([AcousticInput(**args)])


def test_zero_frames_gives_empty_mel(am: AcousticModel, golden: np.ndarray) -> None:
    out = am.synthesize([AcousticInput(golden[:3], durations=[0, 0, 0]), AcousticInput(golden[:2])])
    assert out[0].mel.shape == (0, 80)
    assert out[1].mel.shape[0] > 0
    assert list(am.stream(AcousticInput(golden[:3], durations=[0, 0, 0]))) == []


# Pinned on the tiny random model (make_model_dir seed 0, default voice), computed once with this engine.
PINS = {"frames": 144, "mel_mean": -0.031235, "mel_std": 0.635772, "mel_00": -0.230401, "pitch_0": 0.048578}


def test_regression_pins(am: AcousticModel, golden: np.ndarray) -> None:
    out = am.synthesize([AcousticInput(golden)])[0]
    got = {
        "frames": out.mel.shape[0],
        "mel_mean": float(out.mel.mean()),
        "mel_std": float(out.mel.std()),
        "mel_00": float(out.mel[0, 0]),
        "pitch_0": float(out.pitch[0]),
    }
    assert got["frames"] == PINS["frames"]
    for key in ("mel_mean", "mel_std", "mel_00", "pitch_0"):
        assert got[key] == pytest.approx(PINS[key], abs=1e-4), (key, got)


def test_emotion_intensity_is_exact_at_one_and_zero(am: AcousticModel, golden: np.ndarray) -> None:
    """Intensity 1 is the trained emotion bit for bit, 0 the neutral embedding bit for bit, 0.3 neither (the
    HTTP tests compare served requests only to one int16 step: batching changes float rounding there)."""
    assert am._neutral_id is not None
    emotions = [
        e for e in range(am.model.emo_tokenizer.weight.shape[0]) if e not in (am._neutral_id, am._none_id)
    ]
    happy = golden.copy()
    speech = happy[:, 4] != am._none_id
    happy[speech, 4] = emotions[0]
    neutral = happy.copy()
    neutral[speech, 4] = am._neutral_id
    mel = {k: am.synthesize([AcousticInput(happy, emotion_intensity=k)])[0].mel for k in (1.0, 0.0, 0.3)}
    np.testing.assert_array_equal(mel[1.0], am.synthesize([AcousticInput(happy)])[0].mel)
    np.testing.assert_array_equal(mel[0.0], am.synthesize([AcousticInput(neutral)])[0].mel)
    assert mel[0.3].shape != mel[1.0].shape or np.abs(mel[0.3] - mel[1.0]).max() > 1e-3


def synthesize_with(am: AcousticModel, dec: object, items: list[AcousticInput]) -> list[np.ndarray]:
    default = am._dec
    try:
        am._dec = dec
        return [o.mel for o in am.synthesize(items)]
    finally:
        am._dec = default


def test_the_compiled_step_gives_the_products_mel(am: AcousticModel, golden: np.ndarray) -> None:
    """Steps over at most ``KERNEL_ROWS`` rows run the compiled step (kernels.py); it gives the mel of
    PyTorch's products to float rounding, with masks (bands of different widths, batch ends)."""
    from engine.sambert.infer import _DecoderWeights
    from engine.sambert.kernels import KERNEL_ROWS

    assert am._dec.kernel is not None and am._dec.kernel_rows == KERNEL_ROWS >= 4
    with torch.inference_mode():
        dec = _DecoderWeights(am.model)
    dec.kernel_rows = 0
    items = [
        AcousticInput(golden),
        AcousticInput(random_ids(am, 31, 2), speed=0.7),
        AcousticInput(golden[:9], emotion_intensity=0.4),
        AcousticInput(random_ids(am, 3, 5)),
    ]
    for got, want in zip(synthesize_with(am, am._dec, items), synthesize_with(am, dec, items), strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
        assert np.abs(got).max() > 0.1


def test_the_compiled_step_does_not_depend_on_the_other_rows(am: AcousticModel, golden: np.ndarray) -> None:
    """Each row of a compiled step is computed alone and in a fixed order: a batch's decoder frames equal
    one-by-one decoding bit for bit (the PyTorch products round differently per batch size)."""
    from engine.sambert.kernels import KERNEL_ROWS

    with torch.inference_mode():
        front = am._front([am._prepare(AcousticInput(x)) for x in (golden, golden[:13], golden[4:10])])
        order = sorted(range(3), key=lambda i: -front.memory[i].size(0))
        memories, bands = [front.memory[i] for i in order], [front.bands[i] for i in order]
        together = am._decode_all(memories, bands)
        for j in range(3):
            alone = am._decode_all([memories[j]], [bands[j]])[0]
            torch.testing.assert_close(together[j], alone, rtol=0, atol=0)
        am._dec.kernel_rows = 0
        try:
            products = am._decode_all(memories, bands)
        finally:
            am._dec.kernel_rows = KERNEL_ROWS
    for got, want in zip(together, products, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("outputs", [37, 128])
@pytest.mark.parametrize("inputs", [128, 1025, 3])
def test_the_compiled_product_rounds_each_row_as_one_row_alone(inputs: int, outputs: int) -> None:
    """``kernels._product`` gives each row the bits of the plain loop over that row alone, whatever the batch:
    over ``UNROLL_ROWS`` or more rows (four weight rows per pass, input widths with and without a remainder
    of four) and, ``NARROW_COLS`` outputs wide, over up to ``NARROW_ROWS`` rows (a local block); and ``a @ w``
    to float rounding."""
    from engine.sambert.kernels import NARROW_COLS, NARROW_ROWS, UNROLL_ROWS, _product, _product_plain

    assert 1 < UNROLL_ROWS <= 5 and NARROW_COLS == 128 and 1 <= NARROW_ROWS < UNROLL_ROWS
    rng = np.random.default_rng(inputs)
    a = rng.standard_normal((5, inputs)).astype(np.float32)
    w = (rng.standard_normal((inputs, outputs)) / np.sqrt(inputs)).astype(np.float32)
    start = rng.standard_normal((5, outputs)).astype(np.float32)
    plain = start.copy()
    _product_plain(a, w, plain, 0)
    for rows in (1, 2, 3, 5):
        for r0 in range(0, 5 - rows + 1):
            got = start[r0 : r0 + rows].copy()
            _product(a[r0 : r0 + rows], w, got)
            np.testing.assert_array_equal(got, plain[r0 : r0 + rows])
    np.testing.assert_allclose(plain, start + a.astype(np.float64) @ w, rtol=0, atol=1e-5)


def test_the_compiled_duration_predictor_gives_pytorchs_durations(am: AcousticModel) -> None:
    """The duration predictor's compiled loop (kernels.py) predicts PyTorch's LSTM cells' log-durations to
    float rounding, for a padded batch (rows of different lengths) and for one row."""
    dur = am._dur
    assert dur.kernel is not None
    g = torch.Generator().manual_seed(3)
    cond = torch.randn(3, 17, dur.w_ih_cond.size(0), generator=g)
    with torch.inference_mode():
        compiled = dur.infer(cond)
        kernel, dur.kernel = dur.kernel, None
        try:
            reference = dur.infer(cond)
        finally:
            dur.kernel = kernel
        alone = dur.infer(cond[1:2, :9])
    assert compiled.shape == (3, 17) and float(reference.std()) > 0.01
    torch.testing.assert_close(compiled, reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(alone, compiled[1:2, :9], rtol=0, atol=1e-6)  # a row does not see the others
