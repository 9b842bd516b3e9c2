"""Hardened SSML subset parser (defusedxml SAX: no DTDs, no entity expansion, no external entities; size and
depth capped). Produces text chunks with their source spans and style, plus break/boundary markers.

Supported: ``speak`` (root), ``s``/``p``, ``break`` (time, strength), ``prosody`` (rate, pitch, volume),
``say-as`` (interpret-as: telephone digits cardinal date time currency name address), ``phoneme``
(alphabet py/pinyin, ph), ``emotion`` (category, intensity; Aliyun style). Errors give line/column and why.
"""

from __future__ import annotations

import re
import xml.sax
from dataclasses import dataclass, replace

import defusedxml.sax
from defusedxml import DefusedXmlException

from engine.frontend.errors import FrontendError
from engine.frontend.normalize import SAY_AS

MAX_DEPTH = 32
MAX_BREAK_S = 10.0
STRENGTH_S = {"none": 0.0, "x-weak": 0.1, "weak": 0.2, "medium": 0.4, "strong": 0.7, "x-strong": 1.2}
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


@dataclass(frozen=True, slots=True)
class Style:
    rate: float = 1.0
    pitch: float = 0.0  # semitones
    volume: float = 1.0
    emotion: str | None = None
    intensity: float = 1.0
    say_as: str | None = None
    phoneme: tuple[str, ...] | None = None

    def voice(self) -> tuple[float, float, float, str | None, float]:
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
        raise ValueError(f"{what} {value!r} is outside {lo}..{hi}")
    return v


def parse_time(value: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s)\s*", value)
    if not m:
        raise ValueError(f"break time {value!r} must look like '500ms' or '1.5s'")
    v = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
    if v > MAX_BREAK_S:
        raise ValueError(f"break time {value!r} exceeds {MAX_BREAK_S:g} s")
    return v


def parse_rate(value: str) -> float:
    v = value.strip()
    if v in RATE_WORDS:
        return RATE_WORDS[v]
    if v.endswith("%"):
        pct = _float(v[:-1], "prosody rate", -90, 400)
        return 1.0 + pct / 100.0 if v[0] in "+-" else pct / 100.0
    return _float(v, "prosody rate", 0.25, 4.0)


def parse_pitch(value: str) -> float:
    v = value.strip()
    if v in PITCH_WORDS:
        return PITCH_WORDS[v]
    if v.endswith("st"):
        return _float(v[:-2], "prosody pitch (semitones)", -12, 12)
    return _float(v, "prosody pitch (semitones)", -12, 12)


def parse_volume(value: str) -> float:
    v = value.strip()
    if v in VOLUME_WORDS:
        return VOLUME_WORDS[v]
    if v.lower().endswith("db"):
        return 10 ** (_float(v[:-2], "prosody volume (dB)", -40, 20) / 20.0)
    return _float(v, "prosody volume", 0.0, 4.0)


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
                rate=parse_rate(a["rate"]) if "rate" in a else style.rate,
                pitch=parse_pitch(a["pitch"]) if "pitch" in a else style.pitch,
                volume=parse_volume(a["volume"]) if "volume" in a else style.volume,
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
            cat = a.get("category", "").strip().lower()
            if not re.fullmatch(r"[a-z][a-z0-9_]*", cat):
                raise ValueError("category attribute is required (e.g. happy, sad, angry)")
            inten = _float(a["intensity"], "intensity", 0.01, 2.0) if "intensity" in a else 1.0
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
