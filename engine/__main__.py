"""CLI: ``python -m engine synth --model-dir DIR --text 你好 --out x.wav``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from engine import audio as audio_mod
from engine.messages import SynthesisRequest
from engine.modeldir import VOCODER_PRECISIONS

DEFAULTS = SynthesisRequest(text="")


def _synth(args: argparse.Namespace) -> int:
    from engine.frontend import FrontendError
    from engine.modeldir import ModelDirError
    from engine.synthesizer import Synthesizer

    text = args.text if args.text is not None else Path(args.text_file).read_text("utf-8")
    if not text.strip():  # as the HTTP API (422 "text is empty"): no silent, empty file
        print("error: text is empty", file=sys.stderr)
        return 2
    fmt = args.format or (Path(args.out).suffix.lstrip(".").lower() or "wav")
    if fmt not in audio_mod.FORMATS:
        print(f"error: unknown format {fmt!r}; supported: {', '.join(audio_mod.FORMATS)}", file=sys.stderr)
        return 2
    try:
        synth = Synthesizer(args.model_dir, threads=args.threads, vocoder_precision=args.vocoder_precision)
        start = time.perf_counter()
        result = synth.synthesize(
            text,
            voice=args.voice,
            emotion=args.emotion,
            emotion_intensity=args.emotion_intensity,
            speaker=args.speaker,
            speed=args.speed,
            pitch=args.pitch,
            volume=args.volume,
        )
        if not result.units:  # as the HTTP API (422): punctuation only, say
            raise ValueError("text contains nothing speakable")
        data, rate = audio_mod.encode(result.audio, result.sample_rate, fmt, args.sample_rate)
    except (ModelDirError, FrontendError, audio_mod.AudioError, ValueError) as exc:  # ControlError too
        print(f"error: {exc}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - start
    Path(args.out).write_bytes(data)
    rtf = seconds / max(result.duration_s, 1e-9)
    print(f"{args.out}: {result.duration_s:.2f} s audio, {rate} Hz {fmt}, {seconds:.2f} s, RTF {rtf:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description="SAmBERT + HiFi-GAN Chinese TTS")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("synth", help="synthesize text to an audio file")
    p.add_argument("--model-dir", default=None, help="model directory (default: $TTS_MODEL_DIR)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text")
    src.add_argument("--text-file")
    p.add_argument("--out", required=True, help="output file; the extension picks the format unless --format")
    p.add_argument("--format", choices=sorted(audio_mod.FORMATS), default=None)
    p.add_argument("--voice", default=None)
    p.add_argument("--emotion", default=DEFAULTS.emotion)
    p.add_argument("--emotion-intensity", type=float, default=DEFAULTS.emotion_intensity, help="0..2")
    p.add_argument("--speaker", default=None)
    p.add_argument("--speed", type=float, default=DEFAULTS.speed, help="rate multiplier, 0.25..4")
    p.add_argument("--pitch", type=float, default=DEFAULTS.pitch, help="semitones, -12..12")
    p.add_argument("--volume", type=float, default=DEFAULTS.volume, help="linear gain, 0..4")
    p.add_argument("--sample-rate", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument(
        "--vocoder-precision",
        choices=VOCODER_PRECISIONS,
        default="fp32",
        help="fp32 (faithful) or bf16 (opt-in, quality-gated; faster on CPUs with bf16 instructions)",
    )
    args = parser.parse_args(argv)
    return _synth(args)


if __name__ == "__main__":
    raise SystemExit(main())
