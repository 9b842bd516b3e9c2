"""Customer-service sentence corpus for the load tests (``loadtests/data/corpus.tsv``)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CORPUS_PATH = Path(__file__).parent / "data" / "corpus.tsv"
LENGTH_CLASSES = ("short", "medium", "long")


class CorpusError(ValueError):
    """The corpus file is malformed (message names the file and line)."""


@dataclass(frozen=True)
class Sentence:
    """One corpus line: its length class, topic tag and text."""

    length_class: str
    topic: str
    text: str


@dataclass(frozen=True)
class Corpus:
    """Sentences grouped by length class."""

    sentences: tuple[Sentence, ...]

    def of(self, length_class: str) -> list[Sentence]:
        """All sentences of one length class (``short``/``medium``/``long``)."""
        if length_class not in LENGTH_CLASSES:
            raise CorpusError(f"unknown length class {length_class!r}; expected one of {LENGTH_CLASSES}")
        return [s for s in self.sentences if s.length_class == length_class]

    def pick(self, length_class: str, rng: random.Random | None = None) -> Sentence:
        """A random sentence of ``length_class``."""
        return (rng or random).choice(self.of(length_class))

    def __len__(self) -> int:
        return len(self.sentences)


def parse_corpus(lines: Sequence[str], source: str = "<corpus>") -> Corpus:
    """Parse TSV lines ``length_class<TAB>topic<TAB>text``; ``#`` lines and blank lines are skipped."""
    out: list[Sentence] = []
    seen: set[str] = set()
    for no, raw in enumerate(lines, start=1):
        line = raw.rstrip("\n")
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise CorpusError(f"{source}:{no}: expected 3 tab-separated fields, got {len(parts)}")
        length_class, topic, text = (p.strip() for p in parts)
        if length_class not in LENGTH_CLASSES:
            raise CorpusError(f"{source}:{no}: unknown length class {length_class!r}")
        if not topic or not text:
            raise CorpusError(f"{source}:{no}: empty topic or text")
        if text in seen:
            raise CorpusError(f"{source}:{no}: duplicate sentence {text!r}")
        seen.add(text)
        out.append(Sentence(length_class, topic, text))
    if not out:
        raise CorpusError(f"{source}: no sentences")
    return Corpus(tuple(out))


def load_corpus(path: Path | str = CORPUS_PATH) -> Corpus:
    """Load and validate the corpus file."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CorpusError(f"cannot read corpus {p}: {exc}") from exc
    return parse_corpus(lines, str(p))
