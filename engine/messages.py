"""Plain, picklable, torch-free messages between the orchestrator and the stages (local calls or Serve).

The request path uses exactly these types: :class:`SynthesisRequest` → ``list[SynthesisUnit]`` (frontend) →
:class:`AcousticInput` → :class:`AcousticOutput` or a stream of :class:`MelChunk` → vocoder
(:class:`VocodeRequest` / :class:`VocodeChunk` → audio) → :class:`engine.orchestrator.Synthesized`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypedDict

import numpy as np

from engine.controls import Prosody

__all__ = [
    "AcousticInput",
    "AcousticOutput",
    "MelChunk",
    "SynthesisRequest",
    "VocodeChunk",
    "VocodeChunkResult",
    "VocodeRequest",
    "VocoderInfo",
]


@dataclass(frozen=True)
class SynthesisRequest:
    """Everything a user can set, from any interface (REST, SSML, OpenAI, seed API, CLI, WebUI).

    Units and ranges: :mod:`engine.controls`. ``voice`` None = the default voice; ``speaker`` None = the
    voice's first speaker. The frontend merges ``speed``/``pitch``/``volume``/``emotion_intensity`` with each
    SSML span, so every unit carries its final controls.
    """

    text: str
    voice: str | None = None
    emotion: str = "neutral"
    emotion_intensity: float = 1.0
    speaker: str | None = None
    speed: float = 1.0
    pitch: float = 0.0  # semitones
    volume: float = 1.0  # linear gain
    format: str = "wav"
    sample_rate: int | None = None
    stream: bool = False

    @property
    def prosody(self) -> Prosody:
        return Prosody(self.speed, self.pitch, self.volume)

    def output_fields(self) -> dict[str, Any]:
        """Every field that changes the encoded output (the cache key): all but ``stream``."""
        fields = asdict(self)
        fields.pop("stream")
        return fields


@dataclass
class AcousticInput:
    """One utterance: ``ids`` [T, 6] (sy, tone, syllable_flag, word_segment, emotion, speaker) plus controls.

    ``speed`` divides predicted durations before rounding; ``pitch_shift``/``energy_shift`` are added to the
    predictions (normalised units); ``emotion``/``speaker`` (id or symbol) replace the id columns (the emotion
    override leaves ``emotion_none`` break tokens alone); ``durations`` [T] gives frames per token, a negative
    entry keeps the (speed-scaled) prediction. ``emotion_intensity`` blends the emotion embedding with the
    neutral one: ``neutral + k·(emotion − neutral)`` (0 = neutral, 1 = the trained emotion, exactly the
    unblended output; up to 2 extrapolates); ``emotion_none`` tokens are left alone.
    """

    ids: np.ndarray
    speed: float = 1.0
    pitch_shift: float = 0.0
    energy_shift: float = 0.0
    emotion: int | str | None = None
    speaker: int | str | None = None
    durations: np.ndarray | Sequence[float] | None = None
    emotion_intensity: float = 1.0


@dataclass
class AcousticOutput:
    mel: np.ndarray  # [F, num_mels] float32, normalised log-mel for the vocoder
    durations: np.ndarray  # [T] int64 frames per token
    pitch: np.ndarray  # [T] float32 (normalised, shift included)
    energy: np.ndarray  # [T] float32


@dataclass(frozen=True)
class MelChunk:
    """One item of an acoustic stream: the first carries ``durations`` and ``pitch`` (and no frames)."""

    mel: np.ndarray
    durations: np.ndarray | None = None
    pitch: np.ndarray | None = None
    num_frames: int | None = None


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
    # A live stream's listener needs this chunk's audio in this many seconds (0: the stream's first audio;
    # < 0: it is late); None: nobody listens yet. The vocoder serves the chunk due soonest first.
    due_in_s: float | None = None


@dataclass(frozen=True)
class VocodeChunkResult:
    audio: np.ndarray  # float32 samples of exactly this chunk's frames
    state: dict[str, np.ndarray] | None  # None after the final chunk


class VocoderInfo(TypedDict):
    """What the orchestrator needs to know about the vocoder stage."""

    sample_rate: int
    hop_length: int
    left_context: int  # mel frames a stateless window needs on the left
    lookahead: int  # ... and on the right
    stateful_stream: int  # 1 when every voice is causal (chunks carry state)
