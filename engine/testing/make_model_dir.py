"""Write a complete ModelScope-layout model directory with random weights (for tests and benchmarks).

    python -m engine.testing.make_model_dir OUT --size tiny|full [--voices a b] [--seed N] [--non-causal]

``full`` has exactly the released dimensions (KAN-TTS ``sambert_16k.yaml`` + ``hifigan_v1_16k.yaml``), so a
benchmark costs what the real model costs; ``tiny`` is small enough for sub-second synthesis in tests.
Random weights are adjusted so durations are realistic (about 6 frames per token). The directory is built in a
temporary sibling and renamed into place, so a crash never leaves a half-written directory.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml

from engine.symbols import DEFAULT_SPEAKER_LIST, LinguisticVocab

FULL_AM_PARAMS: dict[str, Any] = {
    "max_len": 800,
    "embedding_dim": 512,
    "encoder_num_layers": 8,
    "encoder_num_heads": 8,
    "encoder_num_units": 128,
    "encoder_ffn_inner_dim": 1024,
    "encoder_dropout": 0.1,
    "encoder_attention_dropout": 0.1,
    "encoder_relu_dropout": 0.1,
    "encoder_projection_units": 32,
    "speaker_units": 32,
    "emotion_units": 32,
    "predictor_filter_size": 41,
    "predictor_fsmn_num_layers": 3,
    "predictor_num_memory_units": 128,
    "predictor_ffn_inner_dim": 256,
    "predictor_dropout": 0.1,
    "predictor_shift": 0,
    "predictor_lstm_units": 128,
    "dur_pred_prenet_units": [128, 128],
    "dur_pred_lstm_units": 128,
    "decoder_prenet_units": [256, 256],
    "decoder_num_layers": 12,
    "decoder_num_heads": 8,
    "decoder_num_units": 128,
    "decoder_ffn_inner_dim": 1024,
    "decoder_dropout": 0.1,
    "decoder_attention_dropout": 0.1,
    "decoder_relu_dropout": 0.1,
    "outputs_per_step": 3,
    "num_mels": 80,
    "postnet_filter_size": 41,
    "postnet_fsmn_num_layers": 4,
    "postnet_num_memory_units": 256,
    "postnet_ffn_inner_dim": 512,
    "postnet_dropout": 0.1,
    "postnet_shift": 17,
    "postnet_lstm_units": 128,
    "MAS": False,
}

TINY_AM_OVERRIDES: dict[str, Any] = {
    "max_len": 200,
    "embedding_dim": 32,
    "encoder_num_layers": 2,
    "encoder_num_heads": 2,
    "encoder_num_units": 16,
    "encoder_ffn_inner_dim": 32,
    "encoder_projection_units": 8,
    "speaker_units": 8,
    "emotion_units": 8,
    "predictor_filter_size": 9,
    "predictor_fsmn_num_layers": 2,
    "predictor_num_memory_units": 16,
    "predictor_ffn_inner_dim": 32,
    "predictor_lstm_units": 16,
    "dur_pred_prenet_units": [16, 16],
    "dur_pred_lstm_units": 16,
    "decoder_prenet_units": [32, 32],
    "decoder_num_layers": 2,
    "decoder_num_heads": 2,
    "decoder_num_units": 16,
    "decoder_ffn_inner_dim": 32,
    "postnet_filter_size": 9,
    "postnet_fsmn_num_layers": 2,
    "postnet_num_memory_units": 16,
    "postnet_ffn_inner_dim": 32,
    "postnet_shift": 3,
    "postnet_lstm_units": 16,
}

FULL_VOC_PARAMS: dict[str, Any] = {
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

TINY_VOC_OVERRIDES: dict[str, Any] = {
    "channels": 32,
    "resblock_kernel_sizes": [3, 7],
    "resblock_dilations": [[1, 3], [1, 3]],
}

AUDIO_CONFIG: dict[str, Any] = {
    "sampling_rate": 16000,
    "hop_length": 200,
    "win_length": 1000,
    "n_fft": 2048,
    "n_mels": 80,
    "fmin": 0.0,
    "fmax": 8000.0,
    "min_level_db": -100.0,
    "ref_level_db": 20.0,
    "phone_level_feature": True,
    "num_workers": 16,
    "trim_silence": True,
    "trim_silence_threshold_db": 60,
    "preemphasize": False,
    "wav_normalize": True,
    "norm_type": "mean_std",
    "max_norm": 1.0,
    "symmetric": False,
}

DEFAULT_VOICES = {"tiny": ["zhitian_emo", "zhiyan_emo"], "full": ["zhitian_emo"]}
TARGET_FRAMES_PER_TOKEN = 6.0


def am_config(size: str, speaker_list: list[str] | None = None) -> dict[str, Any]:
    """A KAN-TTS SAMBERT training config (the schema of a released ``am/config.yaml``)."""
    params = copy.deepcopy(FULL_AM_PARAMS)
    if size == "tiny":
        params.update(copy.deepcopy(TINY_AM_OVERRIDES))
    return {
        "model_type": "sambert",
        "Model": {
            "KanTtsSAMBERT": {
                "params": params,
                "optimizer": {"type": "Adam", "params": {"lr": 0.001, "betas": [0.9, 0.98], "eps": 1.0e-9}},
                "scheduler": {"type": "NoamLR", "params": {"warmup_steps": 4000}},
            }
        },
        "linguistic_unit": {
            "cleaners": "english_cleaners",
            "lfeat_type_list": "sy,tone,syllable_flag,word_segment,emo_category,speaker_category",
            "speaker_list": ",".join(speaker_list or DEFAULT_SPEAKER_LIST),
            "language": "PinYin",
        },
        "audio_config": copy.deepcopy(AUDIO_CONFIG),
    }


def voc_config(size: str, causal: bool = True) -> dict[str, Any]:
    """A KAN-TTS HiFi-GAN training config (spec §3.1); non-causal uses stage-1 kernel 11."""
    params = copy.deepcopy(FULL_VOC_PARAMS)
    if size == "tiny":
        params.update(copy.deepcopy(TINY_VOC_OVERRIDES))
    params["causal"] = causal
    if not causal:
        params["upsample_kernal_sizes"] = [20, 11, 4, 4]
    return {
        "model_type": "hifigan",
        "Model": {"Generator": {"params": params}},
        "audio_config": copy.deepcopy(AUDIO_CONFIG),
    }


def random_am_state(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """Random SAmBERT weights with a duration head tuned to about 6 frames per token."""
    from engine.sambert.model import KanTtsSAMBERT

    params = dict(config["Model"]["KanTtsSAMBERT"]["params"])
    params.update(LinguisticVocab.from_am_config(config).sizes())
    torch.manual_seed(seed)
    model = KanTtsSAMBERT(params)
    _tune_duration_head(model, params)
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


@torch.no_grad()
def _tune_duration_head(model: torch.nn.Module, params: dict[str, Any], spread: float = 0.15) -> None:
    """Set the duration fc so log(d+1) ≈ log(7) ± ``spread`` over random sequences (≈ 4-8 frames/token).

    The std is pooled over several sequences: a random LSTM's state drifts per sequence, and a head tuned on
    one sequence alone would give other sequences 2 or 12 frames per token.
    """
    model.eval()
    b, n = 8, 48
    cols = [torch.randint(0, params[k], (b, n)) for k in ("sy", "tone", "syllable_flag", "word_segment")]
    cols[0][: b // 2] = torch.randint(0, 65, (b // 2, n))  # Mandarin phones only in half the batch
    ids = torch.stack(cols, -1)
    emo = torch.ones(b, n, dtype=torch.long)
    spk = torch.zeros(b, n, dtype=torch.long)
    va = model.variance_adaptor
    text = model.text_encoder(ids)
    spk_hid, emo_hid = model.spk_tokenizer(spk), model.emo_tokenizer(emo)
    x = torch.cat([text, spk_hid, emo_hid], dim=-1)
    text = text + va.pitch_emb(va.pitch_predictor(x)[:, None]).transpose(1, 2)
    text = text + va.energy_emb(va.energy_predictor(x)[:, None]).transpose(1, 2)
    cond = torch.cat([text, spk_hid, emo_hid], dim=-1)
    target = math.log(TARGET_FRAMES_PER_TOKEN + 1.0)
    fc = va.duration_predictor.fc
    fc.weight.normal_(0.0, 0.02 / math.sqrt(fc.in_features))
    fc.bias.fill_(target)
    for _ in range(5):  # the AR feedback moves the hidden states: iterate on the real AR output
        log_dur = va.duration_predictor.infer(cond)
        std = float(log_dur.std())
        if std > 1e-6:
            fc.weight.mul_(min(spread / std, 10.0))
        fc.bias.add_(target - float(va.duration_predictor.infer(cond).mean()))


def random_voc_state(config: dict[str, Any], seed: int) -> dict[str, torch.Tensor]:
    """Random HiFi-GAN generator weights in weight-norm form (``weight_g``/``weight_v``)."""
    from engine.hifigan import Generator

    torch.manual_seed(seed)
    gen = Generator(**config["Model"]["Generator"]["params"])
    return {k: v.detach().clone().contiguous() for k, v in gen.state_dict().items()}


def write_model_dir(
    out: Path,
    size: str = "tiny",
    voices: list[str] | None = None,
    seed: int = 0,
    causal: bool = True,
    force: bool = False,
) -> Path:
    """Write the directory atomically and return its path."""
    if size not in DEFAULT_VOICES:
        raise ValueError(f"size must be 'tiny' or 'full', got {size!r}")
    voices = list(voices or DEFAULT_VOICES[size])
    if not voices or len(set(voices)) != len(voices):
        raise ValueError(f"voices must be a non-empty list of distinct names, got {voices}")
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists (pass --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: one thread is fastest and immune to a busy machine
    try:
        _populate(tmp, size, voices, seed, causal)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)
    return out


def _populate(root: Path, size: str, voices: list[str], seed: int, causal: bool) -> None:
    configuration = {
        "framework": "pytorch",
        "task": "text-to-speech",
        "model": {
            "type": "sambert-hifigan",
            "lang_type": "zhcn",
            "sample_rate": 16000,
            "am": {"linguistic_unit": {"has_mask": True}},
        },
        "pipeline": {"type": "sambert-hifigan-tts"},
        "generated": {
            "by": "engine.testing.make_model_dir",
            "size": size,
            "seed": seed,
            "random_weights": True,
        },
    }
    (root / "configuration.json").write_text(json.dumps(configuration, indent=2) + "\n", "utf-8")
    (root / "voices").mkdir()
    (root / "voices" / "voices.json").write_text(json.dumps({"voices": voices}, indent=2) + "\n", "utf-8")
    for index, voice in enumerate(voices):
        vdir = root / "voices" / voice
        am_cfg, voc_cfg = am_config(size), voc_config(size, causal)
        for sub, cfg in (("am", am_cfg), ("voc", voc_cfg)):
            (vdir / sub / "ckpt").mkdir(parents=True)
            (vdir / sub / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False), "utf-8")
        (vdir / "audio_config.yaml").write_text(yaml.safe_dump(AUDIO_CONFIG, sort_keys=False), "utf-8")
        voice_seed = seed * 1000 + index
        am_state = {"model": random_am_state(am_cfg, voice_seed), "steps": 0}
        torch.save(am_state, vdir / "am" / "ckpt" / "checkpoint_0.pth")
        voc_state = {"model": {"generator": random_voc_state(voc_cfg, voice_seed)}, "steps": 0}
        torch.save(voc_state, vdir / "voc" / "ckpt" / "checkpoint_0.pth")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="directory to create")
    parser.add_argument("--size", choices=("tiny", "full"), default="tiny")
    parser.add_argument("--voices", nargs="+", default=None, help="voice names (first = default)")
    parser.add_argument("--seed", type=int, default=0)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--causal", dest="causal", action="store_true", default=True, help="causal HiFi-GAN")
    group.add_argument("--non-causal", dest="causal", action="store_false", help="non-causal HiFi-GAN")
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    args = parser.parse_args(argv)
    try:
        path = write_model_dir(args.out, args.size, args.voices, args.seed, args.causal, args.force)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
