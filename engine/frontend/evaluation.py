"""Accuracy on the labelled sets in ``tests/data/frontend`` (used by the tests and the benchmark)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from engine.frontend.g2p import G2P
from engine.frontend.normalize import is_han, normalize, normalized_text

DATA_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "frontend"


@dataclass
class Score:
    correct: int = 0
    total: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def load_tsv(path: Path) -> list[list[str]]:
    rows = []
    for line in path.read_text("utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            rows.append(line.split("\t"))
    return rows


def pinyin_accuracy(g2p: G2P | None = None, path: Path | None = None) -> Score:
    """Lexical (pre-sandhi) syllable accuracy against hand-written pinyin; ``a/b`` labels accept either."""
    g2p = g2p or G2P()
    score = Score()
    for _cat, sentence, expected in load_tsv(path or DATA_DIR / "pinyin_cs.tsv"):
        hanzi = [c for c in sentence if is_han(c)]
        labels = expected.split()
        if len(labels) != len(hanzi):
            raise ValueError(f"{sentence}: {len(labels)} labels for {len(hanzi)} characters")
        got: list[str] = []
        runs = [(start, [None] * len(run)) for start, run in _han_runs(sentence)]
        for words in g2p.sentence(sentence, runs):  # one sentence, as the frontend reads it
            for w in words:
                for s in w.syllables:
                    if s.last > s.first:  # erhua syllable covers two characters: compare as base + er5
                        base = s.lexical[:-2] + s.lexical[-1]
                        got += [base, "er5"]
                    else:
                        got.append(s.lexical)
        for h, lab, g in zip(hanzi, labels, got + [""] * (len(labels) - len(got)), strict=True):
            score.total += 1
            if g in lab.split("/"):
                score.correct += 1
            else:
                score.errors.append(f"{sentence}: {h} expected {lab} got {g}")
    return score


def plain_pypinyin_accuracy(path: Path | None = None) -> Score:
    """Baseline: pypinyin ``lazy_pinyin`` on whole sentences (its own segmentation), same scoring."""
    from engine.frontend.g2p import reference_pinyin

    score = Score()
    for _cat, sentence, expected in load_tsv(path or DATA_DIR / "pinyin_cs.tsv"):
        got = reference_pinyin(["".join(c for c in sentence if is_han(c))])
        for lab, g in zip(expected.split(), got, strict=True):
            score.total += 1
            score.correct += g in lab.split("/")
    return score


def _han_runs(sentence: str) -> list[tuple[int, str]]:
    """``(start, run)`` for each run of hanzi in ``sentence``."""
    runs: list[tuple[int, str]] = []
    for i, c in enumerate(sentence):
        if not is_han(c):
            continue
        if runs and runs[-1][0] + len(runs[-1][1]) == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + c)
        else:
            runs.append((i, c))
    return runs


def tn_accuracy(path: Path | None = None) -> Score:
    """Exact-match accuracy of :func:`normalized_text` on the TN set."""
    score = Score()
    for row in load_tsv(path or DATA_DIR / "tn_cs.tsv"):
        _cat, raw, expected = row[0], row[1], row[2]
        got = normalized_text(normalize(raw))
        score.total += 1
        if got == expected:
            score.correct += 1
        else:
            score.errors.append(f"{raw!r}: expected {expected!r} got {got!r}")
    return score


# ---------------------------------------------------------------- CPP polyphone benchmark
CPP_DEV = DATA_DIR / "cpp"


@dataclass(frozen=True, slots=True)
class CppItem:
    """One CPP sentence: the polyphonic character ``sentence[index]`` is read ``label``."""

    sentence: str
    index: int
    label: str


def load_cpp(directory: Path, split: str) -> list[CppItem]:
    """``<split>.sent`` (polyphone between two ``▁``) and ``<split>.lb`` (its pinyin) in ``directory``."""
    sents = (directory / f"{split}.sent").read_text("utf-8").splitlines()
    labels = (directory / f"{split}.lb").read_text("utf-8").splitlines()
    if len(sents) != len(labels):
        raise ValueError(f"{directory}/{split}: {len(sents)} sentences for {len(labels)} labels")
    items = []
    for s, lab in zip(sents, labels, strict=True):
        i = s.find("▁")
        if i < 0 or s[i + 2 : i + 3] != "▁":
            raise ValueError(f"{directory}/{split}: no ▁X▁ mark in {s!r}")
        items.append(CppItem(s.replace("▁", ""), i, lab.strip().replace("u:", "v")))
    return items


@dataclass(frozen=True, slots=True)
class CppRun:
    """The hanzi run holding the marked character, as the frontend hands it to :meth:`G2P.words`."""

    text: str
    forced: list[str | None]
    index: int  # of the marked character within ``text``
    left: str  # the sentence around the run (normalised), for the context model
    right: str


def cpp_run(item: CppItem) -> CppRun:
    """Normalise the sentence like the frontend does and cut out the hanzi run with the marked character."""
    items = normalize(item.sentence)
    at = next((k for k, c in enumerate(items) if c.kind == "han" and c.start == item.index), None)
    if at is None:
        raise ValueError(f"marked character of {item.sentence!r} lost in normalisation")
    a, b = at, at
    while a > 0 and items[a - 1].kind == "han":
        a -= 1
    while b < len(items) and items[b].kind == "han":
        b += 1
    run = items[a:b]
    return CppRun(
        "".join(c.text for c in run),
        [c.pinyin for c in run],
        at - a,
        "".join(c.text for c in items[:a]),
        "".join(c.text for c in items[b:]),
    )


def reading_at(g2p: G2P, run: CppRun, context: bool = False) -> str:
    """Lexical (pre-sandhi) reading of the marked character; erhua syllables count by their base."""
    ctx = (run.left, run.right) if context else ("", "")
    for w in g2p.words(run.text, run.forced, ctx):
        for s in w.syllables:
            if s.first == run.index:
                return s.lexical[:-2] + s.lexical[-1] if s.last > s.first else s.lexical
            if s.first < run.index <= s.last:
                return "er5"  # an erhua 儿 merged into the previous syllable
    return ""


def cpp_accuracy(g2p: G2P, items: list[CppItem], context: bool = False) -> Score:
    """Accuracy of the marked characters' lexical readings; ``context`` passes the rest of the sentence on."""
    score = Score()
    for it in items:
        got = reading_at(g2p, cpp_run(it), context)
        score.total += 1
        if got == it.label:
            score.correct += 1
        else:
            score.errors.append(f"{it.sentence}: {it.sentence[it.index]} expected {it.label} got {got}")
    return score


def cpp_plain_pypinyin(items: list[CppItem]) -> Score:
    """Baseline: pypinyin ``lazy_pinyin`` on the whole sentence, read at the marked character."""
    from pypinyin import Style, lazy_pinyin

    score = Score()
    for it in items:
        got = lazy_pinyin(
            it.sentence, style=Style.TONE3, neutral_tone_with_five=True, errors=lambda s: ["?"] * len(s)
        )
        score.total += 1
        score.correct += len(got) == len(it.sentence) and got[it.index] == it.label
    return score


def cpp_g2pm(items: list[CppItem]) -> Score:
    """Baseline: the ``g2pM`` package itself (its numpy BiLSTM) on the whole sentence."""
    from g2pM import G2pM

    model = G2pM()
    score = Score()
    for it in items:
        got = model(it.sentence, char_split=True)[it.index].replace("u:", "v")
        score.total += 1
        score.correct += got == it.label
    return score


def g2pm_pinyin_accuracy(path: Path | None = None) -> Score:
    """Baseline: the ``g2pM`` package on our pinyin sets (whole sentences), same scoring as the others."""
    from g2pM import G2pM

    model = G2pM()
    score = Score()
    for _cat, sentence, expected in load_tsv(path or DATA_DIR / "pinyin_cs.tsv"):
        got = [
            p.replace("u:", "v")
            for c, p in zip(sentence, model(sentence, char_split=True), strict=True)
            if is_han(c)
        ]
        for lab, g in zip(expected.split(), got, strict=True):
            score.total += 1
            score.correct += g in lab.split("/")
    return score
