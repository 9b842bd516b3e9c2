"""soundfile / libsndfile: version and which output formats it can actually write."""

from __future__ import annotations

import io
from typing import Any, NamedTuple

from compat.doctor import CheckResult, DoctorOptions, fail, ok, warn

SF_REMEDY = (
    "pip install --force-reinstall 'soundfile>=0.12.1' (its manylinux wheel bundles libsndfile >=1.2 with "
    "mp3/ogg/opus); a system libsndfile must be >=1.1.0 built with mpg123/lame, vorbis and opus"
)


class Target(NamedTuple):
    label: str
    format: str
    subtype: str
    rate: int
    required: bool  # False: the service degrades (that format is refused) instead of breaking


TARGETS: tuple[Target, ...] = (
    Target("wav", "WAV", "PCM_16", 16000, True),
    Target("flac", "FLAC", "PCM_16", 16000, True),
    Target("mulaw", "WAV", "ULAW", 8000, True),
    Target("alaw", "WAV", "ALAW", 8000, True),
    Target("ogg-vorbis", "OGG", "VORBIS", 16000, False),
    Target("ogg-opus", "OGG", "OPUS", 48000, False),
    Target("mp3", "MP3", "MPEG_LAYER_III", 16000, False),
)


def writable(sf: Any, target: Target) -> tuple[bool, str]:
    """Whether libsndfile lists the format/subtype and really writes 0.1 s of it into memory."""
    import numpy as np

    formats = sf.available_formats()
    if target.format not in formats:
        return False, f"format {target.format} not available"
    if target.subtype not in sf.available_subtypes(target.format):
        return False, f"subtype {target.subtype} not available for {target.format}"
    tone = (0.1 * np.sin(np.arange(target.rate // 10, dtype=np.float32) * 0.2)).astype(np.float32)
    buf = io.BytesIO()
    try:
        sf.write(buf, tone, target.rate, format=target.format, subtype=target.subtype)
    except Exception as exc:
        return False, f"write failed: {exc}"
    if buf.tell() == 0:
        return False, "wrote 0 bytes"
    return True, "ok"


def check_soundfile(options: DoctorOptions) -> CheckResult:
    import soundfile as sf

    lib = getattr(sf, "__libsndfile_version__", "?")
    results = {t.label: writable(sf, t) for t in TARGETS}
    can = [label for label, (good, _) in results.items() if good]
    missing_required = [t.label for t in TARGETS if t.required and not results[t.label][0]]
    missing_optional = [t.label for t in TARGETS if not t.required and not results[t.label][0]]
    why = {label: reason for label, (good, reason) in results.items() if not good}
    summary = f"soundfile {sf.__version__}, libsndfile {lib}; writes {' '.join(can) or 'nothing'}"
    details = {"libsndfile": lib, "writable": can, "why_not": why}
    if missing_required:
        return fail(
            "soundfile", f"{summary}; cannot write {' '.join(missing_required)}", SF_REMEDY, **details
        )
    if missing_optional:
        return warn(
            "soundfile",
            f"{summary}; cannot write {' '.join(missing_optional)} (requests for it will be refused)",
            SF_REMEDY,
            **details,
        )
    return ok("soundfile", summary, **details)
