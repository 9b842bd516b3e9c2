"""Project phrase dictionary and context-rule word lists for G2P (written for this project).

``PHRASES`` (``phrases.tsv``) take precedence over pypinyin's phrase dictionary: customer-service words
where pypinyin's default is wrong or where the standard reading has a neutral tone. Words are also added
to jieba so they segment as units. Readings follow 《现代汉语词典》 (neutral tone = 5).
"""

from __future__ import annotations

from pathlib import Path

PHRASES: dict[str, list[str]] = {}
for _line in (Path(__file__).with_name("phrases.tsv")).read_text("utf-8").splitlines():
    if _line.strip() and not _line.startswith("#"):
        _word, _py = _line.split("\t")
        PHRASES[_word] = _py.split()

# jieba words that are split so context rules see their parts.
SPLIT_WORDS: tuple[str, ...] = ("今天天气", "明天天气", "您好我")

# Words whose final 儿 is a full syllable (er2), not an erhua suffix.
NOT_ERHUA: frozenset[str] = frozenset(
    [
        "儿子",
        "儿童",
        "女儿",
        "婴儿",
        "幼儿",
        "孤儿",
        "健儿",
        "男儿",
        "患儿",
        "胎儿",
        "少儿",
        "儿科",
        "儿女",
        "宠儿",
        "托儿",
        "托儿所",
        "混血儿",
        "新生儿",
        "孩儿",
        "育儿",
        "儿媳",
    ]
)

# Context-rule word lists.
DEI3_BEFORE = frozenset(
    [
        "我",
        "你",
        "他",
        "她",
        "您",
        "我们",
        "你们",
        "他们",
        "咱们",
        "还",
        "就",
        "都",
        "也",
        "又",
        "总",
        "必须",
        "可能",
        "恐怕",
        "估计",
        "大概",
        "那",
        "这样",
        "那样",
        "非",
    ]
)
DE5_AFTER_NEXT = frozenset(
    [
        "很",
        "非常",
        "太",
        "不",
        "特别",
        "更",
        "挺",
        "真",
        "好",
        "多",
        "快",
        "慢",
        "清楚",
        "明白",
        "及时",
        "满意",
        "怎么样",
        "如何",
        "比较",
        "相当",
        "有点",
        "完",
    ]
)
WEI2_AFTER = frozenset(
    [
        "改",
        "设",
        "置",
        "成",
        "变",
        "转",
        "定",
        "选",
        "分",
        "认",
        "作",
        "视",
        "称",
        "列",
        "评",
        "升",
        "降",
        "调",
        "划",
        "换",
        "折合",
        "设置",
        "修改",
        "确认",
        "调整",
        "更改",
        "变更",
        "转换",
        "升级",
        "降级",
        "评为",
        "选为",
    ]
)
CHONG2_NEXT = frozenset(
    [
        "发",
        "试",
        "启",
        "置",
        "装",
        "来",
        "做",
        "写",
        "办",
        "拨",
        "设",
        "填",
        "签",
        "开",
        "订",
        "购",
        "寄",
        "申",
        "输",
        "算",
        "选",
        "排",
        "下",
        "拍",
        "录",
        "打",
        "登",
        "登录",
        "连",
        "提",
        "交",
        "传",
        "刷",
        "改",
        "查",
        "绑",
        "激活",
        "注册",
        "充",
        "领",
        "约",
        "考",
        "读",
        "学",
        "播",
        "放",
        "派",
        "送",
        "配",
        "推",
        "新",
        "复",
        "输入",
        "提交",
        "下单",
        "申请",
        "设置",
        "发送",
        "绑定",
        "登陆",
        "预约",
        "安装",
        "上传",
        "下载",
        "连接",
    ]
)
TIAO2_NEXT = frozenset(
    [
        "高",
        "低",
        "大",
        "小",
        "成",
        "为",
        "整",
        "回",
        "亮",
        "暗",
        "好",
        "快",
        "慢",
        "松",
        "紧",
        "到",
        "一下",
        "下",
    ]
)
SHU3_NEXT = frozenset(["一", "一数", "数", "钱", "清", "不", "到", "着", "过", "下", "一下"])
ZHI1_PREV = frozenset(
    [
        "一",
        "两",
        "几",
        "这",
        "那",
        "每",
        "某",
        "半",
        "哪",
        "三",
        "四",
        "五",
        "六",
        "七",
        "八",
        "九",
        "十",
        "个",
    ]
)
LIAO3_PREV = frozenset(["不", "得"])
DI4_PREV = frozenset(
    [
        "块",
        "片",
        "在",
        "到",
        "满",
        "落",
        "下",
        "上",
        "这",
        "那",
        "土",
        "种",
        "扫",
        "拖",
        "耕",
        "草",
        "墓",
        "山",
        "一",
        "整",
    ]
)
YI1_NEXT = frozenset(["月", "号", "楼", "等", "栋", "期", "单元", "年级", "层", "班", "线"])

# Surname readings that differ from the character's common reading, applied at the start of a person's name
# (see :mod:`engine.frontend.names`). Compound surnames are read as a unit.
SURNAMES: dict[str, list[str]] = {
    "单": ["shan4"],
    "翟": ["zhai2"],
    "解": ["xie4"],
    "仇": ["qiu2"],
    "区": ["ou1"],
    "朴": ["piao2"],
    "查": ["zha1"],
    "曾": ["zeng1"],
    "缪": ["miao4"],
    "盖": ["ge3"],
    "覃": ["qin2"],
    "种": ["chong2"],
    "繁": ["po2"],
    "华": ["hua4"],
    "任": ["ren2"],
    "秘": ["bi4"],
    "员": ["yun4"],
    "尉迟": ["yu4", "chi2"],
    "万俟": ["mo4", "qi2"],
    "长孙": ["zhang3", "sun1"],
    "令狐": ["ling2", "hu2"],
    "单于": ["chan2", "yu2"],
}
# Words after a bare surname that make it a name (翟先生, 缪女士, 解老师); 姓 before one does too (我姓单).
NAME_TITLES = frozenset(
    [
        "先生",
        "女士",
        "小姐",
        "老师",
        "师傅",
        "经理",
        "总",
        "医生",
        "大夫",
        "教授",
        "同学",
        "阿姨",
        "叔叔",
        "老板",
        "律师",
        "警官",
        "主任",
        "局长",
        "处长",
        "科长",
        "部长",
        "书记",
        "董事长",
        "总监",
        "工",
        "老",
        "某",
        "家",
        "氏",
    ]
)
