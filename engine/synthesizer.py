"""Ray-free end-to-end pipeline (frontend → SAmBERT → HiFi-GAN → encoder) for the CLI and benchmarks.

Same steps as the served pipeline, in one process: text is split into units by the frontend, the units are
synthesised as acoustic and vocoder batches, and joined in order with their break pauses.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine import audio as audio_mod

__all__ = ["SynthesisResult", "Synthesizer", "timestamps_from_durations", "unit_marks"]

Mark = tuple[str, int, int]  # (syllable/character text, first token, end token exclusive)


def unit_marks(unit: Any) -> tuple[Mark, ...]:
    """Syllable → token-range marks of a frontend ``SynthesisUnit`` (for timestamps).

    A syllable owns the tokens whose source span (``unit.spans[i]``) overlaps its span; syllables that share
    one source span (e.g. "2024" read as four syllables) split those tokens in order, evenly.
    """
    spans = list(getattr(unit, "spans", None) or ())
    syllables = list(getattr(unit, "syllables", None) or ())
    marks: list[Mark] = []
    i = 0
    while i < len(syllables):
        span = tuple(syllables[i].span)
        j = i
        while j < len(syllables) and tuple(syllables[j].span) == span:
            j += 1
        owned = [k for k, sp in enumerate(spans) if sp is not None and sp[0] < span[1] and span[0] < sp[1]]
        group = syllables[i:j]
        for n, syl in enumerate(group):
            part = owned[len(owned) * n // len(group) : len(owned) * (n + 1) // len(group)]
            if part:
                marks.append((str(syl.text), part[0], part[-1] + 1))
        i = j
    return tuple(marks)


def timestamps_from_durations(
    marks: Sequence[Mark], durations: np.ndarray, offset_s: float, frame_s: float
) -> list[tuple[str, float, float]]:
    """(text, start_s, end_s) per mark from predicted frames per token."""
    cum = np.concatenate([[0.0], np.cumsum(np.asarray(durations, dtype=np.float64))])
    last = len(cum) - 1
    return [
        (
            text,
            round(offset_s + cum[min(s, last)] * frame_s, 4),
            round(offset_s + cum[min(e, last)] * frame_s, 4),
        )
        for text, s, e in marks
    ]


@dataclass
class SynthesisResult:
    audio: np.ndarray  # float32 mono at ``sample_rate`` (volume applied)
    sample_rate: int
    timestamps: list[tuple[str, float, float]]
    num_units: int

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sample_rate


class Synthesizer:
    """Loads every voice of a model directory once; ``synthesize`` / ``synthesize_bytes`` / ``stream``."""

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, threads: int | None = None) -> None:
        from engine.frontend import Frontend
        from engine.hifigan import Vocoder
        from engine.modeldir import load_model_dir, resolve_model_dir
        from engine.sambert import AcousticModel

        self.directory = load_model_dir(resolve_model_dir(model_dir))
        self.threads = threads
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.frontend = Frontend()
        self.acoustic = {n: AcousticModel.from_voice(v, threads) for n, v in self.directory.voices.items()}
        self.vocoders = {n: Vocoder.from_voice(v, threads) for n, v in self.directory.voices.items()}
        first = next(iter(self.vocoders.values()))
        self.sample_rate = int(first.sample_rate)
        self.hop_length = int(first.hop_length)

    @property
    def voices(self) -> list[str]:
        return list(self.directory.voices)

    @property
    def model_version(self) -> str:
        return str(self.directory.version)

    def _voice(self, voice: str | None) -> str:
        return self.directory.voice(voice).name

    def units(self, text: str, voice: str | None = None, emotion: str = "neutral") -> list[Any]:
        return self.frontend.process(text, self.directory.voice(voice).vocab, emotion=emotion)

    def synthesize(
        self,
        text: str,
        voice: str | None = None,
        emotion: str = "neutral",
        speed: float = 1.0,
        pitch: float = 0.0,
        volume: float = 1.0,
        batch_size: int = 4,
    ) -> SynthesisResult:
        """Whole-text synthesis: units in acoustic/vocoder batches of ``batch_size``, joined with pauses."""
        from engine.sambert import AcousticInput

        name = self._voice(voice)
        units = self.units(text, name, emotion)
        am, voc = self.acoustic[name], self.vocoders[name]
        frame_s = self.hop_length / self.sample_rate
        pieces: list[np.ndarray] = []
        stamps: list[tuple[str, float, float]] = []
        offset = 0
        for b in range(0, len(units), max(1, batch_size)):
            group = units[b : b + batch_size]
            outs = am.synthesize(
                [AcousticInput(np.asarray(u.ids), speed=speed, pitch_shift=pitch) for u in group]
            )
            waves = voc.vocode_batch([o.mel for o in outs]) if len(outs) > 1 else [voc.vocode(outs[0].mel)]
            for unit, out, wave in zip(group, outs, waves, strict=True):
                stamps += timestamps_from_durations(
                    unit_marks(unit), out.durations, offset / self.sample_rate, frame_s
                )
                pause = audio_mod.silence(float(getattr(unit, "pause_after_s", 0.0) or 0.0), self.sample_rate)
                pieces += [np.asarray(wave, dtype=np.float32), pause]
                offset += len(wave) + len(pause)
        audio = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        return SynthesisResult(audio_mod.apply_volume(audio, volume), self.sample_rate, stamps, len(units))

    def synthesize_bytes(
        self, text: str, fmt: str = "wav", sample_rate: int | None = None, **kwargs: Any
    ) -> tuple[bytes, int]:
        """Encoded audio (see :mod:`engine.audio` for formats)."""
        result = self.synthesize(text, **kwargs)
        return audio_mod.encode(result.audio, self.sample_rate, fmt, sample_rate)

    def stream(
        self,
        text: str,
        voice: str | None = None,
        emotion: str = "neutral",
        speed: float = 1.0,
        pitch: float = 0.0,
        chunk_frames: int = 16,
    ) -> Iterator[np.ndarray]:
        """Audio chunks as the decoder produces mel frames (AcousticStream → StreamingVocoder)."""
        from engine.sambert import AcousticInput

        name = self._voice(voice)
        am, voc = self.acoustic[name], self.vocoders[name]
        for unit in self.units(text, name, emotion):
            vs = voc.stream()
            for mel in am.stream(
                AcousticInput(np.asarray(unit.ids), speed=speed, pitch_shift=pitch), chunk_frames
            ):
                out = vs.push(mel)
                if out.size:
                    yield out
            tail = vs.flush()
            if tail.size:
                yield tail
            pause = audio_mod.silence(float(getattr(unit, "pause_after_s", 0.0) or 0.0), self.sample_rate)
            if pause.size:
                yield pause


def write_file(path: str | Path, data: bytes) -> None:
    Path(path).write_bytes(data)
