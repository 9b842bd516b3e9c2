"""The bf16 residual units' elementwise work as compiled loops (numba): one pass where PyTorch takes three.

A bf16 residual unit of :class:`~engine.hifigan.onednn.OnednnStream` ends with the float32 residual sum
``h + conv2(...)`` (the convolution's output is bf16: oneDNN's bf16 kernels add only bf16 tensors, and the sum
stays float32 for the quality gate) and the next unit starts with ``bf16(leaky_relu(h))`` in its input
buffer. In PyTorch that is an allocating add, a float32 leaky ReLU and a conversion: three passes over the
stage's largest buffer. :func:`add_then_leaky` does both in one pass with the same roundings, bit for bit
(float32 add, float32 multiply by the float32 slope, round to nearest even into bf16, as ``Tensor.to``).

Imported only by bf16 vocoders, so the default float32 vocoder replicas do not load numba (~40 MB).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import types
from numba.extending import intrinsic
from torch import Tensor

from ..jit import compiled

BF16_NAN = 0x7FC0
"""The bf16 NaN PyTorch's conversion writes for every float32 NaN."""


@intrinsic
def _bits(typingctx, value):  # type: ignore[no-untyped-def]  # numba's intrinsic protocol
    """The bits of a float32 (LLVM bitcast: vectorises)."""
    if value != types.float32:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], context.get_value_type(types.uint32))

    return types.uint32(types.float32), codegen


@intrinsic
def _float(typingctx, bits):  # type: ignore[no-untyped-def]
    """The float32 with these bits."""
    if bits != types.uint32:
        return None

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], context.get_value_type(types.float32))

    return types.float32(types.uint32), codegen


@numba.njit(inline="always")
def _from_bf16(bits: np.uint16) -> np.float32:
    return _float(numba.uint32(numba.uint32(bits) << 16))


@numba.njit(inline="always")
def _leaky_bf16(value: np.float32, slope: np.float32) -> np.uint16:
    """``bf16(leaky_relu(value, slope))``: round to nearest even, as PyTorch's float32 → bf16 conversion."""
    a = value if value > numba.float32(0) else value * slope
    if a != a:
        return numba.uint16(BF16_NAN)
    u = _bits(a)
    return numba.uint16(numba.uint32(u + 0x7FFF + ((u >> 16) & 1)) >> 16)


@compiled
def _leaky(x: np.ndarray, out: np.ndarray, slope: np.float32) -> None:
    rows, n = x.shape
    for r in range(rows):
        for i in range(n):
            out[r, i] = _leaky_bf16(x[r, i], slope)


@compiled
def _add_then_leaky(
    h: np.ndarray, y: np.ndarray, total: np.ndarray, out: np.ndarray, slope: np.float32
) -> None:
    rows, n = h.shape
    for r in range(rows):
        for i in range(n):
            v = h[r, i] + _from_bf16(y[r, i])
            total[r, i] = v
            out[r, i] = _leaky_bf16(v, slope)


@compiled
def _add_then_leaky_in_place(h: np.ndarray, y: np.ndarray, out: np.ndarray, slope: np.float32) -> None:
    rows, n = h.shape
    for r in range(rows):
        for i in range(n):
            v = h[r, i] + _from_bf16(y[r, i])
            h[r, i] = v
            out[r, i] = _leaky_bf16(v, slope)


@compiled
def _add(h: np.ndarray, y: np.ndarray, total: np.ndarray, accumulate: bool) -> None:
    rows, n = h.shape
    for r in range(rows):
        for i in range(n):
            v = h[r, i] + _from_bf16(y[r, i])
            total[r, i] = total[r, i] + v if accumulate else v


@compiled
def _add_in_place(h: np.ndarray, y: np.ndarray) -> None:
    rows, n = h.shape
    for r in range(rows):
        for i in range(n):
            h[r, i] = h[r, i] + _from_bf16(y[r, i])


def as_rows(t: Tensor) -> np.ndarray:
    """A [B, C, 1, T] tensor stored as [B, T, C] (channels-last) as a numpy view [B, T * C] of its memory
    (bf16 as its uint16 bits). Raises when the tensor is not laid out so (``Tensor.view``)."""
    flat = t.permute(0, 2, 3, 1).view(t.shape[0], -1)
    if flat.dtype == torch.bfloat16:
        return flat.view(torch.int16).numpy().view(np.uint16)
    return flat.numpy()


def leaky(x: Tensor, out: Tensor, slope: float) -> None:
    """``out[:] = bf16(leaky_relu(x, slope))``; ``x`` float32, ``out`` bf16, both channels-last."""
    _leaky(as_rows(x), as_rows(out), np.float32(slope))


def add_then_leaky(h: Tensor, y: Tensor, total: Tensor, out: Tensor, slope: float) -> None:
    """``total[:] = h + y`` (float32; ``total`` may be ``h``) and ``out[:] = bf16(leaky_relu(total, slope))``;
    ``y`` and ``out`` bf16."""
    if total is h:  # its own loop: LLVM vectorises a loop only when it can rule out overlaps at run time
        _add_then_leaky_in_place(as_rows(h), as_rows(y), as_rows(out), np.float32(slope))
    else:
        _add_then_leaky(as_rows(h), as_rows(y), as_rows(total), as_rows(out), np.float32(slope))


def add(h: Tensor, y: Tensor, total: Tensor, accumulate: bool = False) -> None:
    """``total[:] = h + y`` (``total`` may be ``h``), or with ``accumulate`` ``total[:] += h + y`` (the sum
    rounded first, as ``total.add_(h + y)``); ``y`` bf16, the others float32."""
    if total is h and not accumulate:
        _add_in_place(as_rows(h), as_rows(y))
    else:
        _add(as_rows(h), as_rows(y), as_rows(total), accumulate)
