"""``KanTtsSAMBERT``: the module tree of the released checkpoints and a plain inference pass (spec §2.3).

``forward`` is the readable, step-by-step version of the released model's inference (batch 1). It is the
numerical reference for the fast path in :mod:`engine.sambert.infer`, which must agree with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.sambert.layers import (
    DurSinusoidalPositionEncoder,
    MelPNCADecoder,
    PostNet,
    TextFftEncoder,
    VarFsmnRnnNARPredictor,
    VarRnnARPredictor,
    masked,
)

VOCAB_KEYS = ("sy", "tone", "syllable_flag", "word_segment", "emotion", "speaker")


class ConfigError(ValueError):
    """The acoustic-model configuration is missing a key or has an unusable value."""


def check_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """Validate ``Model.KanTtsSAMBERT.params`` (with vocabulary sizes merged in) and return a copy."""
    p = dict(params)
    required = [
        "embedding_dim",
        "encoder_num_layers",
        "encoder_num_heads",
        "encoder_num_units",
        "encoder_ffn_inner_dim",
        "encoder_projection_units",
        "speaker_units",
        "emotion_units",
        "predictor_filter_size",
        "predictor_fsmn_num_layers",
        "predictor_num_memory_units",
        "predictor_ffn_inner_dim",
        "predictor_lstm_units",
        "dur_pred_prenet_units",
        "dur_pred_lstm_units",
        "decoder_prenet_units",
        "decoder_num_layers",
        "decoder_num_heads",
        "decoder_num_units",
        "decoder_ffn_inner_dim",
        "outputs_per_step",
        "num_mels",
        "postnet_filter_size",
        "postnet_fsmn_num_layers",
        "postnet_num_memory_units",
        "postnet_ffn_inner_dim",
        "postnet_lstm_units",
        *VOCAB_KEYS,
    ]
    missing = [k for k in required if k not in p]
    if missing:
        raise ConfigError(f"KanTtsSAMBERT params lack {', '.join(missing)}")
    for key in ("encoder_num_units", "decoder_num_units"):
        heads = p[key.replace("units", "heads")]
        if p[key] % heads:
            raise ConfigError(f"{key}={p[key]} is not divisible by {key.replace('units', 'heads')}={heads}")
    if p.get("SE") or p.get("NSF") or p.get("FP") or p.get("MAS") or p.get("using_byte"):
        raise ConfigError("SE/NSF/FP/MAS/byte variants of SAmBERT are not supported (only the emo voices)")
    return p


class KanTtsSAMBERT(nn.Module):
    """SAmBERT acoustic model; ``state_dict()`` keys and shapes equal the released checkpoint's."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        super().__init__()
        p = check_params(params)
        self.params = p
        self.r = p["outputs_per_step"]
        self.num_mels = p["num_mels"]
        proj, spk, emo = p["encoder_projection_units"], p["speaker_units"], p["emotion_units"]
        self.d_cond = proj + spk + emo
        self.d_mem = proj * self.r + spk + emo
        self.text_encoder = TextFftEncoder(p)
        self.spk_tokenizer = nn.Embedding(p["speaker"], spk)
        self.emo_tokenizer = nn.Embedding(p["emotion"], emo)
        self.variance_adaptor = VarianceAdaptor(p, self.d_cond)
        self.mel_decoder = MelPNCADecoder(p, self.d_mem)
        self.mel_postnet = PostNet(p)

    @torch.inference_mode()
    def forward(
        self,
        inputs_ling: Tensor,
        inputs_emotion: Tensor,
        inputs_speaker: Tensor,
        duration_scale: float = 1.0,
        pitch_offset: float = 0.0,
        energy_offset: float = 0.0,
        durations: Tensor | None = None,
    ) -> dict[str, Tensor | int]:
        """Batch-1 inference. ``inputs_ling`` [1,T,4], ``inputs_emotion``/``inputs_speaker`` [1,T].

        ``durations`` ([1,T] frames, float) replaces the predicted durations; ``duration_scale`` multiplies
        predicted durations before rounding; the offsets are added to pitch/energy predictions.
        """
        if inputs_ling.size(0) != 1:
            raise ValueError("KanTtsSAMBERT.forward is the batch-1 reference; use AcousticModel for batches")
        text_hid = self.text_encoder(inputs_ling)
        emo_hid = self.emo_tokenizer(inputs_emotion)
        spk_hid = self.spk_tokenizer(inputs_speaker)
        va = self.variance_adaptor(
            text_hid, spk_hid, emo_hid, duration_scale, pitch_offset, energy_offset, durations
        )
        lr_text, lr_emo, lr_spk, n_frames, dur = (
            va["lr_text"],
            va["lr_emo"],
            va["lr_spk"],
            va["frames"],
            va["dur"],
        )
        b, fp, _ = lr_text.shape
        memory = torch.cat(
            [
                lr_text.reshape(b, fp // self.r, -1),
                lr_spk.reshape(b, fp // self.r, self.r, -1)[:, :, 0],
                lr_emo.reshape(b, fp // self.r, self.r, -1)[:, :, 0],
            ],
            dim=-1,
        )
        band = int(dur.max().item() / self.r + 0.5) if dur.numel() else 0
        dec = self.decode(memory, band, band).reshape(b, -1, self.num_mels)
        out_mask = torch.arange(dec.size(1))[None, :] >= n_frames
        dec = masked(dec, out_mask)
        post = masked(self.mel_postnet(dec, out_mask) + dec, out_mask)
        return {
            "postnet_outputs": post,
            "dec_outputs": dec,
            "LR_length_rounded": n_frames,
            "LR_text_outputs": lr_text,
            "log_duration_predictions": va["log_dur"],
            "duration_frames": va["reps"],
            "pitch_predictions": va["pitch"],
            "energy_predictions": va["energy"],
            "x_band_width": band,
            "h_band_width": band,
        }

    def decode(self, memory: Tensor, x_band: int, h_band: int) -> Tensor:
        """Autoregressive PNCA decoding over the M memory steps -> [1, M, r*num_mels] (spec §2.3 step 7)."""
        dec = self.mel_decoder.mel_dec
        b, m, _ = memory.shape
        nh = dec.pnca[0].pnca_attn.n_head if len(dec.pnca) else 1
        dh = dec.d_model // nh
        mem_kv = []
        for block in dec.pnca:
            k, v = block.pnca_attn.w_h_kv(memory).chunk(2, dim=-1)
            mem_kv.append((k.view(b, m, nh, dh).transpose(1, 2), v.view(b, m, nh, dh).transpose(1, 2)))
        caches: list[tuple[list[Tensor], list[Tensor]]] = [([], []) for _ in dec.pnca]
        prev = memory.new_zeros(b, 1, dec.n_mels)
        outs = []
        for s in range(m):
            x = (
                dec.dec_in_proj(torch.cat([memory[:, s : s + 1], dec.prenet(prev)], dim=-1))
                * dec.d_model**0.5
            )
            for block, (ks, vs), (hk, hv) in zip(dec.pnca, caches, mem_kv, strict=True):
                att = block.pnca_attn
                q, k, v = att.w_x_qkv(att.layer_norm(x)).chunk(3, dim=-1)
                q = q.view(b, 1, nh, dh).transpose(1, 2)
                ks.append(k.view(b, 1, nh, dh).transpose(1, 2))
                vs.append(v.view(b, 1, nh, dh).transpose(1, 2))
                x0 = max(0, s - x_band)
                kx, vx = torch.cat(ks[x0:], dim=2), torch.cat(vs[x0:], dim=2)
                ox = torch.softmax(q @ kx.transpose(-1, -2) / dh**0.5, dim=-1) @ vx
                h1 = min(m, s + h_band + 1)
                oh = torch.softmax(q @ hk[:, :, s:h1].transpose(-1, -2) / dh**0.5, dim=-1) @ hv[:, :, s:h1]
                x = (
                    x
                    + att.fc_x(ox.transpose(1, 2).reshape(b, 1, -1))
                    + att.fc_h(oh.transpose(1, 2).reshape(b, 1, -1))
                )
                x = block.pos_ffn(x)
            out = dec.dec_out_proj(dec.ln(x))
            outs.append(out)
            prev = out[:, :, -dec.n_mels :]
        return torch.cat(outs, dim=1) if outs else memory.new_zeros(b, 0, dec.r * dec.n_mels)


class VarianceAdaptor(nn.Module):
    def __init__(self, p: dict, d_cond: int) -> None:
        super().__init__()
        self.r = p["outputs_per_step"]
        proj = p["encoder_projection_units"]
        self.pitch_predictor = VarFsmnRnnNARPredictor(d_cond, p)
        self.energy_predictor = VarFsmnRnnNARPredictor(d_cond, p)
        self.duration_predictor = VarRnnARPredictor(
            d_cond, list(p["dur_pred_prenet_units"]), p["dur_pred_lstm_units"]
        )
        self.dur_position_encoder = DurSinusoidalPositionEncoder(proj, self.r)
        self.pitch_emb = nn.Conv1d(1, proj, 9, padding=4)
        self.energy_emb = nn.Conv1d(1, proj, 9, padding=4)

    def forward(
        self,
        text_hid: Tensor,
        spk_hid: Tensor,
        emo_hid: Tensor,
        duration_scale: float = 1.0,
        pitch_offset: float = 0.0,
        energy_offset: float = 0.0,
        durations: Tensor | None = None,
    ) -> dict[str, Any]:
        x = torch.cat([text_hid, spk_hid, emo_hid], dim=-1)
        pitch = self.pitch_predictor(x) + pitch_offset
        energy = self.energy_predictor(x) + energy_offset
        text_aug = text_hid + self.pitch_emb(pitch[:, None]).transpose(1, 2)
        text_aug = text_aug + self.energy_emb(energy[:, None]).transpose(1, 2)
        cond = torch.cat([text_aug, spk_hid, emo_hid], dim=-1)
        log_dur = self.duration_predictor.infer(cond)
        dur = (torch.exp(log_dur) - 1) * duration_scale if durations is None else durations.to(log_dur)
        reps = (dur + 0.5).long()
        frames = int(reps.sum())
        padded = frames + (-frames) % self.r
        lr = [
            F.pad(torch.repeat_interleave(z[0], reps[0], dim=0), (0, 0, 0, padded - frames))[None]
            for z in (text_aug, emo_hid, spk_hid)
        ]
        starts = torch.cumsum(reps[0], 0) - reps[0]
        pos = torch.arange(frames) - torch.repeat_interleave(starts, reps[0]) + 1
        pos = F.pad(pos.float(), (0, padded - frames))[None]
        lr_text = lr[0] + self.dur_position_encoder.encode(pos)
        return {
            "lr_text": lr_text,
            "lr_emo": lr[1],
            "lr_spk": lr[2],
            "frames": frames,
            "dur": dur,
            "reps": reps,
            "log_dur": log_dur,
            "pitch": pitch,
            "energy": energy,
        }


class WeightsError(ValueError):
    """A checkpoint does not fit the model built from its config."""


_VOCAB_TABLES = {
    "text_encoder.sy_emb.weight": "sy",
    "text_encoder.tone_emb.weight": "tone",
    "text_encoder.syllable_flag_emb.weight": "syllable_flag",
    "text_encoder.ws_emb.weight": "word_segment",
    "emo_tokenizer.weight": "emotion",
    "spk_tokenizer.weight": "speaker",
}


def load_am_state(model: KanTtsSAMBERT, state: Mapping[str, Tensor], source: str = "checkpoint") -> None:
    """Load AM weights strictly, explaining shape mismatches (vocabulary sizes in particular)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing:
        raise WeightsError(f"{source}: {len(missing)} AM weights missing, e.g. {missing[:3]}")
    for key, table in _VOCAB_TABLES.items():
        if tuple(state[key].shape) != tuple(own[key].shape):
            raise WeightsError(
                f"{source}: {key} has {state[key].shape[0]} rows but am/config.yaml linguistic_unit gives a "
                f"{table} vocabulary of {own[key].shape[0]} (check speaker_list / has_mask)"
            )
    wrong = [
        f"{k} {list(state[k].shape)} != {list(v.shape)}" for k, v in own.items() if state[k].shape != v.shape
    ]
    if wrong:
        raise WeightsError(f"{source}: AM weight shapes do not match am/config.yaml: {'; '.join(wrong[:3])}")
    model.load_state_dict({k: state[k] for k in own}, strict=True)
