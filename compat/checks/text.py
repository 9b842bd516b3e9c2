"""Chinese text-processing dictionaries: jieba's prefix dictionary, pypinyin's phrase data, cn2an."""

from __future__ import annotations

import logging

from compat.doctor import CheckResult, DoctorOptions, fail, ok

TEXT_REMEDY = (
    "pip install --force-reinstall jieba pypinyin cn2an (a dictionary file is missing or unreadable)"
)


def check_text_dicts(options: DoctorOptions) -> CheckResult:
    import cn2an
    import jieba
    import pypinyin

    jieba.setLogLevel(logging.WARNING)
    words = jieba.lcut("今天天气不错我们去北京大学")
    if "北京大学" not in words or len(words) < 4:
        return fail("text-dicts", f"jieba segmentation looks dictionary-less: {words}", TEXT_REMEDY)
    # 重庆/银行 need pypinyin's phrase dictionary (per-character data alone gives zhong4/xing2).
    got = pypinyin.lazy_pinyin("重庆银行", style=pypinyin.Style.TONE3)
    if got != ["chong2", "qing4", "yin2", "hang2"]:
        return fail("text-dicts", f"pypinyin phrase dictionary not loaded: 重庆银行 -> {got}", TEXT_REMEDY)
    number = cn2an.an2cn("2024")
    if number != "二千零二十四":
        return fail("text-dicts", f"cn2an.an2cn('2024') -> {number!r}", TEXT_REMEDY)
    return ok(
        "text-dicts",
        f"jieba {jieba.__version__} ({len(jieba.dt.FREQ)} dictionary entries), "
        f"pypinyin {pypinyin.__version__} phrase data, cn2an ok",
    )
