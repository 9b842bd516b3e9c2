"""engine.audio: every format decodes back with soundfile at the right rate; streaming == one-shot."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from engine import audio

SR = 16000


def _tone(seconds: float = 0.5, freq: float = 440.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _decode(data: bytes, fmt: str, rate: int) -> tuple[np.ndarray, int]:
    if fmt == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32767.0, rate
    if fmt in ("ulaw_raw", "alaw_raw"):
        sub = "ULAW" if fmt == "ulaw_raw" else "ALAW"
        y, _ = sf.read(
            io.BytesIO(data), samplerate=rate, channels=1, format="RAW", subtype=sub, dtype="float32"
        )
        return y, rate
    y, r = sf.read(io.BytesIO(data), dtype="float32")
    return y, r


@pytest.mark.parametrize("fmt", list(audio.FORMATS))
def test_every_format_round_trips(fmt: str) -> None:
    x = _tone()
    data, rate = audio.encode(x, SR, fmt)
    assert data
    y, r = _decode(data, fmt, rate)
    assert r == rate
    expected_rate = 8000 if audio.FORMATS[fmt].fixed_rate else SR
    assert rate == expected_rate
    # lossy codecs add/trim padding; length within 10 % and energy similar
    n_expected = len(x) * expected_rate // SR
    assert abs(len(y) - n_expected) <= 0.1 * n_expected + 2000
    rms_in, rms_out = float(np.sqrt(np.mean(x**2))), float(np.sqrt(np.mean(y**2)))
    assert rms_out == pytest.approx(rms_in, rel=0.25)


def test_lossless_wav_is_exact_to_16_bit() -> None:
    x = _tone()
    data, _ = audio.encode(x, SR, "wav")
    y, _ = sf.read(io.BytesIO(data), dtype="float32")
    assert np.max(np.abs(y - x)) < 2e-4


def test_telephony_is_8k_g711() -> None:
    data, rate = audio.encode(_tone(), SR, "mulaw")
    info = sf.info(io.BytesIO(data))
    assert (rate, info.samplerate, info.subtype) == (8000, 8000, "ULAW")
    info = sf.info(io.BytesIO(audio.encode(_tone(), SR, "alaw")[0]))
    assert (info.samplerate, info.subtype) == (8000, "ALAW")
    with pytest.raises(audio.AudioError, match="always 8000"):
        audio.encode(_tone(), SR, "mulaw", sample_rate=16000)


def test_resampling_preserves_tone_frequency() -> None:
    x = _tone(1.0, 1000.0)
    data, rate = audio.encode(x, SR, "wav", sample_rate=48000)
    y, r = sf.read(io.BytesIO(data))
    assert r == rate == 48000 and len(y) == 48000
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(np.argmax(spectrum) * r / len(y) - 1000.0) < 2.0


def test_volume_scales_and_clips() -> None:
    x = _tone(amp=0.4)
    assert np.max(np.abs(audio.apply_volume(x, 0.5))) == pytest.approx(0.2, abs=1e-3)
    assert np.max(np.abs(audio.apply_volume(x, 4.0))) == 1.0
    with pytest.raises(audio.AudioError, match="volume"):
        audio.apply_volume(x, -1.0)


def test_bad_parameters_are_named() -> None:
    with pytest.raises(audio.AudioError, match="unknown audio format 'aac'"):
        audio.encode(_tone(), SR, "aac")
    with pytest.raises(audio.AudioError, match="sample_rate 12345"):
        audio.encode(_tone(), SR, "wav", sample_rate=12345)
    with pytest.raises(audio.AudioError, match="opus supports"):
        audio.encode(_tone(), SR, "opus", sample_rate=22050)
    with pytest.raises(audio.AudioError, match="cannot be streamed"):
        audio.StreamEncoder("flac", SR)


@pytest.mark.parametrize("fmt", ["wav", "pcm", "mulaw", "alaw", "ulaw_raw"])
@pytest.mark.parametrize("rate", [None, 8000])
def test_streaming_matches_one_shot(fmt: str, rate: int | None) -> None:
    x = _tone(0.8)
    fixed = audio.FORMATS[fmt].fixed_rate is not None
    enc = audio.StreamEncoder(fmt, SR, None if fixed else rate)
    parts = [enc.header()]
    for chunk in np.array_split(x, 7):
        parts.append(enc.push(chunk))
    parts.append(enc.finish())
    data = b"".join(parts)
    y, r = _decode(data, fmt, enc.rate)
    assert r == enc.rate
    ref, _ = audio.encode(x, SR, fmt, sample_rate=None if fixed else enc.rate)
    z, _ = _decode(ref, fmt, enc.rate)
    assert len(y) == len(z)
    assert np.max(np.abs(y - z)) < (0.05 if enc.rate != SR else 0.02)
