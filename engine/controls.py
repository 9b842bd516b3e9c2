"""The user controls, their units and ranges, declared once for REST, SSML, OpenAI, the CLI and the WebUI.

| control            | unit                                   | range        | default |
|--------------------|----------------------------------------|--------------|---------|
| speed (SSML rate)  | multiplier of the speaking rate        | 0.25 – 4.0   | 1.0     |
| pitch              | semitones                              | -12 – +12    | 0       |
| volume             | linear gain (clipped to full scale)    | 0 – 4        | 1.0     |
| emotion_intensity  | 0 = neutral, 1 = the trained emotion   | 0 – 2        | 1.0     |

A request sets each control once; SSML spans combine with it (rate and volume multiply, pitch adds, see
:mod:`engine.frontend.ssml`). The *combined* value of every unit must stay inside the range above; the request
fields of the HTTP API have the narrower ``REQUEST_*`` ranges.

Pitch: the released models predict a speaker-normalised F0 per token (mean/std-normalised) and ship no F0
statistics, so a semitone cannot be converted exactly. ``PITCH_UNITS_PER_SEMITONE`` (0.25 standard
deviations) is the conversion for a typical female voice (mean ≈ 220 Hz, sd ≈ 45 Hz: one semitone ≈ 13 Hz).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = [
    "EMOTION_ALIASES",
    "INTENSITY_RANGE",
    "PITCH_RANGE",
    "PITCH_UNITS_PER_SEMITONE",
    "RATE_RANGE",
    "REQUEST_SPEED_RANGE",
    "VOLUME_RANGE",
    "ControlError",
    "Prosody",
    "canonical_emotion",
    "check_range",
    "pitch_to_model_units",
]

RATE_RANGE = (0.25, 4.0)
PITCH_RANGE = (-12.0, 12.0)
VOLUME_RANGE = (0.0, 4.0)
INTENSITY_RANGE = (0.0, 2.0)
REQUEST_SPEED_RANGE = (0.5, 2.0)  # the `speed` request field; SSML rate may go further within RATE_RANGE
PITCH_UNITS_PER_SEMITONE = 0.25


class ControlError(ValueError):
    """A control outside its range; the message names the control and the range."""


class Prosody(NamedTuple):
    """The merged prosody of one synthesis unit (request value combined with its SSML spans)."""

    rate: float = 1.0  # speaking-rate multiplier: predicted durations are divided by it
    pitch: float = 0.0  # semitones
    volume: float = 1.0  # linear gain


def check_range(name: str, value: float, bounds: tuple[float, float], unit: str = "") -> float:
    """``value`` if it lies in ``bounds``, else :class:`ControlError` naming ``name`` and the range."""
    lo, hi = bounds
    if not (lo <= value <= hi):  # also rejects NaN
        suffix = f" {unit}" if unit else ""
        raise ControlError(f"{name} {value:g}{suffix} is outside {lo:g}..{hi:g}{suffix}")
    return value


def pitch_to_model_units(semitones: float) -> float:
    """Semitones → the acoustic model's additive pitch shift (standard deviations of the voice F0)."""
    return semitones * PITCH_UNITS_PER_SEMITONE


# Names users and the seed services send for the trained emotions of the released *_emo voices. Matching is
# case-insensitive; OpenAI ``instructions`` are searched for them in this order (neutral last).
EMOTION_ALIASES: dict[str, tuple[str, ...]] = {
    "happy": ("happy", "cheerful", "joyful", "excited", "joy", "开心", "高兴", "快乐", "愉快", "欢快"),
    "angry": ("angry", "mad", "furious", "anger", "生气", "愤怒", "恼火"),
    "sad": ("sad", "sorrow", "unhappy", "sadness", "悲伤", "难过", "伤心"),
    "fear": ("fear", "afraid", "scared", "fearful", "害怕", "恐惧"),
    "hate": ("hate", "disgust", "disgusted", "厌恶", "讨厌"),
    "surprise": ("surprise", "surprised", "amazed", "惊讶", "吃惊", "惊喜"),
    "neutral": ("neutral", "normal", "default", "calm", "plain", "普通", "正常", "中性", "平静", "默认"),
}
_ALIAS_TO_EMOTION = {alias.lower(): name for name, aliases in EMOTION_ALIASES.items() for alias in aliases}


def canonical_emotion(name: str) -> str:
    """The trained emotion an alias names (``normal`` → ``neutral``, ``开心`` → ``happy``); unknown names are
    returned unchanged (stripped, lower-cased) for the caller to reject with the known list."""
    key = name.strip().lower()
    return _ALIAS_TO_EMOTION.get(key, key)
