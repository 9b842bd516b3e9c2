"""HiFi-GAN generator: parameter names vs the released dumps, weight-norm folding, forward semantics, pins."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.hifigan import Generator, Vocoder, VocoderError
from engine.hifigan.layers import WNConv1d

DATA = Path(__file__).parent / "data"
FULL_16K = {  # KAN-TTS hifigan_v1_16k.yaml Model.Generator.params
    "in_channels": 80,
    "out_channels": 1,
    "channels": 256,
    "kernel_size": 7,
    "upsample_scales": [10, 5, 2, 2],
    "upsample_kernal_sizes": [20, 10, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilations": [[1, 3, 5, 7], [1, 3, 5, 7], [1, 3, 5, 7]],
    "bias": True,
    "causal": True,
    "nonlinear_activation": "LeakyReLU",
    "nonlinear_activation_params": {"negative_slope": 0.1},
    "use_weight_norm": True,
}
NONCAUSAL_16K = {**FULL_16K, "causal": False, "upsample_kernal_sizes": [20, 11, 4, 4]}
NARROW = {**FULL_16K, "channels": 32}  # released kernels/dilations, fewer channels: fast tests


def parse_dump(path: Path) -> list[tuple[str, list[int]]]:
    rows = []
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        rows.append((fields[0], list(ast.literal_eval(fields[1]))))
    return rows


def shapes(module: torch.nn.Module) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in module.state_dict().items()]


def voc_config(params: dict) -> dict:
    return {"Model": {"Generator": {"params": params}}, "audio_config": {"sampling_rate": 16000}}


@pytest.mark.parametrize("params", [FULL_16K, NONCAUSAL_16K], ids=["causal", "noncausal"])
def test_state_dict_matches_released_dumps(params: dict) -> None:
    g = Generator(**params)
    expected = parse_dump(DATA / "hifigan_state_dict.txt")
    if not params["causal"]:  # only the stage-1 transposed kernel differs (spec §3.1)
        expected = [
            (k, [128, 64, 11] if k == "transpose_upsamples.1.1.deconv.weight_v" else s) for k, s in expected
        ]
    assert len(expected) == 318
    assert shapes(g) == expected
    assert sum(math.prod(s) for _, s in expected) == (4_864_546 if params["causal"] else 4_872_738)
    g.remove_weight_norm()
    folded = parse_dump(DATA / "hifigan_state_dict_after_remove_weight_norm.txt")
    if not params["causal"]:
        folded = [
            (k, [128, 64, 11] if k == "transpose_upsamples.1.1.deconv.weight" else s) for k, s in folded
        ]
    assert len(folded) == 212
    assert shapes(g) == folded
    assert sum(math.prod(s) for _, s in folded) == (4_857_809 if params["causal"] else 4_866_001)


@pytest.mark.parametrize("transposed", [False, True])
def test_weight_norm_fold_matches_legacy_definition(transposed: bool) -> None:
    torch.manual_seed(0)
    conv = WNConv1d(6, 4, 5, stride=2 if transposed else 1, transposed=transposed)
    with torch.no_grad():
        conv.weight_g.mul_(torch.rand_like(conv.weight_g) + 0.5)
    expected = torch._weight_norm(conv.weight_v, conv.weight_g, 0)  # what legacy weight_norm computes
    assert conv.weight_g.shape == (6 if transposed else 4, 1, 1)
    x = torch.randn(2, 6, 9)
    with torch.no_grad():
        before = conv(x)
        conv.fold()
        after = conv(x)
    assert list(dict(conv.named_parameters())) == ["bias", "weight"]
    torch.testing.assert_close(conv.weight, expected, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-6)


def test_strict_load_and_config_errors() -> None:
    g = Generator(**NARROW)
    sd = g.state_dict()
    v = Vocoder.from_config(voc_config(NARROW), {"model": {"generator": sd}})
    assert v.sample_rate == 16000 and v.hop_length == 200 and v.causal
    # a folded (non weight-norm) state dict, a missing key, and the other variant's kernel are all refused
    folded = Generator(**NARROW).remove_weight_norm().state_dict()
    with pytest.raises(VocoderError, match="weight_g"):
        Vocoder.from_config(voc_config(NARROW), folded)
    broken = dict(sd)
    del broken["conv_post.conv1d.bias"]
    with pytest.raises(VocoderError, match=r"conv_post\.conv1d\.bias"):
        Vocoder.from_config(voc_config(NARROW), broken)
    with pytest.raises(VocoderError, match="size mismatch"):
        Vocoder.from_config(voc_config({**NARROW, "upsample_kernal_sizes": [20, 11, 4, 4]}), sd)
    with pytest.raises(VocoderError, match=r"Model\.Generator\.params"):
        Vocoder.from_config({"Model": {}}, sd)
    with pytest.raises(VocoderError, match="upsample_kernal_sizes"):
        Vocoder.from_config(voc_config({**NARROW, "upsample_kernal_sizes": [20, 10]}), sd)
    with pytest.raises(VocoderError, match="unexpected keyword"):
        Vocoder.from_config(voc_config({**NARROW, "upsample_kernel_sizes": [20, 10, 4, 4]}), sd)
    with pytest.raises(VocoderError, match="generator state dict"):
        Vocoder.from_config(voc_config(NARROW), {"model": {"discriminator": {}}})


def test_forward_semantics_small_causal() -> None:
    """Hand-written forward of spec §3.3 on a tiny causal model equals Generator.forward."""
    torch.manual_seed(3)
    g = Generator(
        in_channels=4,
        channels=8,
        kernel_size=3,
        upsample_scales=[2],
        upsample_kernal_sizes=[4],
        resblock_kernel_sizes=[3, 5],
        resblock_dilations=[[1, 2], [1, 3]],
    ).remove_weight_norm()
    mel = torch.randn(1, 4, 6)

    def cconv(conv, x):
        c = conv.conv1d
        return F.conv1d(
            F.pad(x, ((c.kernel_size - 1) * c.dilation, 0)), c.weight, c.bias, dilation=c.dilation
        )

    with torch.no_grad():
        x = cconv(g.conv_pre, mel)
        x = torch.sin(x) + x
        rep = cconv(g.repeat_upsamples[0][2], F.leaky_relu(x.repeat_interleave(2, dim=-1), 0.1))
        d = g.transpose_upsamples[0][1].deconv
        up = F.conv_transpose1d(F.leaky_relu(x, 0.1), d.weight, d.bias, stride=2)[..., :-2]
        x = rep + up
        outs = []
        for block in g.conv_blocks:
            h = x
            for c1, c2 in zip(block.convs1, block.convs2, strict=True):
                h = h + cconv(c2, F.leaky_relu(cconv(c1, F.leaky_relu(h, 0.1)), 0.1))
            outs.append(h)
        x = (outs[0] + outs[1]) / 2
        expected = torch.tanh(cconv(g.conv_post, F.leaky_relu(x, 0.01)))
        torch.testing.assert_close(g(mel), expected, rtol=0, atol=1e-6)


def test_causality() -> None:
    torch.manual_seed(0)
    g = Generator(**{**FULL_16K, "channels": 32}).remove_weight_norm().eval()
    mel = torch.randn(1, 80, 12)
    mel2 = mel.clone()
    mel2[..., 8:] += 1.0
    with torch.no_grad():
        a, b = g(mel), g(mel2)
    assert torch.equal(a[..., : 8 * 200], b[..., : 8 * 200])
    assert not torch.allclose(a[..., 8 * 200 :], b[..., 8 * 200 :])


def test_receptive_radius_bounds_noncausal_influence() -> None:
    torch.manual_seed(0)
    g = Generator(**{**NONCAUSAL_16K, "channels": 32}).remove_weight_norm().eval()  # same kernels/dilations
    r = g.receptive_radius_frames()
    assert 10 <= r <= 30
    mel = torch.randn(1, 80, 2 * r + 30)
    mel2 = mel.clone()
    mel2[..., r + 15] += 1.0  # one frame changed in the middle
    with torch.no_grad():
        diff = (g(mel) - g(mel2)).abs().reshape(-1, 200).amax(dim=1)
    changed = torch.nonzero(diff > 0).reshape(-1)
    assert changed.min() >= 15 and changed.max() <= 2 * r + 15


# Regression pins, computed once with this implementation (it matched KAN-TTS to < 1e-6 on identical
# weights); they catch silent changes to the forward pass or the initialisation.
PINS = {
    True: (0.170630932, 0.102055743, 0.603665769, [0.137839362, 0.214047506, 0.303059518]),
    False: (0.180482387, 0.122576837, 0.608154595, [0.162893787, 0.175820857, 0.077260450]),
}


def _pin_output(causal: bool) -> np.ndarray:
    torch.manual_seed(1234)
    params = FULL_16K if causal else NONCAUSAL_16K
    v = Vocoder.from_config(voc_config(params), Generator(**params).state_dict())
    mel = np.random.default_rng(7).standard_normal((24, 80)).astype(np.float32)
    return v.vocode(mel)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "noncausal"])
def test_regression_pins(causal: bool) -> None:
    y = _pin_output(causal)
    mean, std, absmax, picks = PINS[causal]
    assert y.shape == (24 * 200,) and y.dtype == np.float32
    np.testing.assert_allclose(
        [y.mean(), y.std(), np.abs(y).max(), *y[[100, 2400, 4700]]],
        [mean, std, absmax, *picks],
        rtol=1e-4,
        atol=1e-6,
    )


@pytest.mark.parametrize("fused", [False, True])
def test_roofline_macs_from_module_hooks_match_torch_flop_counter(fused: bool) -> None:
    """benchmarks.bench_roofline counts MACs from module shapes; torch's op-level counter must agree."""
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.bench_roofline import count_macs, vocoder_stage

    g = Generator(**NARROW).remove_weight_norm().eval()
    if fused:
        g.fuse_upsampling()
    mel = torch.zeros(1, 80, 16)
    macs = count_macs(g, lambda: g.forward_stream(mel, {}), vocoder_stage(g.num_kernels))
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        g.forward_stream(mel, {})
    assert 2 * sum(macs.values()) == counter.get_total_flops()
    assert len([k for k in macs if k.startswith("upsample")]) == 4
