"""Text normalisation (TN) for customer-service Chinese, keeping source offsets for every output character.

Integers are read with ``cn2an``; everything else here is our own rules, written for this project:
full-width folding, money (¥/元/角/分, $, A$/C$/S$/NT$/… prefixes, currency codes), dates, year-months
(2008-08), times (also with a full-width colon, after a date, and with a.m./p.m.), IP addresses, versions,
±, phone numbers (digit by digit,
1 → 幺), order/ID/verification codes (digit by digit), years, percentages, fractions, ranges,
temperatures, units,
symbols, Latin letters/words (kept as ``en`` items for :mod:`engine.frontend.english`), emoji/unknown symbols
(dropped). Each output :class:`NChar` carries the ``(start, end)`` span of the source text it was read from.

Conventions (documented choices): ``1`` is read 幺 only in telephone numbers (and service numbers after
拨打/致电/热线/电话); code/ID digits read 一 with tone 1 (never sandhied). Exactly ``2`` before a measure word
reads 两; leading 二千/二万/二亿 become 两千/两万/两亿. ``¥``/``元`` amounts with ≤2 decimals use 元角分.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cn2an

from engine.frontend.errors import FrontendError

DIGIT_HAN = "零一二三四五六七八九"
DIGIT_PY = ("ling2", "yi1", "er4", "san1", "si4", "wu3", "liu4", "qi1", "ba1", "jiu3")
SENTENCE_END = frozenset("。！？!?；;…\n")
PAUSE = frozenset("，,、：:—～")
SAY_AS = frozenset({"telephone", "digits", "cardinal", "date", "time", "currency", "name", "address"})


@dataclass(slots=True)
class NChar:
    """One normalised item: a hanzi, a punctuation mark, or one Latin word/letter (kind ``en``)."""

    text: str
    start: int
    end: int
    kind: str  # "han" | "en" | "punct" | "space"
    pinyin: str | None = None  # forced reading (digit strings, SSML phoneme, overrides)


def is_han(ch: str) -> bool:
    o = ord(ch)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or o == 0x3007


_FOLD = {
    0x3000: " ",
    0xFFE5: "¥",
    0xFFE0: "¢",
    0xFFE1: "£",
    0x2014: "—",
    0x2015: "—",
    0x2212: "-",
    0xFF5E: "～",
}
_KEEP_FULLWIDTH = frozenset("，：；！？（）～")


def fold_width(text: str) -> str:
    """Full-width ASCII forms → half-width and every Unicode decimal digit (Arabic-Indic, Devanagari, …)
    → ASCII, one character for one character (offsets stay valid; ``re``'s ``\\d`` matches them all)."""
    out = []
    for ch in text:
        o = ord(ch)
        if ch in _KEEP_FULLWIDTH:
            out.append(ch)
        elif 0xFF01 <= o <= 0xFF5E:
            out.append(chr(o - 0xFEE0))
        elif ch.isdecimal() and not ch.isascii():
            out.append(str(unicodedata.decimal(ch)))
        else:
            out.append(_FOLD.get(o, ch))
    return "".join(out)


# ---------------------------------------------------------------- number readings
def read_int(s: str) -> str:
    s = s.replace(",", "").lstrip("+")
    neg = s.startswith("-")
    s = s.lstrip("-").lstrip("0") or "0"
    han = cn2an.an2cn(s)
    for big in ("千", "万", "亿"):
        if han.startswith("二" + big):
            han = "两" + han[1:]
    return ("负" if neg else "") + han


def read_number(s: str) -> str:
    """Integer or decimal: ``-3.50`` → 负三点五零 (decimal digits are read one by one, as written)."""
    s = s.replace(",", "")
    if "." in s:
        i, d = s.split(".", 1)
        return read_int(i or "0") + "点" + "".join(DIGIT_HAN[int(c)] for c in d)
    return read_int(s)


def digit_chars(s: str, yao: bool) -> list[tuple[str, str | None]]:
    """Digit by digit with forced pinyin (no 一 sandhi); ``yao`` reads 1 as 幺."""
    out: list[tuple[str, str | None]] = []
    for c in s:
        if c.isdigit() and c.isascii():
            if yao and c == "1":
                out.append(("幺", "yao1"))
            else:
                out.append((DIGIT_HAN[int(c)], DIGIT_PY[int(c)]))
        elif c == "+":
            out.append(("加", None))
    return out


def _plain(s: str) -> list[tuple[str, str | None]]:
    return [(c, None) for c in s]


def read_money_yuan(amount: str) -> str:
    """``1280.50`` → 一千二百八十元五角; ``0.05`` → 五分; ``2`` → 两元."""
    amount = amount.replace(",", "")
    i, _, d = amount.partition(".")
    d = (d + "00")[:2]
    yuan = int(i or "0")
    jiao, fen = int(d[0]), int(d[1])
    out = ""
    if yuan:
        out = ("两" if yuan == 2 else read_int(str(yuan))) + "元"
    if jiao:
        out += ("两" if jiao == 2 else DIGIT_HAN[jiao]) + "角"
    if fen:
        if yuan and not jiao:
            out += "零"
        out += ("两" if fen == 2 else DIGIT_HAN[fen]) + "分"
    return out or "零元"


CURRENCY = {
    "¥": "元",
    "RMB": "元",
    "CNY": "元",
    "$": "美元",
    "US$": "美元",
    "USD": "美元",
    "HK$": "港元",
    "HKD": "港元",
    "€": "欧元",
    "EUR": "欧元",
    "£": "英镑",
    "GBP": "英镑",
    "JPY": "日元",
    "₩": "韩元",
    "KRW": "韩元",
    "A$": "澳元",
    "AU$": "澳元",
    "AUD": "澳元",
    "C$": "加元",
    "CA$": "加元",
    "CAD": "加元",
    "NZ$": "新西兰元",
    "NZD": "新西兰元",
    "S$": "新加坡元",
    "SGD": "新加坡元",
    "NT$": "新台币",
    "TWD": "新台币",
    "MOP$": "澳门元",
    "MOP": "澳门元",
    "R$": "雷亚尔",
    "BRL": "雷亚尔",
    "CHF": "瑞士法郎",
    "₹": "卢比",
    "INR": "卢比",
    "₽": "卢布",
    "RUB": "卢布",
    "฿": "泰铢",
    "THB": "泰铢",
    "₫": "越南盾",
    "VND": "越南盾",
    "JP¥": "日元",
    "RM": "林吉特",
    "MYR": "林吉特",
}
_CUR_CODES = "|".join(k for k in CURRENCY if k.isalpha() and k.isupper() and len(k) == 3)
UNITS = {
    "km/h": "公里每小时",
    "km": "公里",
    "kg": "公斤",
    "mg": "毫克",
    "ml": "毫升",
    "mL": "毫升",
    "mAh": "毫安时",
    "kWh": "千瓦时",
    "kW": "千瓦",
    "cm": "厘米",
    "mm": "毫米",
    "m²": "平方米",
    "㎡": "平方米",
    "m2": "平方米",
    "m³": "立方米",
    "Mbps": "兆比特每秒",
    "kHz": "千赫兹",
    "MHz": "兆赫兹",
    "GHz": "吉赫兹",
    "Hz": "赫兹",
    "ms": "毫秒",
    "min": "分钟",
    "g": "克",
    "m": "米",
    "L": "升",
    "W": "瓦",
    "V": "伏",
    "h": "小时",
    "s": "秒",
    "M": "兆",
    "T": "T",
    "G": "G",
    "GB": "GB",
    "MB": "MB",
    "KB": "KB",
    "TB": "TB",
    "K": "K",
    "℃": "摄氏度",
    "°C": "摄氏度",
    "°F": "华氏度",
    "°": "度",
}
_UNIT_ALT = "|".join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))
LIANG_MEASURE = (
    "个件位次张台天年周岁倍成条只本份家种块元角毛分点杯瓶箱包双套部辆间层遍趟笔单项款封名人页室床晚顿盒袋支根"
)
_LIANG_WORDS = ("小时", "分钟", "公里", "公斤", "千米", "千克", "星期", "礼拜", "个月", "秒钟")
_CODE_KEYS = (
    "订单号",
    "单号",
    "编号",
    "卡号",
    "账号",
    "帐号",
    "尾号",
    "验证码",
    "工号",
    "号码",
    "密码",
    "运单",
    "快递单",
    "流水号",
    "批次",
    "序列号",
    "身份证",
    "车牌",
    "房间号",
    "会员号",
    "动态码",
    "校验码",
    "取件码",
    "提货码",
    "ID",
    "编码",
    "code",
    "No",
    "NO",
    "订单",
    "工单",
    "合同号",
    "保单号",
    "发票号",
    "学号",
    "邮编",
    "批号",
    "型号",
    "航班",
    "车次",
    "座位号",
    "客户号",
    "凭证号",
    "交易号",
)
_PHONE_KEYS = ("电话", "拨打", "致电", "热线", "手机", "来电", "座机", "客服", "拨", "联系")
_SKIP_BETWEEN = re.compile(r"[\s:：是为：#＃]*$")


def _context_has(text: str, start: int, keys: Sequence[str], window: int = 8) -> bool:
    before = text[max(0, start - window - 4) : start]
    stripped = re.sub(r"[\s:：是为#]+$", "", before)
    tail = stripped[-window:]
    return any(tail.endswith(k) for k in keys) or any(
        k in before[-window - 4 :] and _SKIP_BETWEEN.match(before[before.rfind(k) + len(k) :]) for k in keys
    )


# ---------------------------------------------------------------- handlers
Handler = Callable[[re.Match[str], str], list[tuple[str, str | None]]]


def _h_email(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for part in re.findall(r"[A-Za-z]+|\d+|[@.\-_]", m.group(0)):
        if part == "@":
            out += _plain("艾特")
        elif part == ".":
            out += _plain("点")
        elif part in "-_":
            out += _plain("杠" if part == "-" else "下划线")
        elif part.isdigit():
            out += digit_chars(part, yao=False)
        else:
            out.append((part, "EN"))
    return out


def _h_date(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    y, mo, d = m.group("y"), int(m.group("mo")), int(m.group("d"))
    return digit_chars(y, yao=False) + _plain(f"年{read_int(str(mo))}月{read_int(str(d))}日")


def _h_year(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    return digit_chars(m.group(0), yao=False)


def read_time(h: int, mi: int, sec: int | None) -> str:
    out = ("两" if h == 2 else read_int(str(h))) + "点"
    if mi or sec:
        out += ("零" + DIGIT_HAN[mi] if mi < 10 else read_int(str(mi))) + "分"
    if sec:
        out += read_int(str(sec)) + "秒"
    return out


def _h_code(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for c in m.group(0):
        if c == "-":
            out += _plain("杠")
        elif c.isdigit():
            out += digit_chars(c, yao=False)
    return out


def _h_ratio(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    return _plain(f"{read_int(m.group('a'))}比{read_int(m.group('b'))}")


def _h_time(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    h, mi = int(m.group("h")), int(m.group("mi"))
    sec = int(m.group("sec")) if m.group("sec") else None
    if h > 24 or mi > 59 or (sec is not None and sec > 59):
        return _plain(read_int(str(h)) + "比" + read_int(str(mi)))  # a score / ratio, not a time
    return _plain(read_time(h, mi, sec))


def _h_time_ampm(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    """``9:30 a.m.`` → 上午九点三十分; ``8pm`` → 晚上八点 (12 a.m. is 凌晨十二点, 12 p.m. 中午十二点)."""
    h = int(m.group("h"))
    mi = int(m.group("mi") or 0)
    sec = int(m.group("sec")) if m.group("sec") else None
    if not 1 <= h <= 12 or mi > 59 or (sec is not None and sec > 59):
        head = _h_time(m, text) if m.group("mi") else _plain(read_number(m.group("h")))
        return [*head, (m.group("ap").replace(".", ""), "EN")]
    if m.group("ap")[0] in "Aa":
        part = "凌晨" if h == 12 or h < 5 else "上午"
    else:
        part = "中午" if h == 12 else "下午" if h < 6 else "晚上"
    if text[max(0, m.start() - 8) : m.start()].rstrip()[-2:] in _DAY_PARTS:
        part = ""  # 晚上8pm: the text already says which part of the day
    return _plain(part + read_time(h, mi, sec))


_DAY_PARTS = frozenset("凌晨 早上 上午 中午 下午 傍晚 晚上 夜里 夜间 清晨 早晨".split())


def _h_version(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    """Dotted version numbers: ``1.2.3`` → 一点二点三."""
    return _plain("点".join(read_int(p) for p in m.group(0).split(".")))


def _h_ip(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    """IPv4 address digit by digit with 点 between parts; a port after the colon as a number."""
    out: list[tuple[str, str | None]] = []
    for k, part in enumerate(m.group("ip").split(".")):
        out += (_plain("点") if k else []) + digit_chars(part, yao=False)
    if m.group("port"):
        out += _plain("端口" + read_int(m.group("port")))
    return out


def _h_year_month(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    """``2008-08`` / ``2002/01`` / ``2008年08月`` → 二零零八年八月."""
    year, month = m.group("y") or m.group("y2"), m.group("mo") or m.group("mo2")
    return digit_chars(year, yao=False) + _plain("年" + read_int(month) + ("月" if m.group("mo") else ""))


def _h_phone(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    return digit_chars(m.group(0), yao=True)


def _money(amount: str, cur: str, wan: str | None, neg: bool) -> str:
    sign = "负" if neg else ""
    if wan:
        return sign + read_number(amount) + wan + cur
    if cur == "元" and len(amount.replace(",", "").partition(".")[2]) <= 2:
        return sign + read_money_yuan(amount)
    n = amount.replace(",", "")
    head = "两" if n == "2" else read_number(amount)
    return sign + head + cur


def _h_money_prefix(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    cur = CURRENCY[m.group("cur").upper() if m.group("cur")[0].isalpha() else m.group("cur")]
    return _plain(_money(m.group("amt"), cur, m.group("wan"), bool(m.group("neg"))))


def _h_money_suffix(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    cur = CURRENCY[m.group("cur").upper()]
    return _plain(_money(m.group("amt"), cur, None, bool(m.group("neg"))))


def _h_yuan(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    return _plain(_money(m.group("amt"), "元", None, bool(m.group("neg"))))


def _h_percent_range(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    return _plain(f"百分之{read_number(m.group('a'))}到百分之{read_number(m.group('b'))}")


def _h_percent(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    head = "千分之" if m.group("p") == "‰" else "百分之"
    return _plain(head + ("负" if m.group("neg") else "") + read_number(m.group("n")))


def _h_temp(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    unit = {"℃": "摄氏度", "°C": "摄氏度", "°F": "华氏度", "度": "度"}[m.group("u")]
    n = m.group("n")
    return _plain(("零下" if m.group("neg") else "") + ("两" if n == "2" else read_number(n)) + unit)


def _h_fraction(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    return _plain(f"{read_int(m.group('b'))}分之{read_int(m.group('a'))}")


def _h_range_sep(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    return _plain("到")


def _number_reading(num: str, text: str, start: int, end: int) -> list[tuple[str, str | None]]:
    bare = num.replace(",", "").lstrip("-+")
    if "," not in num and "." not in num:
        if _context_has(text, start, _PHONE_KEYS) and len(bare) >= 3:
            return digit_chars(bare, yao=True)
        if _context_has(text, start, _CODE_KEYS) and len(bare) >= 2:
            return digit_chars(bare, yao=False)
        prev = text[max(0, start - 1) : start]
        if (len(bare) > 1 and bare.startswith("0")) or len(bare) >= 10 or (prev.isascii() and prev.isalpha()):
            return digit_chars(bare, yao=False)
        after = text[end : end + 2]
        measure = (after[:1] and after[:1] in LIANG_MEASURE) or after in _LIANG_WORDS
        if bare == "2" and prev != "第" and measure:
            return _plain("两")
    return _plain(read_number(num))


def _h_number_unit(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    num = m.group("n")
    out = _number_reading(num, text, m.start("n"), m.end("n"))
    unit = m.group("u")
    if unit:
        word = UNITS[unit]
        if num == "2" and word in (
            "公里",
            "公斤",
            "克",
            "升",
            "米",
            "小时",
            "秒",
            "分钟",
            "千瓦",
            "瓦",
            "伏",
        ):
            out = _plain("两")
        out += [(word, "EN")] if word.isascii() else _plain(word)
    return out


def _h_letters(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    return [(m.group(0), "EN")]


_SYMBOLS = {
    "&": "和",
    "=": "等于",
    "@": "艾特",
    "#": "井号",
    "*": "星号",
    "×": "乘",
    "÷": "除以",
    "+": "加",
    "±": "正负",
}


def _h_symbol(m: re.Match[str], text: str) -> list[tuple[str, str | None]]:
    ch = m.group(0)
    if ch == "/":
        prev = text[m.start() - 1 : m.start()]
        nxt = text[m.end() : m.end() + 1]
        return _plain("每") if prev and nxt and (is_han(nxt) or nxt.isalpha()) and not prev.isdigit() else []
    if ch == "#" and text[m.end() : m.end() + 1] == "号":
        return _plain("井")
    return _plain(_SYMBOLS[ch])


_NUM = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"
_CUR_PREFIX = (
    r"(?<![A-Za-z])(?:US|HK|AU|CA|NZ|NT|MOP|A|C|S|R)\$|JP¥|(?<![A-Za-z])(?:"
    + _CUR_CODES
    + r"|RM)(?=\s?\d)|[¥$€£₩₹₽฿₫]"
)
_RULES: list[tuple[str, Handler]] = [
    (r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}", _h_email),
    (
        r"(?<!\d)(?P<y>\d{4})(?P<sep>[-/.])(?P<mo>0?[1-9]|1[0-2])(?P=sep)(?P<d>0?[1-9]|[12]\d|3[01])(?!\d)",
        _h_date,
    ),
    (
        r"(?<![\d.])(?P<ip>(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d))"
        r"(?:[:：](?P<port>\d{1,5}))?(?![\d.]*\d)",
        _h_ip,
    ),
    (r"(?<![\d.])\d{1,4}(?:\.\d{1,4}){2,}(?![\d.]*\d)", _h_version),
    (
        r"(?<![\d.])(?P<y>(?:1[89]|20)\d{2})(?P<sep>[-/.])(?P<mo>0[1-9]|1[0-2])(?![\d.])(?!(?P=sep)\d)"
        r"|(?<![\d.])(?P<y2>(?:1[89]|20)\d{2})年(?P<mo2>0[1-9])(?=月)",
        _h_year_month,
    ),
    (
        r"(?:(?<=[码号])|(?<=[码号][:：])|(?<=[码号] )|(?<=[码号]: ))(?<!\d月\d号)(?<!\d月\d\d号)"
        r"\d[\d\- ]*\d(?![\d.])(?![:：]\d)",  # 号12:00 is a time
        _h_code,
    ),
    (r"(?<![\d:：])(?P<a>\d{1,2})[:：](?P<b>\d)(?![\d:：])", _h_ratio),
    (
        r"(?<![\d:：])(?P<h>\d{1,2})(?:[:：](?P<mi>\d{2})(?:[:：](?P<sec>\d{2}))?)?\s?"
        r"(?P<ap>[AaPp]\.[Mm]\.|[AaPp][Mm])(?![A-Za-z])",
        _h_time_ampm,
    ),
    (r"(?<![\d:：])(?P<h>\d{1,2})[:：](?P<mi>\d{2})(?:[:：](?P<sec>\d{2}))?(?![\d:：])", _h_time),
    (r"(?<![\d.])(?:\+?86[-\s]?)?1[3-9]\d(?:[-\s]?\d{4}){2}(?![\d.])", _h_phone),
    (r"(?<![\d.])[48]00[-\s]?\d{3}[-\s]?\d{4}(?![\d.])", _h_phone),
    (r"(?<![\d.])(?:\(0\d{2,3}\)|0\d{2,3}-)\s?\d{7,8}(?![\d.])", _h_phone),
    (
        rf"(?P<cur>{_CUR_PREFIX})\s?(?P<neg>-)?(?P<amt>{_NUM})(?P<wan>[万亿])?(?=[^\d]|$)",
        _h_money_prefix,
    ),
    (
        rf"(?<![A-Za-z0-9_.])(?P<neg>-)?(?P<amt>{_NUM})\s?(?P<cur>{_CUR_CODES})(?![A-Za-z])",
        _h_money_suffix,
    ),
    (rf"(?<![A-Za-z0-9_.])(?P<neg>-)?(?P<amt>{_NUM})元", _h_yuan),
    (rf"(?P<a>{_NUM})%?\s?[-~～—–]\s?(?P<b>{_NUM})%", _h_percent_range),
    (rf"(?<![A-Za-z0-9_.])(?P<neg>-)?(?P<n>{_NUM})\s?(?P<p>[%‰])", _h_percent),
    (rf"(?<![A-Za-z0-9_.])(?P<neg>-)?(?P<n>{_NUM})\s?(?P<u>℃|°C|°F)", _h_temp),
    (r"(?<![\d/.])(?P<a>\d{1,4})/(?P<b>\d{1,4})(?![\d/.])", _h_fraction),
    (r"(?<!\d)\d{4}(?=年)|(?<!\d)\d{2}(?=年代)|(?<!\d)\d{4}(?=\s?[-~～—–]\s?\d{4}年)", _h_year),
    (r"(?<=[\d%℃日号])\s?[-~～—–]\s?(?=[\d¥$])", _h_range_sep),
    (rf"(?P<n>(?<![A-Za-z0-9_.])-(?:{_NUM})|{_NUM})(?:\s?(?P<u>{_UNIT_ALT})(?![A-Za-z]))?", _h_number_unit),
    (r"[A-Za-z]+(?:'[A-Za-z]+)?", _h_letters),
    (r"[&=@#*×÷+±/]", _h_symbol),
]
_COMPILED: list[tuple[re.Pattern[str], Handler]] = [(re.compile(p), h) for p, h in _RULES]
_NUMBER_RULE = len(_RULES) - 3


def _matches(text: str) -> list[tuple[int, re.Match[str]]]:
    """Leftmost non-overlapping matches; at equal start the earlier rule wins."""
    found: list[tuple[int, re.Match[str]]] = []
    nxt: list[re.Match[str] | None] = [rx.search(text) for rx, _ in _COMPILED]
    pos = 0
    while True:
        best: tuple[int, int] | None = None
        for i, m in enumerate(nxt):
            if m is not None and m.start() < pos:
                m = nxt[i] = _COMPILED[i][0].search(text, pos)
            if m is not None and m.end() > m.start() and (best is None or m.start() < best[0]):
                best = (m.start(), i)
        if best is None:
            return found
        m = nxt[best[1]]
        assert m is not None
        found.append((best[1], m))
        pos = m.end()


# ---------------------------------------------------------------- say-as
def _say_as_items(kind: str, text: str) -> list[tuple[str, str | None]] | None:
    """Readings forced by SSML ``say-as``; ``None`` → fall back to the ordinary rules."""
    if kind == "telephone":
        return digit_chars(text, yao=True)
    if kind == "digits":
        return digit_chars(text, yao=False)
    if kind == "cardinal":
        m = re.fullmatch(rf"\s*(-?(?:{_NUM}))\s*", text)
        return _plain(read_number(m.group(1))) if m else None
    if kind == "currency":
        m = re.fullmatch(
            rf"\s*(?P<cur>{_CUR_PREFIX})?\s?(?P<amt>{_NUM})\s*(?P<suf>[A-Za-z]{{3}}|元)?\s*", text
        )
        if not m:
            return None
        cur = m.group("cur") or m.group("suf") or "¥"
        name = "元" if cur == "元" else CURRENCY.get(cur.upper() if cur[0].isalpha() else cur, "元")
        return _plain(_money(m.group("amt"), name, None, False))
    if kind == "time":
        m = re.fullmatch(r"\s*(\d{1,2})[:：](\d{2})(?:[:：](\d{2}))?\s*", text)
        return (
            _plain(read_time(int(m.group(1)), int(m.group(2)), int(m.group(3) or 0) or None)) if m else None
        )
    if kind == "date":
        m = re.fullmatch(r"\s*(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?\s*", text)
        if m:
            return digit_chars(m.group(1), yao=False) + _plain(
                f"年{read_int(m.group(2))}月{read_int(m.group(3))}日"
            )
        m = re.fullmatch(r"\s*(\d{1,2})[-/.月](\d{1,2})日?\s*", text)
        return _plain(f"{read_int(m.group(1))}月{read_int(m.group(2))}日") if m else None
    return None


# ---------------------------------------------------------------- driver
def _emit(
    out: list[NChar],
    items: list[tuple[str, str | None]],
    start: int,
    end: int,
    spans: Sequence[tuple[int, int]],
) -> None:
    if start >= end:
        return
    s, e = spans[start][0], spans[end - 1][1]
    for text, py in items:
        if py == "EN":
            out.append(NChar(text, s, e, "en"))
        else:
            for ch in text:
                out.append(NChar(ch, s, e, "han", py))


def _plain_char(out: list[NChar], ch: str, span: tuple[int, int], prev: str, nxt: str) -> None:
    if is_han(ch):
        out.append(NChar(ch, span[0], span[1], "han"))
    elif ch in SENTENCE_END or ch in PAUSE:
        out.append(NChar("\n" if ch in "\r\n" else ch, span[0], span[1], "punct"))
    elif ch == "." and (not nxt or nxt.isspace() or is_han(nxt)):
        out.append(NChar(".", span[0], span[1], "punct"))
    elif ch.isspace():
        out.append(NChar(" ", span[0], span[1], "space"))
    # anything else (emoji, quotes, brackets, unknown symbols) is dropped


def normalize(
    text: str,
    spans: Sequence[tuple[int, int]] | None = None,
    say_as: str | None = None,
) -> list[NChar]:
    """Normalise ``text``; ``spans[i]`` is the source span of ``text[i]`` (default: its own index)."""
    if spans is None:
        spans = [(i, i + 1) for i in range(len(text))]
    if len(spans) != len(text):
        raise FrontendError("internal: spans and text differ in length")
    if say_as is not None and say_as not in SAY_AS:
        raise FrontendError(f"unsupported say-as interpret-as {say_as!r}; use one of {sorted(SAY_AS)}")
    folded = fold_width(text)
    out: list[NChar] = []
    if say_as and folded.strip():
        items = _say_as_items(say_as, folded)
        if items is not None:
            _emit(out, items, 0, len(folded), spans)
            return out
    pos = 0
    for rule, m in _matches(folded):
        for i in range(pos, m.start()):
            _plain_char(out, folded[i], spans[i], folded[i - 1 : i], folded[i + 1 : i + 2])
        if say_as == "address" and rule == _NUMBER_RULE and len(m.group("n")) >= 3 and m.group("n").isdigit():
            items = digit_chars(m.group(0), yao=False)
        else:
            items = _COMPILED[rule][1](m, folded)
        _emit(out, items, m.start(), m.end(), spans)
        pos = m.end()
    for i in range(pos, len(folded)):
        _plain_char(out, folded[i], spans[i], folded[i - 1 : i], folded[i + 1 : i + 2])
    return out


def normalized_text(nchars: Sequence[NChar]) -> str:
    """Readable form of a TN result (used by the TN test set): English items are joined with spaces."""
    parts: list[str] = []
    for c in nchars:
        if c.kind == "en":
            if parts and parts[-1] and parts[-1][-1].isascii() and parts[-1][-1].isalpha():
                parts.append(" ")
            parts.append(c.text)
        elif c.kind == "space":
            if parts and parts[-1] and parts[-1][-1].isascii():
                parts.append(" ")
        else:
            parts.append(c.text)
    return "".join(parts).strip()
