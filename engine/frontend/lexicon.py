"""Project phrase dictionary and context-rule word lists for G2P (written for this project).

``PHRASES`` take precedence over pypinyin's phrase dictionary: customer-service words where pypinyin's default
is wrong or where the standard reading has a neutral tone. Words are also added to jieba so they segment as
units. Readings follow 《现代汉语词典》 (neutral tone = 5).
"""

from __future__ import annotations

_RAW = """
还款 huan2 kuan3|还钱 huan2 qian2|还贷 huan2 dai4|归还 gui1 huan2|偿还 chang2 huan2|退还 tui4 huan2|返还 fan3 huan2
还清 huan2 qing1|还本 huan2 ben3|还息 huan2 xi1|还账 huan2 zhang4|还给 huan2 gei3|提前还 ti2 qian2 huan2
还是 hai2 shi4|还有 hai2 you3|还没 hai2 mei2|还要 hai2 yao4|还需 hai2 xu1|还需要 hai2 xu1 yao4|还在 hai2 zai4
东西 dong1 xi5|时候 shi2 hou5|明白 ming2 bai5|清楚 qing1 chu5|麻烦 ma2 fan5|客气 ke4 qi5|意思 yi4 si5
事情 shi4 qing5|告诉 gao4 su5|知道 zhi1 dao5|谢谢 xie4 xie5|先生 xian1 sheng5|舒服 shu1 fu5|便宜 pian2 yi5
认识 ren4 shi5|商量 shang1 liang5|打听 da3 ting5|收拾 shou1 shi5|这么 zhe4 me5|那么 na4 me5|什么 shen2 me5
怎么 zen3 me5|多么 duo1 me5|地方 di4 fang5|名字 ming2 zi5|朋友 peng2 you5|衣服 yi1 fu5|喜欢 xi3 huan5
消息 xiao1 xi5|生意 sheng1 yi5|已经 yi3 jing1|觉得 jue2 de5|记得 ji4 de5|晓得 xiao3 de5|值得 zhi2 de5
懂得 dong3 de5|舍得 she3 de5|免得 mian3 de5|使得 shi3 de5|显得 xian3 de5|难得 nan2 de2|获得 huo4 de2
取得 qu3 de2|得到 de2 dao4|得知 de2 zhi1|得分 de2 fen1|得以 de2 yi3|得出 de2 chu1|心得 xin1 de2|所得 suo3 de2
不得不 bu4 de2 bu4|不得 bu4 de2|只得 zhi3 de2|得了 de2 le5|得很 de5 hen3
了解 liao3 jie3|为了 wei4 le5|除了 chu2 le5|算了 suan4 le5|好了 hao3 le5|对了 dui4 le5|罢了 ba4 le5
受不了 shou4 bu4 liao3|少不了 shao3 bu4 liao3|免不了 mian3 bu4 liao3|用不了 yong4 bu4 liao3|到不了 dao4 bu4 liao3
着急 zhao2 ji2|睡着 shui4 zhao2|着凉 zhao2 liang2|着火 zhao2 huo3|用不着 yong4 bu4 zhao2|犯不着 fan4 bu4 zhao2
着装 zhuo2 zhuang1|着手 zhuo2 shou3|着重 zhuo2 zhong4|着落 zhuo2 luo4|着陆 zhuo2 lu4|着想 zhuo2 xiang3
接着 jie1 zhe5|随着 sui2 zhe5|跟着 gen1 zhe5|沿着 yan2 zhe5|意味着 yi4 wei4 zhe5|看着 kan4 zhe5|等着 deng3 zhe5
银行 yin2 hang2|行业 hang2 ye4|行情 hang2 qing2|同行 tong2 hang2|支行 zhi1 hang2|分行 fen1 hang2|总行 zong3 hang2
行长 hang2 zhang3|行号 hang2 hao4|排行 pai2 hang2|内行 nei4 hang2|外行 wai4 hang2|商行 shang1 hang2
发行 fa1 xing2|进行 jin4 xing2|执行 zhi2 xing2|运行 yun4 xing2|行程 xing2 cheng2|出行 chu1 xing2|行李 xing2 li5
不行 bu4 xing2|行驶 xing2 shi3|自行 zi4 xing2|可行 ke3 xing2|银行卡 yin2 hang2 ka3|流行 liu2 xing2
重新 chong2 xin1|重复 chong2 fu4|重启 chong2 qi3|重置 chong2 zhi4|重发 chong2 fa1|重试 chong2 shi4|重装 chong2 zhuang1
重来 chong2 lai2|重做 chong2 zuo4|重写 chong2 xie3|重办 chong2 ban4|重拨 chong2 bo1|重设 chong2 she4|重填 chong2 tian2
重开 chong2 kai1|重寄 chong2 ji4|重申 chong2 shen1|重叠 chong2 die2|重名 chong2 ming2|重庆 chong2 qing4|重购 chong2 gou4
重新启动 chong2 xin1 qi3 dong4|重复扣款 chong2 fu4 kou4 kuan3|重要 zhong4 yao4|重量 zhong4 liang4|重点 zhong4 dian3
严重 yan2 zhong4|尊重 zun1 zhong4|重视 zhong4 shi4|超重 chao1 zhong4|体重 ti3 zhong4|重大 zhong4 da4|郑重 zheng4 zhong4
长期 chang2 qi1|长度 chang2 du4|延长 yan2 chang2|长途 chang2 tu2|长按 chang2 an4|很长 hen3 chang2|多长 duo1 chang2
长时间 chang2 shi2 jian1|时长 shi2 chang2|增长 zeng1 zhang3|成长 cheng2 zhang3|店长 dian4 zhang3|家长 jia1 zhang3
部长 bu4 zhang3|院长 yuan4 zhang3|组长 zu3 zhang3|班长 ban1 zhang3|队长 dui4 zhang3|科长 ke1 zhang3|长大 zhang3 da4
调整 tiao2 zheng3|调节 tiao2 jie2|空调 kong1 tiao2|调试 tiao2 shi4|协调 xie2 tiao2|调价 tiao2 jia4|调解 tiao2 jie3
调低 tiao2 di1|调高 tiao2 gao1|调大 tiao2 da4|调小 tiao2 xiao3|调控 tiao2 kong4|调查 diao4 cha2|调货 diao4 huo4
调取 diao4 qu3|调用 diao4 yong4|调动 diao4 dong4|调换 diao4 huan4|调度 diao4 du4|调研 diao4 yan2|单调 dan1 diao4
差别 cha1 bie2|差价 cha1 jia4|差异 cha1 yi4|差距 cha1 ju4|误差 wu4 cha1|偏差 pian1 cha1|时差 shi2 cha1|差额 cha1 e2
差错 cha1 cuo4|出差 chu1 chai1|差旅 chai1 lv3|差旅费 chai1 lv3 fei4|差不多 cha4 bu5 duo1|差点 cha4 dian3|差评 cha4 ping2
音乐 yin1 yue4|乐器 yue4 qi4|乐队 yue4 dui4|快乐 kuai4 le4|娱乐 yu2 le4|传记 zhuan4 ji4|自传 zi4 zhuan4
作为 zuo4 wei2|成为 cheng2 wei2|认为 ren4 wei2|以为 yi3 wei2|行为 xing2 wei2|为止 wei2 zhi3|称为 cheng1 wei2
视为 shi4 wei2|分为 fen1 wei2|改为 gai3 wei2|变为 bian4 wei2|设为 she4 wei2|更为 geng4 wei2|较为 jiao4 wei2
为期 wei2 qi1|为准 wei2 zhun3|为主 wei2 zhu3|为难 wei2 nan2|因为 yin1 wei4|为您 wei4 nin2|为你 wei4 ni3
为什么 wei4 shen2 me5|修改为 xiu1 gai3 wei2|更改为 geng1 gai3 wei2|设置为 she4 zhi4 wei2|调整为 tiao2 zheng3 wei2
种植 zhong4 zhi2|种地 zhong4 di4|种树 zhong4 shu4|各种 ge4 zhong3|这种 zhe4 zhong3|那种 na4 zhong3|品种 pin3 zhong3
爱好 ai4 hao4|好奇 hao4 qi2|喜好 xi3 hao4|偏好 pian1 hao4|好客 hao4 ke4|好学 hao4 xue2|只好 zhi3 hao3|好吃 hao3 chi1
少年 shao4 nian2|少女 shao4 nv3|少儿 shao4 er2|少爷 shao4 ye5|至少 zhi4 shao3|减少 jian3 shao3|多少 duo1 shao3
头发 tou2 fa5|理发 li3 fa4|发型 fa4 xing2|洗发水 xi3 fa4 shui3|美发 mei3 fa4|染发 ran3 fa4|发票 fa1 piao4|发货 fa1 huo4
和面 huo2 mian4|暖和 nuan3 huo5|附和 fu4 he4|搀和 chan1 huo5|和平 he2 ping2|数据 shu4 ju4|数量 shu4 liang4|数一数 shu3 yi1 shu3
数钱 shu3 qian2|数不清 shu3 bu4 qing1|次数 ci4 shu4|数字 shu4 zi4|数额 shu4 e2|积分数 ji1 fen1 shu4
处理 chu3 li3|处理器 chu3 li3 qi4|办事处 ban4 shi4 chu4|好处 hao3 chu4|到处 dao4 chu4|处罚 chu3 fa2|处于 chu3 yu2
应该 ying1 gai1|应当 ying1 dang1|答应 da1 ying5|回应 hui2 ying4|应用 ying4 yong4|相应 xiang1 ying4|响应 xiang3 ying4
供应 gong1 ying4|提供 ti2 gong1|供货 gong1 huo4|要求 yao1 qiu2|系统 xi4 tong3|联系 lian2 xi4
系好 ji4 hao3|供给 gong1 ji3|给予 ji3 yu3|便利 bian4 li4|方便 fang1 bian4|随便 sui2 bian4|顺便 shun4 bian4
都会 dou1 hui4|大都会 da4 du1 hui4|首都 shou3 du1|成都 cheng2 du1|都市 du1 shi4|空闲 kong4 xian2|有空 you3 kong4
抽空 chou1 kong4|空位 kong4 wei4|空格 kong4 ge2|转账 zhuan3 zhang4|转接 zhuan3 jie1|转人工 zhuan3 ren2 gong1
转动 zhuan4 dong4|测量 ce4 liang2|商量 shang1 liang5|数量 shu4 liang4|流量 liu2 liang4|尽快 jin3 kuai4|尽量 jin3 liang4
尽早 jin3 zao3|尽管 jin3 guan3|尽力 jin4 li4|尽情 jin4 qing2|效率 xiao4 lv4|利率 li4 lv4|汇率 hui4 lv4|税率 shui4 lv4
费率 fei4 lv4|概率 gai4 lv4|率先 shuai4 xian1|更新 geng1 xin1|更改 geng1 gai3|更换 geng1 huan4|变更 bian4 geng1
更加 geng4 jia1|折扣 zhe2 kou4|打折 da3 zhe2|折叠 zhe2 die2|负担 fu4 dan1|承担 cheng2 dan1|担心 dan1 xin1|担保 dan1 bao3
涨价 zhang3 jia4|上涨 shang4 zhang3|名称 ming2 cheng1|称心 chen4 xin1|对称 dui4 chen4|模板 mu2 ban3|模样 mu2 yang4
模式 mo2 shi4|目的 mu4 di4|目的地 mu4 di4 di4|的确 di2 que4|的士 di1 shi4|角色 jue2 se4|似的 shi4 de5|相机 xiang4 ji1
相关 xiang1 guan1|照相 zhao4 xiang4|当天 dang4 tian1|当时 dang1 shi2|上当 shang4 dang4|恰当 qia4 dang4|适当 shi4 dang4
妥当 tuo3 dang4|当做 dang4 zuo4|当作 dang4 zuo4|当成 dang4 cheng2|一会儿 yi1 hui4 er5|结实 jie1 shi5|结果 jie2 guo3
结账 jie2 zhang4|累计 lei3 ji4|积累 ji1 lei3|劳累 lao2 lei4|卡住 ka3 zhu4|关卡 guan1 qia3|发卡 fa1 ka3|省份 sheng3 fen4
反省 fan3 xing3|间隔 jian4 ge2|间断 jian4 duan4|中间 zhong1 jian1|时间 shi2 jian1|房间 fang2 jian1|期间 qi1 jian1
没有 mei2 you3|看护 kan1 hu4|看守 kan1 shou3|单位 dan1 wei4|部分 bu4 fen5|身份 shen1 fen4|充分 chong1 fen4
身份证 shen1 fen4 zheng4|血液 xue4 ye4|薄弱 bo2 ruo4|强调 qiang2 diao4|勉强 mian3 qiang3|倔强 jue2 jiang4
处境 chu3 jing4|觉悟 jue2 wu4|睡觉 shui4 jiao4|感觉 gan3 jue2|发觉 fa1 jue2|号召 hao4 zhao4|哭号 ku1 hao2
咨询 zi1 xun2|地址 di4 zhi3|地区 di4 qu1|当地 dang1 di4|本地 ben3 di4|各地 ge4 di4|外地 wai4 di4|异地 yi4 di4
朝着 chao2 zhe5|明天 ming2 tian1|还行 hai2 xing2|行不行 xing2 bu4 xing2|银行账户 yin2 hang2 zhang4 hu4
参与 can1 yu4|给与 ji3 yu3|与其 yu3 qi2|参加 can1 jia1|人参 ren2 shen1|大夫 dai4 fu5
快递员 kuai4 di4 yuan2|压根 ya4 gen1|亚马逊 ya4 ma3 xun4|似乎 si4 hu1|相似 xiang1 si4|类似 lei4 si4
差不了 cha4 bu4 liao3|了不起 liao3 bu4 qi3|不了了之 bu4 liao3 liao3 zhi1|说得 shuo1 de5|的话 de5 hua4
师傅 shi1 fu5|电子 dian4 zi3|照片 zhao4 pian4|跨行 kua4 hang2|当日 dang4 ri4|升为 sheng1 wei2|降为 jiang4 wei2
"""

PHRASES: dict[str, list[str]] = {}
for _line in _RAW.strip().splitlines():
    for _item in _line.split("|"):
        _word, *_py = _item.split()
        PHRASES[_word] = _py

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
