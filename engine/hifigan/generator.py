"""KAN-TTS HiFi-GAN generator (``kantts.models.hifigan.hifigan.Generator``), spec §3.

Built from ``voc_config['Model']['Generator']['params']``; ``state_dict()`` keys and shapes equal the
released checkpoints (weight-norm form, 318 entries for the 16 kHz config; 212 after
:meth:`Generator.remove_weight_norm`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import (
    Cache,
    CausalConv1d,
    CausalConvTranspose1d,
    Conv1d,
    ConvTranspose1d,
    FusedUpsample,
    ResidualBlock,
    StreamLayer,
    fold_weight_norm,
)

# Element-wise activations a config may name (streaming and masking rely on them being point-wise).
_ACTIVATIONS = {"LeakyReLU", "ReLU", "ELU", "PReLU", "SiLU", "GELU", "Tanh"}


class Generator(nn.Module):
    """conv_pre → per stage [sin(x)+x, repeat- + transposed-upsample, mean of resblocks] → conv_post.

    :meth:`fuse_upsampling` (inference) replaces each stage's two upsampling branches by one
    :class:`FusedUpsample`; the state dict then no longer has the checkpoint's layout.
    """

    def __init__(
        self,
        in_channels: int = 80,
        out_channels: int = 1,
        channels: int = 256,
        kernel_size: int = 7,
        upsample_scales: Sequence[int] = (10, 5, 2, 2),
        upsample_kernal_sizes: Sequence[int] = (20, 10, 4, 4),
        resblock_kernel_sizes: Sequence[int] = (3, 7, 11),
        resblock_dilations: Sequence[Sequence[int]] = ((1, 3, 5, 7), (1, 3, 5, 7), (1, 3, 5, 7)),
        repeat_upsample: bool = True,
        bias: bool = True,
        causal: bool = True,
        nonlinear_activation: str = "LeakyReLU",
        nonlinear_activation_params: dict[str, Any] | None = None,
        use_weight_norm: bool = True,
        nsf_params: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"Generator kernel_size must be odd, got {kernel_size}")
        if len(upsample_scales) != len(upsample_kernal_sizes):
            raise ValueError(
                f"upsample_scales {list(upsample_scales)} and upsample_kernal_sizes "
                f"{list(upsample_kernal_sizes)} differ in length"
            )
        if len(resblock_kernel_sizes) != len(resblock_dilations):
            raise ValueError(
                f"resblock_kernel_sizes {list(resblock_kernel_sizes)} and resblock_dilations "
                f"{[list(d) for d in resblock_dilations]} differ in length"
            )
        if channels % (2 ** len(upsample_scales)) != 0:
            raise ValueError(f"channels={channels} is not divisible by 2**{len(upsample_scales)}")
        if not repeat_upsample:
            raise ValueError(
                "repeat_upsample=False is not supported (KAN-TTS forward requires the repeat branch)"
            )
        if nsf_params is not None:
            raise ValueError("NSF HiFi-GAN (nsf_params) is not supported; the zh-cn 16k voices do not use it")
        if nonlinear_activation not in _ACTIVATIONS:
            raise ValueError(
                f"nonlinear_activation {nonlinear_activation!r} is not supported; "
                f"use one of {sorted(_ACTIVATIONS)}"
            )
        if nonlinear_activation_params is None:  # KAN-TTS default
            nonlinear_activation_params = (
                {"negative_slope": 0.1} if nonlinear_activation == "LeakyReLU" else {}
            )
        act_params = dict(nonlinear_activation_params)

        def act() -> nn.Module:
            return getattr(nn, nonlinear_activation)(**act_params)

        self.causal = bool(causal)
        self.upsample_scales = [int(u) for u in upsample_scales]
        self.hop_length = math.prod(self.upsample_scales)
        self.num_upsamples = len(self.upsample_scales)
        self.num_kernels = len(resblock_kernel_sizes)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.upsamples: nn.ModuleList | None = None  # set by fuse_upsampling()
        # Layer geometry for receptive_radius_frames (independent of how the layers are represented).
        self._geometry = (
            kernel_size,
            [int(k) for k in upsample_kernal_sizes],
            [
                (int(rk), [int(d) for d in dil])
                for rk, dil in zip(resblock_kernel_sizes, resblock_dilations, strict=True)
            ],
        )

        conv_cls = CausalConv1d if causal else Conv1d
        tconv_cls = CausalConvTranspose1d if causal else ConvTranspose1d
        wn = bool(use_weight_norm)
        # Registration order = KAN-TTS (state_dict order of the released checkpoints).
        self.transpose_upsamples = nn.ModuleList()
        self.repeat_upsamples = nn.ModuleList()
        self.conv_blocks = nn.ModuleList()
        conv_pre = conv_cls(in_channels, channels, kernel_size, 1, bias, wn)
        for i, (u, k) in enumerate(zip(self.upsample_scales, upsample_kernal_sizes, strict=True)):
            cin, cout = channels // 2**i, channels // 2 ** (i + 1)
            self.transpose_upsamples.append(nn.Sequential(act(), tconv_cls(cin, cout, int(k), u, bias, wn)))
            self.repeat_upsamples.append(
                nn.Sequential(
                    nn.Upsample(scale_factor=u, mode="nearest"),
                    act(),
                    conv_cls(cin, cout, kernel_size, 1, bias, wn),
                )
            )
            for rk, dil in zip(resblock_kernel_sizes, resblock_dilations, strict=True):
                self.conv_blocks.append(
                    ResidualBlock(cout, int(rk), [int(d) for d in dil], act(), causal, bias, wn)
                )
        self.conv_pre = conv_pre
        self.conv_post = conv_cls(channels // 2**self.num_upsamples, out_channels, kernel_size, 1, bias, wn)
        for name, module in self.named_modules():  # stable streaming-cache keys (see layers.StreamLayer)
            if isinstance(module, StreamLayer):
                module.stream_key = name

    @classmethod
    def from_config(cls, voc_config: dict[str, Any]) -> Generator:
        """Build from a full ``voc/config.yaml`` dict (``Model.Generator.params``)."""
        try:
            params = voc_config["Model"]["Generator"]["params"]
        except (KeyError, TypeError) as e:
            raise ValueError("vocoder config has no Model.Generator.params section") from e
        try:
            return cls(**params)
        except TypeError as e:
            raise ValueError(f"vocoder config Model.Generator.params is invalid: {e}") from e

    def remove_weight_norm(self) -> Generator:
        """Fold weight norm into plain weights (in place) for inference."""
        fold_weight_norm(self)
        return self

    def fuse_upsampling(self) -> Generator:
        """Fold each stage's repeat-upsample branch into its transposed convolution (in place, after
        :meth:`remove_weight_norm`); outputs equal the unfused model's to float rounding, ~7 % fewer MACs."""
        if self.upsamples is not None:
            return self
        fused = []
        for (t_act, t_conv), (_, rep_act, rep_conv) in zip(
            self.transpose_upsamples, self.repeat_upsamples, strict=True
        ):
            if repr(t_act) != repr(rep_act) or any(True for _ in t_act.parameters()):
                raise ValueError(f"cannot fuse upsampling branches with activations {t_act} / {rep_act}")
            fused.append(FusedUpsample.from_branches(t_act, t_conv, rep_conv))
        self.upsamples = nn.ModuleList(fused)
        del self.transpose_upsamples, self.repeat_upsamples
        for i, module in enumerate(self.upsamples):
            module.stream_key = f"upsamples.{i}"
        return self

    def _masks(self, lengths: Tensor | None, frames: int, dtype: torch.dtype) -> dict[int, Tensor] | None:
        """Per-rate masks [B, 1, frames * rate] for batched non-causal inference (None when not needed)."""
        if lengths is None or self.causal:
            return None
        rates = [1]
        for u in self.upsample_scales:
            rates.append(rates[-1] * u)
        return {
            r: (torch.arange(frames * r, device=lengths.device)[None, :] < (lengths[:, None] * r))
            .unsqueeze(1)
            .to(dtype)
            for r in rates
        }

    def forward(self, mel: Tensor, lengths: Tensor | None = None) -> Tensor:
        """``mel`` [B, in_channels, T] → waveform [B, out_channels, T * hop].

        ``lengths`` (frames per item) makes a padded non-causal batch equal the one-by-one outputs: every
        conv input past an item's end is zeroed, as the zero padding of a single run would be. Causal models
        need no mask.
        """
        masks = self._masks(lengths, mel.shape[-1], mel.dtype)

        def m(x: Tensor, rate: int) -> Tensor:
            return x if masks is None else x * masks[rate]

        x = self.conv_pre(m(mel, 1))
        rate = 1
        for i in range(self.num_upsamples):
            x = torch.sin(x) + x
            if self.upsamples is not None:
                x = self.upsamples[i](x, None if masks is None else masks[rate])
                rate *= self.upsample_scales[i]
            else:
                rep_up, rep_act, rep_conv = self.repeat_upsamples[i]
                t_act, t_conv = self.transpose_upsamples[i]
                up = t_conv(m(t_act(x), rate))
                rate *= self.upsample_scales[i]
                rep = rep_conv(m(rep_act(rep_up(x)), rate))
                x = rep + up[..., : rep.shape[-1]]
            mask = None if masks is None else masks[rate]
            blocks = self.conv_blocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = blocks[0](x, mask)
            for block in blocks[1:]:
                xs = xs + block(x, mask)
            x = xs / self.num_kernels
        x = F.leaky_relu(x)  # default slope 0.01, as in KAN-TTS
        x = self.conv_post(m(x, rate))
        return torch.tanh(x)

    def forward_stream(self, mel: Tensor, cache: Cache) -> Tensor:
        """Causal only: vocode the next chunk of frames; ``cache`` carries every layer's left context."""
        if not self.causal:
            raise RuntimeError(
                "forward_stream needs a causal generator; use overlap streaming for non-causal"
            )
        x = self.conv_pre.forward_stream(mel, cache)
        for i in range(self.num_upsamples):
            x = torch.sin(x) + x
            if self.upsamples is not None:
                x = self.upsamples[i].forward_stream(x, cache)
            else:
                rep_up, rep_act, rep_conv = self.repeat_upsamples[i]
                t_act, t_conv = self.transpose_upsamples[i]
                rep = rep_conv.forward_stream(rep_act(rep_up(x)), cache)
                up = t_conv.forward_stream(t_act(x), cache)
                x = rep + up
            blocks = self.conv_blocks[i * self.num_kernels : (i + 1) * self.num_kernels]
            xs = blocks[0].forward_stream(x, cache)
            for block in blocks[1:]:
                xs = xs + block.forward_stream(x, cache)
            x = xs / self.num_kernels
        x = self.conv_post.forward_stream(F.leaky_relu(x), cache)
        return torch.tanh(x)

    def left_context_frames(self) -> int:
        """Causal only: mel frames before a position that fully determine its audio (an upper bound). A run
        started that many frames earlier with empty caches gives the same audio from that position on, so
        parts of one mel can be vocoded apart (:mod:`.spans`)."""
        if not self.causal:
            raise ValueError("left_context_frames is defined for causal generators")
        kernel, up_kernels, resblocks = self._geometry
        total = float(kernel - 1)  # conv_pre, at the frame rate
        rate = 1
        for u, k in zip(self.upsample_scales, up_kernels, strict=True):
            reach_t = math.ceil((k - 1) / u) / rate  # transposed convolution: whole input samples back
            reach_r = (math.ceil((kernel - 1) / u) + 1) / rate  # nearest upsampling, then a causal conv
            rate *= u
            reach_b = max((rk - 1) * (sum(dil) + len(dil)) for rk, dil in resblocks) / rate
            total += max(reach_t, reach_r) + reach_b
        total += (kernel - 1) / rate  # conv_post
        return math.ceil(total) + 1

    def receptive_radius_frames(self) -> int:
        """Frames of context on each side that fully determine one output frame (upper bound, non-causal)."""
        kernel, up_kernels, resblocks = self._geometry
        total = (kernel - 1) / 2
        rate = 1
        for u, k in zip(self.upsample_scales, up_kernels, strict=True):
            p = 0 if self.causal else (k - u) // 2  # the transposed conv's padding
            reach_t = math.ceil(max(p, k - 1 - p) / u) / rate
            rate *= u
            reach_r = (kernel - 1) / 2 / rate
            reach_b = max((rk - 1) // 2 * (sum(dil) + len(dil)) for rk, dil in resblocks)
            total += max(reach_t, reach_r + 1 / rate) + reach_b / rate
        total += (kernel - 1) / 2 / rate
        return math.ceil(total) + 1
