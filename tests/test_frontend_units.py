"""Synthesis units: splitting, breaks, spans, English, SSML, errors, and the hypothesis property test."""

from __future__ import annotations

import contextlib
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.frontend import Frontend, FrontendError
from engine.symbols import LinguisticVocab, parse_token

VOCAB = LinguisticVocab.build()
FE = Frontend()


def test_sentences_breaks_and_pauses() -> None:
    units = FE.process("您好，欢迎致电。请问有什么可以帮您？", VOCAB)
    assert len(units) == 2
    breaks = [t.split("$")[0][1:] for t in units[0].tokens if t.startswith("{#")]
    assert "#3" in breaks and breaks[-1] == "#4"
    assert all(u.pause_after_s > 0 for u in units)
    for u in units:
        assert u.ids.shape == (len(u.tokens), 6) and u.ids.dtype == np.int64
        for tok, span in zip(u.tokens, u.spans, strict=True):
            assert (span is None) == tok.startswith("{#")
            if tok.startswith("{#"):
                assert parse_token(tok)[1:5] == ("tone_none", "s_none", "word_none", "emotion_none")


def test_long_text_is_split_below_token_limit_with_offsets() -> None:
    clause = "您的订单已经发货预计明天送达"
    text = "，".join([clause] * 40) + "。"
    units = FE.process(text, VOCAB)
    assert len(units) > 1
    assert all(len(u.tokens) <= 200 for u in units)
    assert all(u.tokens[-1].startswith("{#4$") for u in units)
    starts = [s[0] for u in units for s in u.spans if s is not None]
    assert starts == sorted(starts) and starts[-1] >= len(text) - 2
    for u in units:  # every span maps back to the characters it was read from
        for syl in u.syllables:
            assert text[syl.span[0] : syl.span[1]] == syl.text


def test_unbroken_long_word_sequence_still_split() -> None:
    units = Frontend(max_unit_tokens=64).process("A" * 60 + " " + "北京" * 50, VOCAB)
    assert all(len(u.tokens) <= 64 for u in units)


def test_english_words_use_arpabet_with_tone0() -> None:
    unit = FE.process("hello，VIP", VOCAB)[0]
    eng = [parse_token(t) for t in unit.tokens if not t.startswith("{#")]
    assert [e[0] for e in eng][:4] == ["hh", "ah", "l", "ow"]
    assert {e[1] for e in eng} == {"tone0"}
    assert [e[0] for e in eng][4:] == ["v", "iy", "ay", "p", "iy"]


def test_speaker_and_emotion_fields() -> None:
    unit = FE.process("好的", VOCAB, emotion="happy", speaker="M7")[0]
    assert all(t.endswith("$M7}") for t in unit.tokens)
    assert "emotion_happy" in unit.tokens[0] and "emotion_none" in unit.tokens[-1]
    assert FE.process("好的", VOCAB)[0].tokens[0].endswith("$F7}")
    with pytest.raises(FrontendError, match="speaker"):
        FE.process("好的", VOCAB, speaker="nobody")
    with pytest.raises(FrontendError, match="emotion"):
        FE.process("好的", VOCAB, emotion="joyful")


def test_unknown_phone_for_voice_is_an_error() -> None:
    small = LinguisticVocab.build(phones=[p for p in LinguisticVocab.build().sy if p.startswith("@")][:10])
    with pytest.raises(FrontendError, match="vocabulary"):
        FE.process("北京", small)


def test_plain_text_with_angle_bracket_stays_text() -> None:
    units = FE.process("价格<100元的商品", VOCAB)
    assert "一百元" in units[0].text


def test_ssml_features() -> None:
    ssml = (
        '<speak><s>您好</s><break time="500ms"/>'
        '<emotion category="happy" intensity="0.8"><prosody rate="1.2" pitch="+2st" volume="loud">'
        '请拨打<say-as interpret-as="telephone">10086</say-as></prosody></emotion>'
        '<phoneme alphabet="py" ph="chong2">重</phoneme>来'
        '<say-as interpret-as="digits">2024</say-as>'
        '<say-as interpret-as="name">单</say-as></speak>'
    )
    units = FE.process(ssml, VOCAB)
    assert units[0].text == "您好" and units[0].pause_after_s == pytest.approx(0.5)
    happy = units[1]
    assert happy.emotion == "happy" and happy.emotion_intensity == pytest.approx(0.8)
    assert happy.prosody.rate == pytest.approx(1.2) and happy.prosody.pitch == pytest.approx(2.0)
    assert "幺零零八六" in happy.text
    assert all("emotion_happy" in t for t in happy.tokens if not t.startswith("{#"))
    last = units[-1]
    pys = [s.pinyin for s in last.syllables]
    assert pys[0] == "chong2" and pys[2:6] == ["er4", "ling2", "er4", "si4"] and pys[-1] == "shan4"
    src = ssml.index("10086")
    assert any(s.span == (src, src + 5) for s in happy.syllables)


@pytest.mark.parametrize(
    ("ssml", "why"),
    [
        ("<speak><foo/></speak>", r"unsupported element <foo>.*line 1, column 8"),
        ("<speak>\n<break time='99s'/></speak>", r"exceeds.*line 2"),
        ("<speak><emotion>好</emotion></speak>", "category"),
        ("<speak><say-as interpret-as='spell'>x</say-as></speak>", "interpret-as"),
        ("<speak><phoneme ph='a1 a1'>重</phoneme></speak>", "2 syllables for 1"),
        ("<speak>好", "no element found|unclosed"),
        ('<!DOCTYPE speak [<!ENTITY x "y">]><speak>&x;</speak>', "forbidden"),
        ("<speak><prosody rate='fastest'>好</prosody></speak>", "rate"),
        ("<speak>" + "<s>" * 40 + "好" + "</s>" * 40 + "</speak>", "deeper"),
    ],
)
def test_ssml_errors_say_where_and_why(ssml: str, why: str) -> None:
    with pytest.raises(FrontendError, match=why) as info:
        FE.process(ssml, VOCAB)
    assert info.value.line is not None or "forbidden" in why


def test_billion_laughs_is_rejected_quickly() -> None:
    lol = (
        '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        + "".join(f'<!ENTITY lol{i} "{"&lol;" * 10}">' for i in range(1, 8))
        + "]><speak>&lol7;</speak>"
    )
    with pytest.raises(FrontendError):
        FE.process(lol, VOCAB)


def test_too_long_input_rejected() -> None:
    with pytest.raises(FrontendError, match="limit"):
        Frontend(max_chars=100).process("好" * 101, VOCAB)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=80) | st.from_regex(r"<speak>[^&]{0,30}</speak>", fullmatch=True))
def test_property_any_unicode_only_frontend_error_and_encodable(text: str) -> None:
    try:
        units = FE.process(text, VOCAB)
    except FrontendError:
        return
    for u in units:
        assert u.ids.shape == (len(u.tokens), 6)
        assert np.array_equal(u.ids, VOCAB.encode_tokens(u.tokens))
        assert len(u.tokens) <= 200
        for span in u.spans:
            assert span is None or 0 <= span[0] < span[1] <= len(text)
        assert re.fullmatch(r"(\{[^{}]+\} ?)+", u.token_string)


@pytest.mark.parametrize("text", ["你好\ud800世界", "<speak>你好\udfff</speak>", "\udc80"])
def test_lone_surrogates_raise_frontend_error(text: str) -> None:
    """Unpaired surrogates (not produced by st.text()) must not leak a UnicodeEncodeError."""
    with pytest.raises(FrontendError, match="surrogate"):
        FE.process(text, VOCAB)


@given(st.text(st.characters(categories=["Cs", "Lo", "Nd", "Po", "Zs"]), max_size=40))
def test_property_with_surrogates_only_frontend_error(text: str) -> None:
    with contextlib.suppress(FrontendError):
        FE.process(text, VOCAB)


def test_non_ascii_decimal_digits_read_as_numbers() -> None:
    """Arabic-Indic / Devanagari digits are folded like full-width ones instead of crashing cn2an."""
    ascii_units = FE.process("订单12", VOCAB)
    assert [u.token_string for u in FE.process("订单١٢", VOCAB)] == [u.token_string for u in ascii_units]
    assert [u.token_string for u in FE.process("订单१२", VOCAB)] == [u.token_string for u in ascii_units]
