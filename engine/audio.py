"""Audio post-processing and encoding: volume, resampling (soxr), container/codec encoding (libsndfile).

Output formats (libsndfile 1.2.2 as installed): ``wav`` (PCM 16-bit), ``pcm`` (raw s16le, no header),
``flac``, ``ogg`` (Ogg/Vorbis), ``opus`` (Ogg/Opus; 8/12/16/24/48 kHz only), ``mp3`` (MPEG Layer III),
and the 8 kHz telephony formats ``mulaw`` / ``alaw`` (G.711 in a WAV container); ``ulaw_raw`` /
``alaw_raw`` give headerless G.711 bytes for SIP/RTP pipelines. Chunk-by-chunk (streaming) encoding is
offered for :data:`STREAMABLE_FORMATS`.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

__all__ = [
    "FORMATS",
    "OPUS_RATES",
    "STREAMABLE_FORMATS",
    "SUPPORTED_SAMPLE_RATES",
    "AudioError",
    "AudioFormat",
    "StreamEncoder",
    "apply_volume",
    "encode",
    "prepare",
    "resample",
    "silence",
]


class AudioError(ValueError):
    """Bad audio parameters (unknown format, unsupported sample rate, bad volume)."""


@dataclass(frozen=True)
class AudioFormat:
    """One output format: libsndfile container/subtype, HTTP media type, forced sample rate."""

    name: str
    container: str
    subtype: str
    media_type: str
    extension: str
    fixed_rate: int | None = None  # telephony formats are always 8 kHz


FORMATS: dict[str, AudioFormat] = {
    f.name: f
    for f in (
        AudioFormat("wav", "WAV", "PCM_16", "audio/wav", "wav"),
        AudioFormat("pcm", "RAW", "PCM_16", "audio/L16", "pcm"),
        AudioFormat("flac", "FLAC", "PCM_16", "audio/flac", "flac"),
        AudioFormat("ogg", "OGG", "VORBIS", "audio/ogg", "ogg"),
        AudioFormat("opus", "OGG", "OPUS", "audio/ogg; codecs=opus", "opus"),
        AudioFormat("mp3", "MP3", "MPEG_LAYER_III", "audio/mpeg", "mp3"),
        AudioFormat("mulaw", "WAV", "ULAW", "audio/wav", "wav", fixed_rate=8000),
        AudioFormat("alaw", "WAV", "ALAW", "audio/wav", "wav", fixed_rate=8000),
        AudioFormat("ulaw_raw", "RAW", "ULAW", "audio/basic", "ulaw", fixed_rate=8000),
        AudioFormat("alaw_raw", "RAW", "ALAW", "audio/x-alaw-basic", "alaw", fixed_rate=8000),
    )
}
SUPPORTED_SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)
STREAMABLE_FORMATS = ("pcm", "wav", "mulaw", "alaw", "ulaw_raw", "alaw_raw")
MAX_VOLUME = 4.0


def get_format(name: str) -> AudioFormat:
    """Look up a format by name; :class:`AudioError` names the known ones."""
    try:
        return FORMATS[name]
    except KeyError:
        raise AudioError(f"unknown audio format {name!r}; supported: {', '.join(FORMATS)}") from None


def output_rate(fmt: AudioFormat, source_rate: int, requested: int | None) -> int:
    """The sample rate a format will be written at, validating the request."""
    if fmt.fixed_rate is not None:
        if requested not in (None, fmt.fixed_rate):
            raise AudioError(
                f"format {fmt.name!r} is always {fmt.fixed_rate} Hz, got sample_rate={requested}"
            )
        return fmt.fixed_rate
    rate = requested or source_rate
    if requested is not None and requested not in SUPPORTED_SAMPLE_RATES:
        raise AudioError(f"sample_rate {requested} not supported; choose one of {SUPPORTED_SAMPLE_RATES}")
    if fmt.subtype == "OPUS" and rate not in OPUS_RATES:
        raise AudioError(f"opus supports sample rates {OPUS_RATES}, got {rate}")
    return rate


def resample(audio: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr (high quality); identity when the rates match."""
    audio = np.asarray(audio, dtype=np.float32)
    if src_rate == dst_rate or audio.size == 0:
        return audio
    return soxr.resample(audio, src_rate, dst_rate, quality="HQ").astype(np.float32, copy=False)


def apply_volume(audio: np.ndarray, volume: float) -> np.ndarray:
    """Linear gain (1.0 = unchanged) with hard clipping to [-1, 1]."""
    if not 0.0 <= volume <= MAX_VOLUME:
        raise AudioError(f"volume must be in [0, {MAX_VOLUME}], got {volume}")
    audio = np.asarray(audio, dtype=np.float32)
    if volume == 1.0:
        return np.clip(audio, -1.0, 1.0)
    return np.clip(audio * np.float32(volume), -1.0, 1.0)


def silence(seconds: float, rate: int) -> np.ndarray:
    """``seconds`` of float32 silence at ``rate``."""
    return np.zeros(max(0, round(seconds * rate)), dtype=np.float32)


def prepare(audio: np.ndarray, src_rate: int, dst_rate: int, volume: float = 1.0) -> np.ndarray:
    """Volume then resample: the float32 signal exactly as it will be encoded."""
    return resample(apply_volume(audio, volume), src_rate, dst_rate)


def _to_int16(audio: np.ndarray) -> np.ndarray:
    """The one float → 16-bit conversion (whole files and streams alike, so both carry the same samples)."""
    clipped = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2")


def _to_s16le(audio: np.ndarray) -> bytes:
    return _to_int16(audio).tobytes()


def encode(
    audio: np.ndarray,
    src_rate: int,
    fmt: str = "wav",
    sample_rate: int | None = None,
    volume: float = 1.0,
) -> tuple[bytes, int]:
    """Encode a mono float32 waveform; returns ``(bytes, written_sample_rate)``."""
    spec = get_format(fmt)
    rate = output_rate(spec, src_rate, sample_rate)
    signal = prepare(audio, src_rate, rate, volume)
    if spec.name == "pcm":
        return _to_s16le(signal), rate
    if spec.subtype in ("OPUS", "VORBIS", "MPEG_LAYER_III") and signal.size == 0:
        signal = np.zeros(1, dtype=np.float32)  # the lossy encoders reject empty input
    buf = io.BytesIO()
    data = _to_int16(signal) if spec.subtype == "PCM_16" else signal  # libsndfile would round differently
    sf.write(buf, data, rate, format=spec.container, subtype=spec.subtype)
    return buf.getvalue(), rate


def _streaming_wav_header(rate: int, fmt_tag: int, bits: int) -> bytes:
    """A WAV header with 'unknown' (max) sizes, the convention for streamed WAV."""
    block_align = bits // 8
    unknown = 0xFFFFFFFF
    extra = b"\x00\x00" if fmt_tag != 1 else b""
    fmt_chunk = struct.pack("<HHIIHH", fmt_tag, 1, rate, rate * block_align, block_align, bits) + extra
    return (
        b"RIFF"
        + struct.pack("<I", unknown)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt_chunk))
        + fmt_chunk
        + b"data"
        + struct.pack("<I", unknown - 36)
    )


class StreamEncoder:
    """Incremental encoder for streamed responses: ``header()``, ``push(chunk)`` per chunk, ``finish()``.

    Input chunks are float32 at ``src_rate``; volume and streaming soxr resampling are applied here, so the
    concatenated output decodes to the one-shot :func:`encode` signal (up to resampler edge effects).
    """

    def __init__(self, fmt: str, src_rate: int, sample_rate: int | None = None, volume: float = 1.0) -> None:
        self.format = get_format(fmt)
        if self.format.name not in STREAMABLE_FORMATS:
            raise AudioError(
                f"format {fmt!r} cannot be streamed; streamable formats: {', '.join(STREAMABLE_FORMATS)}"
            )
        apply_volume(np.zeros(0, np.float32), volume)  # validates the range
        self.volume = volume
        self.src_rate = src_rate
        self.rate = output_rate(self.format, src_rate, sample_rate)
        self._resampler = (
            soxr.ResampleStream(src_rate, self.rate, 1, dtype="float32") if self.rate != src_rate else None
        )

    def header(self) -> bytes:
        """Bytes to send before any audio (a streaming WAV header, or nothing)."""
        name = self.format.name
        if name == "wav":
            return _streaming_wav_header(self.rate, 1, 16)
        if name in ("mulaw", "alaw"):
            return _streaming_wav_header(self.rate, 7 if name == "mulaw" else 6, 8)
        return b""

    def _convert(self, signal: np.ndarray) -> bytes:
        name = self.format.name
        if signal.size == 0:
            return b""
        if name in ("pcm", "wav"):
            return _to_s16le(signal)
        subtype = "ULAW" if name in ("mulaw", "ulaw_raw") else "ALAW"
        buf = io.BytesIO()
        sf.write(buf, signal, self.rate, format="RAW", subtype=subtype)
        return buf.getvalue()

    def push(self, audio: np.ndarray) -> bytes:
        """Encode one chunk of float32 audio at the source rate."""
        signal = apply_volume(audio, self.volume)
        if self._resampler is not None:
            signal = self._resampler.resample_chunk(signal, last=False)
        return self._convert(np.asarray(signal, dtype=np.float32))

    def finish(self) -> bytes:
        """Flush the resampler tail."""
        out = b""
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
            out += self._convert(np.asarray(tail, dtype=np.float32))
        return out
