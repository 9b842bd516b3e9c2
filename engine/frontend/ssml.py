"""Hardened SSML subset parser (defusedxml SAX: no DTDs, no entity expansion, no external entities; size and
depth capped). Produces text chunks with their source spans and style, plus break/boundary markers.

Supported: ``speak`` (root), ``s``/``p``, ``break`` (time, strength), ``prosody`` (rate, pitch, volume; units,
ranges and how nested spans combine: :mod:`engine.controls` and the ``parse_*`` functions below),
``say-as`` (interpret-as: telephone digits cardinal date time currency name address), ``phoneme``
(alphabet py/pinyin, ph), ``emotion`` (category, intensity; Aliyun style). Errors give line/column and why.
"""

from __future__ import annotations

import math
import re
import xml.sax
from dataclasses import dataclass, replace

import defusedxml.sax
from defusedxml import DefusedXmlException

from engine.controls import (
    INTENSITY_RANGE,
    PITCH_RANGE,
    RATE_RANGE,
    VOLUME_RANGE,
    canonical_emotion,
    check_range,
)
from engine.frontend.errors import FrontendError
from engine.frontend.normalize import SAY_AS

MAX_DEPTH = 32
MAX_BREAK_S = 10.0
STRENGTH_S = {"none": 0.0, "x-weak": 0.1, "weak": 0.2, "medium": 0.4, "strong": 0.7, "x-strong": 1.2}
# Labels are absolute (relative to the request's own value); numbers, percentages, st and dB are relative to
# the enclosing span (SSML 1.1 §3.2.4: "relative changes ... are in reference to the containing prosody").
RATE_WORDS = {"x-slow": 0.6, "slow": 0.8, "medium": 1.0, "fast": 1.25, "x-fast": 1.5, "default": 1.0}
PITCH_WORDS = {"x-low": -4.0, "low": -2.0, "medium": 0.0, "high": 2.0, "x-high": 4.0, "default": 0.0}
VOLUME_WORDS = {
    "silent": 0.0,
    "x-soft": 0.3,
    "soft": 0.6,
    "medium": 1.0,
    "loud": 1.4,
    "x-loud": 1.8,
    "default": 1.0,
}
ELEMENTS = frozenset({"speak", "s", "p", "break", "prosody", "say-as", "phoneme", "emotion"})
_NUMBER = r"([+-]?)(\d+(?:\.\d+)?|\.\d+)"


@dataclass(frozen=True, slots=True)
class Style:
    """SSML state of a text span. ``rate``/``pitch``/``volume`` are relative to the request's values
    (multiplier, semitones added, gain multiplier); ``intensity`` None = the request's intensity."""

    rate: float = 1.0
    pitch: float = 0.0  # semitones
    volume: float = 1.0
    emotion: str | None = None
    intensity: float | None = None
    say_as: str | None = None
    phoneme: tuple[str, ...] | None = None

    def voice(self) -> tuple[float, float, float, str | None, float | None]:
        """The part of the style that must be constant within a synthesis unit."""
        return (self.rate, self.pitch, self.volume, self.emotion, self.intensity)


@dataclass(slots=True)
class TextChunk:
    text: str
    spans: list[tuple[int, int]]
    style: Style


@dataclass(slots=True)
class Marker:
    kind: str  # "break" | "s" | "p"
    seconds: float = 0.0


def looks_like_ssml(text: str) -> bool:
    """SSML when the text starts with ``<speak`` (or an XML declaration / DOCTYPE before a ``<speak``)."""
    head = text.lstrip()
    return head.startswith("<speak") or (head.startswith(("<?xml", "<!DOCTYPE")) and "<speak" in head)


def _float(value: str, what: str, lo: float, hi: float) -> float:
    try:
        v = float(value)
    except ValueError:
        raise ValueError(f"{what} {value!r} is not a number") from None
    if not lo <= v <= hi:
        raise ValueError(f"{what} {value!r} is outside {lo:g}..{hi:g}")
    return v


def _number(value: str, suffix: str) -> tuple[str, float] | None:
    """(sign, magnitude) when ``value`` is a number with ``suffix``; None when the suffix differs."""
    m = re.fullmatch(_NUMBER + re.escape(suffix), value, flags=re.IGNORECASE)
    if m is None:
        return None
    return m.group(1), float(m.group(2))


def parse_time(value: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*", value)
    if not m:
        raise ValueError(f"break time {value!r} must look like '500ms' or '1.5s'")
    v = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
    if v > MAX_BREAK_S:
        raise ValueError(f"break time {value!r} exceeds {MAX_BREAK_S:g} s")
    return v


def parse_rate(value: str, parent: float = 1.0) -> float:
    """``x-slow…x-fast``, ``50%`` / ``1.5`` (× the enclosing rate), ``+20%`` / ``-20%`` (change of it)."""
    v = value.strip()
    if v in RATE_WORDS:
        rate = RATE_WORDS[v]
    elif (pct := _number(v, "%")) is not None:
        sign, mag = pct
        rate = parent * (1 + (mag if sign != "-" else -mag) / 100 if sign else mag / 100)
    elif (num := _number(v, "")) is not None and not num[0]:
        rate = parent * num[1]
    else:
        raise ValueError(f"prosody rate {value!r}: use x-slow..x-fast, '50%', '+20%' or a multiplier (1.5)")
    return check_range("prosody rate", rate, RATE_RANGE)


def parse_pitch(value: str, parent: float = 0.0) -> float:
    """``x-low…x-high``, ``+2st`` / ``-20%`` (change of the enclosing pitch), ``3st`` (absolute semitones)."""
    v = value.strip()
    if v in PITCH_WORDS:
        pitch = PITCH_WORDS[v]
    elif (st := _number(v, "st")) is not None or (st := _number(v, "")) is not None:
        sign, mag = st
        pitch = parent + (mag if sign == "+" else -mag) if sign else mag
    elif (pct := _number(v, "%")) is not None:
        sign, mag = pct
        factor = 1 + (mag if sign != "-" else -mag) / 100 if sign else mag / 100
        if factor <= 0:
            raise ValueError(f"prosody pitch {value!r} would make the frequency zero or negative")
        pitch = parent + 12 * math.log2(factor)
    elif v.lower().endswith("hz"):
        raise ValueError(
            f"prosody pitch {value!r}: Hz needs the voice's F0, which the model does not publish; "
            "use semitones ('+2st') or a percentage ('+20%')"
        )
    else:
        raise ValueError(f"prosody pitch {value!r}: use x-low..x-high, '+2st', '-3st' or '+20%'")
    return check_range("prosody pitch", pitch, PITCH_RANGE, "st")


def parse_volume(value: str, parent: float = 1.0) -> float:
    """``silent…x-loud``, ``+6dB`` / ``-6dB`` / ``+50%`` (change of the enclosing gain), ``50%`` (× it),
    or a linear gain like ``0.5``."""
    v = value.strip()
    if v in VOLUME_WORDS:
        volume = VOLUME_WORDS[v]
    elif (db := _number(v, "db")) is not None:
        sign, mag = db
        volume = parent * 10 ** ((-mag if sign == "-" else mag) / 20.0)
    elif (pct := _number(v, "%")) is not None:
        sign, mag = pct
        volume = parent * (1 + (mag if sign != "-" else -mag) / 100 if sign else mag / 100)
    elif (num := _number(v, "")) is not None and not num[0]:
        volume = num[1]
    else:
        raise ValueError(f"prosody volume {value!r}: use silent..x-loud, '+6dB', '-6dB', '50%' or a gain")
    return check_range("prosody volume (gain)", max(volume, 0.0), VOLUME_RANGE)


class _Handler(xml.sax.ContentHandler):
    def __init__(self, source: str, raw: bytes) -> None:
        super().__init__()
        self.source = source
        self.items: list[TextChunk | Marker] = []
        self.stack: list[tuple[str, Style]] = []
        self.locator: xml.sax.xmlreader.Locator | None = None
        # byte offset of each line start, and byte → char offset mapping
        self._line_starts = [0] + [m.end() for m in re.finditer(rb"\r\n|\r|\n", raw)]
        self._byte_to_char = [0] * (len(raw) + 1)
        b = 0
        for i, ch in enumerate(source):
            n = len(ch.encode("utf-8"))
            for k in range(n):
                self._byte_to_char[b + k] = i
            b += n
        self._byte_to_char[b] = len(source)

    def setDocumentLocator(self, locator: xml.sax.xmlreader.Locator) -> None:
        self.locator = locator

    def where(self) -> tuple[int, int]:
        if self.locator is None:
            return 0, 0
        return self.locator.getLineNumber(), self.locator.getColumnNumber() + 1

    def fail(self, why: str) -> FrontendError:
        line, col = self.where()
        return FrontendError(f"invalid SSML: {why}", line=line, column=col)

    def _offset(self) -> int:
        line, col = self.where()
        b = self._line_starts[min(max(0, line - 1), len(self._line_starts) - 1)] + col - 1
        return self._byte_to_char[min(max(b, 0), len(self._byte_to_char) - 1)]

    def startElement(self, name: str, attrs: xml.sax.xmlreader.AttributesImpl) -> None:
        if name not in ELEMENTS:
            raise self.fail(f"unsupported element <{name}>; supported: {', '.join(sorted(ELEMENTS))}")
        if not self.stack and name != "speak":
            raise self.fail(f"root element must be <speak>, not <{name}>")
        if self.stack and name == "speak":
            raise self.fail("<speak> cannot be nested")
        if len(self.stack) >= MAX_DEPTH:
            raise self.fail(f"elements nested deeper than {MAX_DEPTH}")
        style = self.stack[-1][1] if self.stack else Style()
        if self.stack and self.stack[-1][0] in ("say-as", "phoneme"):
            raise self.fail(f"<{self.stack[-1][0]}> may contain only text, found <{name}>")
        a = dict(attrs.items())
        try:
            style = self._apply(name, a, style)
        except ValueError as e:
            raise self.fail(f"<{name}>: {e}") from None
        if name in ("s", "p"):
            self.items.append(Marker(name))
        self.stack.append((name, style))

    def _apply(self, name: str, a: dict[str, str], style: Style) -> Style:
        def only(*allowed: str) -> None:
            extra = sorted(k for k in a if k not in allowed and not k.startswith("xml"))
            if extra:
                raise ValueError(f"unsupported attribute(s) {extra}; allowed: {list(allowed)}")

        if name == "break":
            only("time", "strength")
            if "time" in a:
                secs = parse_time(a["time"])
            else:
                strength = a.get("strength", "medium")
                if strength not in STRENGTH_S:
                    raise ValueError(f"strength {strength!r} is not one of {list(STRENGTH_S)}")
                secs = STRENGTH_S[strength]
            self.items.append(Marker("break", secs))
        elif name == "prosody":
            only("rate", "pitch", "volume")
            if not a:
                raise ValueError("needs at least one of rate, pitch, volume")
            style = replace(
                style,
                rate=parse_rate(a["rate"], style.rate) if "rate" in a else style.rate,
                pitch=parse_pitch(a["pitch"], style.pitch) if "pitch" in a else style.pitch,
                volume=parse_volume(a["volume"], style.volume) if "volume" in a else style.volume,
            )
        elif name == "say-as":
            only("interpret-as", "format", "detail")
            kind = a.get("interpret-as")
            if kind not in SAY_AS:
                raise ValueError(f"interpret-as {kind!r} is not one of {sorted(SAY_AS)}")
            style = replace(style, say_as=kind)
        elif name == "phoneme":
            only("alphabet", "ph")
            if a.get("alphabet", "py") not in ("py", "pinyin"):
                raise ValueError(f"alphabet {a.get('alphabet')!r} is not supported (use 'py')")
            if not a.get("ph", "").strip():
                raise ValueError("ph attribute (pinyin with tone digits) is required")
            from engine.frontend.g2p import parse_pinyin_string

            try:
                syls = parse_pinyin_string(a["ph"], "phoneme ph")
            except FrontendError as e:
                raise ValueError(str(e)) from None
            style = replace(style, phoneme=tuple(syls))
        elif name == "emotion":
            only("category", "intensity")
            cat = canonical_emotion(a.get("category", ""))
            if not re.fullmatch(r"[a-z][a-z0-9_]*", cat):
                raise ValueError(f"category {cat!r} is not an emotion (e.g. happy, sad, angry, 开心, 悲伤)")
            lo, hi = INTENSITY_RANGE
            inten = _float(a["intensity"], "emotion intensity", lo, hi) if "intensity" in a else 1.0
            style = replace(style, emotion=cat, intensity=inten)
        return style

    def endElement(self, name: str) -> None:
        _, style = self.stack.pop()
        if name in ("s", "p"):
            self.items.append(Marker(name))
        if name == "phoneme" and style.phoneme is not None:
            chunks = [it for it in self.items if isinstance(it, TextChunk) and it.style is style]
            n = sum(1 for c in chunks for ch in c.text if "\u3400" <= ch <= "\u9fff")
            if n != len(style.phoneme):
                raise self.fail(f"<phoneme> ph has {len(style.phoneme)} syllables for {n} Chinese characters")

    def characters(self, content: str) -> None:
        if not self.stack:
            return
        name, style = self.stack[-1]
        if name == "break":
            if content.strip():
                raise self.fail("<break> must be empty")
            return
        start = self._offset()
        entity = self.source.startswith("&", start) and ";" in self.source[start : start + 12]
        idx = -1 if entity else self.source.find(content, start, start + len(content) + 16)
        if idx >= 0:
            spans = [(idx + i, idx + i + 1) for i in range(len(content))]
        else:  # an entity / character reference: map to the reference's own source text
            end = self.source.find(";", start)
            end = end + 1 if end >= 0 else start + 1
            spans = [(start, end)] * len(content)
        self.items.append(TextChunk(content, spans, style))


def parse_ssml(text: str, max_chars: int) -> list[TextChunk | Marker]:
    if len(text) > max_chars:
        raise FrontendError(f"SSML input has {len(text)} characters; the limit is {max_chars}")
    raw = text.encode("utf-8")
    handler = _Handler(text, raw)
    parser = defusedxml.sax.make_parser()
    parser.forbid_dtd = True
    parser.forbid_entities = True
    parser.forbid_external = True
    parser.setContentHandler(handler)
    try:
        import io

        source = xml.sax.xmlreader.InputSource()
        source.setByteStream(io.BytesIO(raw))
        parser.parse(source)
    except FrontendError:
        raise
    except xml.sax.SAXParseException as e:
        raise FrontendError(
            f"invalid SSML: {e.getMessage()}", line=e.getLineNumber(), column=e.getColumnNumber() + 1
        ) from None
    except DefusedXmlException as e:
        line, col = handler.where()
        raise FrontendError(
            f"invalid SSML: forbidden XML construct ({type(e).__name__})", line=line, column=col
        ) from None
    except (ValueError, RecursionError) as e:
        raise FrontendError(f"invalid SSML: {e}") from None
    return handler.items
