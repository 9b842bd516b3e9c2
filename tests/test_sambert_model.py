"""KanTtsSAMBERT: module tree vs the release state-dict dump; fast inference vs the plain reference pass."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.sambert import AcousticInput, AcousticModel, KanTtsSAMBERT, WeightsError, load_am_state
from engine.sambert.model import ConfigError
from engine.symbols import LinguisticVocab
from engine.testing.make_model_dir import am_config, random_am_state

DATA = Path(__file__).parent / "data"
GOLDEN = (DATA / "golden_beijing_tokens.txt").read_text("utf-8").strip()  # spec §5.1, 22 tokens


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Small ops on a shared 2-core machine: one intra-op thread avoids OpenMP spin-wait stalls."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def parse_dump(path: Path) -> dict[str, list[int]]:
    entries: dict[str, list[int]] = {}
    for line in path.read_text("utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, shape, dtype, numel = line.split("\t")
        dims = [int(d) for d in shape.strip("[]").split(",") if d.strip()]
        assert dtype == "float32" and int(numel) == int(np.prod(dims)), line
        entries[key] = dims
    return entries


def build(
    size: str, speakers: list[str] | None = None, seed: int = 0
) -> tuple[KanTtsSAMBERT, LinguisticVocab]:
    cfg = am_config(size, speakers)
    vocab = LinguisticVocab.from_am_config(cfg)
    params = dict(cfg["Model"]["KanTtsSAMBERT"]["params"]) | vocab.sizes()
    model = KanTtsSAMBERT(params)
    load_am_state(model, random_am_state(cfg, seed))
    return model.eval(), vocab


def test_state_dict_equals_release_dump() -> None:
    dump = parse_dump(DATA / "sambert_state_dict.txt")
    assert len(dump) == 395
    cfg = am_config("full")
    model = KanTtsSAMBERT(dict(cfg["Model"]["KanTtsSAMBERT"]["params"]) | LinguisticVocab.build().sizes())
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(dump)  # same keys, same order
    assert ours == dump
    assert sum(int(np.prod(s)) for s in ours.values()) == 12706947
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {
        "text_encoder.ling_enc.position_enc.position_enc",
        "variance_adaptor.dur_position_encoder.inv_timescales",
    }


def test_one_speaker_variant_changes_only_speaker_table() -> None:
    cfg = am_config("full", ["F7"])
    params = dict(cfg["Model"]["KanTtsSAMBERT"]["params"]) | LinguisticVocab.from_am_config(cfg).sizes()
    shapes = {k: list(v.shape) for k, v in KanTtsSAMBERT(params).state_dict().items()}
    dump = parse_dump(DATA / "sambert_state_dict.txt")
    assert shapes.pop("spk_tokenizer.weight") == [4, 32]
    dump.pop("spk_tokenizer.weight")
    assert shapes == dump


def test_tiny_config_shapes_follow_config() -> None:
    model, vocab = build("tiny")
    sd = model.state_dict()
    p = model.params
    assert sd["text_encoder.sy_emb.weight"].shape == (147, p["embedding_dim"])
    assert sd["mel_decoder.mel_dec.dec_out_proj.weight"].shape == (3 * 80, p["decoder_num_units"])
    assert sd["mel_decoder.mel_dec.pnca.0.pnca_attn.w_h_kv.weight"].shape[1] == model.d_mem
    assert len(vocab.speaker) == 9


def test_position_tables() -> None:
    model, _ = build("tiny")
    table = model.text_encoder.ling_enc.position_enc.position_enc[0]
    half = table.size(1) // 2
    p, j = 3, 5  # row p-1 holds position p; first half sin, second half cos
    angle = p / 10000 ** (j / (half - 1))
    assert table[p - 1, j].item() == pytest.approx(np.sin(angle), abs=1e-6)
    assert table[p - 1, half + j].item() == pytest.approx(np.cos(angle), abs=1e-6)
    enc = model.variance_adaptor.dur_position_encoder
    pe = enc.encode(torch.tensor([[0.0, 2.0]]))[0]
    depth = pe.size(1)
    assert pe[0, 0].item() == 0.0 and pe[0, 1].item() == 1.0  # padding position 0 → sin 0, cos 1
    c = 3
    assert pe[1, c].item() == pytest.approx(np.cos(2 / 10000 ** (2 * (c // 2) / depth)), abs=1e-6)
    assert pe[1, c - 1].item() == pytest.approx(np.sin(2 / 10000 ** (2 * ((c - 1) // 2) / depth)), abs=1e-6)


def test_encoder_first_layer_has_no_residual_and_uses_sqrt_d_model() -> None:
    model, _ = build("tiny")
    enc = model.text_encoder.ling_enc
    x = torch.randn(1, 5, model.params["embedding_dim"])
    out = enc.fft[0].slf_attn(x)
    assert out.shape[-1] == model.params["encoder_num_units"]  # 32 → 16: no residual possible
    block = enc.fft[1].slf_attn
    y = torch.randn(1, 5, model.params["encoder_num_units"])
    with torch.no_grad():
        block.fc.weight.zero_()
        block.fc.bias.zero_()
    assert torch.equal(block(y), y)  # widths match: residual added


def reference_mel(model: KanTtsSAMBERT, ids: np.ndarray, **kw: float) -> dict:
    t = torch.from_numpy(ids)
    return model(t[None, :, :4], t[None, :, 4], t[None, :, 5], **kw)


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_fast_path_equals_reference_pass(size: str) -> None:
    model, vocab = build(size, seed=3)
    ids = vocab.encode_line(GOLDEN)
    if size == "full":
        ids = ids[:10]
    ref = reference_mel(model, ids)
    frames = ref["LR_length_rounded"]
    out = AcousticModel(model, vocab, threads=1).synthesize([AcousticInput(ids)])[0]
    assert out.mel.shape == (frames, 80)
    np.testing.assert_array_equal(out.durations, ref["duration_frames"][0].numpy())
    np.testing.assert_allclose(out.mel, ref["postnet_outputs"][0, :frames].numpy(), atol=1e-4, rtol=0)
    np.testing.assert_allclose(out.pitch, ref["pitch_predictions"][0].numpy(), atol=1e-5)


def test_fast_path_equals_reference_with_controls() -> None:
    model, vocab = build("tiny", seed=4)
    ids = vocab.encode_line(GOLDEN)
    ref = reference_mel(model, ids, duration_scale=1 / 1.3, pitch_offset=0.5, energy_offset=-0.25)
    out = AcousticModel(model, vocab).synthesize(
        [AcousticInput(ids, speed=1.3, pitch_shift=0.5, energy_shift=-0.25)]
    )[0]
    frames = ref["LR_length_rounded"]
    np.testing.assert_allclose(out.mel, ref["postnet_outputs"][0, :frames].numpy(), atol=1e-4, rtol=0)


def test_output_frames_past_length_are_zero_in_reference() -> None:
    model, vocab = build("tiny", seed=5)
    ids = vocab.encode_line(GOLDEN)[:5]
    durations = torch.tensor([[2.0, 3.0, 1.0, 4.0, 3.0]])  # 13 frames → padded to 15
    ref = reference_mel(model, ids, durations=durations)
    assert ref["LR_length_rounded"] == 13
    assert ref["postnet_outputs"].shape[1] == 15
    assert torch.all(ref["postnet_outputs"][0, 13:] == 0)


def test_bad_configs_and_weights_are_explained() -> None:
    cfg = am_config("tiny")
    params = dict(cfg["Model"]["KanTtsSAMBERT"]["params"]) | LinguisticVocab.from_am_config(cfg).sizes()
    with pytest.raises(ConfigError, match="decoder_num_layers"):
        KanTtsSAMBERT({k: v for k, v in params.items() if k != "decoder_num_layers"})
    with pytest.raises(ConfigError, match="divisible"):
        KanTtsSAMBERT(params | {"encoder_num_heads": 3})
    model = KanTtsSAMBERT(params)
    state = model.state_dict()
    bad = dict(state) | {"spk_tokenizer.weight": torch.zeros(4, params["speaker_units"])}
    with pytest.raises(WeightsError, match="speaker vocabulary of 9"):
        load_am_state(model, bad, "ckpt.pth")
    with pytest.raises(WeightsError, match="missing"):
        load_am_state(model, {k: v for k, v in state.items() if "postnet" not in k}, "ckpt.pth")


def test_position_table_past_max_len_matches_float64_reference() -> None:
    """Tables rebuilt past max_len (800) must not drift (a float32 build is off by ~6e-5)."""
    import numpy as np

    from engine.sambert.layers import sinusoid_table

    length, channels = 2000, 512
    half = channels // 2
    scaled = np.arange(1, length + 1, dtype=np.float64)[:, None] * np.exp(
        np.arange(half, dtype=np.float64) * -(np.log(10000.0) / (half - 1))
    )
    expected = np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1)
    assert np.abs(sinusoid_table(length, channels).numpy() - expected).max() < 1e-6
