"""Build ``engine/frontend/cedict_phrases.tsv``: CC-CEDICT words that contain a polyphone, with their pinyin.

The words come from the ``pypinyin-dict`` package (MIT; its ``cc_cedict`` data is CC-CEDICT, CC BY-SA 4.0,
https://cc-cedict.org). Kept: words of 2-4 characters with at least one character the polyphone model
disambiguates and a reading per character. The polyphone gate reads them as extra evidence
(:func:`engine.frontend.polyphone.evidence`). Dev-only dependency: ``pypinyin-dict`` (requirements-dev.txt).

Run: ``python -m engine.frontend.training.build_cedict_phrases``.
"""

from __future__ import annotations

from engine.frontend import polyphone as pm
from engine.frontend.g2p import _tone3

HEADER = (
    "# Words of 2-4 characters with a polyphone, from CC-CEDICT (https://cc-cedict.org, CC BY-SA 4.0,\n"
    "# via the pypinyin-dict package's cc_cedict data). This file is licensed CC BY-SA 4.0.\n"
    "# Built by engine/frontend/training/build_cedict_phrases.py: word<TAB>pinyin (tone 5 = neutral).\n"
)


def main() -> None:
    from pypinyin_dict.phrase_pinyin_data import cc_cedict

    model = pm.model()
    rows = []
    for word, readings in cc_cedict.phrases_dict.items():
        if not 2 <= len(word) <= 4 or len(readings) != len(word):
            continue
        if not any(model.is_polyphone(ch) for ch in word):
            continue
        rows.append(f"{word}\t{' '.join(_tone3(r[0]) for r in readings)}")
    rows.sort()
    pm.CEDICT_PATH.write_text(HEADER + "\n".join(rows) + "\n", "utf-8")
    print(f"wrote {len(rows)} words to {pm.CEDICT_PATH}")


if __name__ == "__main__":
    main()
