"""Grapheme-to-phoneme for Mandarin runs: jieba words → pypinyin (phrase dictionaries) → our polyphone layer.

Order of precedence per word: user pronunciation overrides, the project phrase dictionary
(:mod:`engine.frontend.lexicon`), pypinyin's phrase dictionaries, then our context rules for single-character
polyphones (还 得 地 了 着 重 调 为 数 只 长 一, written for this project). Erhua merges a suffix 儿 into the
previous syllable (``huir4``); tone sandhi (3-3, 一, 不) is a separate surface step, :func:`apply_sandhi`.
Polyphones none of these decide go to :mod:`engine.frontend.polyphone`, which reads the whole sentence
(:meth:`G2P.sentence` takes all of a sentence's hanzi runs) and weighs the phrase evidence around the
character (:func:`phrase_evidence`).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pypinyin import Style, lazy_pinyin
from pypinyin.constants import PHRASES_DICT, PINYIN_DICT
from pypinyin.style import convert as _style_convert

from engine.frontend import lexicon as lx
from engine.frontend import names
from engine.frontend import polyphone as pm
from engine.frontend.errors import FrontendError
from engine.frontend.phones import ERHUA_FINALS, is_valid_syllable, split_tone, syllable_phones
from engine.frontend.segment import Segmenter

_NUMERALS = frozenset("零一二三四五六七八九十百千万亿两幺")
_WARM_LOCK = threading.Lock()
_CITATION = {"一": "yi1", "不": "bu4"}
_TONE3: dict[str, str] = {}
_MAX_PHRASE = 6


@dataclass(slots=True)
class Syl:
    """One Mandarin syllable: surface ``pinyin`` (after sandhi), ``lexical`` (before), char indices."""

    hanzi: str
    lexical: str
    first: int  # index of the first source NChar in the run
    last: int  # index of the last source NChar (erhua syllables cover two)
    forced: bool = False
    pinyin: str = ""
    source: str = ""  # where ``lexical`` came from (see :data:`engine.frontend.polyphone.GATE_PATH`)


@dataclass(slots=True)
class Word:
    text: str
    syllables: list[Syl] = field(default_factory=list)


def _pypinyin(words: Sequence[str]) -> list[tuple[str, str]]:
    """Readings from pypinyin's own tables, each with its source: the phrase dictionary (``pdictN`` for a
    whole word of N syllables, capped at 4), else forward maximum matching over it (``subN``), else the first
    single-character reading (``single``); style conversion is cached. Several times faster than
    ``lazy_pinyin``; it differs from it only inside words missing from the phrase dictionary (~2 % of random
    jieba words, where pypinyin's own mmseg splits differently)."""
    out: list[tuple[str, str]] = []
    for w in words:
        out.extend(_word_pinyin(w))
    return out


def _tone3(marked: str) -> str:
    py = _TONE3.get(marked)
    if py is None:
        py = _style_convert(marked, Style.TONE3, True, neutral_tone_with_five=True)
        if not py[-1:].isdigit():
            py += "5"
        _TONE3[marked] = py
    return py


def _word_pinyin(word: str) -> list[tuple[str, str]]:
    phrase = PHRASES_DICT.get(word)
    if phrase is not None:
        src = f"pdict{min(len(phrase), 4)}" if len(word) > 1 else "single"
        return [(_tone3(p[0]), src) for p in phrase]
    out: list[tuple[str, str]] = []
    i, n = 0, len(word)
    while i < n:
        for length in range(min(_MAX_PHRASE, n - i), 1, -1):
            phrase = PHRASES_DICT.get(word[i : i + length])
            if phrase is not None:
                out.extend((_tone3(p[0]), f"sub{min(length, 4)}") for p in phrase)
                i += length
                break
        else:
            single = PINYIN_DICT.get(ord(word[i]))
            out.append((_tone3(single.split(",")[0]) if single else "?", "single"))
            i += 1
    return out


def reference_pinyin(words: Sequence[str]) -> list[str]:
    """Plain pypinyin, for comparison in tests and the benchmark."""
    return lazy_pinyin(
        list(words), style=Style.TONE3, neutral_tone_with_five=True, errors=lambda s: ["?"] * len(s)
    )


def parse_pinyin_string(py: str | Sequence[str], what: str) -> list[str]:
    """Validate a user/SSML pinyin reading (``'zhong4 yao4'``) → list of syllables with tone digits."""
    items = py.replace(",", " ").split() if isinstance(py, str) else list(py)
    out = []
    for s in items:
        base, tone = split_tone(s)
        if not is_valid_syllable(f"{base}{tone}"):
            raise FrontendError(f"{what}: {s!r} is not a pinyin syllable of the phone set")
        out.append(f"{base.replace('ü', 'v').replace('u:', 'v')}{tone}")
    return out


class G2P:
    """Segmentation + pinyin: dictionaries, polyphone rules, names and the polyphone context model.

    Thread-safe after construction.

    ``polyphone_model=False`` keeps only dictionaries and rules (the pre-model behaviour, for comparison).
    """

    def __init__(
        self,
        user_dict: object | None = None,
        pronunciation_overrides: Mapping[str, str | Sequence[str]] | None = None,
        polyphone_model: bool = True,
    ) -> None:
        self.overrides: dict[str, list[str]] = {}
        for word, py in (pronunciation_overrides or {}).items():
            syls = parse_pinyin_string(py, f"pronunciation override for {word!r}")
            if len(syls) != len(word):
                raise FrontendError(
                    f"pronunciation override for {word!r}: {len(syls)} syllables for {len(word)} characters"
                )
            self.overrides[word] = syls
        extra: list[str | tuple[str, int]] = []
        if user_dict is not None:
            from engine.frontend.segment import _parse_user_dict

            extra += [(w, f) if f is not None else w for w, f in _parse_user_dict(user_dict)]  # type: ignore[arg-type]
        extra += list(self.overrides)
        self.segmenter = Segmenter(extra or None)
        self.use_model = polyphone_model
        self._gate = pm.load_gate() if polyphone_model else None

    def warm_up(self) -> None:
        with _WARM_LOCK:
            self.segmenter.tokenizer()
            _pypinyin(["预热"])
            names.warm_up()
            if self.use_model:
                pm.model()
                pm.cedict_phrases()

    def words(
        self, text: str, forced: Sequence[str | None], context: tuple[str, str] = ("", "")
    ) -> list[Word]:
        """Segment and read a run of hanzi; ``forced[i]`` is a fixed reading for character ``i`` or None.

        ``context`` is the sentence text around the run (left, right); the polyphone model reads it too.
        """
        left, right = context
        return self.sentence(left + text + right, [(len(left), forced)])[0]

    def sentence(self, text: str, runs: Sequence[tuple[int, Sequence[str | None]]]) -> list[list[Word]]:
        """Read the hanzi runs of one sentence: run ``(start, forced)`` is ``text[start:start+len(forced)]``.

        The polyphone model reads the whole sentence once, for every run.
        """
        out = []
        for start, forced in runs:
            run = text[start : start + len(forced)]
            if len(run) != len(forced):
                raise FrontendError("internal: forced readings and text differ in length")
            out.append(self._lexical(run, forced))
        if self.use_model:
            self._polyphones(text, [(start, words) for (start, _), words in zip(runs, out, strict=True)])
        for words in out:
            for word in words:
                _erhua(word)
            _erhua_across(words)
            for word in words:
                word.syllables = [s for s in word.syllables if s.lexical != "?"]
        return [[w for w in words if w.syllables] for words in out]

    def _lexical(self, text: str, forced: Sequence[str | None]) -> list[Word]:
        """Dictionaries, context rules and surnames for one run (before the polyphone model)."""
        cut = self.segmenter.cut(text)
        lookup: list[tuple[list[str], str] | None] = []
        for w in cut:
            if w in self.overrides:
                lookup.append((self.overrides[w], "override"))
            elif w in lx.PHRASES:
                lookup.append((lx.PHRASES[w], "proj"))
            else:
                lookup.append(None)
        need = [w for w, py in zip(cut, lookup, strict=True) if py is None]
        flat = iter(_pypinyin(need)) if need else iter(())
        words: list[Word] = []
        pos = 0
        for w, py in zip(cut, lookup, strict=True):
            syls = [(s, py[1]) for s in py[0]] if py else _sub_phrases(w, [next(flat) for _ in w])
            word = Word(w)
            for k, (ch, (s, src)) in enumerate(zip(w, syls, strict=True)):
                fix = forced[pos + k]
                if py is None and ch in _CITATION:
                    s = _CITATION[ch]  # citation tone; surface 一/不 tones come from apply_sandhi
                if fix is not None:
                    src = "forced"
                word.syllables.append(Syl(ch, fix or s, pos + k, pos + k, forced=fix is not None, source=src))
            words.append(word)
            pos += len(w)
        _context_rules(words)
        self._names(text, words)
        return words

    def _names(self, text: str, words: list[Word]) -> None:
        """Surname readings at the start of person names (单 shan4 in 单田芳, 翟 zhai2 in 翟先生)."""
        flat = [s for w in words for s in w.syllables]
        for i, py in names.surname_readings(text, [w.text for w in words]):
            s = flat[i]
            if s.source not in DECIDED_SOURCES:
                s.lexical, s.source = py, "name"

    def _polyphones(self, text: str, runs: Sequence[tuple[int, list[Word]]]) -> None:
        """The context model confirms or changes each polyphone our dictionaries and rules left open."""
        model, gate = pm.model(), self._gate
        assert gate is not None
        todo = [
            (start + s.first, s)
            for start, words in runs
            for w in words
            for s in w.syllables
            if s.source not in DECIDED_SOURCES and model.is_polyphone(s.hanzi)
        ]
        if not todo:
            return
        probs = model.log_probs(text, [p for p, _ in todo])
        for (p, s), lp in zip(todo, probs, strict=True):
            s.lexical = pm.decide(lp, s.lexical, s.source, gate, phrase_evidence(text, p))


def phrase_evidence(text: str, index: int) -> dict[str, set[str]]:
    """Readings of ``text[index]`` in the 2-4 character words around it, per phrase dictionary."""
    cedict = pm.cedict_phrases()
    out: dict[str, set[str]] = {"pypinyin": set(), "cedict": set()}
    for n in range(2, 5):
        for a in range(max(0, index - n + 1), min(index, len(text) - n) + 1):
            w = text[a : a + n]
            py = PHRASES_DICT.get(w)
            if py is not None and len(py) == n:
                out["pypinyin"].add(_tone3(py[index - a][0]))
            ce = cedict.get(w)
            if ce is not None:
                out["cedict"].add(ce[index - a])
    return out


DECIDED_SOURCES = frozenset({"override", "proj", "forced", "name", "rule"})  # the model never changes these


def _sub_phrases(word: str, syls: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Project phrases inside a longer jieba word (谢谢您, 处理结果) override pypinyin, longest first."""
    i, n = 0, len(word)
    while i < n - 1:
        for length in range(min(5, n - i), 1, -1):
            py = lx.PHRASES.get(word[i : i + length])
            if py is not None and (i, length) != (0, n):
                syls[i : i + length] = [(p, "proj") for p in py]
                i += length - 1
                break
        i += 1
    return syls


def _set(s: Syl, py: str) -> None:
    """A context rule decides ``s`` (the model leaves it alone); forced readings and overrides always win."""
    if not s.forced and s.source != "override":
        s.lexical, s.source = py, "rule"


def _context_rules(words: list[Word]) -> None:
    """Single-character polyphone rules that look at the neighbouring words."""
    for i, w in enumerate(words):
        if len(w.text) != 1:
            continue
        prev = words[i - 1].text if i > 0 else ""
        nxt = words[i + 1].text if i + 1 < len(words) else ""
        s = w.syllables[0]
        ch = w.text
        if ch == "还":
            # verb 还 (huan2): before money words, at clause end, or before 的/了/完/上; else adverb hai2
            verb_next = nxt[:1] in ("款", "钱", "贷", "给") or nxt in (
                "清",
                "的",
                "了",
                "完",
                "上",
                "借款",
                "欠款",
            )
            _set(s, "huan2" if not nxt or verb_next else "hai2")
        elif ch == "得":
            if (
                prev in lx.DEI3_BEFORE
                and nxt
                and nxt not in lx.DE5_AFTER_NEXT
                and nxt[:1] not in ("到", "知")
            ):
                _set(s, "dei3")
            elif prev:
                _set(s, "de5")
        elif ch == "地":
            tail = prev[-1:] if prev else ""
            if prev and nxt and tail not in lx.DI4_PREV and nxt[:1] not in "上下里面方区址图点址铁":
                _set(s, "de5")
            else:
                _set(s, "di4")
        elif ch == "了":
            _set(s, "liao3" if prev[-1:] in lx.LIAO3_PREV and prev and nxt[:1] != "解" else "le5")
        elif ch == "着":
            _set(s, "zhao2" if prev[-1:] == "不" or prev in ("睡", "找", "猜", "够") else "zhe5")
        elif ch == "重":
            if nxt in lx.CHONG2_NEXT:
                _set(s, "chong2")
        elif ch == "调":
            if nxt in lx.TIAO2_NEXT or nxt[:1] in lx.TIAO2_NEXT:
                _set(s, "tiao2")
        elif ch == "为":
            if prev in lx.WEI2_AFTER or prev[-1:] in lx.WEI2_AFTER or (nxt[:1] and nxt[:1] in _NUMERALS):
                _set(s, "wei2")
        elif ch == "数":
            if nxt in lx.SHU3_NEXT:
                _set(s, "shu3")
        elif ch == "只":
            _set(s, "zhi1" if prev[-1:] in lx.ZHI1_PREV else "zhi3")
        elif ch == "长":
            _set(s, "chang2")
        elif ch == "行" and prev[-1:] in ("银", "支", "分", "总", "本", "该", "各"):
            _set(s, "hang2")
    for i, w in enumerate(words):
        nxt = words[i + 1].text if i + 1 < len(words) else ""
        if w.text == "会长" and nxt[:2] in ("一些", "一点", "了", "很多", "许多"):
            _set(w.syllables[1], "chang2")  # 时间会长一些: 会 + 长, not 会长 (president)
    # 一 in month/ordinal positions keeps tone 1 lexically; 的 as particle stays neutral.
    for w in words:
        for k, s in enumerate(w.syllables):
            if (
                s.hanzi == "的"
                and w.text not in lx.PHRASES
                and (
                    w.text == "的"
                    or (k == len(w.syllables) - 1 and len(w.text) > 1 and w.text[-2:] != "目的")
                )
            ):
                _set(s, "de5")


def _erhua_ok(py: str) -> bool:
    base, _ = split_tone(py)
    try:
        _, final = syllable_phones(base)
    except FrontendError:
        return False
    f = final[:-2]
    return f == "e" or f"{f}r" in ERHUA_FINALS


def _merge_er(prev: Syl, er: Syl) -> None:
    base, tone = split_tone(prev.lexical)
    prev.lexical = f"{base}r{tone}"
    prev.hanzi += er.hanzi
    prev.last = er.last
    er.lexical = "?"  # removed afterwards


def _erhua(word: Word) -> None:
    syls = word.syllables
    if len(syls) < 2 or word.text in lx.NOT_ERHUA or syls[-1].hanzi != "儿" or syls[-1].forced:
        return
    if _erhua_ok(syls[-2].lexical):
        _merge_er(syls[-2], syls[-1])


def _erhua_across(words: list[Word]) -> None:
    """A lone 儿 word after 这/那/哪/点/会/块/事/玩 merges into it (哪 儿 → nar3)."""
    for i in range(1, len(words)):
        w = words[i]
        if w.text == "儿" and words[i - 1].text[-1:] in "这那哪点会块事玩空味样":
            prev = words[i - 1].syllables[-1]
            if prev.lexical != "?" and _erhua_ok(prev.lexical):
                _merge_er(prev, w.syllables[0])


def apply_sandhi(words: list[Word], enabled: bool = True) -> None:
    """Surface tones: 不 (bu2 before tone 4, bu5 in A不A); 一 (yi2/yi4; yi1 in numbers and ordinals, yi5 in
    A一A); 3-3 (tone 3 before a lexical tone 3 in the same word, or after a one-syllable word, → tone 2)."""
    flat = [(wi, s) for wi, w in enumerate(words) for s in w.syllables]
    for s in (s for _, s in flat):
        s.pinyin = s.lexical
    if not enabled:
        return
    n = len(flat)
    for i, (_, s) in enumerate(flat):
        if s.forced or s.hanzi not in ("一", "不"):
            continue
        prev = flat[i - 1][1] if i > 0 else None
        nxt = flat[i + 1][1] if i + 1 < n else None
        if nxt is None:
            continue
        ntone = split_tone(nxt.lexical)[1]
        if prev is not None and prev.hanzi == nxt.hanzi and prev.hanzi not in _NUMERALS:
            s.pinyin = "yi5" if s.hanzi == "一" else "bu5"
        elif s.hanzi == "不":
            if s.lexical == "bu4" and ntone == 4:
                s.pinyin = "bu2"
        elif s.lexical == "yi1":
            if prev is not None and (prev.hanzi in _NUMERALS or prev.hanzi == "第"):
                continue
            if nxt.hanzi in _NUMERALS and nxt.hanzi not in "百千万亿":
                continue
            if nxt.hanzi in lx.YI1_NEXT or (i + 2 < n and nxt.hanzi + flat[i + 2][1].hanzi in lx.YI1_NEXT):
                continue
            s.pinyin = "yi2" if ntone in (4, 5) else "yi4"
    for i in range(n - 1):
        (wa, a), (wb, b) = flat[i], flat[i + 1]
        if split_tone(a.pinyin)[1] != 3 or split_tone(b.lexical)[1] != 3:
            continue
        if wa == wb or len(words[wa].syllables) == 1:
            base, _ = split_tone(a.pinyin)
            a.pinyin = f"{base}2"
