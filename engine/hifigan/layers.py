"""HiFi-GAN building blocks with KAN-TTS parameter names.

Weights are stored the way legacy ``torch.nn.utils.weight_norm`` (``dim=0``) stores them: ``bias``,
``weight_g`` (``[dim0, 1, 1]``), ``weight_v`` (full shape), with ``weight = g * v / ||v||`` where the norm
runs over every dimension except 0. :meth:`WNConv1d.fold` replaces them by a plain ``weight`` for inference.

Streaming: every layer that looks at the past exposes ``forward_stream(x, cache)``. ``cache`` is a dict owned
by the caller; each layer keeps its own left context (causal convolutions) or its overlap-add carry (causal
transposed convolutions) under its own key, so chunk-by-chunk input gives the same output as one call. The key
is the layer's ``stream_key`` (its module path, set by the generator), so a cache is meaningful in any process
holding the same architecture: it can be shipped with a request and continued on another replica.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Cache = dict[str, Tensor]


def bf16_hardware() -> bool:
    """True when this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX) and oneDNN uses them: bf16
    tensors then run bf16 kernels (about twice the float32 rate on the vocoder's convolutions)."""
    cpu = torch.cpu
    instructions = cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported()
    return bool(instructions and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class StreamLayer(nn.Module):
    """A layer that keeps streaming state in a caller-owned :data:`Cache` under ``stream_key``."""

    stream_key: str = ""

    def _key(self) -> str:
        if not self.stream_key:  # standalone layer (tests): unique within this process
            self.stream_key = f"#{id(self)}"
        return self.stream_key


class WNConv1d(nn.Module):
    """1-D (transposed) convolution whose weight is kept in weight-norm form until :meth:`fold` is called."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = True,
        transposed: bool = False,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.transposed = transposed
        shape = (
            (in_channels, out_channels, kernel_size)
            if transposed
            else (out_channels, in_channels, kernel_size)
        )
        weight = torch.empty(shape)
        nn.init.kaiming_uniform_(weight, a=math.sqrt(5))  # torch's default Conv init
        fan_in = (out_channels if transposed else in_channels) * kernel_size
        # Registration order matches legacy weight_norm: bias, weight_g, weight_v.
        if bias:
            bound = 1.0 / math.sqrt(fan_in)
            self.bias: Tensor | None = nn.Parameter(torch.empty(shape[1] if transposed else shape[0]))
            nn.init.uniform_(self.bias, -bound, bound)
        else:
            self.register_parameter("bias", None)
        if weight_norm:
            self.weight_g = nn.Parameter(_norm_dim0(weight))
            self.weight_v = nn.Parameter(weight)
        else:
            self.weight = nn.Parameter(weight)

    @property
    def is_weight_norm(self) -> bool:
        return "weight_v" in self._parameters

    def effective_weight(self) -> Tensor:
        """The convolution weight: ``g * v / ||v||`` in weight-norm form, else the stored weight."""
        if self.is_weight_norm:
            return self.weight_v * (self.weight_g / _norm_dim0(self.weight_v))
        return self.weight

    @torch.no_grad()
    def fold(self) -> None:
        """Replace ``weight_g``/``weight_v`` by the equivalent plain ``weight`` (no-op when folded)."""
        if not self.is_weight_norm:
            return
        weight = self.effective_weight().detach().clone()
        del self.weight_g, self.weight_v
        bias = self._parameters.pop("bias")  # re-register so the folded order is bias, weight
        self.register_parameter("bias", bias)
        self.weight = nn.Parameter(weight)

    def forward(self, x: Tensor, padding: int | None = None, bias: bool = True) -> Tensor:
        pad = self.padding if padding is None else padding
        b = self.bias if bias else None
        if self.transposed:
            return F.conv_transpose1d(x, self.effective_weight(), b, self.stride, pad)
        return F.conv1d(x, self.effective_weight(), b, self.stride, pad, self.dilation)

    def extra_repr(self) -> str:
        kind = "transposed" if self.transposed else "conv"
        return (
            f"{kind} {self.in_channels}->{self.out_channels}, k={self.kernel_size}, s={self.stride}, "
            f"p={self.padding}, d={self.dilation}, weight_norm={self.is_weight_norm}"
        )


def _norm_dim0(v: Tensor) -> Tensor:
    """L2 norm over every dimension except 0, shaped ``[n, 1, 1]`` (``torch.norm_except_dim(v, 2, 0)``)."""
    return torch.linalg.vector_norm(v.reshape(v.shape[0], -1), dim=1).reshape(-1, *([1] * (v.dim() - 1)))


class CausalConv1d(StreamLayer):
    """Conv1d that left-pads ``(k - 1) * dilation`` zeros: output ``t`` sees inputs ``<= t`` only."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int = 1,
        bias: bool = True,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        self.pad = (kernel_size - 1) * dilation
        self.conv1d = WNConv1d(
            in_channels, out_channels, kernel_size, 1, 0, dilation, bias, weight_norm=weight_norm
        )

    def forward(self, x: Tensor) -> Tensor:
        # Same result as conv(F.pad(x, (pad, 0))): the conv pads both sides itself and the extra right outputs
        # are dropped. Saves the zero-fill and copy of an explicitly padded input (~20 % of inference time).
        # The returned view is strided; every consumer in the generator is element-wise.
        return self.conv1d(x, self.pad)[..., : x.shape[-1]]

    def forward_stream(self, x: Tensor, cache: Cache) -> Tensor:
        """Convolve a chunk, using (and updating) the last ``pad`` input samples kept in ``cache``."""
        if self.pad == 0:
            return self.conv1d(x)
        key = self._key()
        ctx = cache.get(key)
        if ctx is None:
            ctx = x.new_zeros(x.shape[0], x.shape[1], self.pad)
        xc = torch.cat((ctx, x), dim=-1)
        cache[key] = xc[..., -self.pad :]
        return self.conv1d(xc)


class Conv1d(nn.Module):
    """Non-causal Conv1d with symmetric zero padding ``(k * d - d) // 2``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int = 1,
        bias: bool = True,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        pad = (kernel_size * dilation - dilation) // 2
        self.conv1d = WNConv1d(
            in_channels, out_channels, kernel_size, 1, pad, dilation, bias, weight_norm=weight_norm
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv1d(x)


class CausalConvTranspose1d(StreamLayer):
    """ConvTranspose1d (no padding) whose output is trimmed by ``k - stride`` samples on the right."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        bias: bool = True,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"transposed conv kernel {kernel_size} is smaller than its stride {stride}")
        self.stride = stride
        self.trim = kernel_size - stride
        self.deconv = WNConv1d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            0,
            bias=bias,
            transposed=True,
            weight_norm=weight_norm,
        )

    def forward(self, x: Tensor) -> Tensor:
        y = self.deconv(x)
        return y[..., : y.shape[-1] - self.trim]

    def forward_stream(self, x: Tensor, cache: Cache) -> Tensor:
        """Overlap-add: the ``k - stride`` tail of a chunk is carried (without bias) into the next chunk."""
        d = self.deconv
        y = d(x, bias=False)
        key = self._key()
        carry = cache.get(key)
        if carry is not None and self.trim:
            y[..., : self.trim] += carry
        n = x.shape[-1] * self.stride
        if self.trim:
            cache[key] = y[..., n:]
        y = y[..., :n]
        return y if d.bias is None else y + d.bias[:, None]


class ConvTranspose1d(nn.Module):
    """Non-causal ConvTranspose1d with padding ``(k - stride) // 2``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int,
        bias: bool = True,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size < stride:
            raise ValueError(f"transposed conv kernel {kernel_size} is smaller than its stride {stride}")
        self.deconv = WNConv1d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            (kernel_size - stride) // 2,
            bias=bias,
            transposed=True,
            weight_norm=weight_norm,
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.deconv(x)


AnyConv = CausalConv1d | Conv1d


class ResidualBlock(nn.Module):
    """HiFi-GAN "ResBlock1": per dilation ``x += conv2(act(conv1_dilated(act(x))))``."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        dilations: list[int],
        activation: nn.Module,
        causal: bool,
        bias: bool = True,
        weight_norm: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"resblock kernel size must be odd, got {kernel_size}")
        cls = CausalConv1d if causal else Conv1d
        self.convs1 = nn.ModuleList(
            [cls(channels, channels, kernel_size, d, bias, weight_norm) for d in dilations]
        )
        self.convs2 = nn.ModuleList(
            [cls(channels, channels, kernel_size, 1, bias, weight_norm) for _ in dilations]
        )
        self.activation = activation

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``mask`` ([B, 1, T], 1 inside each item) zeroes conv inputs past an item's end."""
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            xt = self.activation(x)
            if mask is not None:
                xt = xt * mask
            xt = c1(xt)
            xt = self.activation(xt)
            if mask is not None:
                xt = xt * mask
            x = c2(xt) + x
        return x

    def forward_stream(self, x: Tensor, cache: Cache) -> Tensor:
        for c1, c2 in zip(self.convs1, self.convs2, strict=True):
            xt = c1.forward_stream(self.activation(x), cache)
            x = c2.forward_stream(self.activation(xt), cache) + x
        return x


def fold_weight_norm(module: nn.Module) -> nn.Module:
    """Fold every :class:`WNConv1d` under ``module`` in place; returns ``module``."""
    for m in module.modules():
        if isinstance(m, WNConv1d):
            m.fold()
    return module


class FusedUpsample(StreamLayer):
    """Both upsampling branches of a generator stage as one convolution (exact up to float rounding).

    ``act → nearest ×u → conv`` plus ``act → transposed conv (stride u)`` is one transposed convolution of
    ``act(x)`` (nearest upsampling commutes with a point-wise activation), whose kernel sums the two. It
    runs polyphase: a plain convolution with ``u * cout`` output channels (channel ``p * cout + c`` is output
    phase ``p``) over ``m_lo..m_hi`` input frames, whose outputs interleave in time. Causal models have
    ``m_lo = 0``, so streaming keeps the last ``m_hi`` activated input frames.
    """

    def __init__(
        self, activation: nn.Module, weight: Tensor, bias: Tensor, stride: int, m_lo: int, m_hi: int
    ) -> None:
        super().__init__()
        if weight.shape[-1] != m_hi - m_lo + 1 or weight.shape[0] % stride:
            raise ValueError(f"fused upsample weight {list(weight.shape)} does not fit stride {stride}")
        self.activation = activation
        self.stride, self.m_lo, self.m_hi = stride, m_lo, m_hi
        self.conv1d = WNConv1d(weight.shape[1], weight.shape[0], weight.shape[-1], weight_norm=False)
        with torch.no_grad():
            self.conv1d.weight.copy_(weight)
            assert self.conv1d.bias is not None
            self.conv1d.bias.copy_(bias)

    @classmethod
    @torch.no_grad()
    def from_branches(
        cls,
        t_act: nn.Module,
        t_conv: CausalConvTranspose1d | ConvTranspose1d,
        rep_conv: CausalConv1d | Conv1d,
    ) -> FusedUpsample:
        """Fuse a stage's ``(act, transposed conv)`` and ``(nearest ×u, act, conv)`` branches."""
        d, c = t_conv.deconv, rep_conv.conv1d
        if c.dilation != 1 or c.stride != 1:
            raise ValueError("the repeat-upsample conv must have stride 1 and dilation 1")
        u, pad_t = d.stride, d.padding
        left = (c.kernel_size - 1) if isinstance(rep_conv, CausalConv1d) else c.padding
        wt = d.effective_weight().double()  # [cin, cout, K]: output offset k - pad_t from input i * u
        wr = c.effective_weight().double()  # [cout, cin, kr]: rep[t] = sum_j wr[j] up[t - left + j]
        cin, cout = wt.shape[0], wt.shape[1]
        d_min = min(-pad_t, left - (c.kernel_size - 1))
        d_max = max(d.kernel_size - 1 - pad_t, u - 1 + left)
        taps = torch.zeros(d_max - d_min + 1, cin, cout, dtype=torch.float64)  # by offset d - d_min
        for k in range(d.kernel_size):
            taps[k - pad_t - d_min] += wt[:, :, k]
        for j in range(c.kernel_size):
            for r in range(u):
                taps[r + left - j - d_min] += wr[:, :, j].T
        m_lo, m_hi = d_min // u, d_max // u
        weight = torch.zeros(u, cout, cin, m_hi - m_lo + 1, dtype=torch.float64)
        for p in range(u):
            for j in range(m_hi - m_lo + 1):
                off = p + (m_hi - j) * u
                if d_min <= off <= d_max:
                    weight[p, :, :, j] = taps[off - d_min].T
        bias = torch.zeros(cout, dtype=torch.float64)
        for b in (d.bias, c.bias):
            if b is not None:
                bias += b.double()
        dtype = d.effective_weight().dtype
        return cls(
            t_act, weight.reshape(u * cout, cin, -1).to(dtype), bias.repeat(u).to(dtype), u, m_lo, m_hi
        )

    def _interleave(self, y: Tensor) -> Tensor:
        """[B, u * cout, T] (phase-major channels) → [B, cout, T * u]."""
        b, _, t = y.shape
        return y.view(b, self.stride, -1, t).permute(0, 2, 3, 1).reshape(b, -1, t * self.stride)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x`` [B, cin, T] → [B, cout, T * u]; ``mask`` [B, 1, T] zeroes activated inputs past the end."""
        a = self.activation(x)
        if mask is not None:
            a = a * mask
        t = a.shape[-1]
        if self.m_lo == 0:  # causal: pad both sides, keep the first T outputs (as CausalConv1d does)
            y = self.conv1d(a, self.m_hi)[..., :t]
        else:
            y = self.conv1d(F.pad(a, (self.m_hi, -self.m_lo)))
        return self._interleave(y)

    def forward_stream(self, x: Tensor, cache: Cache) -> Tensor:
        """Causal only: upsample a chunk, keeping the last ``m_hi`` activated frames in ``cache``."""
        if self.m_lo != 0:
            raise RuntimeError("forward_stream needs a causal upsampler")
        a = self.activation(x)
        if self.m_hi:
            key = self._key()
            ctx = cache.get(key)
            if ctx is None:
                ctx = a.new_zeros(a.shape[0], a.shape[1], self.m_hi)
            a = torch.cat((ctx, a), dim=-1)
            cache[key] = a[..., -self.m_hi :]
        return self._interleave(self.conv1d(a))
