"""Pinyin syllable → PinYin phone-set phones, by the rules of spec §5.3 (KAN-TTS ``py2phoneMap``).

The rules are written here (not a table lookup); ``tests/test_frontend_phones.py`` checks that they reproduce
every row of ``py2phoneMap_PinYin.tsv``. Input syllables are numbered pinyin (``zhong1``, ``lv4``, ``huar1``),
``ü`` may be written ``v`` or ``u:``/``ü``; tone 5 (or 0) is neutral.
"""

from __future__ import annotations

import re
from functools import lru_cache

from engine.frontend.errors import FrontendError

INITIALS: tuple[str, ...] = (
    "zh",
    "ch",
    "sh",
    "b",
    "p",
    "m",
    "f",
    "d",
    "t",
    "n",
    "l",
    "g",
    "k",
    "h",
    "j",
    "q",
    "x",
    "r",
    "z",
    "c",
    "s",
    "y",
    "w",
)
FINALS: frozenset[str] = frozenset(
    [
        "a",
        "ai",
        "an",
        "ang",
        "ao",
        "e",
        "ei",
        "en",
        "eng",
        "er",
        "i",
        "ia",
        "ian",
        "iang",
        "iao",
        "ie",
        "ih",
        "ii",
        "in",
        "ing",
        "io",
        "iong",
        "iou",
        "o",
        "ong",
        "ou",
        "u",
        "ua",
        "uai",
        "uan",
        "uang",
        "uei",
        "uen",
        "ueng",
        "uo",
        "v",
        "van",
        "ve",
        "vn",
    ]
)
ERHUA_FINALS: frozenset[str] = frozenset(
    [
        "air",
        "angr",
        "anr",
        "aor",
        "ar",
        "eir",
        "engr",
        "enr",
        "iangr",
        "ianr",
        "iaor",
        "iar",
        "ier",
        "ihr",
        "iir",
        "ingr",
        "inr",
        "iongr",
        "iour",
        "ir",
        "ongr",
        "or",
        "our",
        "uair",
        "uangr",
        "uanr",
        "uar",
        "ueir",
        "uenr",
        "uor",
        "ur",
        "vanr",
        "ver",
        "vnr",
        "vr",
    ]
)
# Interjection / nasal syllables pypinyin can return, mapped to the nearest syllable of the phone set.
_SPECIAL = {"ng": "en", "n": "en", "m": "mu", "hm": "hen", "hng": "heng", "ê": "ei", "eh": "ei"}
_SYL_RE = re.compile(r"^([a-zü:]+?)([0-5])?$")


def split_tone(syllable: str) -> tuple[str, int]:
    """``'zhong1'`` → ``('zhong', 1)``; no digit or 0/5 → neutral tone 5 (``NormalizePron``)."""
    m = _SYL_RE.match(syllable.strip().lower())
    if not m:
        raise FrontendError(f"not a numbered pinyin syllable: {syllable!r}")
    tone = int(m.group(2)) if m.group(2) else 5
    return m.group(1), (5 if tone == 0 else tone)


def _base_final(initial: str, rest: str) -> str:
    if initial in ("j", "q", "x", "y"):
        rest = "v" + rest[1:] if rest.startswith("u") else rest
    if initial == "y":
        return rest if rest else "i"
    if initial == "w":
        return rest
    if initial in ("z", "c", "s") and rest == "i":
        return "ii"
    if initial in ("zh", "ch", "sh", "r") and rest == "i":
        return "ih"
    if initial in ("l", "n") and rest == "ue":
        return "ve"
    if rest == "iu":
        return "iou"
    if rest == "ui":
        return "uei"
    if rest == "un" and initial not in ("j", "q", "x", "y"):
        return "uen"
    return rest


@lru_cache(maxsize=4096)
def syllable_phones(syllable: str) -> tuple[str, str]:
    """Toneless pinyin syllable (``'zhong'``, ``'yuan'``, ``'huar'``) → ``(initial_phone, final_phone)``.

    Raises FrontendError if the syllable has no phones in the PinYin phone set.
    """
    s = syllable.strip().lower().replace("u:", "v").replace("ü", "v")
    s = _SPECIAL.get(s, s)
    if not s or not s.isascii() or not s.isalpha():
        raise FrontendError(f"not a pinyin syllable: {syllable!r}")
    erhua = s.endswith("r") and s != "er"
    base = s[:-1] if erhua else s
    initial = next((i for i in INITIALS if base.startswith(i) and len(base) > len(i)), "")
    rest = base[len(initial) :]
    if initial:
        final = _base_final(initial, rest)
        init_phone = "xx_c" if initial == "x" else f"{initial}_c"
    else:
        final = rest
        if final.startswith("a"):
            init_phone = "ga"
        elif final.startswith("e"):
            init_phone = "ge"
        elif final.startswith("o"):
            init_phone = "go"
        else:
            raise FrontendError(f"not a pinyin syllable: {syllable!r}")
    if final not in FINALS:
        raise FrontendError(f"not a pinyin syllable: {syllable!r} (final {final!r})")
    if erhua:
        if final == "e":  # cher → ch_c er_c: the e-final's r-form is the plain er final
            return init_phone, "er_c"
        if f"{final}r" not in ERHUA_FINALS:
            raise FrontendError(f"erhua form of {base!r} is not in the phone set: {syllable!r}")
        final = f"{final}r"
    return init_phone, f"{final}_c"


def is_valid_syllable(syllable: str) -> bool:
    try:
        syllable_phones(split_tone(syllable)[0])
    except FrontendError:
        return False
    return True
