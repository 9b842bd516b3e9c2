"""Fast SAmBERT inference: batched synthesis and streaming (contract in docs/architecture.md).

The PNCA decoder is autoregressive, so its cost is dominated by per-step operator overhead. The decoder here:
- folds every LayerNorm affine, the √d input scale, the prenet's last Linear and the attention/FFN biases into
  pre-arranged weight matrices (one ``addmm`` per projection, biases ride on a constant-1 channel);
- keeps, per layer, one K/V buffer whose first H heads hold the self-attention cache (time t at index t+w) and
  whose last H heads hold the memory keys/values (time t at index t), so step s attends to a single slice
  ``[s, s+w]`` with one ``scaled_dot_product_attention`` call covering both bands;
- computes the memory K/V once, writes only the new frame's K/V per step, and drops finished items from the
  active batch (items are decoded longest first, so the active batch is always a prefix);
- runs a step over at most :data:`~.kernels.KERNEL_ROWS` rows (the usual case: whole requests and the
  continuous batcher mostly decode 1-2 utterances at once) as one compiled loop (:mod:`.kernels`, numba):
  per-operator dispatch, not the ~17.6 MB of weight reads, dominated such a step in PyTorch. Wider steps run
  PyTorch's batched products (MKL). Both give the same mel to ~1e-5.

The autoregressive duration predictor runs compiled too (:class:`~.kernels.DurationKernel`): its condition's
share of the first LSTM layer for every token at once (one ``addmm``), then one loop over the tokens.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from engine.messages import AcousticInput, AcousticOutput
from engine.sambert.kernels import KERNEL_ROWS, DecoderKernel, DurationKernel
from engine.sambert.layers import LN_EPS
from engine.sambert.model import KanTtsSAMBERT
from engine.symbols import FIELDS, LinguisticVocab, SymbolError

if TYPE_CHECKING:
    from engine.modeldir import VoiceSpec

_THREAD_LOCK = threading.Lock()
FRONT_MIN_FILL = 0.75
"""Items share a padded front batch while each is at least this fraction of the batch's longest."""


@dataclass
class _Front:
    """Everything before the AR decoder, per item."""

    reps: list[Tensor]  # [T_b] long
    pitch: list[Tensor]
    energy: list[Tensor]
    memory: list[Tensor]  # [M_b, d_mem]
    bands: list[int]
    frames: list[int] = field(default_factory=list)

    def item(self, i: int) -> _Front:
        """Item ``i`` alone."""
        return _Front(*([getattr(self, f.name)[i]] for f in fields(self)))

    @staticmethod
    def joined(parts: Sequence[_Front]) -> _Front:
        """The items of ``parts``, in order, as one front."""
        return _Front(*([x for p in parts for x in getattr(p, f.name)] for f in fields(_Front)))

    def output(self, i: int, mel: Tensor) -> AcousticOutput:
        """Item ``i``'s result with its (postnet) mel."""
        return AcousticOutput(
            mel=mel.numpy(),
            durations=self.reps[i].numpy().astype(np.int64),
            pitch=self.pitch[i].numpy().astype(np.float32),
            energy=self.energy[i].numpy().astype(np.float32),
        )


class AcousticModel:
    """Inference wrapper around :class:`KanTtsSAMBERT` with batching, streaming and controls."""

    def __init__(
        self, model: KanTtsSAMBERT, vocab: LinguisticVocab | None = None, threads: int | None = None
    ):
        self.model = model.eval()
        self.vocab = vocab
        self.threads = threads
        self.params = model.params
        self.r, self.num_mels = model.r, model.num_mels
        self._sizes = [
            self.params[k] for k in ("sy", "tone", "syllable_flag", "word_segment", "emotion", "speaker")
        ]
        self._neutral_id = self._none_id = None
        if vocab is not None and "emotion_neutral" in vocab.emotion:
            self._neutral_id = vocab.id_of("emotion", "emotion_neutral")
            self._none_id = vocab.id_of("emotion", "emotion_none") if "emotion_none" in vocab.emotion else -1
        with torch.inference_mode():
            self._dec = _DecoderWeights(model)
            self._dur = _DurationWeights(model)
        for kernel in (self._dec.kernel, self._dur.kernel):
            if kernel is not None:
                kernel.warm_up()  # compiled once per process (and cached on disk), not on a request

    @classmethod
    def from_voice(cls, voice: VoiceSpec, threads: int | None = None) -> AcousticModel:
        from engine.sambert.model import load_am_state

        model = KanTtsSAMBERT(voice.am_params())
        load_am_state(model, voice.load_am_state(), str(voice.am_checkpoint))
        return cls(model, voice.vocab, threads)

    # ------------------------------------------------------------------ public API
    def synthesize(
        self,
        inputs: Sequence[AcousticInput],
        on_output: Callable[[int, AcousticOutput], None] | None = None,
        on_mel: Callable[[int, np.ndarray, int], None] | None = None,
        mel_chunk_frames: int = 64,
        mel_tail_frames: int | None = None,
    ) -> list[AcousticOutput]:
        """Synthesize several utterances at once; each output equals one-by-one synthesis (≤1e-4).

        With ``on_output``, ``on_output(index, output)`` hands each utterance over at the decoder step that
        finishes it (the shorter ones long before the batch ends). With ``on_mel``, the postnet runs on each
        utterance as its frames are decoded and ``on_mel(index, chunk, frames)`` hands over every
        ``mel_chunk_frames`` frames of it as soon as they are final (``frames``: the utterance's length; with
        ``mel_tail_frames``, the frames after its last whole chunk in chunks of at most that many); its
        output's mel is then their concatenation (equal to the whole-utterance postnet to ≤1e-5). Without
        either, one postnet call runs over the whole batch at the end.
        """
        if not inputs:
            return []
        with self._threads(), torch.inference_mode():
            front = self._front([self._prepare(x) for x in inputs])
            order = sorted(range(len(inputs)), key=lambda i: -front.memory[i].size(0))
            memories, bands = [front.memory[i] for i in order], [front.bands[i] for i in order]
            if on_output is None and on_mel is None:
                dec = self._decode_all(memories, bands)
                decs: list[Tensor] = [torch.empty(0)] * len(inputs)
                for j, i in enumerate(order):
                    decs[i] = dec[j].reshape(-1, self.num_mels)[: front.frames[i]]
                mels = self._postnet_batch(decs)
                return [front.output(i, mels[i]) for i in range(len(inputs))]
            return self._hand_over(
                front,
                order,
                _DecoderRun(self._dec, memories, bands),
                on_output,
                on_mel,
                mel_chunk_frames,
                mel_tail_frames,
            )

    def _hand_over(
        self,
        front: _Front,
        order: list[int],
        run: _DecoderRun,
        on_output: Callable[[int, AcousticOutput], None] | None,
        on_mel: Callable[[int, np.ndarray, int], None] | None,
        chunk_frames: int,
        tail_frames: int | None = None,
    ) -> list[AcousticOutput]:
        """:meth:`synthesize` handing utterances (``on_output``) or their mel chunks (``on_mel``) over as the
        decoder finishes them; ``run`` decodes the utterances in ``order`` (longest first)."""
        finishing: dict[int, list[int]] = {}  # step -> rows whose last step it is
        for j, steps in enumerate(run.lengths):
            finishing.setdefault(steps - 1, []).append(j)
        frames = [front.frames[i] for i in order]
        chunkers = (
            [MelChunker(self.model, n, chunk_frames, chunk_frames, tail_frames) for n in frames]
            if on_mel
            else []
        )
        chunks: list[list[np.ndarray]] = [[] for _ in order]
        outs: dict[int, AcousticOutput] = {}
        for s in itertools.chain([-1], run):
            if on_mel and s >= 0:
                for j in range(run.active[s]):
                    last = s == run.lengths[j] - 1
                    for chunk in chunkers[j].push(run.frames(s, j).view(-1, self.num_mels), final=last):
                        chunks[j].append(chunk)
                        on_mel(order[j], chunk, frames[j])
            done = finishing.get(s, [])
            if on_mel:
                mels = [
                    torch.from_numpy(np.concatenate(chunks[j]))
                    if chunks[j]
                    else torch.zeros(0, self.num_mels)
                    for j in done
                ]
            else:
                decs = [run.frames_of(j).reshape(-1, self.num_mels)[: frames[j]] for j in done]
                mels = self._postnet_batch(decs) if done else []
            for j, mel in zip(done, mels, strict=True):
                outs[order[j]] = front.output(order[j], mel)
                if on_output is not None:
                    on_output(order[j], outs[order[j]])
        return [outs[i] for i in range(len(order))]

    def stream(
        self, inp: AcousticInput, chunk_frames: int = 30, max_chunk_frames: int | None = None
    ) -> AcousticStream:
        """Mel chunks as the AR decoder advances; their concatenation equals ``synthesize([inp])[0].mel``.

        Chunks are ``chunk_frames`` long, or, with ``max_chunk_frames``, double after each chunk up to it
        (the first audio stays early; later chunks cost less per frame). The last chunk may be shorter.
        """
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
        if max_chunk_frames is not None and max_chunk_frames < chunk_frames:
            raise ValueError(
                f"max_chunk_frames ({max_chunk_frames}) must be >= chunk_frames ({chunk_frames})"
            )
        with self._threads(), torch.inference_mode():
            front = self._front([self._prepare(inp)])
        return AcousticStream(self, front, chunk_frames, max_chunk_frames or chunk_frames)

    # ------------------------------------------------------------------ helpers
    @contextlib.contextmanager
    def _threads(self) -> Iterator[None]:
        """Run with ``self.threads`` intra-op threads (torch's setting is process-wide), then restore it."""
        previous = torch.get_num_threads()
        if not self.threads or previous == self.threads:
            yield
            return
        with _THREAD_LOCK:
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            with _THREAD_LOCK:
                torch.set_num_threads(previous)

    def _symbol_id(self, column: int, value: int | str) -> int:
        name = FIELDS[column]
        if isinstance(value, str):
            if self.vocab is None:
                raise SymbolError(f"{name} override {value!r} given by name but the model has no vocabulary")
            if name == "emotion" and not value.startswith("emotion_"):
                value = f"emotion_{value}"
            return self.vocab.id_of(name, value)
        if not 0 <= int(value) < self._sizes[column]:
            raise SymbolError(f"{name} id {value} out of range [0, {self._sizes[column]})")
        return int(value)

    def _prepare(self, inp: AcousticInput) -> tuple[Tensor, AcousticInput, Tensor | None]:
        ids = np.asarray(inp.ids)
        if ids.ndim != 2 or ids.shape[1] != 6 or ids.shape[0] == 0:
            raise ValueError(f"AcousticInput.ids must have shape [T>0, 6], got {list(ids.shape)}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"AcousticInput.ids must be integers, got {ids.dtype}")
        for col, size in enumerate(self._sizes):
            bad = (ids[:, col] < 0) | (ids[:, col] >= size)
            if bad.any():
                raise SymbolError(f"{FIELDS[col]} id {int(ids[bad.argmax(), col])} out of range [0, {size})")
        if not (math.isfinite(inp.speed) and inp.speed > 0):
            raise ValueError(f"speed must be a positive number, got {inp.speed}")
        for name in ("pitch_shift", "energy_shift", "emotion_intensity"):
            if not math.isfinite(getattr(inp, name)):
                raise ValueError(f"{name} must be finite, got {getattr(inp, name)}")
        if inp.emotion_intensity != 1.0 and self._neutral_id is None:
            raise SymbolError("emotion_intensity needs a vocabulary with emotion_neutral")
        t = torch.from_numpy(ids.astype(np.int64))
        if inp.emotion is not None:
            emo = self._symbol_id(4, inp.emotion)
            none_id = self.vocab.id_of("emotion", "emotion_none") if self.vocab is not None else 0
            t[:, 4] = torch.where(t[:, 4] == none_id, t[:, 4], torch.tensor(emo))
        if inp.speaker is not None:
            t[:, 5] = self._symbol_id(5, inp.speaker)
        override = None
        if inp.durations is not None:
            override = torch.as_tensor(np.asarray(inp.durations, dtype=np.float32))
            if override.shape != (ids.shape[0],) or not torch.isfinite(override).all():
                raise ValueError(
                    f"durations must be {ids.shape[0]} finite numbers, got shape {list(override.shape)}"
                )
        return t, inp, override

    def _front(self, items: list[tuple[Tensor, AcousticInput, Tensor | None]]) -> _Front:
        """Encoder, variance adaptor, length regulator and memory packing for ``items``, in their order.

        Items run as padded batches of similar lengths (:data:`FRONT_MIN_FILL`): the encoder's products cost
        the same per token batched or not, so padding is pure waste there, while the LSTMs' per-token steps
        are shared by a batch. The 2-unit reference line (196 + 93 tokens) took 93 ms padded together, 72 ms
        apart; four 49-56-token sentences 56 ms together, 75 ms apart (1 thread).
        """
        order = sorted(range(len(items)), key=lambda i: -items[i][0].size(0))
        groups: list[list[int]] = []
        for i in order:
            if groups and items[i][0].size(0) >= FRONT_MIN_FILL * items[groups[-1][0]][0].size(0):
                groups[-1].append(i)
            else:
                groups.append([i])
        if len(groups) == 1:
            return self._front_padded(items)
        alone: dict[int, _Front] = {}
        for group in groups:
            part = self._front_padded([items[i] for i in group])
            alone.update((i, part.item(row)) for row, i in enumerate(group))
        return _Front.joined([alone[i] for i in range(len(items))])

    def _front_padded(self, items: list[tuple[Tensor, AcousticInput, Tensor | None]]) -> _Front:
        """:meth:`_front` for one padded batch."""
        m = self.model
        lengths = torch.tensor([t.size(0) for t, _, _ in items])
        tmax = int(lengths.max())
        ids = torch.zeros(len(items), tmax, 6, dtype=torch.long)
        for b, (t, _, _) in enumerate(items):
            ids[b, : t.size(0)] = t
        mask = torch.arange(tmax)[None, :] >= lengths[:, None]
        key_mask = mask if len(items) > 1 else None
        text_hid = m.text_encoder(ids[..., :4], key_mask)
        emo_hid, spk_hid = m.emo_tokenizer(ids[..., 4]), m.spk_tokenizer(ids[..., 5])
        emo_hid = self._blend_emotion(emo_hid, ids[..., 4], [inp.emotion_intensity for _, inp, _ in items])
        va = m.variance_adaptor
        x = torch.cat([text_hid, spk_hid, emo_hid], dim=-1)
        shift_p = torch.tensor([inp.pitch_shift for _, inp, _ in items])[:, None]
        shift_e = torch.tensor([inp.energy_shift for _, inp, _ in items])[:, None]
        pitch = (va.pitch_predictor(x, key_mask) + shift_p).masked_fill(mask, 0.0)
        energy = (va.energy_predictor(x, key_mask) + shift_e).masked_fill(mask, 0.0)
        text_aug = (
            text_hid
            + va.pitch_emb(pitch[:, None]).transpose(1, 2)
            + va.energy_emb(energy[:, None]).transpose(1, 2)
        )
        cond = torch.cat([text_aug, spk_hid, emo_hid], dim=-1)
        log_dur = self._dur.infer(cond)
        front = _Front([], [], [], [], [])
        for b, (t, inp, override) in enumerate(items):
            n = t.size(0)
            dur = (torch.exp(log_dur[b, :n]) - 1.0) / inp.speed
            if override is not None:
                dur = torch.where(override >= 0, override, dur)
            reps = (dur + 0.5).long()
            frames = int(reps.sum())
            front.reps.append(reps)
            front.pitch.append(pitch[b, :n])
            front.energy.append(energy[b, :n])
            front.frames.append(frames)
            front.bands.append(int(float(dur.max()) / self.r + 0.5))
            front.memory.append(self._memory(text_aug[b, :n], spk_hid[b, :n], emo_hid[b, :n], reps, frames))
        return front

    def _blend_emotion(self, emo_hid: Tensor, emo_ids: Tensor, intensities: list[float]) -> Tensor:
        """``neutral + k·(emotion − neutral)`` per item; items with k == 1 are returned untouched (exact)."""
        if all(k == 1.0 for k in intensities) or self._neutral_id is None:
            return emo_hid
        table = self.model.emo_tokenizer.weight
        neutral = table[self._neutral_id]
        k = torch.tensor(intensities, dtype=emo_hid.dtype)[:, None, None]
        blended = neutral + k * (emo_hid - neutral)
        keep = (emo_ids == self._none_id)[..., None] | (k == 1.0)
        return torch.where(keep, emo_hid, blended)

    def _memory(self, text: Tensor, spk: Tensor, emo: Tensor, reps: Tensor, frames: int) -> Tensor:
        """Length regulation (r-padding), duration position encoding and LFR packing -> [M, d_mem]."""
        r = self.r
        steps = -(-frames // r)
        padded = steps * r
        starts = torch.cumsum(reps, 0) - reps
        pos = torch.arange(frames) - torch.repeat_interleave(starts, reps) + 1
        pos = F.pad(pos.to(torch.float32), (0, padded - frames))
        lr_text = F.pad(torch.repeat_interleave(text, reps, dim=0), (0, 0, 0, padded - frames))
        lr_text = lr_text + self.model.variance_adaptor.dur_position_encoder.encode(pos[None])[0]
        first = torch.repeat_interleave(torch.arange(reps.numel()), reps)[
            ::r
        ]  # token of each group's 1st frame
        return torch.cat([lr_text.reshape(steps, r * text.size(1)), spk[first], emo[first]], dim=-1)

    def _decode_all(self, memories: list[Tensor], bands: list[int]) -> list[Tensor]:
        """Decode to the end; per item [M_b, r*num_mels] (``memories`` sorted longest first)."""
        run = _DecoderRun(self._dec, memories, bands)
        for _ in run:
            pass
        return run.outputs()

    def _postnet_batch(self, decs: list[Tensor]) -> list[Tensor]:
        lengths = torch.tensor([d.size(0) for d in decs])
        fmax = int(lengths.max())
        if fmax == 0:
            return [d.new_zeros(0, self.num_mels) for d in decs]
        x = torch.zeros(len(decs), fmax, self.num_mels)
        for b, d in enumerate(decs):
            x[b, : d.size(0)] = d
        mask = torch.arange(fmax)[None, :] >= lengths[:, None]
        post = self.model.mel_postnet(x, mask) + x
        return [post[b, : int(n)].contiguous() for b, n in enumerate(lengths)]


class _DurationWeights:
    """The AR duration predictor as raw ops (prenet, two LSTM cells, relu(fc))."""

    def __init__(self, model: KanTtsSAMBERT) -> None:
        dp = model.variance_adaptor.duration_predictor
        fcs = [mod for mod in dp.prenet.fcs if isinstance(mod, torch.nn.Linear)]
        self.prenet = [(lin.weight.t().contiguous(), lin.bias.clone()) for lin in fcs]
        lstm = dp.lstm
        self.cells = [
            tuple(
                getattr(lstm, f"{n}_l{k}").clone() for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
            for k in range(lstm.num_layers)
        ]
        self.hidden = lstm.hidden_size
        self.fc_w, self.fc_b = dp.fc.weight.t().contiguous(), dp.fc.bias.clone()
        self.kernel = self._compiled(dp.prenet.fcs[0].in_features)

    def _compiled(self, d_prev: int) -> DurationKernel | None:
        """The compiled predictor, where the prenet's input is the one previous value and its next layers are
        square (the released configs); otherwise None: :meth:`infer` runs PyTorch's cells."""
        (w0, b0), *rest = self.prenet
        width = w0.size(1)
        if d_prev != 1 or any(tuple(w.shape) != (width, width) for w, _ in rest):
            return None
        w_ih0 = self.cells[0][0]
        self.w_ih_cond = w_ih0[:, width:].t().contiguous()  # the condition's part of the first layer
        self.b_cond = self.cells[0][2] + self.cells[0][3]
        square = torch.empty(0, width, width)

        def stack(ts: list[Tensor], empty: Tensor) -> np.ndarray:
            return (torch.stack(ts) if ts else empty).contiguous().numpy()

        hidden4 = 4 * self.hidden
        return DurationKernel(
            pre0_w=w0[0].contiguous().numpy(),
            pre0_b=b0.contiguous().numpy(),
            pre_w=stack([w for w, _ in rest], square),
            pre_b=stack([b for _, b in rest], square[:, 0]),
            w_ih_prev=w_ih0[:, :width].t().contiguous().numpy(),
            w_hh=stack([cell[1].t() for cell in self.cells], square),
            w_ih_up=stack([cell[0].t() for cell in self.cells[1:]], torch.empty(0, self.hidden, hidden4)),
            b_up=stack([cell[2] + cell[3] for cell in self.cells[1:]], torch.empty(0, hidden4)),
            fc_w=self.fc_w[:, 0].contiguous().numpy(),
            fc_b=float(self.fc_b[0]),
        )

    def infer(self, cond: Tensor) -> Tensor:
        """``log(d + 1)`` [B, T] for the conditions [B, T, C] (the compiled loop where there is one)."""
        if self.kernel is not None:
            gates = torch.addmm(self.b_cond, cond.reshape(-1, cond.size(-1)), self.w_ih_cond)
            return torch.from_numpy(self.kernel.durations(gates.view(*cond.shape[:2], -1).numpy()))
        b, t, _ = cond.shape
        prev = cond.new_zeros(b, 1)
        states = [(cond.new_zeros(b, self.hidden), cond.new_zeros(b, self.hidden)) for _ in self.cells]
        out = cond.new_zeros(b, t)
        for i in range(t):
            h = prev
            for w, bias in self.prenet:
                h = torch.addmm(bias, h, w).relu_()
            h = torch.cat([h, cond[:, i]], dim=1)
            for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(self.cells):
                states[k] = torch.lstm_cell(h, states[k], w_ih, w_hh, b_ih, b_hh)
                h = states[k][0]
            prev = torch.addmm(self.fc_b, h, self.fc_w).relu_()
            out[:, i : i + 1] = prev
        return out


class _DecoderWeights:
    """Pre-arranged decoder weights (see module docstring). E = d_head + 1 carries a constant-1 channel.

    Every matrix is a contiguous ``[in, out]`` operand of ``addmm``; the per-layer ones are views of stacked
    ``[layers, in, out]`` arrays, which the compiled step (:attr:`kernel`) reads.
    """

    def __init__(self, model: KanTtsSAMBERT) -> None:
        dec = model.mel_decoder.mel_dec
        d, r, n_mels = dec.d_model, dec.r, dec.n_mels
        self.d, self.n_mels, self.out_dim = d, n_mels, r * n_mels
        self.layers = len(dec.pnca)
        nh = dec.pnca[0].pnca_attn.n_head if self.layers else 1
        dh = d // nh
        self.nh, self.dh, self.e = nh, dh, dh + 1
        self.scale = 1.0 / math.sqrt(dh)
        lins = [mod for mod in dec.prenet.fcs if isinstance(mod, torch.nn.Linear)]
        *hidden, last = lins
        d_mem = dec.dec_in_proj.in_features - d
        w_mem, w_pre = dec.dec_in_proj.weight[:, :d_mem], dec.dec_in_proj.weight[:, d_mem:]
        sq = math.sqrt(d)
        # x_s = memproj[s] + h_last @ w_c  (prenet's last Linear, dec_in_proj and √d folded together)
        self.w_mem = (w_mem * sq).t().contiguous()
        self.b_mem = (dec.dec_in_proj.bias + w_pre @ last.bias) * sq
        self.w_c = self._mat(sq * (w_pre @ last.weight))
        self.pre0_w, self.pre0_b = hidden[0].weight, hidden[0].bias
        self.pre_mid = [(self._mat(lin.weight), lin.bias.clone()) for lin in hidden[1:]]
        e = self.e
        self.qkv, self.fc, self.w1, self.w2, self.h_kv = [], [], [], [], []
        for block in dec.pnca:
            att, ffn = block.pnca_attn, block.pos_ffn
            g, beta = att.layer_norm.weight, att.layer_norm.bias
            w = att.w_x_qkv.weight * g[None, :]
            bias = att.w_x_qkv.bias + att.w_x_qkv.weight @ beta
            wq, wk, wv = w.view(3, nh, dh, d).unbind(0)
            bq, bk, bv = bias.view(3, nh, dh).unbind(0)

            def ext(weight: Tensor, b: Tensor, const: float) -> tuple[Tensor, Tensor]:
                wz = torch.cat([weight, weight.new_zeros(nh, 1, d)], dim=1)
                bz = torch.cat([b, b.new_full((nh, 1), const)], dim=1)
                return wz.reshape(nh * e, d), bz.reshape(nh * e)

            parts = [ext(wq, bq, 0.0), ext(wq, bq, 0.0), ext(wk, bk, 0.0), ext(wv, bv, 1.0)]
            self.qkv.append(
                (
                    torch.cat([p[1] for p in parts]).contiguous(),
                    self._mat(torch.cat([p[0] for p in parts])),
                )
            )
            # output projection of both branches; the bias rides on head 0's constant channel
            wfc = torch.zeros(d, 2 * nh, e)
            wfc[:, :nh, :dh] = att.fc_x.weight.view(d, nh, dh)
            wfc[:, nh:, :dh] = att.fc_h.weight.view(d, nh, dh)
            wfc[:, 0, dh] = att.fc_x.bias + att.fc_h.bias
            self.fc.append(self._mat(wfc.reshape(d, 2 * nh * e)))
            self.h_kv.append((att.w_h_kv.weight, att.w_h_kv.bias))
            # FFN: LN affine folded into w_1; w_2's bias rides on an extra always-1 hidden unit
            g2, beta2 = ffn.layer_norm.weight, ffn.layer_norm.bias
            w1 = ffn.w_1.weight.squeeze(-1)
            w1f = torch.cat([w1 * g2[None, :], w1.new_zeros(1, d)])
            b1f = torch.cat([ffn.w_1.bias + w1 @ beta2, w1.new_ones(1)])
            self.w1.append((b1f.contiguous(), self._mat(w1f)))
            w2 = ffn.w_2.weight.squeeze(-1)
            self.w2.append(self._mat(torch.cat([w2, ffn.w_2.bias[:, None]], dim=1)))
        # final LN + dec_out_proj, fused with the next step's first prenet Linear on the last frame
        g, beta = dec.ln.weight, dec.ln.bias
        wo = dec.dec_out_proj.weight * g[None, :]
        bo = dec.dec_out_proj.bias + dec.dec_out_proj.weight @ beta
        w_last, b_last = wo[-n_mels:], bo[-n_mels:]
        self.w_out = self._mat(torch.cat([wo, self.pre0_w @ w_last]))
        self.b_out = torch.cat([bo, self.pre0_w @ b_last + self.pre0_b]).contiguous()
        self.kernel: DecoderKernel | None = None
        self.kernel_rows = 0  # steps over at most this many rows run the compiled step (kernels.py)
        self._stack_for_kernel()

    def _stack_for_kernel(self) -> None:
        """Move the per-layer matrices into stacked ``[layers, in, out]`` arrays (this instance's tensors
        become views of them, so nothing is held twice) and build the compiled step on them."""

        def stack(tensors: Sequence[Tensor]) -> tuple[np.ndarray, list[Tensor]]:
            stacked = torch.stack(list(tensors)).contiguous()
            return stacked.numpy(), list(stacked.unbind(0))

        qkv_b, bs = stack([b for b, _ in self.qkv])
        qkv_w, ws = stack([m for _, m in self.qkv])
        self.qkv = list(zip(bs, ws, strict=True))
        w1_b, bs = stack([b for b, _ in self.w1])
        w1_w, ws = stack([m for _, m in self.w1])
        self.w1 = list(zip(bs, ws, strict=True))
        fc_w, self.fc = stack(self.fc)
        w2_w, self.w2 = stack(self.w2)
        if len({tuple(m.shape) for m, _ in self.pre_mid} | {(self.w_c.size(0),) * 2}) != 1:
            return  # prenet layers of different widths: no compiled step (PyTorch runs every step)
        empty = torch.empty(0, self.w_c.size(0), self.w_c.size(0))
        pre_w, ws = stack([m for m, _ in self.pre_mid]) if self.pre_mid else (empty.numpy(), [])
        pre_b, bs = stack([b for _, b in self.pre_mid]) if self.pre_mid else (empty[:, 0].numpy(), [])
        self.pre_mid = list(zip(ws, bs, strict=True))
        self.kernel = DecoderKernel(
            pre_w, pre_b, self.w_c.numpy(), qkv_w, qkv_b, fc_w, w1_w, w1_b, w2_w, self.w_out.numpy(),
            self.b_out.numpy(), self.nh, self.e, self.scale,
        )  # fmt: skip
        self.kernel_rows = KERNEL_ROWS

    @staticmethod
    def _mat(out_in: Tensor) -> Tensor:
        """An ``[out, in]`` weight as the contiguous ``[in, out]`` operand of ``addmm``."""
        return out_in.t().contiguous()


def decoder_layers(
    w: _DecoderWeights,
    x: Tensor,
    ks: Sequence[Tensor],
    vs: Sequence[Tensor],
    dst: Sequence[Tensor],
    mask: Tensor | None,
) -> Tensor:
    """One decoder step through every layer for the ``x.size(0)`` rows decoding together: each layer writes
    its self-attention key/value for this step into ``dst[layer]`` and attends over the window
    ``ks/vs[layer]`` (self + memory columns); returns the final layer-normed state (the output projection's
    input). Shared by whole-batch decoding and the continuous batcher, so both compute the same thing."""
    n, nh, e, d = x.size(0), w.nh, w.e, w.d
    q_shape, q_stride = (n, 2 * nh, 1, e), (4 * nh * e, e, e, 1)
    kv_shape, kv_stride = (2, n, nh, e), (nh * e, 4 * nh * e, e, 1)
    for layer in range(w.layers):
        b_qkv, w_qkv = w.qkv[layer]
        qkv = torch.addmm(b_qkv, F.layer_norm(x, (d,), eps=LN_EPS), w_qkv)
        dst[layer].copy_(qkv.as_strided(kv_shape, kv_stride, 2 * nh * e))
        o = F.scaled_dot_product_attention(
            qkv.as_strided(q_shape, q_stride), ks[layer], vs[layer], attn_mask=mask, scale=w.scale
        )
        x = torch.addmm(x, o.view(n, -1), w.fc[layer])
        b1, w1 = w.w1[layer]
        hid = torch.addmm(b1, F.layer_norm(x, (d,), eps=LN_EPS), w1).relu_()
        x = torch.addmm(x, hid, w.w2[layer])
    return F.layer_norm(x, (d,), eps=LN_EPS)


def decoder_step(
    w: _DecoderWeights,
    prev: Tensor,
    mem_rows: Tensor,
    kv: Tensor,
    col: int,
    band: int,
    mask: Tensor | None,
    out: Tensor | None = None,
) -> Tensor:
    """One decoder step for the rows ``[0, n)`` decoding together (``n = prev.size(0)``); returns (or writes
    into ``out``) ``[n, r·mels + P]``: the step's frames, then the next step's prenet first layer before its
    ReLU. ``prev``: this step's such input (``pre0_b`` for the go frame); ``mem_rows`` [n, d]: the memory's
    input projection at each row's step; ``kv``: the K/V buffer ``[2, layers, slots, 2H, columns, E]``, the
    step attends over columns ``[col, col + band]`` and writes its own keys/values at ``col + band``; ``mask``
    additive ``[n, 2H, 1, band + 1]`` or None. Shared by whole-batch decoding and the continuous batcher, so
    both compute the same thing: the compiled step (:mod:`.kernels`) for up to ``w.kernel_rows`` rows, else
    PyTorch's batched products."""
    n = prev.size(0)
    if w.kernel is not None and n <= w.kernel_rows:
        out = torch.empty(n, w.w_out.size(1)) if out is None else out
        masks = None if mask is None else mask.numpy()
        w.kernel.step(prev.numpy(), mem_rows.numpy(), kv.numpy(), col, band, masks, out.numpy())
        return out
    h = prev.relu()
    for wm, bm in w.pre_mid:
        h = torch.addmm(bm, h, wm).relu_()
    x = torch.addmm(mem_rows, h, w.w_c)
    win = kv[:, :, :n, :, col : col + band + 1]
    ks, vs = win[0].unbind(0), win[1].unbind(0)
    dst = kv[:, :, :n, : w.nh, col + band].unbind(1)
    return torch.addmm(w.b_out, decoder_layers(w, x, ks, vs, dst, mask), w.w_out, out=out)


class _DecoderRun:
    """One batched AR decoding run; iterate to advance one step (yields the step index)."""

    def __init__(self, w: _DecoderWeights, memories: list[Tensor], bands: list[int]) -> None:
        self.w = w
        self.lengths = [int(m.size(0)) for m in memories]
        if self.lengths != sorted(self.lengths, reverse=True):
            raise ValueError("memories must be sorted longest first")
        self.batch = len(memories)
        self.steps = self.lengths[0] if memories else 0
        bw = max(bands) if bands else 0
        self.band = bw
        n, L = bw + 1, self.steps + bw
        nh, e, dh, B = w.nh, w.e, w.dh, self.batch
        d_mem = memories[0].size(1) if memories else 0
        mem = torch.zeros(B, max(self.steps, 1), d_mem)
        for b, m in enumerate(memories):
            mem[b, : m.size(0)] = m
        # input projection of the memory for every step, step-major: [S, B, d]
        self.memproj = (
            torch.addmm(w.b_mem, mem.reshape(-1, d_mem), w.w_mem)
            .view(B, -1, w.d)
            .transpose(0, 1)
            .contiguous()
        )
        # K/V buffers [2, layers, B, 2H, L, E]: heads < H self cache, heads >= H memory
        self.kv = torch.zeros(2, w.layers, B, 2 * nh, L, e)
        for layer, (wh, bh) in enumerate(w.h_kv):
            hk, hv = torch.addmm(bh, mem.reshape(-1, d_mem), wh.t()).view(B, -1, 2, nh, dh).unbind(2)
            s = mem.size(1)
            self.kv[0, layer, :, nh:, :s, :dh] = hk.transpose(1, 2)
            self.kv[1, layer, :, nh:, :s, :dh] = hv.transpose(1, 2)
            self.kv[1, layer, :, nh:, :s, dh] = 1.0
        # additive masks per step [S, B, 2H, 1, n] and whether a step needs one at all
        r = torch.arange(n)
        s_idx = torch.arange(max(self.steps, 1))[:, None, None]
        wb = torch.tensor(bands)[None, :, None]
        mb = torch.tensor(self.lengths)[None, :, None]
        self_ok = (r >= bw - s_idx) & (r >= bw - wb)
        mem_ok = (s_idx + r <= mb - 1) & (r <= wb)
        ok = torch.stack([self_ok, mem_ok], dim=2)  # [S, B, 2, n]
        self.need_mask = (~ok).flatten(1).any(1).tolist()
        mask = torch.zeros(ok.shape).masked_fill(~ok, float("-inf"))
        self.mask = (
            mask[:, :, :, None, None, :]
            .expand(-1, -1, -1, nh, 1, -1)
            .reshape(-1, B, 2 * nh, 1, n)
            .contiguous()
        )
        self.active = [sum(1 for m in self.lengths if m > s) for s in range(self.steps)]
        self.out = torch.zeros(max(self.steps, 1), B, w.w_out.size(1))
        self.step = 0

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        s = self.step
        if s >= self.steps:
            raise StopIteration
        ba, w = self.active[s], self.w
        prev = w.pre0_b.expand(ba, -1) if s == 0 else self.out[s - 1, :ba, w.out_dim :]
        mask = self.mask[s, :ba] if self.need_mask[s] else None
        decoder_step(w, prev, self.memproj[s, :ba], self.kv, s, self.band, mask, out=self.out[s, :ba])
        self.step = s + 1
        return s

    def frames(self, s: int, b: int = 0) -> Tensor:
        """The r*num_mels decoder outputs of step ``s`` for item ``b``."""
        return self.out[s, b, : self.w.out_dim]

    def frames_of(self, b: int) -> Tensor:
        """Item ``b``'s decoder outputs [M_b, r*num_mels] (complete once its last step has run)."""
        return self.out[: self.lengths[b], b, : self.w.out_dim]

    def outputs(self) -> list[Tensor]:
        return [self.frames_of(b) for b in range(self.batch)]


class _PostnetStream:
    """Exact incremental PostNet for one utterance (FSMN right look-ahead, carried LSTM state)."""

    def __init__(self, model: KanTtsSAMBERT, frames: int) -> None:
        post = model.mel_postnet
        self.frames = frames
        self.layers = []
        d_in = model.num_mels
        for ffn, mem in zip(post.fsmn.ffn_lst, post.fsmn.memory_block_lst, strict=True):
            c = mem.conv_dw.out_channels
            buf = torch.zeros(mem.left_padding + frames + mem.right_padding, c)
            self.layers.append((ffn, mem, buf, d_in == c))
            d_in = c
        self.inputs: list[Tensor] = [torch.zeros(frames, model.num_mels)] + [
            torch.zeros(frames, buf.size(1)) for _, _, buf, _ in self.layers
        ]
        self.avail = [0] * (len(self.layers) + 1)
        self._ctx = [0] * len(self.layers)
        # decoder frames past a postnet frame that it needs (each FSMN layer looks right_padding ahead)
        self.lookahead = sum(mem.right_padding for _, mem, _, _ in self.layers)
        self.lstm, self.fc = post.lstm, post.fc
        self.state: tuple[Tensor, Tensor] | None = None
        self.emitted = 0

    def push(self, dec: Tensor, final: bool = False) -> Tensor:
        """Add decoder frames (in order); returns the newly finished postnet mel frames."""
        a = self.avail[0]
        n = min(dec.size(0), self.frames - a)
        self.inputs[0][a : a + n] = dec[:n]
        self.avail[0] = a + n
        for i, (ffn, mem, buf, residual) in enumerate(self.layers):
            lp, rp = mem.left_padding, mem.right_padding
            start, end = self.avail[i + 1], self.avail[i]
            c0 = self._ctx[i]  # context (pointwise FFN) for input frames not yet transformed
            if end > c0:
                buf[lp + c0 : lp + end] = ffn(self.inputs[i][c0:end][None])[0]
                self._ctx[i] = end
            stop = self.frames if final else min(self.frames, end - rp)
            if stop > start:
                win = buf[start : stop + lp + rp].t()[None]
                out = mem.conv_dw(win)[0].t() + buf[lp + start : lp + stop]
                if residual:
                    out = out + self.inputs[i][start:stop]
                self.inputs[i + 1][start:stop] = out
                self.avail[i + 1] = stop
        start, stop = self.emitted, self.avail[-1]
        if stop <= start:
            return torch.zeros(0, self.inputs[0].size(1))
        h, self.state = self.lstm(self.inputs[-1][start:stop][None], self.state)
        self.emitted = stop
        return self.fc(h[0]) + self.inputs[0][start:stop]


class AcousticStream:
    """Mel chunks of one utterance as the AR decoder advances (create with :meth:`AcousticModel.stream`)."""

    def __init__(self, owner: AcousticModel, front: _Front, chunk_frames: int, max_chunk_frames: int) -> None:
        self._owner = owner
        self._front = front
        self.chunk_frames = chunk_frames
        self.max_chunk_frames = max_chunk_frames
        self.durations: np.ndarray = front.reps[0].numpy().astype(np.int64)
        self.pitch: np.ndarray = front.pitch[0].numpy().astype(np.float32)
        self.energy: np.ndarray = front.energy[0].numpy().astype(np.float32)
        self.num_frames: int = front.frames[0]
        self._started = False

    def __iter__(self) -> Iterator[np.ndarray]:
        if self._started:
            raise RuntimeError("an AcousticStream can be iterated only once")
        self._started = True
        return self._run()

    def _run(self) -> Iterator[np.ndarray]:
        owner, front = self._owner, self._front
        total = self.num_frames
        if total == 0:
            return
        with owner._threads(), torch.inference_mode():
            run = _DecoderRun(owner._dec, front.memory, front.bands)
            chunker = MelChunker(owner.model, total, self.chunk_frames, self.max_chunk_frames)
        for s in range(run.steps):
            with owner._threads(), torch.inference_mode():
                next(run)
                chunks = chunker.push(run.frames(s).view(-1, owner.num_mels), final=s == run.steps - 1)
            yield from chunks


class MelChunker:
    """Decoder frames of one utterance in (in order, any amounts), postnet mel chunks out.

    Chunks are ``chunk_frames`` long, doubling after each up to ``max_chunk_frames``; the last may be shorter.
    With ``tail_frames``, once fewer frames are left than the next chunk holds, they go in chunks of at most
    ``tail_frames`` (a vocoder that cuts a mel's tail into such pieces can start on them sooner).
    Frames are buffered until they finish the next chunk (:attr:`needed`: its frames plus the postnet's
    look-ahead), then the postnet runs once on all of them: once per chunk, never per decoder step (its
    per-call cost on 3 frames made streaming 2.2x slower), and a chunk goes out at the first step that can
    finish it.
    """

    def __init__(
        self,
        model: KanTtsSAMBERT,
        frames: int,
        chunk_frames: int,
        max_chunk_frames: int,
        tail_frames: int | None = None,
    ) -> None:
        self._post = _PostnetStream(model, frames)
        self.size = chunk_frames
        self._max = max_chunk_frames
        self._tail = tail_frames
        self._decoded: list[Tensor] = []  # decoder frames not yet pushed through the postnet
        self._received = 0  # decoder frames received (padding past the utterance's end not counted)
        self._chunked = 0  # postnet frames handed out in chunks
        self._pending: list[Tensor] = []  # postnet frames not yet emitted
        self._ready = 0

    def _next_size(self) -> int:
        """The next chunk's frames: :attr:`size`, or with ``tail_frames`` at most that once fewer than
        :attr:`size` frames are left."""
        if self._tail and self._post.frames - self._chunked < self.size:
            return min(self._tail, self.size)
        return self.size

    @property
    def needed(self) -> int:
        """Decoder frames (from the utterance's start) that finish the next chunk."""
        return min(self._post.frames, self._chunked + self._next_size() + self._post.lookahead)

    def push(self, frames: Tensor, final: bool = False) -> list[np.ndarray]:
        """Add decoder frames (padding past the utterance's end is ignored); returns the finished chunks."""
        self._decoded.append(frames)
        self._received = min(self._post.frames, self._received + frames.size(0))
        if self._received < self.needed and not final:
            return []
        dec = torch.cat(self._decoded) if len(self._decoded) > 1 else self._decoded[0]
        new = self._post.push(dec, final=final)
        self._decoded = []
        if new.size(0):
            self._pending.append(new)
            self._ready += new.size(0)
        chunks: list[np.ndarray] = []
        while self._ready >= (size := self._next_size()) or (final and self._ready):
            cat = torch.cat(self._pending) if len(self._pending) > 1 else self._pending[0]
            take = min(size, self._ready)
            chunk, rest = cat[:take], cat[take:]
            self._pending = [rest] if rest.size(0) else []
            self._ready -= take
            self._chunked += take
            self.size = min(2 * self.size, self._max)
            chunks.append(chunk.numpy().copy())
        return chunks
