"""Causal generator chunks straight on oneDNN: prepacked weights, channels-last activations, fused post-ops.

The same arithmetic as :meth:`Generator.forward_stream` of a fused (:meth:`Generator.fuse_upsampling`) model,
with what plain ``F.conv1d`` pays on every call removed: the weight reorder into oneDNN's blocked layout (done
once here), the activation reorders in and out of that layout (activations stay [B, T, C] in memory, which the
brgconv kernels read directly), and separate passes for the activation after the dilated convolution and the
residual add (fused into the convolution as post-ops), and in float32 the copy of each residual unit's middle
activation behind its context (:meth:`_Conv.add_to` reads it where it lies and adds into the sum in place;
1-3 % of the vocoder, bit-identical). The streaming cache has the same keys and logical
shapes ([B, C, context], float32) as the PyTorch path, so states move between the two.

Residual blocks of ``bf16_stages`` run bf16 kernels: bf16 input buffers and prepacked bf16 weights, float32
accumulation, bias and fused activation inside oneDNN, bf16 outputs; the residual sums stay float32 (each
sum with the next unit's activation and bf16 rounding one compiled pass, :mod:`.bf16`). That is
the arithmetic of the torch path's ``_Bf16Conv1d`` (which rounds explicitly), so the quality gate's verdict on
the torch path holds here. On this module's shapes the bf16 kernels run ~2x the fp32 ones on AVX512-BF16.

Uses ``torch.ops.mkldnn`` convolution ops (what inductor emits for CPU convolutions); :func:`available` says
whether this torch build has them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..steps import Steps, finish
from .generator import Generator
from .layers import Cache, CausalConv1d, FusedUpsample, ResidualBlock

_MKLDNN = torch.ops.mkldnn


def available() -> bool:
    """True when torch has oneDNN and the pointwise convolution ops this module uses."""
    if not torch.backends.mkldnn.is_available():
        return False
    return all(hasattr(_MKLDNN, op) for op in ("_convolution_pointwise", "_reorder_convolution_weight"))


def _slope(act: nn.Module) -> float:
    if isinstance(act, nn.LeakyReLU):
        return float(act.negative_slope)
    if isinstance(act, nn.ReLU):
        return 0.0
    raise ValueError(f"the oneDNN backend supports LeakyReLU/ReLU activations, not {act}")


def _nwc(batch: int, channels: int, length: int, dtype: torch.dtype) -> Tensor:
    """An uninitialised [B, C, 1, T] tensor laid out as [B, T, C] (channels-last)."""
    return torch.empty(batch, length, channels, dtype=dtype).transpose(1, 2).unsqueeze(2)


MAX_PACKS = 16
"""Call shapes (threads, batch, input width) a weight keeps a prepacked copy for; the least recently used
goes (shapes whose kernels want the same layout share one copy)."""
_DESC_PADDING = slice(108, 112)
"""Bytes of a serialised oneDNN memory descriptor (the raw ``dnnl_memory_desc_t`` of this torch's oneDNN:
version, ndims, dims[12], data_type) that are struct padding, left uninitialised: not part of the layout."""


def _layout(packed: Tensor) -> bytes | None:
    """The blocked layout of a prepacked weight as comparable bytes (its oneDNN memory descriptor), or None
    when this torch cannot tell. Two packs of one weight with the same layout hold the same bytes."""
    describe = getattr(_MKLDNN, "_get_mkldnn_serialized_md", None)
    if describe is None:
        return None
    blob = bytearray(describe(packed).numpy().tobytes())
    blob[_DESC_PADDING] = bytes(_DESC_PADDING.stop - _DESC_PADDING.start)
    return bytes(blob)


SMALL_BUCKETS = (8, 16, 32, 48, 64)
"""Frame buckets up to 64 frames: powers of two and 48, so a mel's last piece of 33-48 frames, zero-padded to
its bucket, is not run as 64 (a 40-frame unit such as "好的。": 1.6x its frames). Each bucket costs ~100
oneDNN primitives held in memory (~16 MB a vocoder replica): 24 as well would save ~4x less and cost as much.
Above 64 frames, powers of two."""


def frame_bucket(frames: int) -> int:
    """The chunk length a weight is prepacked for (and a final piece padded to): the first of
    :data:`SMALL_BUCKETS` that holds ``frames``, above those the next power of two."""
    small = next((b for b in SMALL_BUCKETS if b >= frames), None)
    return small if small is not None else 1 << (frames - 1).bit_length()


class _Conv:
    """One causal convolution: weights prepacked per call shape, left context kept under ``key`` in the cache.

    oneDNN picks a convolution kernel, and with it the weight layout, from the thread count, the batch and
    the width. A weight prepacked for another shape is reordered on every call: on AVX2 CPUs the block size
    changes with all three (8, 16 or 24 output channels), and those reorders cost more than the convolutions
    (1 thread, an 8-frame chunk: 125 -> 39 ms). So each call shape ``(threads, batch, input width)`` gets a
    prepacked copy, made on first use under the calling thread count, shared with the shapes whose kernels
    want the same layout (on AVX-512 the layout follows the channels only: one copy for every width).
    ``dtype`` is the input buffers', weights' and outputs' type (float32 or bfloat16); the bias and the cached
    context stay float32.
    """

    def __init__(
        self,
        key: str,
        weight: Tensor,
        bias: Tensor | None,
        dilation: int,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.key = key
        self.cout, self.cin, k = weight.shape
        self.dilation = dilation
        self.pad = (k - 1) * dilation
        self.dtype = dtype
        self._weight = weight.detach().to(dtype).unsqueeze(2).contiguous()
        self._packs: OrderedDict[tuple[int, int, int], Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.bias = bias

    def packed(self, batch: int, width: int) -> Tensor:
        """The weight prepacked for ``batch`` rows of inputs ``width`` samples wide (context included) on this
        thread count. Keyed by the width itself, not the chunk's bucket: on AVX2 two widths of one bucket can
        want different layouts (1 thread, batch 3: 40 frames ``Acdb24a``, 48 frames ``Acdb16a``)."""
        shape = (torch.get_num_threads(), batch, width)
        with self._lock:  # threads may share a vocoder
            weight = self._packs.get(shape)
            if weight is not None:
                self._packs.move_to_end(shape)
                return weight
        weight = _MKLDNN._reorder_convolution_weight(
            self._weight,
            [0, 0],
            [1, 1],
            [1, self.dilation],
            1,
            [batch, self.cin, 1, width],
        )
        layout = _layout(weight)
        with self._lock:
            # the kernel for another shape may want the same layout (AVX-512: every width, ~17 MB a copy of
            # the released vocoder's weights): keep one copy
            same = (w for w in self._packs.values() if layout is not None and _layout(w) == layout)
            weight = self._packs[shape] = next(same, weight)
            while len(self._packs) > MAX_PACKS:
                self._packs.popitem(last=False)
        return weight

    def input(self, cache: Cache, batch: int, length: int) -> tuple[Tensor, Tensor]:
        """The [ctx | new] input buffer with the context filled in, and its unfilled view for new samples."""
        buf = _nwc(batch, self.cin, self.pad + length, self.dtype)
        if self.pad:
            ctx = cache.get(self.key)
            if ctx is None:
                buf[..., : self.pad].zero_()
            else:
                buf[..., : self.pad].copy_(ctx.unsqueeze(2))
        return buf, buf[..., self.pad :]

    def keep(self, buf: Tensor, cache: Cache) -> None:
        if self.pad:
            cache[self.key] = buf[..., -self.pad :].squeeze(2).to(torch.float32, copy=True)

    def __call__(
        self,
        buf: Tensor,
        cache: Cache,
        slope: float | None = None,
        post: str = "none",
        add: Tensor | None = None,
    ) -> Tensor:
        """Convolve a filled buffer (keeping its tail as the next context) with an optional fused post-op."""
        self.keep(buf, cache)
        weight = self.packed(buf.shape[0], buf.shape[-1])
        d = [1, self.dilation]
        if add is not None:
            return _MKLDNN._convolution_pointwise.binary(
                buf, add, weight, self.bias, [0, 0], [1, 1], d, 1, "add", 1.0, None, [], None
            )
        if slope is not None:
            return _MKLDNN._convolution_pointwise(
                buf, weight, self.bias, [0, 0], [1, 1], d, 1, "leaky_relu", [slope], ""
            )
        return _MKLDNN._convolution_pointwise(buf, weight, self.bias, [0, 0], [1, 1], d, 1, post, [], "")

    def add_to(self, h: Tensor, y: Tensor, cache: Cache) -> Tensor:
        """``h += conv([context | y])`` in place (float32), keeping ``y``'s tail as the next context.

        The outputs from ``pad`` on read ``y`` where it lies, so ``y`` is not copied behind its context (a
        pass over the stage's largest buffer per residual unit); the first ``pad`` read a small buffer of
        the context and ``y[:pad]``, with weights prepacked for that width. The same kernels as
        :meth:`__call__` with ``add``: bit-identical. ``y`` must be wider than ``pad``.
        """
        b, pad = y.shape[0], self.pad
        if pad:
            small, new = self.input(cache, b, pad)
            new.copy_(y[..., :pad])
            self.keep(y, cache)
            self._add_into(h[..., :pad], small, self.packed(b, 2 * pad))
        # the rest reads y alone: outputs narrower by pad than a call's, which on AVX2 can want another
        # layout (an 8-frame chunk's first stage), so packed for that width
        self._add_into(h[..., pad:], y, self.packed(b, y.shape[-1]))
        return h

    def _add_into(self, out: Tensor, buf: Tensor, weight: Tensor) -> None:
        """``out += conv(buf)`` (oneDNN's in-place binary add post-op; ``out`` may be a view)."""
        d = [1, self.dilation]
        _MKLDNN._convolution_pointwise_.binary(
            out, buf, weight, self.bias, [0, 0], [1, 1], d, 1, "add", 1.0, None, [], None
        )


def _conv(layer: CausalConv1d, dtype: torch.dtype = torch.float32) -> _Conv:
    c = layer.conv1d
    return _Conv(layer._key(), c.effective_weight(), c.bias, c.dilation, dtype)


class _Stage(NamedTuple):
    """One upsampling stage: the fused upsampler, its convolution and slope, then per residual block its
    (conv1, conv2, slope) units; ``bf16``: the blocks' convolutions run bf16 kernels."""

    up: FusedUpsample
    up_conv: _Conv
    slope: float
    blocks: list[list[tuple[_Conv, _Conv, float]]]
    bf16: bool


class OnednnStream:
    """``(mel chunk [B, n_mels, T], cache) → audio [B, 1, T * hop]`` for a causal, folded, fused generator."""

    def __init__(self, model: Generator, bf16_stages: Sequence[int] = ()) -> None:
        if not model.causal or model.upsamples is None:
            raise ValueError("the oneDNN backend runs causal generators after fuse_upsampling()")
        self.pre = _conv(model.conv_pre)
        self.stages: list[_Stage] = []
        for i, up in enumerate(model.upsamples):
            up_conv = _Conv(up._key(), up.conv1d.weight, up.conv1d.bias, 1)
            blocks = model.conv_blocks[i * model.num_kernels : (i + 1) * model.num_kernels]
            bf16 = i in bf16_stages
            units = [self._block(b, torch.bfloat16 if bf16 else torch.float32) for b in blocks]
            self.stages.append(_Stage(up, up_conv, _slope(up.activation), units, bf16))
        self.post = _conv(model.conv_post)
        self.num_kernels = model.num_kernels

    @staticmethod
    def _block(block: ResidualBlock, dtype: torch.dtype) -> list[tuple[_Conv, _Conv, float]]:
        slope = _slope(block.activation)
        return [
            (_conv(c1, dtype), _conv(c2, dtype), slope)
            for c1, c2 in zip(block.convs1, block.convs2, strict=True)
        ]

    def warm(self, batch: int, buckets: Sequence[int]) -> None:
        """Prepack every weight for chunks of these frame buckets on this thread count and run one silent
        chunk of each (oneDNN builds its kernels on first use), so no request pays for either (~50-120 ms a
        bucket on 1 thread). Only the buckets calls will use: a kernel for a wide chunk holds memory in
        proportion to its width (~0.23 MB a frame for the released vocoder)."""
        with torch.inference_mode():
            for bucket in buckets:
                self(torch.zeros(batch, self.pre.cin, bucket), {})

    def __call__(self, mel: Tensor, cache: Cache) -> Tensor:
        return finish(self.steps(mel, cache))

    def steps(self, mel: Tensor, cache: Cache) -> Steps[Tensor]:
        """:meth:`__call__` as steps: it may pause after each residual block (a few ms of work each), so a
        more urgent chunk can run in between; the calls share no buffers, only their own ``cache``.

        The residual blocks of ``bf16_stages`` run bf16 kernels (module docstring); every sum, the cache and
        the output stay float32."""
        b, _, t = mel.shape
        buf, new = self.pre.input(cache, b, t)
        new.copy_(mel.unsqueeze(2))
        x = self.pre(buf, cache)
        for up, up_conv, slope, blocks, bf16 in self.stages:
            x = torch.sin(x).add_(x)
            buf, new = up_conv.input(cache, b, t)
            torch.ops.aten.leaky_relu.out(x, slope, out=new)
            y = up_conv(buf, cache)  # [B, u * cout, 1, T] as [B, T, u, cout] in memory
            t *= up.stride
            x = y.permute(0, 2, 3, 1).reshape(b, 1, t, -1).permute(0, 3, 1, 2)
            acc: Tensor | None = None
            for block in blocks:
                if bf16:
                    acc = self._bf16_block(block, x, acc, cache)
                    yield
                    continue
                h = x
                for c1, c2, s in block:
                    buf, new = c1.input(cache, b, t)
                    torch.ops.aten.leaky_relu.out(h, s, out=new)
                    y = c1(buf, cache, slope=s)
                    if h is not x and t > c2.pad:  # added into h (x is the blocks' input)
                        h = c2.add_to(h, y, cache)
                        continue
                    buf, new = c2.input(cache, b, t)
                    new.copy_(y)
                    h = c2(buf, cache, add=h)  # the residual add fused
                acc = (h.clone() if h is x else h) if acc is None else acc.add_(h)
                yield
            assert acc is not None
            x = acc.div_(self.num_kernels)
        buf, new = self.post.input(cache, b, t)
        torch.ops.aten.leaky_relu.out(x, 0.01, out=new)  # F.leaky_relu's default slope, as in KAN-TTS
        return self.post(buf, cache, post="tanh").squeeze(2).contiguous()

    @staticmethod
    def _bf16_block(
        block: list[tuple[_Conv, _Conv, float]], x: Tensor, acc: Tensor | None, cache: Cache
    ) -> Tensor:
        """``acc + block(x)`` (``acc`` None: ``block(x)`` in a new tensor) in bf16 kernels. Each unit's input
        is rounded to bf16 once, after the activation, and its residual sum stays float32 (as the torch
        path); the sum, the next unit's activation and rounding are one compiled pass (:mod:`.bf16`)."""
        from . import bf16  # numba: loaded by bf16 vocoders only

        b, t = x.shape[0], x.shape[-1]
        c1, _, s = block[0]
        buf, new = c1.input(cache, b, t)
        bf16.leaky(x, new, s)
        h = x
        for i, (c1, c2, s) in enumerate(block):
            y = c1(buf, cache, slope=s)
            buf2, new2 = c2.input(cache, b, t)
            new2.copy_(y)
            y = c2(buf2, cache)  # bf16: oneDNN adds only a bf16 tensor, so the float32 sum is ours
            if acc is not None and i + 1 == len(block):
                bf16.add(h, y, acc, accumulate=True)
                break
            total = torch.empty_like(x) if h is x else h  # x is every block's input: not written
            if i + 1 == len(block):
                bf16.add(h, y, total, accumulate=False)
                acc = total
                break
            next_c1, _, next_s = block[i + 1]
            buf, new = next_c1.input(cache, b, t)
            bf16.add_then_leaky(h, y, total, new, next_s)
            h = total
        assert acc is not None
        return acc
