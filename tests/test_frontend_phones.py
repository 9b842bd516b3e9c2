"""Syllable → phones rules (spec §5.3) against every row of py2phoneMap_PinYin.tsv, and the golden sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.frontend import Frontend, FrontendError
from engine.frontend.phones import split_tone, syllable_phones
from engine.frontend.tokens import word_flags
from engine.symbols import LinguisticVocab

DATA = Path(__file__).parent / "data"
GOLDEN = (DATA / "golden_beijing_tokens.txt").read_text("utf-8").strip()  # spec §5.1, 22 tokens
GOLDEN_IDS = {
    "sy": [5, 10, 30, 26, 140, 30, 25, 43, 19, 140, 43, 19, 39, 17, 140, 58, 11, 33, 9, 61, 3, 143],
    "tone": [4, 4, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 2, 2, 1, 4, 4, 5, 5, 2, 2, 1],
    "sflag": [0, 1, 0, 1, 2, 0, 1, 0, 1, 2, 0, 1, 0, 1, 2, 0, 1, 0, 1, 0, 1, 2],
    "ws": [0, 2, 2, 1, 4, 0, 2, 2, 1, 4, 0, 2, 2, 1, 4, 0, 2, 2, 2, 2, 1, 4],
    "emo": [1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0],
    "spk": [0] * 22,
}


def test_rules_reproduce_every_py2phonemap_row() -> None:
    rows = [ln.split("\t") for ln in (DATA / "py2phoneMap_PinYin.tsv").read_text("utf-8").splitlines() if ln]
    assert len(rows) == 661
    mismatches = [(k, v, syllable_phones(k)) for k, v in rows if " ".join(syllable_phones(k)) != v]
    assert mismatches == []


@pytest.mark.parametrize(
    ("syllable", "phones"),
    [("ju", ("j_c", "v_c")), ("yuan", ("y_c", "van_c")), ("lve", ("l_c", "ve_c")), ("ar", ("ga", "ar_c")),
     ("ng", ("ge", "en_c")), ("nar", ("n_c", "ar_c"))],
)  # fmt: skip
def test_extra_syllables(syllable: str, phones: tuple[str, str]) -> None:
    assert syllable_phones(syllable) == phones


@pytest.mark.parametrize("bad", ["xyz", "zhr", "", "b", "ior", "q1x"])
def test_invalid_syllables_raise(bad: str) -> None:
    with pytest.raises(FrontendError):
        syllable_phones(bad)


def test_tone_normalisation() -> None:
    assert split_tone("ma") == ("ma", 5)
    assert split_tone("ma0") == ("ma", 5)
    assert split_tone("Zhong1") == ("zhong", 1)


def test_word_flags_follow_spec_examples() -> None:
    assert word_flags([["w_c", "o_c"]]) == [[("s_begin", "word_begin"), ("s_end", "word_end")]]
    assert word_flags([["b_c", "ei_c"], ["j_c", "ing_c"]]) == [
        [("s_begin", "word_begin"), ("s_end", "word_middle")],
        [("s_begin", "word_middle"), ("s_end", "word_end")],
    ]
    assert word_flags([["ay"]]) == [[("s_both", "word_both")]]
    assert word_flags([["hh", "ah", "l"]])[0][1] == ("s_middle", "word_middle")


def test_golden_sample_tokens_and_ids() -> None:
    vocab = LinguisticVocab.build()
    units = Frontend().process("北京今天天气怎么样", vocab)
    assert len(units) == 1
    unit = units[0]
    assert unit.token_string == GOLDEN
    assert len(unit.tokens) == 22
    assert unit.ids.dtype == np.int64 and unit.ids.shape == (22, 6)
    for col, name in enumerate(GOLDEN_IDS):
        assert unit.ids[:, col].tolist() == GOLDEN_IDS[name], name
    # with the trailing "~" row the reference appends, ids equal the spec arrays' full length
    assert vocab.eos_ids().tolist() == [145, 8, 6, 6, 34, 7]
    assert unit.spans[0] == (0, 1) and unit.spans[4] is None and unit.spans[-2] == (8, 9)
    assert [s.text for s in unit.syllables] == list("北京今天天气怎么样")
