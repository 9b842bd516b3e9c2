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
        for run in _han_runs(sentence):
            for w in g2p.words(run, [None] * len(run)):
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


def _han_runs(sentence: str) -> list[str]:
    runs, cur = [], ""
    for c in sentence:
        if is_han(c):
            cur += c
        elif cur:
            runs.append(cur)
            cur = ""
    return runs + ([cur] if cur else [])


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
