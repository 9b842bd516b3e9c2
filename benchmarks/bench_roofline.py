"""Roofline: FLOPs per audio second per stage, achieved GFLOPS, and % of this machine's measured peak.

``make bench-roofline``. Full-size random models (the released dimensions, so the arithmetic is the real one).

- Peak: best GFLOPS of a large ``torch.mm`` and of a conv1d of the vocoder's typical shape (64 channels,
  kernel 7, 3200 samples), fp32 and bf16, on 1 and 2 threads: the practical ceiling of this machine.
- Vocoder FLOPs: forward hooks on every convolution module of the generator (layer shapes as run, not
  typed numbers), for the checkpoint layout (``model``: two upsampling branches, what the reference
  computes) and the fused layout we run (``executed``). GFLOPS are the model FLOPs over the time taken.
- Acoustic model FLOPs: ``torch.utils.flop_counter`` over the engine's own stages (front, AR decoder, postnet;
  its fast path runs on raw weights, so module hooks would not see it), LSTMs counted from their weights.

    .venv/bin/python -m benchmarks.bench_roofline [--frames 640] [--runs 3] [--threads 1 2] [--no-acoustic]
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from benchmarks.bench_vocoder import best_of
from engine.hifigan import Generator, Vocoder
from engine.hifigan.layers import WNConv1d, bf16_hardware

REPO = Path(__file__).resolve().parent.parent
HOP, SR = 200, 16000
RELEASED_16K = {  # KAN-TTS hifigan_v1_16k.yaml Model.Generator.params (the released zh-cn 16 kHz voices)
    "in_channels": 80,
    "channels": 256,
    "kernel_size": 7,
    "upsample_scales": [10, 5, 2, 2],
    "upsample_kernal_sizes": [20, 10, 4, 4],
    "resblock_kernel_sizes": [3, 7, 11],
    "resblock_dilations": [[1, 3, 5, 7]] * 3,
    "causal": True,
    "nonlinear_activation": "LeakyReLU",
    "nonlinear_activation_params": {"negative_slope": 0.1},
}


@contextmanager
def threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---- FLOPs from the modules ----
def module_macs(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> int:
    """Multiply-accumulates of one call of a convolution/linear/LSTM module, from its shapes (0 otherwise)."""
    x = inputs[0] if inputs else None
    if not isinstance(x, Tensor):
        return 0
    if isinstance(module, WNConv1d):
        w = module.effective_weight().numel()
        return x.shape[0] * w * (x.shape[-1] if module.transposed else output.shape[-1])
    if isinstance(module, nn.Conv1d):
        return x.shape[0] * module.weight.numel() * output.shape[-1]
    if isinstance(module, nn.ConvTranspose1d):
        return x.shape[0] * module.weight.numel() * x.shape[-1]
    if isinstance(module, nn.Linear):
        return module.weight.numel() * (x.numel() // x.shape[-1])
    if isinstance(module, nn.LSTM):
        steps = x.numel() // x.shape[-1]
        return steps * sum(p.numel() for n, p in module.named_parameters() if n.startswith("weight"))
    return 0


def count_macs(model: nn.Module, run: Callable[[], object], stage_of: Callable[[str], str]) -> dict[str, int]:
    """MACs per stage of ``run()``, summed over calls of ``model``'s leaf modules (hooks on every module)."""
    totals: dict[str, int] = defaultdict(int)
    hooks = []
    for name, mod in model.named_modules():

        def hook(m: nn.Module, inputs: tuple[Any, ...], output: Any, name: str = name) -> None:
            totals[stage_of(name)] += module_macs(m, inputs, output)

        hooks.append(mod.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            run()
    finally:
        for h in hooks:
            h.remove()
    return {k: v for k, v in totals.items() if v}


def vocoder_stage(num_kernels: int) -> Callable[[str], str]:
    def stage_of(name: str) -> str:
        head, _, rest = name.partition(".")
        if head in ("transpose_upsamples", "repeat_upsamples", "upsamples"):
            return f"upsample {rest.split('.')[0]}"
        if head == "conv_blocks":
            return f"resblocks {int(rest.split('.')[0]) // num_kernels}"
        return head

    return stage_of


def vocoder_macs(fused: bool, frames: int = 64) -> dict[str, float]:
    """MACs per audio second per stage of the released 16 kHz generator (chunked causal run)."""
    g = Generator(**RELEASED_16K).remove_weight_norm().eval()
    if fused:
        g.fuse_upsampling()
    mel = torch.zeros(1, g.in_channels, frames)
    macs = count_macs(g, lambda: g.forward_stream(mel, {}), vocoder_stage(g.num_kernels))
    seconds = frames * g.hop_length / SR
    return {k: v / seconds for k, v in macs.items()}


def _lstm_flops(*args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """``aten.lstm.input``: 2 FLOPs per weight per time step and batch item."""
    x, _, params = args[:3]
    steps = x[0] * x[1]
    return 2 * steps * sum(p[0] * p[1] for p in params if len(p) == 2)


def acoustic_flops(voice: Any, ids: np.ndarray, nthreads: int, runs: int) -> list[tuple[str, float, float]]:
    """(stage, FLOPs, seconds) for the acoustic model's front, decoder and postnet on one utterance."""
    from torch.utils.flop_counter import FlopCounterMode

    from engine.sambert import AcousticInput, AcousticModel

    am = AcousticModel.from_voice(voice, threads=nthreads)
    item = am._prepare(AcousticInput(ids))
    state: dict[str, Any] = {}

    def front() -> None:
        state["front"] = am._front([item])

    def decoder() -> None:
        f = state["front"]
        state["dec"] = am._decode_all(f.memory, f.bands)

    def postnet() -> None:
        f = state["front"]
        am._postnet_batch([state["dec"][0].reshape(-1, am.num_mels)[: f.frames[0]]])

    out = []
    for name, fn in (("acoustic front", front), ("acoustic decoder", decoder), ("acoustic postnet", postnet)):
        with am._threads(), torch.inference_mode():
            counter = FlopCounterMode(display=False, custom_mapping={torch.ops.aten.lstm.input: _lstm_flops})
            with counter:
                fn()
            seconds = best_of(fn, runs)
        out.append((name, float(counter.get_total_flops()), seconds))
    frames = int(state["front"].frames[0])
    return [(n, f / (frames * HOP / SR), s / (frames * HOP / SR)) for n, f, s in out]


# ---- peaks ----
def peak_gflops(kind: str, dtype: torch.dtype, nthreads: int, runs: int) -> float:
    with threads(nthreads), torch.inference_mode():
        if kind == "mm":
            n = 2048
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            flops = 2 * n**3
            t = best_of(lambda: torch.mm(a, b), runs)
        else:
            c, k, length = 64, 7, 3200
            x = torch.randn(1, c, length + k - 1, dtype=dtype)
            w = torch.randn(c, c, k, dtype=dtype)
            flops = 2 * c * c * k * length
            t = best_of(lambda: [F.conv1d(x, w) for _ in range(10)], runs) / 10
    return flops / t / 1e9


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=640, help="vocoder input frames per timed call")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--syllables", type=int, default=100, help="acoustic model line length")
    ap.add_argument("--no-acoustic", action="store_true")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, cpus {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}")
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}

    peaks: dict[tuple[str, int], float] = {}
    # Without bf16 instructions a bf16 matmul is emulated (~0.3 GFLOPS) and the bf16 vocoder runs fp32
    # kernels: the bf16 rows are then measured against the fp32 peak.
    peak_of = {"fp32": "fp32", "bf16": "bf16" if bf16_hardware() else "fp32"}
    if not bf16_hardware():
        print("no bf16 dot-product instructions on this CPU: bf16 rows use the fp32 peak")
    print("\n| peak (practical) | precision | threads | GFLOPS |\n|---|---|---|---|")
    for prec, dtype in dtypes.items():
        if peak_of[prec] != prec:
            continue
        for n in args.threads:
            for kind, label in (("mm", "torch.mm 2048²"), ("conv", "conv1d 64→64, k 7, 3200 samples")):
                g = peak_gflops(kind, dtype, n, args.runs)
                peaks[(prec, n)] = max(peaks.get((prec, n), 0.0), g)
                print(f"| {label} | {prec} | {n} | {g:.1f} |")

    model = vocoder_macs(fused=False)
    executed = vocoder_macs(fused=True)
    print("\n| vocoder stage | model GFLOP per audio s | executed (fused) |\n|---|---|---|")
    for stage in model:
        print(f"| {stage} | {2 * model[stage] / 1e9:.3f} | {2 * executed.get(stage, 0) / 1e9:.3f} |")
    model_total, exec_total = 2 * sum(model.values()), 2 * sum(executed.values())
    print(f"| **total** | **{model_total / 1e9:.2f}** | **{exec_total / 1e9:.2f}** |")

    print(
        "\n| stage | backend | precision | threads | s per audio s (RTF) | GFLOPS (model FLOPs) "
        "| % of measured peak |\n|---|---|---|---|---|---|---|"
    )
    torch.manual_seed(0)
    state = Generator(**RELEASED_16K).state_dict()
    cfg = {"Model": {"Generator": {"params": RELEASED_16K}}, "audio_config": {"sampling_rate": SR}}
    mel = np.random.default_rng(0).standard_normal((args.frames, 80)).astype(np.float32)
    audio_s = args.frames * HOP / SR
    for prec in dtypes:
        for backend in ("torch", "onednn"):
            for n in args.threads:
                v = Vocoder.from_config(cfg, state, threads=n, precision=prec, backend=backend)
                if v.backend != backend:
                    continue
                rtf = best_of(lambda v=v: v.vocode(mel), args.runs) / audio_s
                gflops = model_total / rtf / 1e9
                print(
                    f"| vocoder | {backend} | {prec} | {n} | {rtf:.3f} | {gflops:.1f} "
                    f"| {100 * gflops / peaks[(peak_of[prec], n)]:.0f} % |"
                )
    if not args.no_acoustic:
        from benchmarks.bench_engine import DEFAULT_DIR, syllable_line
        from engine.modeldir import load_model_dir

        if not (DEFAULT_DIR / "configuration.json").is_file():
            from engine.testing.make_model_dir import write_model_dir

            write_model_dir(DEFAULT_DIR, size="full")
        voice = load_model_dir(DEFAULT_DIR).default_voice
        ids = syllable_line(voice.vocab, args.syllables, seed=args.syllables)
        for n in args.threads:
            for stage, flops, rtf in acoustic_flops(voice, ids, n, args.runs):
                gflops = flops / rtf / 1e9
                print(
                    f"| {stage} ({flops / 1e9:.3f} GFLOP/audio s) | torch | fp32 | {n} | {rtf:.3f} "
                    f"| {gflops:.1f} | {100 * gflops / peaks[('fp32', n)]:.0f} % |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
