"""Word segmentation with jieba: one process-wide dictionary, loaded lazily and quietly, thread-safe.

A :class:`Segmenter` with extra words (user dictionary, pronunciation overrides) shares the base frequency
table by copying it (no second dictionary load).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path

import jieba

from engine.frontend.errors import FrontendError

_LOCK = threading.Lock()
_BASE: jieba.Tokenizer | None = None


def base_tokenizer() -> jieba.Tokenizer:
    """The shared jieba tokenizer with the project's extra words; built once per process."""
    global _BASE
    if _BASE is None:
        with _LOCK:
            if _BASE is None:
                jieba.setLogLevel(logging.WARNING)
                jieba.default_logger.setLevel(logging.WARNING)
                tk = jieba.Tokenizer()
                tk.initialize()
                from engine.frontend.lexicon import PHRASES, SPLIT_WORDS  # local: avoids an import cycle

                for word in PHRASES:
                    tk.add_word(word, max(tk.FREQ.get(word, 0), 2000))
                for word in SPLIT_WORDS:
                    tk.del_word(word)
                _BASE = tk
    return _BASE


def _parse_user_dict(user_dict: str | Path | Iterable[str | tuple[str, int]]) -> list[tuple[str, int | None]]:
    entries: list[tuple[str, int | None]] = []
    if isinstance(user_dict, (str, Path)):
        path = Path(user_dict)
        if not path.is_file():
            raise FrontendError(f"user dictionary {str(path)!r} does not exist")
        lines: Iterable[str | tuple[str, int]] = path.read_text("utf-8").splitlines()
    else:
        lines = user_dict
    for item in lines:
        if isinstance(item, tuple):
            word, freq = item[0], int(item[1])
        else:
            parts = str(item).split()
            if not parts:
                continue
            word = parts[0]
            freq = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        if not word or any(c.isspace() for c in word):
            raise FrontendError(f"bad user dictionary entry {item!r}")
        entries.append((word, freq))
    return entries


class Segmenter:
    """jieba segmentation, optionally with extra words of its own."""

    def __init__(self, extra_words: Iterable[str | tuple[str, int]] | str | Path | None = None) -> None:
        self._entries = _parse_user_dict(extra_words) if extra_words is not None else []
        self._tk: jieba.Tokenizer | None = None
        self._lock = threading.Lock()

    def tokenizer(self) -> jieba.Tokenizer:
        if self._tk is None:
            base = base_tokenizer()
            if not self._entries:
                self._tk = base
            else:
                with self._lock:
                    tk = jieba.Tokenizer()
                    tk.FREQ, tk.total, tk.initialized = dict(base.FREQ), base.total, True
                    for word, freq in self._entries:
                        tk.add_word(word, freq if freq is not None else max(tk.FREQ.get(word, 0), 5000))
                    self._tk = tk
        return self._tk

    def cut(self, text: str) -> list[str]:
        return self.tokenizer().lcut(text, HMM=True)
