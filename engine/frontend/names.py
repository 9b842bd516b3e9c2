"""Surname readings at the start of person names: 单田芳 shan4, 翟先生 zhai2, 我姓解 xie4, 尉迟恭 yu4 chi2.

A surname from :data:`engine.frontend.lexicon.SURNAMES` is read with its surname reading when jieba's
part-of-speech tagger marks the word it starts as a person name (``nr``) and pypinyin's phrase dictionary does
not list that word, when it stands alone before a title (先生, 女士, 老师, …), or right after 姓. The
tagger only runs on text that contains a surname character.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import IO

import jieba.posseg
from pypinyin.constants import PHRASES_DICT

from engine.frontend import lexicon as lx
from engine.frontend.segment import base_tokenizer

_LOCK = threading.Lock()
_FIRST = frozenset(s[0] for s in lx.SURNAMES)
PERSON_TAG = "nr"  # jieba's person-name tags: nr, nrfg, nrt


class PersonNameTagger(jieba.posseg.POSTokenizer):
    """jieba's part-of-speech tagger that keeps only the person-name tags of its dictionary.

    Only ``nr*`` tags are read here; every other dictionary word is tagged ``x`` instead of ``n``, ``v``, …
    Segmentation and the HMM's tags for words outside the dictionary are jieba's own, so every ``nr*`` tag is
    the full tagger's. The full table holds 349k words (≈43 MB per frontend replica); 79k are person names.
    """

    def load_word_tag(self, f: IO[bytes]) -> None:  # jieba's hook, called by __init__ and initialize()
        with f:
            rows = (line.strip().decode("utf-8").split(" ") for line in f)
            self.word_tag_tab = {
                row[0]: row[2] for row in rows if len(row) == 3 and row[2].startswith(PERSON_TAG)
            }


_TAGGER: PersonNameTagger | None = None


def tagger() -> PersonNameTagger:
    """The person-name tagger over the project's tokenizer, built once per process."""
    global _TAGGER
    if _TAGGER is None:
        with _LOCK:
            if _TAGGER is None:
                _TAGGER = PersonNameTagger(base_tokenizer())
    return _TAGGER


def warm_up() -> None:
    tagger()


def _surname_at(word: str) -> str | None:
    for length in (2, 1):
        if len(word) >= length and word[:length] in lx.SURNAMES:
            return word[:length]
    return None


def surname_readings(text: str, words: Sequence[str] = ()) -> list[tuple[int, str]]:
    """``(index, reading)`` for each surname character read as a surname in ``text`` (a run of hanzi).

    ``words`` (the run's segmentation, optional) skips the tagger when every surname character sits inside a
    dictionary word it does not start (订单, 小区, 检查).
    """
    if not _FIRST.intersection(text):
        return []
    if words and all(
        len(w) > 1 and w in PHRASES_DICT and not _surname_at(w) for w in words if _FIRST.intersection(w)
    ):
        return []
    tagged = [(p.word, p.flag) for p in tagger().cut(text)]
    out: list[tuple[int, str]] = []
    pos = 0
    for k, (word, flag) in enumerate(tagged):
        sur = _surname_at(word)
        if sur is not None:
            prev = tagged[k - 1][0] if k else ""
            nxt = tagged[k + 1][0] if k + 1 < len(tagged) else ""
            if word == sur:
                is_name = nxt in lx.NAME_TITLES or prev.endswith("姓") or (flag == "nr" and len(sur) == 1)
            else:
                is_name = flag.startswith("nr") and len(word) <= len(sur) + 2 and word not in PHRASES_DICT
                is_name = is_name or prev.endswith("姓")
            if is_name:
                out += [(pos + i, py) for i, py in enumerate(lx.SURNAMES[sur])]
        pos += len(word)
    return out
