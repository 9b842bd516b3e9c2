"""The person-name tagger (`engine.frontend.names.PersonNameTagger`) tags names as jieba's tagger does."""

from __future__ import annotations

from pathlib import Path

import jieba.posseg
import pytest

from engine.frontend.names import PERSON_TAG, PersonNameTagger, tagger
from engine.frontend.segment import base_tokenizer

CORPUS = Path(__file__).parent / "data" / "frontend" / "pinyin_cs.tsv"
NAMES = (
    "我叫单田芳，请转告翟先生和缪女士。",
    "尉迟恭是唐朝名将，曾国藩是湖南人，朴槿惠访问中国。",
    "张伟、王芳和李娜今天值班，欧阳娜娜下午到。",
    "请解先生到三号窗口办理，区经理稍后回电。",
)


def _names_only(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(word, flag if flag.startswith(PERSON_TAG) else "other") for word, flag in pairs]


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    lines = CORPUS.read_text("utf-8").splitlines()
    return [*NAMES, *(line.split("\t")[0] for line in lines if line and not line.startswith("#"))]


def test_same_words_and_person_tags_as_jiebas_full_tagger(sentences: list[str]) -> None:
    full = jieba.posseg.POSTokenizer(base_tokenizer())
    ours = tagger()
    assert isinstance(ours, PersonNameTagger)
    person_tags = 0
    for text in sentences:
        want = [(p.word, p.flag) for p in full.cut(text)]
        got = [(p.word, p.flag) for p in ours.cut(text)]
        assert _names_only(got) == _names_only(want), text
        person_tags += sum(flag.startswith(PERSON_TAG) for _, flag in want)
    assert person_tags >= 10  # the corpus really exercises person names (dictionary and HMM ones)


def test_only_person_names_are_kept() -> None:
    table = tagger().word_tag_tab
    assert table and all(tag.startswith(PERSON_TAG) for tag in table.values())
    full = jieba.posseg.POSTokenizer(base_tokenizer()).word_tag_tab
    assert table == {w: t for w, t in full.items() if t.startswith(PERSON_TAG)}
    assert len(table) < len(full) / 3
