"""Vocoder wrapper: input checks, batched == one-by-one, streaming == whole utterance, loaders."""

from __future__ import annotations

import itertools
import json
import math
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engine.hifigan import Generator, Jik876Generator, Vocoder, VocoderError, onednn
from engine.hifigan.layers import bf16_hardware
from engine.hifigan.vocoder import BF16_STAGES, DEFAULT_CHUNK_FRAMES
from engine.testing.make_model_dir import FULL_VOC_PARAMS

# Released kernels, dilations and upsampling (hop 200); 32 channels keep the tests fast.
CAUSAL = {
    "channels": 32,
    "upsample_scales": [10, 5, 2, 2],
    "upsample_kernal_sizes": [20, 10, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilations": [[1, 3, 5, 7]] * 3,
    "causal": True,
    "nonlinear_activation": "LeakyReLU",
    "nonlinear_activation_params": {"negative_slope": 0.1},
}
NONCAUSAL = {**CAUSAL, "causal": False, "upsample_kernal_sizes": [20, 11, 4, 4]}
ODD_NONCAUSAL = {**NONCAUSAL, "upsample_kernal_sizes": [21, 11, 5, 4]}  # (k - u) odd: output longer, trimmed


def make_vocoder(params: dict, seed: int = 0) -> Vocoder:
    torch.manual_seed(seed)
    cfg = {"Model": {"Generator": {"params": params}}, "audio_config": {"sampling_rate": 16000}}
    return Vocoder.from_config(cfg, {"model": {"generator": Generator(**params).state_dict()}}, threads=2)


def mels(*frames: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((n, 80)).astype(np.float32) for n in frames]


@pytest.fixture(scope="module", params=[CAUSAL, NONCAUSAL, ODD_NONCAUSAL], ids=["causal", "noncausal", "odd"])
def vocoder(request: pytest.FixtureRequest) -> Vocoder:
    return make_vocoder(request.param)


def test_vocode_shape_dtype_and_threads(vocoder: Vocoder) -> None:
    (m,) = mels(17)
    y = vocoder.vocode(m)
    assert y.dtype == np.float32 and y.shape == (17 * 200,)
    assert np.all(np.abs(y) <= 1.0) and y.std() > 0
    assert torch.get_num_threads() == 2
    assert vocoder.sample_rate == 16000 and vocoder.hop_length == 200
    assert not any(p.requires_grad for p in vocoder.model.parameters())
    assert not any(n.endswith(("weight_g", "weight_v")) for n in vocoder.model.state_dict())


def test_batch_equals_one_by_one(vocoder: Vocoder) -> None:
    batch = mels(14, 5, 9, 14, 1)
    outs = vocoder.vocode_batch(batch)
    assert [len(o) for o in outs] == [len(m) * 200 for m in batch]
    for m, o in zip(batch, outs, strict=True):
        np.testing.assert_allclose(o, vocoder.vocode(m), rtol=0, atol=1e-4)
    assert vocoder.vocode_batch([]) == []


def test_unmasked_noncausal_batch_would_leak() -> None:
    """Guards the masking: without lengths a padded non-causal batch differs near each item's end."""
    v = make_vocoder(NONCAUSAL)
    short, long_ = mels(6, 30)
    batch = torch.zeros(2, 80, 30)
    batch[0, :, :6] = torch.from_numpy(short.T)
    batch[1] = torch.from_numpy(long_.T)
    with torch.inference_mode():
        unmasked = v.model(batch)[0, 0, : 6 * 200].numpy()
    assert np.abs(unmasked - v.vocode(short)).max() > 1e-3


@pytest.mark.parametrize("chunks", [[1] * 6 + [14], [7, 3, 10], [2, 0, 18]])
def test_causal_stream_is_exact(chunks: list[int]) -> None:
    v = make_vocoder(CAUSAL, seed=1)
    (m,) = mels(20, seed=1)
    full = v.vocode(m)
    s, pos, out = v.stream(), 0, []
    for n in chunks:
        piece = s.push(m[pos : pos + n])
        assert len(piece) == n * 200  # causal: every pushed frame is final at once
        out.append(piece)
        pos += n
    out.append(s.flush())
    np.testing.assert_allclose(np.concatenate(out), full, rtol=0, atol=1e-5)


@pytest.mark.parametrize("params", [NONCAUSAL, ODD_NONCAUSAL], ids=["noncausal", "odd"])
def test_noncausal_stream_with_default_context_is_exact(params: dict) -> None:
    v = make_vocoder(params, seed=2)
    (m,) = mels(50, seed=2)
    full = v.vocode(m)
    s = v.stream()
    assert s.context_frames == v.model.receptive_radius_frames()
    out = [s.push(m[i : i + 9]) for i in range(0, 50, 9)]
    assert sum(len(o) for o in out) == (50 - s.context_frames) * 200  # the last context frames await flush
    out.append(s.flush())
    np.testing.assert_allclose(np.concatenate(out), full, rtol=0, atol=1e-5)


def test_noncausal_stream_short_context_is_approximate() -> None:
    """Less context than the receptive radius trades accuracy for latency (documented, not exact)."""
    v = make_vocoder(NONCAUSAL, seed=2)
    (m,) = mels(30, seed=2)
    full = v.vocode(m)
    errs = {}
    for context in (2, 4, 8, v.model.receptive_radius_frames()):
        s = v.stream(context_frames=context)
        y = np.concatenate([*(s.push(m[i : i + 9]) for i in range(0, 30, 9)), s.flush()])
        assert y.shape == (30 * 200,)
        errs[context] = float(np.abs(y - full).max())
    peak = float(np.abs(full).max())
    # short context is lossy (a clearly visible error), and the error shrinks as context grows ...
    assert 0.05 * peak < errs[2] < peak, errs
    assert errs[2] > errs[4] > errs[8], errs
    assert errs[8] < 0.01 * peak, errs
    # ... down to exact at the receptive radius (the default)
    assert errs[v.model.receptive_radius_frames()] < 1e-5, errs


def test_stream_lifecycle_and_input_errors() -> None:
    v = make_vocoder(CAUSAL)
    s = v.stream()
    assert s.push(np.zeros((0, 80), np.float32)).shape == (0,)
    s.push(np.zeros((3, 80), np.float32))
    assert s.flush().shape == (0,)
    with pytest.raises(VocoderError, match="after flush"):
        s.push(np.zeros((3, 80), np.float32))
    with pytest.raises(VocoderError, match=r"shape \[frames, 80\]"):
        v.vocode(np.zeros((80, 10), np.float32))
    with pytest.raises(VocoderError, match="floating"):
        v.vocode(np.zeros((10, 80), np.int64))
    with pytest.raises(VocoderError, match="NaN"):
        v.vocode(np.full((10, 80), np.nan, np.float32))
    with pytest.raises(VocoderError, match="0 frames"):
        v.vocode(np.zeros((0, 80), np.float32))
    with pytest.raises(VocoderError, match=r"mels\[1\]"):
        v.vocode_batch([np.zeros((4, 80), np.float32), np.zeros((4, 81), np.float32)])
    with pytest.raises(VocoderError, match="threads"):
        Vocoder(Generator(**CAUSAL), 16000, threads=0)


def test_from_voice_loads_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(5)
    g = Generator(**CAUSAL)
    ckpt = tmp_path / "checkpoint_1000.pth"
    torch.save({"model": {"generator": g.state_dict(), "discriminator": {}}, "steps": 1000}, ckpt)
    cfg = {"Model": {"Generator": {"params": CAUSAL}}, "audio_config": {"sampling_rate": 16000}}
    voice = SimpleNamespace(name="v", voc_config=cfg, voc_checkpoint=ckpt)
    v = Vocoder.from_voice(voice)
    (m,) = mels(5)
    with torch.inference_mode():
        expected = g.remove_weight_norm().eval()(torch.from_numpy(m.T)[None]).reshape(-1).numpy()
    np.testing.assert_allclose(v.vocode(m), expected, rtol=0, atol=1e-6)
    missing = SimpleNamespace(name="v", voc_config=cfg, voc_checkpoint=tmp_path / "nope.pth")
    with pytest.raises(Exception, match=r"nope\.pth"):
        Vocoder.from_voice(missing)


JIK_SMALL = {
    "resblock": "1",
    "upsample_rates": [4, 4],
    "upsample_kernel_sizes": [8, 8],
    "upsample_initial_channel": 32,
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilation_sizes": [[1, 3, 5]] * 3,
    "num_mels": 80,
    "hop_size": 16,
    "sampling_rate": 22050,
}


def test_jik876_loader(tmp_path: Path) -> None:
    torch.manual_seed(0)
    g = Jik876Generator(JIK_SMALL)
    keys = list(g.state_dict())
    assert keys[:3] == ["conv_pre.bias", "conv_pre.weight_g", "conv_pre.weight_v"]
    assert "ups.1.weight_v" in keys and "resblocks.5.convs2.2.weight_g" in keys
    (tmp_path / "config.json").write_text(json.dumps(JIK_SMALL))
    torch.save({"generator": g.state_dict()}, tmp_path / "g.pth")
    v = Vocoder.from_jik876(tmp_path / "g.pth", tmp_path / "config.json")
    assert v.sample_rate == 22050 and v.hop_length == 16 and not v.causal
    batch = mels(9, 4)
    for m, o in zip(batch, v.vocode_batch(batch), strict=True):
        assert o.shape == (len(m) * 16,)
        np.testing.assert_allclose(o, v.vocode(m), atol=1e-6)
    (tmp_path / "bad.json").write_text(json.dumps({**JIK_SMALL, "upsample_initial_channel": 64}))
    with pytest.raises(VocoderError, match="does not match"):
        Vocoder.from_jik876(tmp_path / "g.pth", tmp_path / "bad.json")
    with pytest.raises(VocoderError, match="lacks"):
        (tmp_path / "short.json").write_text(json.dumps({"resblock": "1"}))
        Vocoder.from_jik876(tmp_path / "g.pth", tmp_path / "short.json")


def test_from_voice_with_generated_model_dir(tmp_path: Path) -> None:
    """End to end with the project's model-dir writer and loader (random tiny weights, both variants)."""
    modeldir = pytest.importorskip("engine.modeldir")
    writer = pytest.importorskip("engine.testing.make_model_dir")
    for causal in (True, False):
        root = writer.write_model_dir(tmp_path / f"m{int(causal)}", size="tiny", voices=["a"], causal=causal)
        voice = next(iter(modeldir.load_model_dir(root).voices.values()))
        v = Vocoder.from_voice(voice, threads=2)
        assert v.causal is causal
        (m,) = mels(6)
        y = v.vocode(m)
        assert y.shape == (6 * v.hop_length,) and np.isfinite(y).all()


def test_bf16_mode_is_close_but_opt_in() -> None:
    v32 = make_vocoder(NONCAUSAL, seed=4)
    torch.manual_seed(4)
    cfg = {"Model": {"Generator": {"params": NONCAUSAL}}}
    v16 = Vocoder.from_config(cfg, Generator(**NONCAUSAL).state_dict(), precision="bf16")
    assert v32.precision == "fp32" and v16.precision == "bf16"
    batch = mels(12, 7)
    y32, y16 = v32.vocode(batch[0]), v16.vocode(batch[0])
    assert y16.dtype == np.float32 and 0 < np.abs(y16 - y32).max() < 0.1
    np.testing.assert_allclose(v16.vocode_batch(batch)[1], v16.vocode(batch[1]), atol=1e-2)
    with pytest.raises(VocoderError, match="precision"):
        Vocoder(Generator(**CAUSAL), 16000, precision="fp16")


def _whole(v: Vocoder, m: np.ndarray) -> np.ndarray:
    """The unchunked generator forward on one mel (the reference for the chunked paths)."""
    with torch.inference_mode():
        return v.model(torch.from_numpy(np.ascontiguousarray(m.T))[None]).reshape(-1).numpy()


@pytest.mark.parametrize("frames", [1, 7, 16, 17, 50])
def test_chunked_vocode_equals_whole_utterance(frames: int) -> None:
    v = make_vocoder(CAUSAL, seed=2)
    v.chunk_frames = 16
    (m,) = mels(frames, seed=frames)
    np.testing.assert_allclose(v.vocode(m), _whole(v, m), rtol=0, atol=1e-5)
    batch = mels(frames, 3, frames + 5, seed=3)
    for got, mel in zip(v.vocode_batch(batch), batch, strict=True):
        np.testing.assert_allclose(got, _whole(v, mel), rtol=0, atol=1e-5)


def test_chunked_vocode_uses_few_shapes() -> None:
    """Whatever the utterance length, the generator sees a handful of chunk sizes (warm oneDNN kernels)."""
    v = make_vocoder(CAUSAL, seed=2)
    v.chunk_frames = 32
    seen: set[int] = set()
    inner = v._stream
    v._stream = lambda x, cache: (seen.add(x.shape[-1]), inner(x, cache))[1]
    for m in mels(*range(1, 80, 3), seed=4):
        v.vocode(m)
    assert seen == {8, 16, 32}, seen


def test_default_chunk_is_256_frames_and_the_tail_stays_in_small_pieces() -> None:
    """256-frame pieces on any thread count; what is left after the whole 256-frame chunks goes in pieces
    of at most 64 (a 129-frame mel is not padded to 256); the audio is the 64-frame one. Only the buckets
    those pieces use are warmed (a wide kernel holds memory in proportion to its width)."""
    v = make_vocoder(CAUSAL, seed=2)  # 2 threads
    assert v.chunk_frames == 256 == DEFAULT_CHUNK_FRAMES
    assert v._piece_buckets() == [8, 16, 32, 48, 64, 256]
    torch.manual_seed(2)
    assert Vocoder(Generator(**CAUSAL), 16000, threads=1).chunk_frames == 256
    seen: list[int] = []
    inner = v._stream
    v._stream = lambda x, cache: (seen.append(x.shape[-1]), inner(x, cache))[1]
    for frames, pieces in [(129, [64, 64, 8]), (300, [256, 48]), (512, [256, 256])]:
        (m,) = mels(frames, seed=frames)
        seen.clear()
        long_chunks = v.vocode(m)
        assert seen == pieces, (frames, seen)
        v.chunk_frames = 64
        np.testing.assert_allclose(long_chunks, v.vocode(m), rtol=0, atol=1e-6)
        v.chunk_frames = 256
        np.testing.assert_allclose(long_chunks, _whole(v, m), rtol=0, atol=1e-5)


def test_vocode_continue_state_travels_between_instances() -> None:
    """Chunks continued from a pickled state on another instance (another replica) equal the whole mel."""
    import pickle

    a, b = make_vocoder(CAUSAL, seed=5), make_vocoder(CAUSAL, seed=5)
    (m,) = mels(45, seed=5)
    out, state, pos = [], None, 0
    for i, n in enumerate([8, 16, 5, 16]):
        vocoder = (a, b)[i % 2]
        final = pos + n == 45
        audio, state = vocoder.vocode_continue(m[pos : pos + n], state, final=final)
        assert len(audio) == n * 200
        state = pickle.loads(pickle.dumps(state))
        out.append(audio)
        pos += n
    assert state is None  # spent after the final chunk
    np.testing.assert_allclose(np.concatenate(out), _whole(a, m), rtol=0, atol=1e-5)


def test_vocode_continue_batch_equals_single() -> None:
    v = make_vocoder(CAUSAL, seed=6)
    first = mels(8, 8, 8, seed=6)
    second = mels(12, 12, 12, seed=7)
    starts = v.vocode_continue_batch(first, [None] * 3)
    ends = v.vocode_continue_batch(second, [s for _, s in starts], final=True)
    for i in range(3):
        one_a, st = v.vocode_continue(first[i])
        one_b, _ = v.vocode_continue(second[i], st, final=True)
        np.testing.assert_allclose(starts[i][0], one_a, atol=1e-5)
        np.testing.assert_allclose(ends[i][0], one_b, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "onednn"])
def test_interleaved_steps_equal_each_utterance_alone(backend: str) -> None:
    """The vocoder thread may pause one call between steps to run another (TorchWorker.run_steps): a whole
    mel and a stream chunk advanced step by step in turn give exactly what each gives alone."""
    from engine.steps import finish

    v = Vocoder.from_config({"Model": {"Generator": {"params": CAUSAL}}}, _state(CAUSAL, 9), backend=backend)
    whole_mel, chunk_mel = mels(150, 8, seed=9)
    alone_whole = v.vocode(whole_mel)
    alone_chunk, alone_state = v.vocode_continue(chunk_mel)
    whole, chunk = v.vocode_steps(whole_mel), v.vocode_continue_steps(chunk_mel)
    results: dict[str, object] = {}
    paused = 0
    while len(results) < 2:
        for name, steps in (("whole", whole), ("chunk", chunk)):
            if name in results:
                continue
            try:
                next(steps)
                paused += 1
            except StopIteration as stop:
                results[name] = stop.value
    if backend == "onednn":  # pauses inside every 64-frame piece, not only between pieces
        assert paused > 150 // 64 + 1
    np.testing.assert_array_equal(results["whole"], alone_whole)
    audio, state = results["chunk"]  # type: ignore[misc]
    np.testing.assert_array_equal(audio, alone_chunk)
    assert state.keys() == alone_state.keys()
    assert all(np.array_equal(state[k], alone_state[k]) for k in state)
    np.testing.assert_array_equal(finish(v.vocode_steps(whole_mel)), alone_whole)


def test_read_only_inputs_from_ray_are_copied_not_shared() -> None:
    """Mels and states arrive read-only (deserialised by Ray); torch must not share those (it warns that
    writing would be undefined), so they are copied, writable ones are not, and the audio is the same."""
    v = make_vocoder(CAUSAL, seed=10)
    (m,) = mels(20, seed=10)
    first, state = v.vocode_continue(m[:8])
    ref, _ = v.vocode_continue(m[8:], state, final=True)
    frozen = m.copy()
    frozen.flags.writeable = False
    assert np.shares_memory(v._to_tensor(m).numpy(), m)
    assert not np.shares_memory(v._to_tensor(frozen).numpy(), frozen)
    for arr in state.values():
        arr.flags.writeable = False
    a, _ = v.vocode_continue(frozen[:8])
    b, _ = v.vocode_continue(frozen[8:], state, final=True)
    np.testing.assert_array_equal(a, first)
    np.testing.assert_array_equal(b, ref)


def test_vocode_continue_rejects_bad_use() -> None:
    causal, noncausal = make_vocoder(CAUSAL), make_vocoder(NONCAUSAL)
    (m,) = mels(8)
    with pytest.raises(VocoderError, match="causal"):
        noncausal.vocode_continue(m)
    _, state = causal.vocode_continue(m)
    assert state is not None
    with pytest.raises(VocoderError, match="does not match"):
        causal.vocode_continue(m, {"conv_pre": state["conv_pre"]})
    with pytest.raises(VocoderError, match="same, non-zero frame count"):
        causal.vocode_continue_batch(mels(8, 9), [None, None])
    with pytest.raises(VocoderError, match="all or none"):
        causal.vocode_continue_batch(mels(8, 8), [state, None])
    with pytest.raises(VocoderError, match="chunk_frames"):
        Vocoder(Generator(**CAUSAL), 16000, chunk_frames=-1)


def _unfused_whole(params: dict, seed: int, m: np.ndarray) -> np.ndarray:
    """The reference: the checkpoint-layout generator (two upsampling branches), whole utterance, PyTorch."""
    torch.manual_seed(seed)
    g = Generator(**params).remove_weight_norm().eval()
    with torch.inference_mode():
        return g(torch.from_numpy(np.ascontiguousarray(m.T))[None]).reshape(-1).numpy()


@pytest.mark.parametrize("backend", ["torch", "onednn"])
def test_backends_equal_the_unfused_reference(backend: str) -> None:
    """Fused upsampling + either chunk backend == the KAN-TTS-layout forward, and states move between them."""
    v2 = Vocoder.from_config(
        {"Model": {"Generator": {"params": CAUSAL}}},
        _state(CAUSAL, 8),
        threads=2,
        backend=backend,
    )
    assert v2.backend == backend
    assert v2.model.upsamples is not None and not hasattr(v2.model, "repeat_upsamples")
    (m,) = mels(70, seed=8)
    ref = _unfused_whole(CAUSAL, 8, m)
    np.testing.assert_allclose(v2.vocode(m), ref, rtol=0, atol=1e-5)
    other_backend = Vocoder.from_config(
        {"Model": {"Generator": {"params": CAUSAL}}},
        _state(CAUSAL, 8),
        backend="torch" if backend == "onednn" else "onednn",
    )
    a, state = v2.vocode_continue(m[:30])
    assert set(state) == v2.stream_keys() == other_backend.stream_keys()
    b, _ = other_backend.vocode_continue(m[30:], state, final=True)
    np.testing.assert_allclose(np.concatenate([a, b]), ref, rtol=0, atol=1e-5)


def _state(params: dict, seed: int) -> dict:
    torch.manual_seed(seed)
    return Generator(**params).state_dict()


@pytest.mark.parametrize("params", [NONCAUSAL, ODD_NONCAUSAL], ids=["noncausal", "odd"])
def test_fused_noncausal_batch_equals_unfused(params: dict) -> None:
    v = make_vocoder(params, seed=9)
    assert v.backend == "torch"
    batch = mels(20, 7, seed=9)
    for got, m in zip(v.vocode_batch(batch), batch, strict=True):
        np.testing.assert_allclose(got, _unfused_whole(params, 9, m), rtol=0, atol=1e-5)


def test_backend_choice_errors() -> None:
    with pytest.raises(VocoderError, match="backend"):
        Vocoder(Generator(**CAUSAL), 16000, backend="onnx")
    with pytest.raises(VocoderError, match="causal"):
        Vocoder(Generator(**NONCAUSAL), 16000, backend="onednn")
    elu = {**CAUSAL, "nonlinear_activation": "ELU", "nonlinear_activation_params": {}}
    with pytest.raises(VocoderError, match="LeakyReLU"):
        Vocoder(Generator(**elu), 16000, backend="onednn")
    assert Vocoder(Generator(**elu), 16000).backend == "torch"  # auto falls back


WIDE_CAUSAL = {
    **CAUSAL,
    "channels": 128,
}  # first stages of 64 and 32 channels


def test_bf16_runs_on_either_backend() -> None:
    """``precision="bf16"`` computes the residual blocks of :data:`BF16_STAGES` in bf16 (inputs, weights and
    outputs rounded, float32 accumulation): on oneDNN in bf16 kernels where the CPU has bf16 instructions
    (elsewhere in float32, equal to fp32), on the torch path by explicit rounding. Both deviate from fp32 by
    the same ~1e-3 (the same arithmetic; roundings of a different summation order differ), with float32
    states that continue on either backend; the fp32 backends agree to 1e-6."""
    cfg = {"Model": {"Generator": {"params": WIDE_CAUSAL}}}

    def make(precision: str, backend: str = "auto") -> Vocoder:
        return Vocoder.from_config(cfg, _state(WIDE_CAUSAL, 11), precision=precision, backend=backend)

    fp32, on, pt = make("fp32", "onednn"), make("bf16", "onednn"), make("bf16", "torch")
    assert (on.backend, pt.backend, make("bf16").backend) == ("onednn", "torch", "onednn")
    kernels = [stage.bf16 for stage in on._stream.stages]
    assert kernels == [bf16_hardware() and i in BF16_STAGES for i in range(4)]
    (m,) = mels(70, seed=11)
    ref, y_on, y_pt = fp32.vocode(m), on.vocode(m), pt.vocode(m)
    rms = float(np.sqrt(np.mean(ref**2)))
    err_on, err_pt = (float(np.sqrt(np.mean((y - ref) ** 2))) / rms for y in (y_on, y_pt))
    assert 1e-4 < err_pt < 1e-2, err_pt
    if bf16_hardware():
        assert 0.5 * err_pt < err_on < 2 * err_pt, (err_on, err_pt)
    else:  # no bf16 instructions: oneDNN runs float32 (and the vocoder warns at load)
        assert err_on == 0.0, err_on
    assert torch.backends.mkldnn.conv.fp32_precision != "bf16"  # the mode does not leak out of a call
    np.testing.assert_allclose(make("fp32", "torch").vocode(m), ref, rtol=0, atol=1e-5)
    a, state = on.vocode_continue(m[:30])
    assert state is not None and all(v.dtype == np.float32 for v in state.values())
    b, _ = pt.vocode_continue(m[30:], state, final=True)
    err_mix = float(np.sqrt(np.mean((np.concatenate([a, b]) - ref) ** 2))) / rms
    assert err_mix < 2 * max(err_on, err_pt), (err_mix, err_on, err_pt)


def _channels_last(values: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """``values`` [B, C, T] as a [B, C, 1, T] view stored [B, T, C]; with ``pad`` the view of a wider buffer
    past its first ``pad`` steps (as a convolution's input buffer behind its context)."""
    b, c, t = values.shape
    buf = torch.empty(b, pad + t, c, dtype=values.dtype).transpose(1, 2).unsqueeze(2)
    view = buf[..., pad:]
    view.copy_(values.unsqueeze(2))
    return view


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The bits of each value, every NaN as one pattern (PyTorch's own conversions write different ones)."""
    t = torch.where(t.isnan(), torch.tensor(math.nan, dtype=t.dtype), t)
    return t.contiguous().view(torch.int16 if t.dtype == torch.bfloat16 else torch.int32)


def test_bf16_sums_round_as_pytorch() -> None:
    """The bf16 units' compiled sums (:mod:`engine.hifigan.bf16`) write what PyTorch's add, leaky ReLU and
    bf16 conversion write, bit for bit (NaN as NaN): rounding ties both ways, negatives, zeros, infinities,
    the largest floats (rounded up to infinity), on strided buffers of two rows."""
    from engine.hifigan import bf16

    gen = torch.Generator().manual_seed(5)
    b, c, t = 2, 16, 96
    h = torch.randn(b, c, t, generator=gen) * torch.logspace(-30, 30, t)
    ties = torch.tensor(
        [0x3F808000, 0x3F818000, -0x40800000 + 0x8000, 0x7F7FFFFF, 0x7F7F8000], dtype=torch.int32
    )
    specials = torch.cat([ties.view(torch.float32), torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan])])
    h[0, 0, : len(specials)] = specials
    y = (torch.randn(b, c, t, generator=gen) * 4).to(torch.bfloat16)
    y[1, 1, :3] = torch.tensor([math.inf, -math.inf, math.nan], dtype=torch.bfloat16)
    slope = 0.1
    total_ref = torch.add(h, y)
    out_ref = torch.nn.functional.leaky_relu(total_ref, slope).to(torch.bfloat16)

    x, out = _channels_last(h), _channels_last(torch.zeros(b, c, t, dtype=torch.bfloat16), pad=7)
    bf16.leaky(x, out, slope)
    assert torch.equal(
        _bits(out.squeeze(2)), _bits(torch.nn.functional.leaky_relu(h, slope).to(torch.bfloat16))
    )

    for in_place in (False, True):
        hh, yy = _channels_last(h), _channels_last(y)
        total = hh if in_place else _channels_last(torch.zeros(b, c, t))
        out = _channels_last(torch.zeros(b, c, t, dtype=torch.bfloat16), pad=3)
        bf16.add_then_leaky(hh, yy, total, out, slope)
        assert torch.equal(_bits(total.squeeze(2)), _bits(total_ref)), in_place
        assert torch.equal(_bits(out.squeeze(2)), _bits(out_ref)), in_place

        hh = _channels_last(h)
        total = hh if in_place else _channels_last(torch.zeros(b, c, t))
        bf16.add(hh, _channels_last(y), total)
        assert torch.equal(_bits(total.squeeze(2)), _bits(total_ref)), in_place

    acc_start = torch.randn(b, c, t, generator=gen)
    acc = _channels_last(acc_start)
    bf16.add(_channels_last(h), _channels_last(y), acc, accumulate=True)
    assert torch.equal(_bits(acc.squeeze(2)), _bits(acc_start.clone().add_(total_ref)))


def test_onednn_weights_are_packed_for_every_call_shape(capfd: pytest.CaptureFixture[str]) -> None:
    """oneDNN picks a kernel, and with it a weight layout, from the thread count, batch and width (on AVX2
    CPUs the block size changes with each): a chunk of any of those shapes, after its first call, runs with no
    weight reorder (a reorder per call cost more than the convolutions: 1 thread, 8 frames 125 -> 39 ms),
    on the thread count it is called with, not the one the vocoder was built under; audio unchanged."""
    released = Generator(**{**FULL_VOC_PARAMS, "causal": True})
    threads = torch.get_num_threads()
    v = Vocoder(released, 16000, threads=None, backend="onednn")
    assert v.backend == "onednn"
    rng = np.random.default_rng(3)
    try:
        shapes = [(1, 1, 8), (1, 1, 64), (1, 1, 256), (2, 1, 8), (2, 2, 64), (1, 3, 40)]
        for n_threads, batch, frames in shapes:
            torch.set_num_threads(n_threads)
            x = torch.from_numpy(rng.standard_normal((batch, 80, frames)).astype(np.float32))
            with torch.inference_mode():
                first = v._stream(x, {})
                capfd.readouterr()
                with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                    again = v._stream(x, {})
            lines = [line for line in capfd.readouterr().out.splitlines() if ",exec," in line]
            assert any(",convolution," in line for line in lines), lines[:3]
            reorders = [line for line in lines if ",reorder," in line]
            assert not reorders, (n_threads, batch, frames, reorders[:2])
            assert torch.equal(first, again)
    finally:
        torch.set_num_threads(threads)


def test_onednn_shapes_that_want_one_layout_share_one_packed_weight() -> None:
    """A weight is prepacked once per layout, not once per call shape: packs of one convolution are the same
    tensor exactly when oneDNN describes their layouts alike (on AVX-512 every width of a thread count and
    batch: one copy instead of one per bucket), and the audio does not change."""
    released = Generator(**{**FULL_VOC_PARAMS, "causal": True})
    v = Vocoder(released, 16000, threads=1, backend="onednn")
    x = torch.from_numpy(np.random.default_rng(4).standard_normal((1, 80, 256)).astype(np.float32))
    with torch.inference_mode():
        before = v._stream(x, {})
        for frames in (8, 16, 32, 64, 128, 256):
            v._stream(x[..., :frames], {})
        again = v._stream(x, {})
    assert torch.equal(before, again)
    convs = [c for stage in v._stream.stages for block in stage.blocks for unit in block for c in unit[:2]]
    shared = 0
    for conv in [v._stream.pre, v._stream.post, *convs]:
        packs = list(conv._packs.values())
        layouts = [onednn._layout(p) for p in packs]
        assert None not in layouts
        for (p, lp), (q, lq) in itertools.combinations(zip(packs, layouts, strict=True), 2):
            assert (p is q) == (lp == lq)
            shared += p is q
    if torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        assert shared  # the brgconv kernels want one layout for every width


def test_onednn_add_to_equals_the_copying_call() -> None:
    """A float32 residual unit's second convolution added in place (reading its input where it lies, the
    context part apart) gives the bits of the call on a [context | input] buffer with the add fused, and
    leaves the same next context."""
    v = Vocoder(Generator(**{**FULL_VOC_PARAMS, "causal": True}), 16000, threads=1, backend="onednn")
    torch.manual_seed(4)
    with torch.inference_mode():
        for stage in v._stream.stages:
            c2 = stage.blocks[-1][-1][1]  # the widest context
            for t in (c2.pad + 1, 3 * c2.pad + 17):
                y, h = (torch.randn(1, t, c2.cin).transpose(1, 2).unsqueeze(2) for _ in range(2))
                ctx = {c2.key: torch.randn(1, c2.cin, c2.pad)}
                copied, in_place = dict(ctx), dict(ctx)
                buf, new = c2.input(copied, 1, t)
                new.copy_(y)
                expected = c2(buf, copied, add=h)
                got = c2.add_to(h.clone(), y, in_place)
                assert torch.equal(got, expected) and torch.equal(in_place[c2.key], copied[c2.key])


def test_a_run_started_left_context_frames_early_gives_the_same_audio() -> None:
    """The causal generator's audio from frame ``s`` on depends on the ``left_context_frames`` before it only:
    a run from ``s - context`` with empty caches equals one run of the whole mel from ``s`` on (what lets
    threads vocode parts of one mel apart); started a few frames early only, it does not."""
    v = make_vocoder(CAUSAL, seed=5)
    v.chunk_frames = 16
    context, hop = v.model.left_context_frames(), v.hop_length
    assert context == 37  # the released kernels, dilations and upsampling
    (m,) = mels(160, seed=6)
    whole = v.vocode(m)
    for s in (context, 61, 120):
        part = v.vocode(m[s - context :])[context * hop :]
        np.testing.assert_allclose(part, whole[s * hop :], rtol=0, atol=1e-6)
    short = v.vocode(m[120 - 3 :])[3 * hop :]
    assert np.abs(short - whole[120 * hop :]).max() > 1e-4
    with pytest.raises(ValueError, match="causal"):
        make_vocoder(NONCAUSAL).model.left_context_frames()


class _Inline:
    """Runs MelSpans' jobs at once, in the caller's thread (a deterministic order for the test)."""

    def __init__(self) -> None:
        self.jobs = 0
        self.offered: list[object] = []

    def run(self, job: Callable[[], None]) -> None:
        self.jobs += 1
        job()

    def offer(self, splittable: object) -> None:
        self.offered.append(splittable)


def test_mel_spans_follow_a_growing_mel_and_equal_one_run() -> None:
    """Frames arriving in pieces of any size: a span runs whole vocoder chunks as they are complete, waits
    for the rest, and the audio is bit-identical to vocoding the whole mel; split only once all frames are
    in. Bad chunks and bad use are refused."""
    from engine.hifigan.spans import MelSpans

    v = make_vocoder(CAUSAL, seed=7)
    v.chunk_frames = 16
    (m,) = mels(203, seed=8)
    inline = _Inline()
    spans = MelSpans(v, 203, inline)
    for lo, hi in ((0, 5), (5, 40), (40, 41), (41, 150), (150, 203)):
        assert spans.split() is None  # not all frames in yet
        spans.extend(m[lo:hi])
        if hi < 203:
            assert not spans.future.done()
    np.testing.assert_array_equal(spans.future.result(timeout=1), v.vocode(m))
    # 16-frame chunks: a job at 40 frames (runs 0-32), none at 5 or 41, one at 150 (to 144), one at the end
    assert inline.jobs == 3 and inline.offered == [spans]
    with pytest.raises(VocoderError, match="exceed"):
        spans.extend(m[:1])
    fresh = MelSpans(v, 20, inline)
    with pytest.raises(VocoderError, match="NaN"):
        fresh.extend(np.full((4, 80), np.nan, np.float32))
    with pytest.raises(VocoderError, match="causal"):
        MelSpans(make_vocoder(NONCAUSAL), 20, inline)
    with pytest.raises(VocoderError, match="0 frames"):
        MelSpans(v, 0, inline)


def test_mel_spans_run_tail_pieces_as_their_frames_arrive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a span has less than a chunk left, each of the vocoder's tail pieces runs as soon as its frames
    are here (before, the span waited for the mel's end); the pieces are the whole-mel cut's, so the audio
    is bit-identical to one run."""
    from engine.hifigan.spans import MelSpans

    v = make_vocoder(CAUSAL, seed=7)
    v.chunk_frames = 128
    assert v.tail_frames == 64
    (m,) = mels(340, seed=8)
    expected = v.vocode(m)  # cut 128, 128, 64, 20 (padded to 32)
    pieces: list[int] = []
    inner = v._piece_steps

    def spy(piece: torch.Tensor, cache: dict) -> object:
        pieces.append(piece.shape[-1])
        return (yield from inner(piece, cache))

    monkeypatch.setattr(v, "_piece_steps", spy)
    spans = MelSpans(v, 340, _Inline())
    spans.extend(m[:200])
    assert pieces == [128]
    spans.extend(m[200:330])
    assert pieces == [128, 128, 64]  # the tail piece 256-320 did not wait for the last 10 frames
    assert not spans.future.done()
    spans.extend(m[330:])
    assert pieces == [128, 128, 64, 32]
    np.testing.assert_array_equal(spans.future.result(timeout=1), expected)


def test_mel_spans_split_counts_the_running_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    """An idle thread's split counts what the other thread's running piece still has to do (half of it
    before any piece has finished): it cuts where both would finish together, and when the running piece
    alone outlasts everything not yet started, it takes all of that. The audio stays bit-identical."""
    from engine.cores import CoreWorkers
    from engine.hifigan.spans import MelSpans

    v = make_vocoder(CAUSAL, seed=7)
    c = v.model.left_context_frames()
    piece = v._piece_steps
    release, running = threading.Event(), threading.Event()

    def held(x: torch.Tensor, cache: object) -> object:
        if not running.is_set():  # the first piece waits for the test
            running.set()
            assert release.wait(60)
        return piece(x, cache)  # type: ignore[arg-type]

    workers = CoreWorkers(2)
    try:
        for frames, chunk in ((400, 64), (256 + 60, 256)):  # a split inside; all left taken
            v.chunk_frames = chunk
            (m,) = mels(frames, seed=frames)
            whole = v.vocode(m)
            monkeypatch.setattr(v, "_piece_steps", held)
            running.clear()
            release.clear()
            queued: list = []
            pool = SimpleNamespace(run=queued.append, offer=lambda s: None)
            spans = MelSpans.whole(v, m, pool)
            workers.run(queued[0])
            assert running.wait(60)
            left = chunk / 2  # the running piece's estimate: half of it
            even = math.ceil((chunk + frames + c - left) / 2)
            split = spans.split()
            assert split is not None
            new = spans._spans[-1]
            assert new.keep == max(chunk, even) and new.pos == new.keep - c and new.end == frames
            if even <= chunk:  # everything not yet started went to the idle thread
                assert spans._spans == [new]
            workers.run(split)
            release.set()
            np.testing.assert_array_equal(spans.future.result(timeout=120), whole)
            monkeypatch.setattr(v, "_piece_steps", piece)
    finally:
        workers.close()


def test_mel_spans_split_between_workers_equal_one_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A mel split (twice) between worker threads gives the audio of one run; a span that fails hands its
    error to the future and the other spans stop."""
    from engine.cores import CoreWorkers
    from engine.hifigan.spans import MelSpans

    v = make_vocoder(CAUSAL, seed=7)
    v.chunk_frames = 16
    (m,) = mels(700, seed=8)
    whole = v.vocode(m)
    workers = CoreWorkers(2)
    try:
        queued: list = []
        recorder = SimpleNamespace(run=queued.append, offer=lambda s: None)
        spans = MelSpans.whole(v, m, recorder)
        assert len(queued) == 1
        first, second = spans.split(), spans.split()  # [0, ~368) | [~331, ~534) | [~497, 700)
        assert first is not None and second is not None
        for job in (*queued, first, second):
            workers.run(job)
        np.testing.assert_array_equal(spans.future.result(timeout=120), whole)
        assert spans.split() is None  # all run: nothing left to split

        c = spans.context  # a split gains at least one context (its cost) from 3 contexts on
        assert MelSpans.whole(v, m[: 3 * c - 1], recorder).split() is None
        assert MelSpans.whole(v, m[: 3 * c], recorder).split() is not None

        calls = [0]
        piece = v._piece_steps

        def failing(*args: object) -> object:
            calls[0] += 1
            if calls[0] == 3:
                raise RuntimeError("piece failed")
            return piece(*args)

        monkeypatch.setattr(v, "_piece_steps", failing)
        queued.clear()
        broken = MelSpans.whole(v, m, recorder)
        split = broken.split()
        assert split is not None
        for job in (*queued, split):
            workers.run(job)
        with pytest.raises(RuntimeError, match="piece failed"):
            broken.future.result(timeout=60)
    finally:
        workers.close()
