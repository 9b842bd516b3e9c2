"""Plain, picklable messages passed between stages (no engine objects cross a process boundary)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "AcousticRequest",
    "AcousticResult",
    "MelChunk",
    "UnitPayload",
    "VocodeChunk",
    "VocodeChunkResult",
    "VocodeRequest",
    "unit_payload",
]


@dataclass(frozen=True)
class UnitPayload:
    """One synthesis unit: token ids plus what timestamps and joining need."""

    ids: np.ndarray  # int64 [T, 6]
    text: str
    pause_after_s: float
    marks: tuple[tuple[str, int, int], ...] = ()  # (syllable/char text, first token, end token exclusive)
    mark_unit: str = "syllable"


@dataclass(frozen=True)
class AcousticRequest:
    ids: np.ndarray
    voice: str | None = None
    speed: float = 1.0
    pitch_shift: float = 0.0


@dataclass(frozen=True)
class AcousticResult:
    mel: np.ndarray  # float32 [F, 80]
    durations: np.ndarray  # frames per token [T]


@dataclass(frozen=True)
class VocodeRequest:
    """Vocode ``mel`` and return the samples of frames ``[start, end)`` (whole mel when both are None)."""

    mel: np.ndarray
    voice: str | None = None
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True)
class VocodeChunk:
    """The next frames of a causal utterance and the state the previous chunk returned (None for the first).

    The state travels with the request, so any vocoder replica can continue the utterance exactly.
    """

    mel: np.ndarray
    state: dict[str, np.ndarray] | None = None
    final: bool = False
    voice: str | None = None


@dataclass(frozen=True)
class VocodeChunkResult:
    audio: np.ndarray  # float32 samples of exactly this chunk's frames
    state: dict[str, np.ndarray] | None  # None after the final chunk


@dataclass(frozen=True)
class MelChunk:
    """One item of the acoustic stream: the first carries durations (and no frames may be present)."""

    mel: np.ndarray
    durations: np.ndarray | None = None
    num_frames: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def unit_payload(unit: Any) -> UnitPayload:
    """Convert an ``engine.frontend.SynthesisUnit`` to the wire payload."""
    from engine.synthesizer import unit_marks

    return UnitPayload(
        ids=np.ascontiguousarray(np.asarray(unit.ids, dtype=np.int64)),
        text=str(getattr(unit, "text", "")),
        pause_after_s=float(getattr(unit, "pause_after_s", 0.0) or 0.0),
        marks=unit_marks(unit),
    )
