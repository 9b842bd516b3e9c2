"""The frontend's output types: plain, picklable data with no dictionaries behind them.

Kept apart from :mod:`engine.frontend.frontend` (jieba, pypinyin, the polyphone model: ≈120 MB once imported)
so the ingress, which receives units and builds timestamps from them, loads none of that.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.controls import Prosody

__all__ = ["Mark", "Syllable", "SynthesisUnit", "unit_marks"]


@dataclass(frozen=True, slots=True)
class Syllable:
    """One spoken syllable (or English word) with its reading and source span, for timestamps."""

    text: str
    pinyin: str  # surface pinyin (after sandhi); ARPAbet for English words
    span: tuple[int, int]
    lexical: str = ""  # dictionary pinyin before sandhi


Mark = tuple[str, int, int]  # (syllable/character text, first token, end token exclusive)


@dataclass
class SynthesisUnit:
    """One sentence (or piece of one) with everything the later stages need; plain data, picklable.

    ``prosody``, ``emotion``, ``emotion_intensity`` and ``speaker`` are final: the request's values merged
    with the unit's SSML spans; :func:`engine.orchestrator.acoustic_input` hands them to the acoustic model.
    """

    tokens: list[str]
    token_string: str
    ids: np.ndarray  # int64 [T, 6]
    spans: list[tuple[int, int] | None]
    pause_after_s: float
    prosody: Prosody
    emotion: str
    text: str
    syllables: list[Syllable]
    emotion_intensity: float = 1.0
    speaker: str | None = None
    marks: tuple[Mark, ...] = ()  # syllable → token ranges, for timestamps (see :func:`unit_marks`)


def unit_marks(spans: Sequence[tuple[int, int] | None], syllables: Sequence[Syllable]) -> tuple[Mark, ...]:
    """Syllable → token-range marks (for timestamps).

    A syllable owns the tokens whose source span overlaps its span; syllables that share one source span
    (e.g. "2024" read as four syllables) split those tokens in order, evenly.
    """
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
