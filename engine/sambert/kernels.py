"""One PNCA decoder step as one compiled loop (numba): for steps over few rows; the duration predictor's loop.

A decoder step over 1-2 rows is a chain of ~150 tiny operations (51 matrix-vector products, 25 layer norms,
12 attentions over ~9 columns, copies): in PyTorch each costs a dispatch of 2-20 µs, and those dispatches
took more of the step than the products' 17.6 MB of weight reads (2026-12-05, 2-core Zen 4, 1 thread:
1.37-1.55 ms a step at 1 row, 1.8 at 2). Here the whole step (prenet, input projection, every layer, the
output projection) is one call of plain loops that LLVM vectorises: 0.53-0.57 ms at 1 row, 0.81 at 2, 1.79 at
4 (docs/performance.md, session 21).

Each row is computed alone, in a fixed order (no fast-math reassociation): a row's result does not depend on
which other rows share the step, so batched equals one by one bit for bit on this path.

The autoregressive duration predictor (prenet, two LSTM cells and a Linear per token) is compiled the same
way: the acoustic model's front 110 -> 98 ms for the 2-unit, 289-token line (1 thread).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from engine.jit import compiled
from engine.sambert.layers import LN_EPS

log = logging.getLogger("tts.acoustic")

KERNEL_ROWS = 8
"""Steps over at most this many rows run :meth:`DecoderKernel.step` (more: ``infer.decoder_step`` runs
PyTorch's batched products)."""

UNROLL_ROWS = 4
"""Products over at least this many rows add four weight rows per pass over the output (:func:`_product`).
Over fewer rows an unrolled pass is no faster than one weight row per pass (both bound by reading the
weights; 2 rows measured up to 5 % slower), except for :data:`NARROW_COLS`-wide products, which take the
local block of :func:`_product_narrow` there."""

NARROW_COLS = 128
"""Products exactly this many outputs wide (the decoder's ``d``: the attention output and the FFN's second
layer) over at most :data:`NARROW_ROWS` rows keep each row's outputs in a local block across every input
(:func:`_product_narrow`)."""

NARROW_ROWS = 3
"""Rows up to which a :data:`NARROW_COLS`-wide product takes the local block; from :data:`UNROLL_ROWS` rows
the four-weight-rows-per-pass loop is faster (it reads each weight once for every row)."""


@compiled
def _layer_norm(x: np.ndarray, out: np.ndarray) -> None:
    """``out[r] = (x[r] - mean) / sqrt(var + eps)`` per row (the affine is folded into the next product)."""
    rows, d = x.shape
    for r in range(rows):
        mean = 0.0
        for i in range(d):
            mean += x[r, i]
        mean /= d
        var = 0.0
        for i in range(d):
            t = x[r, i] - mean
            var += t * t
        inv = 1.0 / math.sqrt(var / d + LN_EPS)
        for i in range(d):
            out[r, i] = (x[r, i] - mean) * inv


@compiled
def _product_plain(a: np.ndarray, w: np.ndarray, out: np.ndarray, start: int) -> None:
    """``out += a[:, start:] @ w[start:]``, one weight row per pass over ``out``."""
    rows, k = a.shape
    m = w.shape[1]
    for i in range(start, k):
        for r in range(rows):
            ai = a[r, i]
            for j in range(m):
                out[r, j] += ai * w[i, j]


@compiled
def _product_narrow(a: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """``out += a @ w`` for ``w`` [in, :data:`NARROW_COLS`]: each row's outputs are copied into a local block,
    every input added into it, then copied back. The same additions in the same order as the plain loop (bit
    for bit), but LLVM keeps the block in registers across the inputs instead of loading and storing the
    output row once per input, which bounds the plain loop when the row is this short (Zen 4, 1 thread,
    1025 x 128: 11.6-15.3 -> 7.0-8.2 us at one row, 27.0 -> 22.7 us at three, slower from four)."""
    rows, k = a.shape
    acc = np.empty(NARROW_COLS, np.float32)
    for r in range(rows):
        for j in range(NARROW_COLS):
            acc[j] = out[r, j]
        for i in range(k):
            ai = a[r, i]
            for j in range(NARROW_COLS):
                acc[j] = acc[j] + ai * w[i, j]
        for j in range(NARROW_COLS):
            out[r, j] = acc[j]


@compiled
def _product(a: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """``out += a @ w`` for ``a`` [rows, in] and ``w`` [in, out]: every row reads each weight row in turn.

    From :data:`UNROLL_ROWS` rows on, four weight rows per pass over ``out``: each output still adds its
    products one at a time in input order (the roundings of one weight row per pass, bit for bit, so a row's
    result does not depend on its batch) but is loaded and stored a quarter as often, which bounds the plain
    loop once each weight is reused across rows (Zen 4, 1 thread, the full-size decoder step: 4 rows 1.20-1.35
    -> 1.06-1.23 ms, 8 rows 2.7-3.2 -> 2.0-2.5 ms; docs/performance.md, session 37)."""
    rows, k = a.shape
    m = w.shape[1]
    if m == NARROW_COLS and rows <= NARROW_ROWS:
        _product_narrow(a, w, out)
        return
    k4 = k - k % 4 if rows >= UNROLL_ROWS else 0
    for i in range(0, k4, 4):
        for r in range(rows):
            a0, a1, a2, a3 = a[r, i], a[r, i + 1], a[r, i + 2], a[r, i + 3]
            for j in range(m):
                s = (out[r, j] + a0 * w[i, j]) + a1 * w[i + 1, j]
                out[r, j] = (s + a2 * w[i + 2, j]) + a3 * w[i + 3, j]
    _product_plain(a, w, out, k4)


@compiled
def _affine(bias: np.ndarray, a: np.ndarray, w: np.ndarray, out: np.ndarray, relu: bool) -> None:
    """``out = bias + a @ w`` (then ``max(·, 0)`` with ``relu``)."""
    rows, m = out.shape
    for r in range(rows):
        for j in range(m):
            out[r, j] = 0.0
    _product(a, w, out)
    for r in range(rows):
        for j in range(m):
            v = out[r, j] + bias[j]
            out[r, j] = max(v, 0.0) if relu else v


@compiled
def _attend(
    qkv: np.ndarray,
    kv: np.ndarray,
    layer: int,
    col: int,
    band: int,
    mask: np.ndarray,
    has_mask: bool,
    nh: int,
    e: int,
    scale: float,
    out: np.ndarray,
) -> None:
    """Write each row's new key/value at column ``col + band``, then attend over ``[col, col + band]`` with
    all ``2 nh`` heads (the query is the first ``2 nh * e`` of ``qkv``); ``out`` [rows, 2 nh * e]."""
    rows = qkv.shape[0]
    new = col + band
    for r in range(rows):
        for h in range(nh):
            for t in range(e):
                kv[0, layer, r, h, new, t] = qkv[r, (2 * nh + h) * e + t]
                kv[1, layer, r, h, new, t] = qkv[r, (3 * nh + h) * e + t]
    p = np.empty(band + 1, np.float32)
    acc = np.empty(e, np.float32)
    for r in range(rows):
        for h in range(2 * nh):
            top = -np.inf
            for j in range(band + 1):
                s = np.float32(0.0)
                for t in range(e):
                    s += qkv[r, h * e + t] * kv[0, layer, r, h, col + j, t]
                s *= scale
                if has_mask:
                    s += mask[r, h, 0, j]
                p[j] = s
                top = max(top, s)
            total = np.float32(0.0)
            for j in range(band + 1):
                p[j] = np.exp(p[j] - top)
                total += p[j]
            acc[:] = 0.0
            for j in range(band + 1):
                pj = p[j]
                for t in range(e):
                    acc[t] += pj * kv[1, layer, r, h, col + j, t]
            for t in range(e):
                out[r, h * e + t] = acc[t] / total


@compiled
def _step(
    prev: np.ndarray,
    mem_rows: np.ndarray,
    kv: np.ndarray,
    col: int,
    band: int,
    mask: np.ndarray,
    has_mask: bool,
    pre_w: np.ndarray,
    pre_b: np.ndarray,
    w_c: np.ndarray,
    qkv_w: np.ndarray,
    qkv_b: np.ndarray,
    fc_w: np.ndarray,
    w1_w: np.ndarray,
    w1_b: np.ndarray,
    w2_w: np.ndarray,
    out_w: np.ndarray,
    out_b: np.ndarray,
    nh: int,
    e: int,
    scale: float,
    out: np.ndarray,
) -> None:
    rows, d = mem_rows.shape
    h = np.maximum(prev, np.float32(0.0))
    nxt = np.empty_like(h)
    for k in range(pre_w.shape[0]):
        _affine(pre_b[k], h, pre_w[k], nxt, True)
        h, nxt = nxt, h
    x = mem_rows.copy()
    _product(h, w_c, x)
    ln = np.empty((rows, d), np.float32)
    qkv = np.empty((rows, qkv_w.shape[2]), np.float32)
    att = np.empty((rows, 2 * nh * e), np.float32)
    hid = np.empty((rows, w1_w.shape[2]), np.float32)
    for layer in range(qkv_w.shape[0]):
        _layer_norm(x, ln)
        _affine(qkv_b[layer], ln, qkv_w[layer], qkv, False)
        _attend(qkv, kv, layer, col, band, mask, has_mask, nh, e, scale, att)
        _product(att, fc_w[layer], x)
        _layer_norm(x, ln)
        _affine(w1_b[layer], ln, w1_w[layer], hid, True)
        _product(hid, w2_w[layer], x)
    _layer_norm(x, ln)
    _affine(out_b, ln, out_w, out, False)


@compiled
def _lstm_cell(gates: np.ndarray, h: np.ndarray, c: np.ndarray) -> None:
    """PyTorch's LSTM cell update from its gate pre-activations ``[rows, 4H]`` (order i, f, g, o)."""
    rows, hidden = h.shape
    for r in range(rows):
        for j in range(hidden):
            i = 1.0 / (1.0 + math.exp(-gates[r, j]))
            f = 1.0 / (1.0 + math.exp(-gates[r, hidden + j]))
            g = math.tanh(gates[r, 2 * hidden + j])
            o = 1.0 / (1.0 + math.exp(-gates[r, 3 * hidden + j]))
            c[r, j] = f * c[r, j] + i * g
            h[r, j] = o * math.tanh(c[r, j])


@compiled
def _durations(
    cond_gates: np.ndarray,
    pre0_w: np.ndarray,
    pre0_b: np.ndarray,
    pre_w: np.ndarray,
    pre_b: np.ndarray,
    w_ih_prev: np.ndarray,
    w_hh: np.ndarray,
    w_ih_up: np.ndarray,
    b_up: np.ndarray,
    fc_w: np.ndarray,
    fc_b: float,
    out: np.ndarray,
) -> None:
    rows, steps, gate_width = cond_gates.shape
    layers, hidden = w_hh.shape[0], w_hh.shape[1]
    h = np.zeros((layers, rows, hidden), np.float32)
    c = np.zeros((layers, rows, hidden), np.float32)
    x = np.empty((rows, pre0_w.shape[0]), np.float32)
    y = np.empty_like(x)
    gates = np.empty((rows, gate_width), np.float32)
    prev = np.zeros(rows, np.float32)
    for t in range(steps):
        for r in range(rows):
            for j in range(x.shape[1]):
                x[r, j] = max(prev[r] * pre0_w[j] + pre0_b[j], 0.0)
        for k in range(pre_w.shape[0]):
            _affine(pre_b[k], x, pre_w[k], y, True)
            x, y = y, x
        gates[:, :] = cond_gates[:, t, :]
        _product(x, w_ih_prev, gates)
        _product(h[0], w_hh[0], gates)
        _lstm_cell(gates, h[0], c[0])
        for layer in range(1, layers):
            for r in range(rows):
                gates[r, :] = b_up[layer - 1]
            _product(h[layer - 1], w_ih_up[layer - 1], gates)
            _product(h[layer], w_hh[layer], gates)
            _lstm_cell(gates, h[layer], c[layer])
        for r in range(rows):
            v = fc_b
            for j in range(hidden):
                v += h[layers - 1, r, j] * fc_w[j]
            prev[r] = max(v, 0.0)
            out[r, t] = prev[r]


@dataclass(frozen=True)
class DurationKernel:
    """The autoregressive duration predictor (prenet of the previous output, LSTM layers, ReLU(fc)) compiled:
    ~200 µs of PyTorch calls per token become one loop. ``pre0_*``: the prenet's first layer (input width 1);
    ``pre_*`` its next layers stacked ``[k, P, P]``; ``w_ih_prev`` the first LSTM layer's input weights for
    the prenet's output ``[P, 4H]`` (its condition part runs for every token at once, outside, see
    :meth:`durations`); ``w_hh`` ``[layers, H, 4H]``; ``w_ih_up`` / ``b_up`` the upper layers' input weights
    ``[layers - 1, H, 4H]`` and summed biases; matrices ``[in, out]``."""

    pre0_w: np.ndarray
    pre0_b: np.ndarray
    pre_w: np.ndarray
    pre_b: np.ndarray
    w_ih_prev: np.ndarray
    w_hh: np.ndarray
    w_ih_up: np.ndarray
    b_up: np.ndarray
    fc_w: np.ndarray
    fc_b: float

    def durations(self, cond_gates: np.ndarray) -> np.ndarray:
        """``cond_gates`` [rows, tokens, 4H]: each token's condition times the first LSTM layer's input
        weights plus its two biases -> the predicted ``log(d + 1)`` [rows, tokens] (rows alone, ReLU'd)."""
        out = np.empty(cond_gates.shape[:2], np.float32)
        _durations(
            np.ascontiguousarray(cond_gates, np.float32), self.pre0_w, self.pre0_b, self.pre_w, self.pre_b,
            self.w_ih_prev, self.w_hh, self.w_ih_up, self.b_up, self.fc_w, self.fc_b, out,
        )  # fmt: skip
        return out

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) for these argument types."""
        self.durations(np.zeros((1, 1, self.w_hh.shape[2]), np.float32))


@dataclass(frozen=True)
class DecoderKernel:
    """The decoder's pre-arranged weights (``infer._DecoderWeights``: ``[in, out]`` float32) as numpy arrays,
    the prenet's middle layers and the per-layer matrices stacked ``[layers, in, out]``."""

    pre_w: np.ndarray
    pre_b: np.ndarray
    w_c: np.ndarray
    qkv_w: np.ndarray
    qkv_b: np.ndarray
    fc_w: np.ndarray
    w1_w: np.ndarray
    w1_b: np.ndarray
    w2_w: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    nh: int
    e: int
    scale: float

    def step(
        self,
        prev: np.ndarray,
        mem_rows: np.ndarray,
        kv: np.ndarray,
        col: int,
        band: int,
        mask: np.ndarray | None,
        out: np.ndarray,
    ) -> None:
        """One step for rows ``[0, n)``: ``prev`` [n, P] the prenet's first layer before its ReLU,
        ``mem_rows`` [n, d] the memory's input projection at each row's step, ``kv`` the K/V buffer ``[2,
        layers, slots, 2 nh, columns, e]`` (heads < nh: self cache, written at column ``col + band``; heads
        ≥ nh: memory),
        ``mask`` additive ``[n, 2 nh, 1, band + 1]`` or None; writes ``out`` [n, r·mels + P]."""
        _step(
            np.ascontiguousarray(prev, np.float32),
            np.ascontiguousarray(mem_rows, np.float32),
            kv,
            col,
            band,
            _NO_MASK if mask is None else mask,
            mask is not None,
            self.pre_w,
            self.pre_b,
            self.w_c,
            self.qkv_w,
            self.qkv_b,
            self.fc_w,
            self.w1_w,
            self.w1_b,
            self.w2_w,
            self.out_w,
            self.out_b,
            self.nh,
            self.e,
            self.scale,
            out,
        )

    def warm_up(self) -> None:
        """Compile (or load from numba's cache) the step for these argument types, on a dummy one-row step."""
        start = time.perf_counter()
        d, layers = self.w_c.shape[1], self.qkv_w.shape[0]
        kv = np.zeros((2, layers, 1, 2 * self.nh, 2, self.e), np.float32)
        prev = np.zeros((1, self.w_c.shape[0]), np.float32)
        out = np.empty((1, self.out_w.shape[1]), np.float32)
        mask = np.zeros((1, 2 * self.nh, 1, 2), np.float32)
        for m in (None, mask):
            self.step(prev, np.zeros((1, d), np.float32), kv, 0, 1, m, out)
        log.debug("decoder step kernel ready in %.2f s", time.perf_counter() - start)


_NO_MASK = np.zeros((1, 1, 1, 1), np.float32)
