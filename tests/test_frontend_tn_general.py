"""Text normalisation beyond customer-service patterns (issue 15): full-width colon times, date + time,
year-month, ±, a.m./p.m., other currency prefixes, IP addresses, and the general TN set."""

from __future__ import annotations

import pytest

from engine.frontend import Frontend
from engine.frontend.evaluation import DATA_DIR, load_tsv, tn_accuracy
from engine.frontend.normalize import normalize, normalized_text
from engine.symbols import LinguisticVocab

GENERAL = DATA_DIR / "tn_general.tsv"
CLASSES = ("time_fullwidth", "date_time", "year_month", "plus_minus", "am_pm", "currency", "ip")


def tn(text: str) -> str:
    return normalized_text(normalize(text))


def test_general_set_passes_and_covers_every_class() -> None:
    rows = load_tsv(GENERAL)
    cats = [r[0] for r in rows]
    assert len(rows) >= 45
    for c in CLASSES:
        assert cats.count(c) >= 3, c
    score = tn_accuracy(GENERAL)
    assert score.accuracy == 1.0, score.errors


def test_customer_service_tn_set_unchanged() -> None:
    score = tn_accuracy()
    assert score.total >= 170 and score.accuracy == 1.0, score.errors


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("22：58", "二十二点五十八分"),
        ("7：05：09", "七点零五分九秒"),
        ("3：2", "三比二"),  # one digit after the colon: a score, as with the half-width colon
        ("30：15", "三十比十五"),  # not a time of day
    ],
)
def test_fullwidth_colon(raw: str, expected: str) -> None:
    assert tn(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("8月16号12:00", "八月十六号十二点"),
        ("5号12:00", "五号十二点"),  # a time after 号 is not read as a code
        ("订单号1200", "订单号一二零零"),  # codes after 号 still digit by digit
        ("12月31日23:59:59", "十二月三十一日二十三点五十九分五十九秒"),
    ],
)
def test_time_after_date(raw: str, expected: str) -> None:
    assert tn(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2008-08", "二零零八年八月"),
        ("2002/01", "二零零二年一月"),
        ("1999.12", "一九九九年十二月"),
        ("2008-13", "两千零八到十三"),  # no month 13: still a range
        ("3/12", "十二分之三"),  # fractions stay fractions
        ("2008-08-08", "二零零八年八月八日"),
    ],
)
def test_year_month(raw: str, expected: str) -> None:
    assert tn(raw) == expected


def test_plus_minus() -> None:
    assert tn("±5") == "正负五"
    assert tn("±0.1%") == "正负百分之零点一"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("7 a.m.", "上午七点"),
        ("7:45 A.M.", "上午七点四十五分"),
        ("2 am", "凌晨两点"),
        ("3 p.m.", "下午三点"),
        ("9PM", "晚上九点"),
        ("12pm", "中午十二点"),
        ("下午3pm", "下午三点"),
        ("13pm", "十三pm"),  # no such hour: left as number + letters
        ("13:30pm", "十三点三十分pm"),
    ],
)
def test_am_pm(raw: str, expected: str) -> None:
    assert tn(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("A$13.5", "十三点五澳元"),
        ("AU$2", "两澳元"),
        ("C$1,000", "一千加元"),
        ("NZ$30", "三十新西兰元"),
        ("S$5", "五新加坡元"),
        ("NT$300", "三百新台币"),
        ("R$10", "十雷亚尔"),
        ("₽100", "一百卢布"),
        ("JP¥500", "五百日元"),
        ("100 SGD", "一百新加坡元"),
        ("$5", "五美元"),  # unchanged
        ("USA$5", "USA五美元"),  # letters before a bare $ are not a currency prefix
    ],
)
def test_currency_prefixes(raw: str, expected: str) -> None:
    assert tn(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("192.168.0.1", "一九二点一六八点零点一"),
        ("127.0.0.1:8000", "一二七点零点零点一端口八千"),
        ("255.255.255.0", "二五五点二五五点二五五点零"),
        ("3.14", "三点一四"),  # a decimal is not an address
    ],
)
def test_ip_addresses(raw: str, expected: str) -> None:
    assert tn(raw) == expected


def test_general_forms_reach_the_synthesis_units() -> None:
    """Black box: the readings the voice gets for a sentence with several of the new classes."""
    units = Frontend().process("8月16号12：00，A$13.5。", LinguisticVocab.build())
    text = "".join(s.text for u in units for s in u.syllables)
    assert text == "八月十六号十二点十三点五澳元"
