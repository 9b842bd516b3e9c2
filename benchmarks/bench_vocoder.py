"""HiFi-GAN vocoder speed: full-size 16 kHz generator (random weights, released dimensions) on N threads.

Prints one-shot time and RTF for 300/600 frames (min of several runs: robust to other load on the
machine), the streamed/one-shot cost ratio and first-chunk latency, batch throughput, and the optional bf16
mode's speed and error.

    .venv/bin/python -m benchmarks.bench_vocoder [--threads 2] [--frames 300 600] [--runs 3] [--chunk 25]
        [--backend auto|torch|onednn]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
import torch

from engine.hifigan import Generator, Vocoder

HOP, SR = 200, 16000
VARIANTS = {
    "causal": {"causal": True, "upsample_kernal_sizes": [20, 10, 4, 4]},
    "noncausal": {"causal": False, "upsample_kernal_sizes": [20, 11, 4, 4]},
}


def best_of(fn: Callable[[], object], runs: int) -> float:
    fn()  # warm-up (oneDNN primitive creation)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def make(variant: str, threads: int, precision: str = "fp32", backend: str = "auto") -> Vocoder:
    torch.manual_seed(0)
    params = VARIANTS[variant]
    cfg = {"Model": {"Generator": {"params": params}}, "audio_config": {"sampling_rate": SR}}
    state = Generator(**params).state_dict()
    return Vocoder.from_config(cfg, state, threads=threads, precision=precision, backend=backend)


def streamed(v: Vocoder, mel: np.ndarray, chunk: int) -> tuple[np.ndarray, float]:
    s = v.stream()
    t0 = time.perf_counter()
    first = None
    out = []
    for i in range(0, len(mel), chunk):
        piece = s.push(mel[i : i + chunk])
        if first is None and len(piece):
            first = time.perf_counter() - t0
        out.append(piece)
    out.append(s.flush())
    return np.concatenate(out), first or (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, nargs="+", default=[300, 600])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=25, help="frames per streamed chunk")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument(
        "--backend", default="auto", choices=["auto", "torch", "onednn"], help="causal chunk backend"
    )
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {args.threads}, cpus {os.cpu_count()}, load {os.getloadavg()}")
    rng = np.random.default_rng(0)
    for variant in args.variants:
        v = make(variant, args.threads, backend=args.backend)
        v16 = None if args.no_bf16 else make(variant, args.threads, "bf16", args.backend)
        print(f"{variant}: backend {v.backend}")
        for frames in args.frames:
            mel = rng.standard_normal((frames, 80)).astype(np.float32)
            audio_s = frames * HOP / SR
            t = best_of(lambda v=v, mel=mel: v.vocode(mel), args.runs)
            line = f"{variant:9s} {frames:4d} frames ({audio_s:.2f} s): fp32 {t:.3f} s RTF {t / audio_s:.3f}"
            full = v.vocode(mel)
            if v16 is not None:
                t16 = best_of(lambda v16=v16, mel=mel: v16.vocode(mel), args.runs)
                err = float(np.abs(v16.vocode(mel) - full).max())
                line += f" | bf16 {t16:.3f} s RTF {t16 / audio_s:.3f} max|err| {err:.2e}"
            print(line)
            ts, firsts = [], []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                y, first = streamed(v, mel, args.chunk)
                ts.append(time.perf_counter() - t0)
                firsts.append(first)
            err = float(np.abs(y - full).max())
            print(
                f"{'':9s} stream chunk {args.chunk}: total {min(ts):.3f} s = {min(ts) / t:.2f}x one-shot, "
                f"first chunk {min(firsts) * 1000:.0f} ms, max|stream-full| {err:.1e}"
            )
        mels = [rng.standard_normal((n, 80)).astype(np.float32) for n in (150, 200, 250, 300)]
        tb = best_of(lambda v=v, mels=mels: v.vocode_batch(mels), args.runs)
        t1 = best_of(lambda v=v, mels=mels: [v.vocode(m) for m in mels], args.runs)
        secs = sum(len(m) for m in mels) * HOP / SR
        print(f"{'':9s} batch of 4 ({secs:.1f} s audio): batched {tb:.3f} s, one-by-one {t1:.3f} s")


if __name__ == "__main__":
    main()
