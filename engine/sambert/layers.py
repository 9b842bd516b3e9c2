"""SAmBERT building blocks (spec §2.2). Module and parameter names equal the released checkpoint's keys.

Every ``forward`` here is the plain, readable version of the computation (batch-first, masks ``True`` at
padding). The fast inference path in :mod:`engine.sambert.infer` reuses these modules' weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LN_EPS = 1e-6


def sinusoid_table(length: int, channels: int) -> Tensor:
    """[length, channels] float32 table; position p = 1..length, first half sin, second half cos.

    Computed in float64 (as the reference does) so tables rebuilt for inputs past ``max_len`` agree with it.
    """
    half = channels // 2
    position = torch.arange(1, length + 1, dtype=torch.float64)
    increment = math.log(10000.0) / max(half - 1, 1)
    inv_timescales = torch.exp(torch.arange(half, dtype=torch.float64) * -increment)
    scaled = position[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1).to(torch.float32)


def masked(x: Tensor, mask: Tensor | None) -> Tensor:
    """Zero the time steps where ``mask`` ([B, T], True = padding) is set; ``x`` is [B, T, C]."""
    return x if mask is None else x.masked_fill(mask.unsqueeze(-1), 0.0)


class SinusoidalPositionEncoder(nn.Module):
    def __init__(self, max_len: int, depth: int) -> None:
        super().__init__()
        self.max_len, self.depth = max_len, depth
        table = sinusoid_table(max_len, depth).unsqueeze(0)
        self.position_enc = nn.Parameter(table, requires_grad=False)

    def table(self, length: int) -> Tensor:
        if length <= self.max_len:
            return self.position_enc[:, :length]
        return sinusoid_table(length, self.depth).unsqueeze(0).to(self.position_enc)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table(x.size(1))


class DurSinusoidalPositionEncoder(nn.Module):
    """Position of each frame inside its phone (1-based; padding 0), even channels sin, odd cos."""

    def __init__(self, depth: int, outputs_per_step: int) -> None:
        super().__init__()
        self.depth, self.outputs_per_step = depth, outputs_per_step
        timescales = torch.tensor(
            [10000.0 ** (2 * (c // 2) / depth) for c in range(depth)], dtype=torch.float32
        )
        self.inv_timescales = nn.Parameter(timescales, requires_grad=False)

    def encode(self, positions: Tensor) -> Tensor:
        """``positions`` [B, L] (float) -> [B, L, depth]."""
        angle = positions[:, :, None] / self.inv_timescales[None, None, :]
        out = torch.empty_like(angle)
        out[:, :, 0::2] = torch.sin(angle[:, :, 0::2])
        out[:, :, 1::2] = torch.cos(angle[:, :, 1::2])
        return out


class ScaledDotProductAttention(nn.Module):
    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """``softmax(q kᵀ / temperature, masked) v``; ``mask`` True where a key is padding. One fused call
        (PyTorch's CPU flash attention): the scores are never materialised, unlike the reference's
        matmul / divide / masked_fill / softmax / matmul (the text encoder's attention 2-3x faster)."""
        keep = None if mask is None else ~mask
        return F.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=1.0 / self.temperature)


class MultiHeadSelfAttention(nn.Module):
    """Pre-LN MHA; the residual is added only when input and output widths match."""

    def __init__(self, n_head: int, d_in: int, d_model: int, d_head: int) -> None:
        super().__init__()
        self.n_head, self.d_head = n_head, d_head
        self.layer_norm = nn.LayerNorm(d_in, eps=LN_EPS)
        self.w_qkv = nn.Linear(d_in, 3 * n_head * d_head)
        self.fc = nn.Linear(n_head * d_head, d_model)
        self.attention = ScaledDotProductAttention(d_head**0.5)

    def forward(self, x: Tensor, key_mask: Tensor | None = None) -> Tensor:
        b, t, _ = x.shape
        q, k, v = self.w_qkv(self.layer_norm(x)).chunk(3, dim=-1)
        q, k, v = (z.view(b, t, self.n_head, self.d_head).transpose(1, 2) for z in (q, k, v))
        mask = None if key_mask is None else key_mask[:, None, None, :]
        out = self.attention(q, k, v, mask).transpose(1, 2).reshape(b, t, -1)
        out = self.fc(out)
        return out + x if out.size(-1) == x.size(-1) else out


class PositionwiseConvFeedForward(nn.Module):
    """x + w_2(relu(w_1(LN(x)))) with 1-D convolutions over time."""

    def __init__(self, d_in: int, d_hid: int, kernel_size: tuple[int, int] = (3, 1)) -> None:
        super().__init__()
        self.w_1 = nn.Conv1d(d_in, d_hid, kernel_size[0], padding=(kernel_size[0] - 1) // 2)
        self.w_2 = nn.Conv1d(d_hid, d_in, kernel_size[1], padding=(kernel_size[1] - 1) // 2)
        self.layer_norm = nn.LayerNorm(d_in, eps=LN_EPS)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        # Padding positions are zeroed before the k=3 conv so batched == one-by-one.
        y = masked(self.layer_norm(x), mask).transpose(1, 2)
        y = self.w_2(F.relu(self.w_1(y)))
        return x + y.transpose(1, 2)


class FFTBlock(nn.Module):
    def __init__(
        self, d_in: int, d_model: int, n_head: int, d_inner: int, kernel_size: tuple[int, int]
    ) -> None:
        super().__init__()
        self.slf_attn = MultiHeadSelfAttention(n_head, d_in, d_model, d_model // n_head)
        self.pos_ffn = PositionwiseConvFeedForward(d_model, d_inner, kernel_size)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = masked(self.slf_attn(x, mask), mask)
        return masked(self.pos_ffn(x, mask), mask)


class SelfAttentionEncoder(nn.Module):
    def __init__(
        self, n_layer: int, d_in: int, d_model: int, n_head: int, d_inner: int, max_len: int
    ) -> None:
        super().__init__()
        self.d_model = d_model
        self.fft = nn.ModuleList(
            FFTBlock(d_in if i == 0 else d_model, d_model, n_head, d_inner, (3, 1)) for i in range(n_layer)
        )
        self.ln = nn.LayerNorm(d_model, eps=LN_EPS)
        self.position_enc = SinusoidalPositionEncoder(max_len, d_in)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = self.position_enc(x * self.d_model**0.5)
        for layer in self.fft:
            x = layer(x, mask)
        return self.ln(x)


class TextFftEncoder(nn.Module):
    def __init__(self, p: dict) -> None:
        super().__init__()
        emb = p["embedding_dim"]
        self.sy_emb = nn.Embedding(p["sy"], emb)
        self.tone_emb = nn.Embedding(p["tone"], emb)
        self.syllable_flag_emb = nn.Embedding(p["syllable_flag"], emb)
        self.ws_emb = nn.Embedding(p["word_segment"], emb)
        self.ling_enc = SelfAttentionEncoder(
            p["encoder_num_layers"],
            emb,
            p["encoder_num_units"],
            p["encoder_num_heads"],
            p["encoder_ffn_inner_dim"],
            p.get("max_len", 800),
        )
        self.ling_proj = nn.Linear(p["encoder_num_units"], p["encoder_projection_units"], bias=False)

    def embed(self, ling: Tensor) -> Tensor:
        return (
            self.sy_emb(ling[..., 0])
            + self.tone_emb(ling[..., 1])
            + self.syllable_flag_emb(ling[..., 2])
            + self.ws_emb(ling[..., 3])
        )

    def forward(self, ling: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.ling_proj(self.ling_enc(self.embed(ling), mask))


class FeedForwardNet(nn.Module):
    def __init__(self, d_in: int, d_hid: int, d_out: int) -> None:
        super().__init__()
        self.w_1 = nn.Conv1d(d_in, d_hid, 1)
        self.w_2 = nn.Conv1d(d_hid, d_out, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        # kernel-1 convolutions as matrix products on [B, T, C]: no transposes, and no slow im2col path
        # (PyTorch runs 1x1 convolutions on one thread through its native conv2d, ~70 us for 9 frames)
        h = F.relu(F.linear(x, self.w_1.weight[..., 0], self.w_1.bias))
        return F.linear(h, self.w_2.weight[..., 0])


class MemoryBlockV2(nn.Module):
    """Depthwise FIR over time (left pad (k-1)/2 + shift, right pad (k-1)/2 - shift) plus the input."""

    def __init__(self, d: int, filter_size: int, shift: int) -> None:
        super().__init__()
        self.left_padding = round((filter_size - 1) / 2) + max(shift, 0)
        self.right_padding = int((filter_size - 1) / 2) - max(shift, 0)
        self.conv_dw = nn.Conv1d(d, d, filter_size, groups=d, bias=False)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = masked(x, mask)
        y = F.pad(x.transpose(1, 2), (self.left_padding, self.right_padding))
        return masked(self.conv_dw(y).transpose(1, 2) + x, mask)


class FsmnEncoderV2(nn.Module):
    def __init__(
        self, filter_size: int, num_layers: int, d_in: int, d_mem: int, d_ffn: int, shift: int
    ) -> None:
        super().__init__()
        self.ffn_lst = nn.ModuleList(
            FeedForwardNet(d_in if i == 0 else d_mem, d_ffn, d_mem) for i in range(num_layers)
        )
        self.memory_block_lst = nn.ModuleList(
            MemoryBlockV2(d_mem, filter_size, shift) for _ in range(num_layers)
        )

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        for ffn, memory_block in zip(self.ffn_lst, self.memory_block_lst, strict=True):
            mem = memory_block(ffn(x), mask)
            x = mem + x if mem.size(-1) == x.size(-1) else mem
        return x


class VarFsmnRnnNARPredictor(nn.Module):
    """Pitch / energy predictor: FSMN, BiLSTM, fc -> [B, T] (normalised units)."""

    def __init__(self, d_in: int, p: dict) -> None:
        super().__init__()
        self.fsmn = FsmnEncoderV2(
            p["predictor_filter_size"],
            p["predictor_fsmn_num_layers"],
            d_in,
            p["predictor_num_memory_units"],
            p["predictor_ffn_inner_dim"],
            p.get("predictor_shift", 0),
        )
        units = p["predictor_lstm_units"]
        self.blstm = nn.LSTM(p["predictor_num_memory_units"], units, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * units, 1)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        h = self.fsmn(x, mask)
        if mask is None:
            out, _ = self.blstm(h)
        else:
            lengths = (~mask).sum(1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
            out, _ = self.blstm(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.size(1))
        return masked(self.fc(out), mask).squeeze(-1)


class Prenet(nn.Module):
    """Linear+ReLU+Dropout per unit, then an optional final Linear (``fcs`` indices match the checkpoint)."""

    def __init__(self, d_in: int, units: list[int], d_out: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for u in units:
            layers += [nn.Linear(d_in, u), nn.ReLU(), nn.Dropout(0.5)]
            d_in = u
        if d_out:
            layers.append(nn.Linear(d_in, d_out))
        self.fcs = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.fcs(x)


class VarRnnARPredictor(nn.Module):
    """Autoregressive duration predictor: prenet(prev) ++ cond -> 2-layer LSTM -> relu(fc) = log(d+1)."""

    def __init__(self, d_cond: int, prenet_units: list[int], lstm_units: int) -> None:
        super().__init__()
        self.prenet = Prenet(1, prenet_units)
        self.lstm = nn.LSTM(prenet_units[-1] + d_cond, lstm_units, num_layers=2, batch_first=True)
        self.fc = nn.Linear(lstm_units, 1)

    def infer(self, cond: Tensor, mask: Tensor | None = None) -> Tensor:
        b, t, _ = cond.shape
        prev = cond.new_zeros(b, 1)
        state = None
        outs = []
        for i in range(t):
            h = torch.cat([self.prenet(prev), cond[:, i]], dim=-1).unsqueeze(1)
            o, state = self.lstm(h, state)
            prev = F.relu(self.fc(o.squeeze(1)))
            outs.append(prev)
        log_dur = torch.cat(outs, dim=1) if outs else cond.new_zeros(b, 0)
        return log_dur if mask is None else log_dur.masked_fill(mask, 0.0)


class PNCAAttention(nn.Module):
    """Self attention over a causal band of decoder steps plus attention over a band of the memory."""

    def __init__(self, n_head: int, d_model: int, d_mem: int, d_head: int) -> None:
        super().__init__()
        self.n_head, self.d_head = n_head, d_head
        self.layer_norm = nn.LayerNorm(d_model, eps=LN_EPS)
        self.w_x_qkv = nn.Linear(d_model, 3 * n_head * d_head)
        self.fc_x = nn.Linear(n_head * d_head, d_model)
        self.w_h_kv = nn.Linear(d_mem, 2 * n_head * d_head)
        self.fc_h = nn.Linear(n_head * d_head, d_model)


class PositionwiseFFN1x1(PositionwiseConvFeedForward):
    def __init__(self, d_in: int, d_hid: int) -> None:
        super().__init__(d_in, d_hid, (1, 1))


class PNCABlock(nn.Module):
    def __init__(self, d_model: int, d_mem: int, n_head: int, d_inner: int) -> None:
        super().__init__()
        self.pnca_attn = PNCAAttention(n_head, d_model, d_mem, d_model // n_head)
        self.pos_ffn = PositionwiseFFN1x1(d_model, d_inner)


class HybridAttentionDecoder(nn.Module):
    def __init__(self, p: dict, d_mem: int) -> None:
        super().__init__()
        d_model, r, n_mels = p["decoder_num_units"], p["outputs_per_step"], p["num_mels"]
        self.d_model, self.r, self.n_mels = d_model, r, n_mels
        self.prenet = Prenet(n_mels, list(p["decoder_prenet_units"]), d_model)
        self.dec_in_proj = nn.Linear(d_model + d_mem, d_model)
        self.pnca = nn.ModuleList(
            PNCABlock(d_model, d_mem, p["decoder_num_heads"], p["decoder_ffn_inner_dim"])
            for _ in range(p["decoder_num_layers"])
        )
        self.ln = nn.LayerNorm(d_model, eps=LN_EPS)
        self.dec_out_proj = nn.Linear(d_model, n_mels * r)


class MelPNCADecoder(nn.Module):
    def __init__(self, p: dict, d_mem: int) -> None:
        super().__init__()
        self.mel_dec = HybridAttentionDecoder(p, d_mem)


class PostNet(nn.Module):
    def __init__(self, p: dict) -> None:
        super().__init__()
        self.fsmn = FsmnEncoderV2(
            p["postnet_filter_size"],
            p["postnet_fsmn_num_layers"],
            p["num_mels"],
            p["postnet_num_memory_units"],
            p["postnet_ffn_inner_dim"],
            p.get("postnet_shift", 0),
        )
        self.lstm = nn.LSTM(p["postnet_num_memory_units"], p["postnet_lstm_units"], batch_first=True)
        self.fc = nn.Linear(p["postnet_lstm_units"], p["num_mels"])

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Residual mel (the caller adds ``x``); the LSTM is unidirectional so padding never leaks back."""
        out, _ = self.lstm(self.fsmn(x, mask))
        return self.fc(out)
