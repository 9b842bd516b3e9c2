"""Engine benchmark on the full-size random model (released dimensions): ``make bench-engine``.

For token lines of 50/100/200 syllables: acoustic time (front / AR decoder / postnet), per-step decoder time,
vocoder time, RTFs; then throughput at batch 1/4/8, first-chunk latency of the streaming path and peak RSS.
The model directory is generated once into ``models/_generated/full`` (git-ignored) and reused.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from engine.modeldir import load_model_dir
from engine.sambert import AcousticInput, AcousticModel
from engine.symbols import LinguisticVocab, format_token

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "models" / "_generated" / "full"
HOP, SR = 200, 16000
INITIALS = [
    "b",
    "p",
    "m",
    "f",
    "d",
    "t",
    "n",
    "l",
    "g",
    "k",
    "h",
    "j",
    "q",
    "xx",
    "zh",
    "ch",
    "sh",
    "r",
    "z",
    "c",
    "s",
]
FINALS = [
    "a",
    "ai",
    "an",
    "ang",
    "ao",
    "e",
    "ei",
    "en",
    "eng",
    "ou",
    "i",
    "ian",
    "in",
    "ing",
    "u",
    "uo",
    "uei",
    "uan",
    "ong",
    "iao",
    "ie",
    "iou",
    "v",
]


def syllable_line(vocab: LinguisticVocab, syllables: int, seed: int = 0) -> np.ndarray:
    """``syllables`` Mandarin syllables (2 phones each), #1 after every 2-3 syllables, #4 at the end."""
    rng = np.random.default_rng(seed)
    tokens: list[str] = []
    word_left = 0
    for i in range(syllables):
        if word_left == 0:
            word_left = int(rng.integers(2, 4))
        tone = f"tone{int(rng.integers(1, 6))}"
        first_ws = (
            "word_begin"
            if word_left in (2, 3) and (not tokens or tokens[-1].startswith("{#"))
            else "word_middle"
        )
        last_ws = "word_end" if word_left == 1 or i == syllables - 1 else "word_middle"
        ini, fin = f"{rng.choice(INITIALS)}_c", f"{rng.choice(FINALS)}_c"
        tokens.append(format_token(ini, tone, "s_begin", first_ws, "emotion_neutral", "F7"))
        tokens.append(format_token(fin, tone, "s_end", last_ws, "emotion_neutral", "F7"))
        word_left -= 1
        if word_left == 0 or i == syllables - 1:
            brk = "#4" if i == syllables - 1 else "#1"
            tokens.append(format_token(brk, "tone_none", "s_none", "word_none", "emotion_none", "F7"))
    return vocab.encode_tokens(tokens)


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Median wall time over ``repeat`` runs (and the last result)."""
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def cpu_timed(fn: Callable[[], object], repeat: int) -> float:
    """Median process CPU time: on a shared machine this is the cost without time spent waiting for a core."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def acoustic_breakdown(am: AcousticModel, ids: np.ndarray) -> dict[str, float]:
    """Wall time of the acoustic stages for one utterance (uses the engine's internal stages)."""
    with am._threads(), torch.inference_mode():
        t0 = time.perf_counter()
        front = am._front([am._prepare(AcousticInput(ids))])
        t1 = time.perf_counter()
        dec = am._decode_all(front.memory, front.bands)
        t2 = time.perf_counter()
        am._postnet_batch([dec[0].reshape(-1, am.num_mels)[: front.frames[0]]])
        t3 = time.perf_counter()
    steps = front.memory[0].size(0)
    return {"front": t1 - t0, "decoder": t2 - t1, "postnet": t3 - t2, "steps": steps, "band": front.bands[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--syllables", default="50,100,200")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chunk-frames", type=int, default=24)
    parser.add_argument("--no-vocoder", action="store_true")
    args = parser.parse_args(argv)

    if not (args.model_dir / "configuration.json").is_file():
        from engine.testing.make_model_dir import write_model_dir

        print(f"generating full-size random model into {args.model_dir} ...", flush=True)
        write_model_dir(args.model_dir, size="full")
    voice = load_model_dir(args.model_dir).default_voice
    torch.set_num_threads(args.threads)
    am = AcousticModel.from_voice(voice, threads=args.threads)
    voc = None
    if not args.no_vocoder:
        try:
            from engine.hifigan import Vocoder

            voc = Vocoder.from_voice(voice, threads=args.threads)
        except ImportError as exc:
            print(f"(vocoder unavailable: {exc})")
    sizes = [int(s) for s in args.syllables.split(",")]
    lines = {n: syllable_line(voice.vocab, n, seed=n) for n in sizes}
    am.synthesize([AcousticInput(lines[sizes[0]][:20])])  # warm-up
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, threads={args.threads}, model={args.model_dir}, load avg {load:.1f}")
    if load > os.cpu_count():
        print(
            f"WARNING: load average {load:.1f} > {os.cpu_count()} cores: wall times are inflated (see am_cpu)"
        )
    print(
        f"{'syll':>5} {'tokens':>6} {'frames':>6} {'audio_s':>7} {'am_s':>6} {'front':>6} {'dec':>6} "
        f"{'post':>6} {'ms/step':>7} {'band':>4} {'voc_s':>6} {'am_rtf':>6} {'rtf':>6} {'am_cpu':>6}"
    )
    for n in sizes:
        ids = lines[n]
        am_s, out = timed(lambda ids=ids: am.synthesize([AcousticInput(ids)])[0], args.repeat)
        parts = [acoustic_breakdown(am, ids) for _ in range(args.repeat)]
        part = {k: statistics.median(p[k] for p in parts) for k in parts[0]}
        mel = out.mel  # type: ignore[attr-defined]
        audio_s = mel.shape[0] * HOP / SR
        voc_s = timed(lambda mel=mel: voc.vocode(mel), args.repeat)[0] if voc else float("nan")
        am_cpu = cpu_timed(lambda ids=ids: am.synthesize([AcousticInput(ids)]), args.repeat)
        print(
            f"{n:>5} {len(ids):>6} {mel.shape[0]:>6} {audio_s:>7.2f} {am_s:>6.3f} {part['front']:>6.3f} "
            f"{part['decoder']:>6.3f} {part['postnet']:>6.3f} {1000 * part['decoder'] / part['steps']:>7.3f} "
            f"{int(part['band']):>4} {voc_s:>6.3f} {am_s / audio_s:>6.3f} {(am_s + voc_s) / audio_s:>6.3f} "
            f"{am_cpu:>6.3f}"
        )

    n = 100 if 100 in lines else sizes[0]
    stages = "acoustic + vocoder" if voc else "acoustic only"
    print(f"\nthroughput, {n}-syllable inputs (different text per item), {stages}:")
    for batch in (1, 4, 8):
        items = [AcousticInput(syllable_line(voice.vocab, n, seed=1000 + i)) for i in range(batch)]

        def run(items: list[AcousticInput] = items) -> float:
            outs = am.synthesize(items)
            if voc:
                voc.vocode_batch([o.mel for o in outs])
            return sum(o.mel.shape[0] for o in outs) * HOP / SR

        wall, audio = timed(run, max(1, args.repeat - 1))
        am_wall = timed(lambda items=items: am.synthesize(items), 1)[0]
        print(
            f"  batch {batch}: {wall:6.3f} s for {audio:6.2f} s audio -> {audio / wall:6.2f} s audio/s "
            f"(acoustic alone {am_wall:6.3f} s)"
        )

    ids = lines[n]
    firsts, voc_firsts = [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        stream = am.stream(AcousticInput(ids), chunk_frames=args.chunk_frames)
        it = iter(stream)
        chunk = next(it)
        firsts.append(time.perf_counter() - start)
        if voc:
            sv = voc.stream()
            sv.push(chunk)
            voc_firsts.append(time.perf_counter() - start)
        for _ in it:
            pass
    line = f"\nstreaming first chunk ({args.chunk_frames} frames, {n} syllables): "
    line += f"mel {statistics.median(firsts):.3f} s"
    if voc_firsts:
        line += f", first audio {statistics.median(voc_firsts):.3f} s"
    print(line)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
