"""Token construction: syllable_flag / word_segment rules of spec §5.3 and break tokens."""

from __future__ import annotations

from collections.abc import Sequence

from engine.symbols import format_token

BREAK_TONE, BREAK_FLAG, BREAK_WS, BREAK_EMOTION = "tone_none", "s_none", "word_none", "emotion_none"


def syllable_flags(n_phones: int) -> list[str]:
    if n_phones == 1:
        return ["s_both"]
    return ["s_begin"] + ["s_middle"] * (n_phones - 2) + ["s_end"]


def word_flags(syllables: Sequence[Sequence[str]]) -> list[list[tuple[str, str]]]:
    """Per syllable, per phone: ``(syllable_flag, word_segment)`` (``ScriptWord.SaveMetafile`` rules)."""
    total = sum(len(s) for s in syllables)
    out: list[list[tuple[str, str]]] = []
    last = len(syllables) - 1
    for j, syl in enumerate(syllables):
        sflags = syllable_flags(len(syl))
        level = "word_begin" if j == 0 else ("word_end" if j == last else "word_middle")
        row = []
        for sf in sflags:
            if total == 1:
                ws = "word_both"
            elif level == "word_begin":
                if sf in ("s_begin", "s_both"):
                    ws = "word_begin"
                elif last == 0 and sf == "s_end":
                    ws = "word_end"
                else:
                    ws = "word_middle"
            elif level == "word_end":
                ws = "word_end" if sf in ("s_end", "s_both") else "word_middle"
            else:
                ws = "word_middle"
            row.append((sf, ws))
        out.append(row)
    return out


def break_token(level: int, speaker: str) -> str:
    return format_token(f"#{level}", BREAK_TONE, BREAK_FLAG, BREAK_WS, BREAK_EMOTION, speaker)
