"""Labelled sets (pinyin, TN) and targeted G2P / TN / sandhi behaviour."""

from __future__ import annotations

import pytest

from engine.frontend import Frontend, FrontendError
from engine.frontend.evaluation import (
    DATA_DIR,
    load_tsv,
    pinyin_accuracy,
    plain_pypinyin_accuracy,
    tn_accuracy,
)
from engine.frontend.g2p import G2P, apply_sandhi
from engine.frontend.normalize import normalize, normalized_text
from engine.symbols import LinguisticVocab

VOCAB = LinguisticVocab.build()


@pytest.fixture(scope="module")
def g2p() -> G2P:
    return G2P()


def surface(g2p: G2P, text: str, sandhi: bool = True) -> list[str]:
    words = g2p.words(text, [None] * len(text))
    apply_sandhi(words, sandhi)
    return [s.pinyin for w in words for s in w.syllables]


def test_pinyin_set_size_and_accuracy(g2p: G2P) -> None:
    rows = load_tsv(DATA_DIR / "pinyin_cs.tsv")
    assert len(rows) >= 300
    assert {r[0] for r in rows} >= {
        "greeting",
        "order",
        "refund",
        "logistics",
        "banking",
        "telecom",
        "appointment",
    }
    score = pinyin_accuracy(g2p)
    assert score.accuracy >= 0.975, score.errors[:20]


def test_heldout_pinyin_set_and_beats_plain_pypinyin(g2p: G2P) -> None:
    held = pinyin_accuracy(g2p, DATA_DIR / "pinyin_cs_heldout.tsv")
    assert held.total >= 600 and held.accuracy >= 0.975, held.errors
    assert pinyin_accuracy(g2p).accuracy > plain_pypinyin_accuracy().accuracy


def test_tn_set_size_and_accuracy() -> None:
    assert len(load_tsv(DATA_DIR / "tn_cs.tsv")) >= 150
    score = tn_accuracy()
    assert score.accuracy >= 0.99, score.errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("我要还款", ["wo3", "yao4", "huan2", "kuan3"]),
        ("还有问题", ["hai2", "you3", "wen4", "ti2"]),
        ("去银行", ["qu4", "yin2", "hang2"]),
        ("重新发货", ["chong2", "xin1", "fa1", "huo4"]),
        ("很重要", ["hen3", "zhong4", "yao4"]),
        ("时间很长", ["shi2", "jian1", "hen3", "chang2"]),
        ("调整价格", ["tiao2", "zheng3", "jia4", "ge2"]),
        ("差价", ["cha1", "jia4"]),
        ("出差", ["chu1", "chai1"]),
        ("音乐", ["yin1", "yue4"]),
        ("作为会员", ["zuo4", "wei2", "hui4", "yuan2"]),
        ("为您服务", ["wei4", "nin2", "fu2", "wu4"]),
        ("您得先登录", ["nin2", "dei3", "xian1", "deng1", "lu4"]),
        ("说得很清楚", ["shuo1", "de5", "hen3", "qing1", "chu5"]),
        ("耐心地等待", ["nai4", "xin1", "de5", "deng3", "dai4"]),
        ("着急", ["zhao2", "ji2"]),
        ("头发", ["tou2", "fa5"]),
    ],
)
def test_polyphones_lexical(g2p: G2P, text: str, expected: list[str]) -> None:
    words = g2p.words(text, [None] * len(text))
    assert [s.lexical for w in words for s in w.syllables] == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("一个", ["yi2", "ge4"]),
        ("一天", ["yi4", "tian1"]),
        ("第一", ["di4", "yi1"]),
        ("十一", ["shi2", "yi1"]),
        ("看一看", ["kan4", "yi5", "kan4"]),
        ("不是", ["bu2", "shi4"]),
        ("不好", ["bu4", "hao3"]),
        ("是不是", ["shi4", "bu5", "shi4"]),
        ("你好", ["ni2", "hao3"]),
        ("展览馆", ["zhan2", "lan2", "guan3"]),
    ],
)
def test_tone_sandhi(g2p: G2P, text: str, expected: list[str]) -> None:
    assert surface(g2p, text) == expected


def test_tone_sandhi_can_be_disabled(g2p: G2P) -> None:
    assert surface(g2p, "一个你好", sandhi=False) == ["yi1", "ge4", "ni3", "hao3"]
    unit = Frontend(tone_sandhi=False).process("不是", VOCAB)[0]
    assert unit.tokens[0].startswith("{b_c$tone4$")


def test_erhua_merges_er(g2p: G2P) -> None:
    words = g2p.words("你在哪儿", [None] * 4)
    syl = words[-1].syllables
    assert [s.lexical for s in syl] == ["nar3"] and syl[0].hanzi == "哪儿"
    unit = Frontend().process("一会儿", VOCAB)[0]
    assert "{h_c$tone4$s_begin$word_middle$emotion_neutral$F7}" in unit.tokens
    assert "{ueir_c$tone4$s_end$word_end$emotion_neutral$F7}" in unit.tokens
    assert unit.syllables[-1].span == (1, 3)
    assert Frontend().process("女儿", VOCAB)[0].syllables[-1].pinyin == "er2"


def test_pronunciation_overrides_and_user_dict() -> None:
    fe = Frontend(pronunciation_overrides={"单田芳": "shan4 tian2 fang1"}, user_dict=["云闪付 100000"])
    unit = fe.process("单田芳", VOCAB)[0]
    assert unit.syllables[0].pinyin == "shan4"
    assert unit.tokens[0].startswith("{sh_c$tone4$")
    toks = fe.process("云闪付", VOCAB)[0].tokens
    assert sum(t.startswith("{#") for t in toks) == 1  # one word
    with pytest.raises(FrontendError):
        Frontend(pronunciation_overrides={"单": "shan9x"})
    with pytest.raises(FrontendError):
        Frontend(pronunciation_overrides={"单田": "shan4"})
    with pytest.raises(FrontendError):
        Frontend(user_dict="/nonexistent/dict.txt")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("¥1,280.50", "一千二百八十元五角"),
        ("订单号 20241121", "订单号二零二四一一二一"),
        ("400-820-8820", "四零零八二零八八二零"),
        ("致电13012345678", "致电幺三零幺二三四五六七八"),
    ],
)
def test_issue_examples(raw: str, expected: str) -> None:
    assert normalized_text(normalize(raw)) == expected


def test_digit_readings_are_not_sandhied() -> None:
    unit = Frontend().process("订单号 1111", VOCAB)[0]
    assert [s.pinyin for s in unit.syllables][-4:] == ["yi1"] * 4


def test_tn_spans_point_into_source() -> None:
    text = "退款¥1,280.50已到账"
    chars = normalize(text)
    money = [c for c in chars if c.start == 2]
    assert "".join(c.text for c in money) == "一千二百八十元五角"
    assert {(c.start, c.end) for c in money} == {(2, 11)}
    assert text[2:11] == "¥1,280.50"
