"""Request/response schemas and the explicit limits every request is checked against."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.audio import FORMATS
from engine.controls import EMOTION_ALIASES, INTENSITY_RANGE, PITCH_RANGE, RATE_RANGE, VOLUME_RANGE
from engine.messages import SynthesisRequest
from engine.orchestrator import UnitReport

__all__ = [
    "OPENAI_VOICE_ALIASES",
    "ErrorResponse",
    "Limits",
    "OpenAISpeechRequest",
    "SeedTTSRequest",
    "TTSJSONResponse",
    "TTSRequest",
    "TTSURLResponse",
    "Timestamp",
    "VoicesResponse",
    "emotion_from_instructions",
    "error_responses",
    "intensity_from_instructions",
]

DEFAULTS = SynthesisRequest(text="")  # every control's default, declared once (engine.messages)


class Limits(BaseModel):
    """Per-deployment request limits (``ingress.limits`` in the Serve config), published on /api/voices and
    enforced on every request (400 ``out_of_range``). The control ranges may only narrow engine.controls'."""

    model_config = ConfigDict(extra="forbid")

    max_text_chars: int = 2000
    speed: tuple[float, float] = RATE_RANGE
    pitch: tuple[float, float] = PITCH_RANGE
    volume: tuple[float, float] = VOLUME_RANGE
    emotion_intensity: tuple[float, float] = INTENSITY_RANGE
    max_concurrent_units: int = 4
    request_timeout_s: float = 30.0


class TTSRequest(BaseModel):
    """``POST /api/tts``. Unknown fields are rejected so typos surface as 422 instead of being ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(min_length=1, description="Text (Chinese, mixed Chinese/English, or SSML <speak>).")
    voice: str | None = Field(None, description="Voice name from GET /api/voices; default voice if omitted.")
    emotion: str | None = Field(None, description="Emotion (see GET /api/voices); 'neutral' if omitted.")
    emotion_intensity: float = Field(
        DEFAULTS.emotion_intensity,
        ge=INTENSITY_RANGE[0],
        le=INTENSITY_RANGE[1],
        description="0 = neutral, 1 = the trained emotion, up to 2 exaggerates it.",
    )
    speaker: str | None = Field(None, description="Speaker of the voice (GET /api/voices); first if omitted.")
    speed: float = Field(
        DEFAULTS.speed, ge=RATE_RANGE[0], le=RATE_RANGE[1], description="Speaking-rate multiplier."
    )
    pitch: float = Field(
        DEFAULTS.pitch, ge=PITCH_RANGE[0], le=PITCH_RANGE[1], description="Pitch shift in semitones."
    )
    volume: float = Field(
        DEFAULTS.volume,
        ge=VOLUME_RANGE[0],
        le=VOLUME_RANGE[1],
        description="Linear gain, clipped to full scale.",
    )
    format: str = Field(DEFAULTS.format, description=f"One of: {', '.join(FORMATS)}.")
    sample_rate: int | None = Field(
        None, description="Output rate (resampled with soxr); model rate if omitted."
    )
    stream: bool = Field(False, description="Stream audio chunks as they are produced (pcm/wav/mulaw/alaw).")
    response: Literal["audio", "json", "url"] | None = Field(
        None,
        description="audio bytes (default), json (base64 audio + timestamps; also `Accept: "
        'application/json`) or url ({"wav_url": "/audio/<id>.wav"}, fetched with GET, expires).',
    )


class SeedTTSRequest(BaseModel):
    """``POST /tts``: the seed services' request shape, answered with WAV bytes."""

    model_config = ConfigDict(extra="ignore", strict=True)

    text: str = Field(min_length=1)
    emotion: str | None = DEFAULTS.emotion
    speed: float = Field(DEFAULTS.speed, ge=RATE_RANGE[0], le=RATE_RANGE[1])
    voice: str | None = None
    response: Literal["audio", "url"] = Field("audio", description='audio (WAV bytes) or url ({"wav_url"}).')


class OpenAISpeechRequest(BaseModel):
    """``POST /v1/audio/speech`` (OpenAI-compatible); emotion via ``emotion`` or ``instructions`` keywords."""

    model_config = ConfigDict(extra="allow", strict=True)

    model: str = Field("sambert-hifigan", description="Accepted and echoed; one model is served.")
    input: str = Field(min_length=1)
    voice: str = Field(
        "default", description="A voice from /api/voices, or an OpenAI voice name (→ default)."
    )
    response_format: str = Field("mp3", description="mp3, opus, wav, flac, pcm (24 kHz s16le, as OpenAI's).")
    speed: float = Field(DEFAULTS.speed, ge=RATE_RANGE[0], le=RATE_RANGE[1])
    instructions: str | None = None
    emotion: str | None = None
    stream_format: Literal["audio", "sse"] = Field(
        "audio", description="audio: chunked audio bytes; sse: speech.audio.delta/done events (pcm, wav)."
    )


class Timestamp(BaseModel):
    """One character or syllable and where it is spoken, from the acoustic model's predicted durations."""

    text: str
    start_s: float
    end_s: float


class TTSJSONResponse(BaseModel):
    """``POST /api/tts`` with ``Accept: application/json``."""

    audio_base64: str
    format: str
    media_type: str
    sample_rate: int
    duration_s: float
    voice: str
    emotion: str
    emotion_intensity: float
    speaker: str | None
    timestamps: list[Timestamp]
    timestamp_unit: Literal["syllable", "character"]
    cached: bool
    model_version: str
    units: list[UnitReport] = Field(
        description="Per synthesis unit: the merged controls the model was given and what it predicted."
    )


class TTSURLResponse(BaseModel):
    """``response: "url"`` (the seed services' shape): where to GET the audio, until it expires."""

    wav_url: str | None = Field(None, description="Set when the format is wav (the seeds' field).")
    audio_url: str
    format: str
    duration_s: float
    expires_in_s: float


class ErrorDetail(BaseModel):
    code: str = Field(
        description="Stable machine-readable code, e.g. invalid_text, unknown_voice, overloaded."
    )
    message: str = Field(description="Human-readable explanation.")


class ErrorResponse(BaseModel):
    """Every error: ``{"error": {"code", "message"}}`` (429/503 also carry ``Retry-After``)."""

    error: ErrorDetail


ERROR_DESCRIPTIONS = {
    400: "Bad input: unknown voice/emotion/speaker/format, invalid text or SSML, a control out of range.",
    404: "Not found.",
    413: "Text (or stored audio) larger than the configured limit.",
    422: "The body does not match the schema.",
    429: "A stage queue or a key's rate limit is full (Retry-After set).",
    503: "At capacity or a stage is unavailable (Retry-After set).",
    504: "The request deadline passed.",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses, all with the :class:`ErrorResponse` body."""
    return {s: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[s]} for s in statuses}


class VoiceInfo(BaseModel):
    name: str
    default: bool
    emotions: list[str]
    speakers: list[str]


class FormatInfo(BaseModel):
    name: str
    media_type: str
    streamable: bool
    fixed_sample_rate: int | None


class VoicesResponse(BaseModel):
    voices: list[VoiceInfo]
    emotions: list[str]
    formats: list[FormatInfo]
    sample_rate: int
    sample_rates: list[int]
    limits: Limits
    model_version: str
    random_weights: bool = Field(description="True when the served voice is untrained (audio is noise).")


OPENAI_VOICE_ALIASES = frozenset(
    {
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "nova",
        "onyx",
        "sage",
        "shimmer",
        "verse",
        "default",
    }
)
OPENAI_FORMAT_MAP = {"mp3": "mp3", "opus": "opus", "wav": "wav", "flac": "flac", "pcm": "pcm"}
OPENAI_PCM_RATE = 24000  # OpenAI's pcm is 24 kHz s16le


# Degree words in OpenAI ``instructions`` → emotion intensity (engine.controls: 0 neutral … 1 trained … 2).
INTENSITY_KEYWORDS: tuple[tuple[float, tuple[str, ...]], ...] = (
    (0.5, ("slightly", "a little", "a bit", "somewhat", "mildly", "有点", "有一点", "稍微", "略微", "微微")),
    (1.5, ("very", "extremely", "really", "super", "非常", "特别", "十分", "极其", "超级")),
)


def intensity_from_instructions(instructions: str | None) -> float | None:
    """The emotion intensity a degree word in ``instructions`` asks for (None if none)."""
    if not instructions:
        return None
    lowered = instructions.lower()
    for value, words in INTENSITY_KEYWORDS:
        if any(w in lowered for w in words):
            return value
    return None


def emotion_from_instructions(instructions: str | None, known: list[str]) -> str | None:
    """The first known emotion whose keyword occurs in free-text ``instructions`` (None if none)."""
    if not instructions:
        return None
    lowered = instructions.lower()
    for emotion, words in EMOTION_ALIASES.items():
        if emotion in known and any(w in lowered for w in words):
            return emotion
    for emotion in known:
        if emotion.lower() in lowered:
            return emotion
    return None
