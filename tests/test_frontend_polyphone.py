"""Polyphones beyond customer service (issue 15): context model, gate, surnames, and what always wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.frontend import Frontend, FrontendError
from engine.frontend import polyphone as pm
from engine.frontend.evaluation import CPP_DEV, cpp_accuracy, load_cpp
from engine.frontend.g2p import G2P, phrase_evidence
from engine.symbols import LinguisticVocab


@pytest.fixture(scope="module")
def g2p() -> G2P:
    return G2P()


def lexical(g: G2P, text: str) -> list[str]:
    return [s.lexical for w in g.words(text, [None] * len(text)) for s in w.syllables]


def test_model_beats_dictionaries_on_a_cpp_dev_sample(g2p: G2P) -> None:
    items = load_cpp(CPP_DEV, "dev")[::20]  # ~500 sentences
    with_model = cpp_accuracy(g2p, items).accuracy
    rules_only = cpp_accuracy(G2P(polyphone_model=False), items).accuracy
    assert with_model >= 0.95 and with_model > rules_only + 0.05, (with_model, rules_only)


@pytest.mark.slow
def test_cpp_dev_accuracy(g2p: G2P) -> None:
    items = load_cpp(CPP_DEV, "dev")
    assert len(items) == 9893
    assert cpp_accuracy(g2p, items, context=True).accuracy >= 0.977  # as the frontend runs (97.75 %)
    assert cpp_accuracy(g2p, items).accuracy >= 0.976  # the model sees only the hanzi run (97.65 %)


@pytest.mark.parametrize(
    ("text", "index", "reading"),
    [
        ("他舍不得离开", 1, "she3"),
        ("宿舍楼在东边", 1, "she4"),
        ("这件事应该由谁负责", 3, "ying1"),
        ("什么时候开会", 0, "shen2"),
        ("数不胜数", 0, "shu3"),
        ("他舍不得离开", 3, "de5"),
        ("更新一下", 0, "geng1"),
        ("更好的服务", 0, "geng4"),
    ],
)
def test_sentence_level_polyphones(g2p: G2P, text: str, index: int, reading: str) -> None:
    assert lexical(g2p, text)[index] == reading


@pytest.mark.parametrize(
    ("text", "index", "reading"),
    [
        ("我叫单田芳", 2, "shan4"),
        ("翟先生您好", 0, "zhai2"),
        ("请缪女士到前台", 1, "miao4"),
        ("解先生的订单已发货", 0, "xie4"),
        ("仇小姐您好", 0, "qiu2"),
        ("区先生在吗", 0, "ou1"),
        ("朴槿惠访问中国", 0, "piao2"),
        ("查先生来电", 0, "zha1"),
        ("曾国藩是湖南人", 0, "zeng1"),
        ("尉迟恭是唐朝名将", 0, "yu4"),
        ("尉迟恭是唐朝名将", 1, "chi2"),
        ("我姓单", 2, "shan4"),
        ("欢迎曾先生", 2, "zeng1"),
    ],
)
def test_surnames(g2p: G2P, text: str, index: int, reading: str) -> None:
    assert lexical(g2p, text)[index] == reading


@pytest.mark.parametrize(
    ("text", "index", "reading"),
    [
        ("您的订单已发货", 3, "dan1"),
        ("请查一下订单", 1, "cha2"),
        ("我曾经去过", 1, "ceng2"),
        ("请解释一下", 1, "jie3"),
        ("小区门口", 1, "qu1"),
        ("单位地址", 0, "dan1"),
    ],
)
def test_surname_characters_outside_names(g2p: G2P, text: str, index: int, reading: str) -> None:
    assert lexical(g2p, text)[index] == reading


def test_overrides_forced_readings_and_rules_beat_the_model() -> None:
    g = G2P(pronunciation_overrides={"单于": "dan1 yu2", "长": "zhang3"})
    assert lexical(g, "单于")[:2] == ["dan1", "yu2"]
    assert lexical(g, "长")[0] == "zhang3"  # a one-character override beats the 长 rule too
    assert lexical(G2P(), "您得先登录")[1] == "dei3"  # the model alone says de2
    forced: list[str | None] = [None, "zhong4", None]
    assert [s.lexical for w in G2P().words("很重要", forced) for s in w.syllables][1] == "zhong4"


def test_context_reaches_the_model(g2p: G2P, monkeypatch: pytest.MonkeyPatch) -> None:
    model = pm.model()
    seen: list[tuple[str, list[int]]] = []
    real = model.log_probs

    def spy(text: str, positions: list[int]) -> list[dict[str, float]]:
        seen.append((text, list(positions)))
        return real(text, positions)

    monkeypatch.setattr(model, "log_probs", spy)
    g2p.words("为", [None], ("他被评", "先进"))
    assert seen == [("他被评为先进", [3])]


def test_decide_weighs_model_source_and_phrase_evidence() -> None:
    gate = pm.Gate(1.0, {"pdict2": 5.0}, {"cedict": 1.5})
    lp = {"de2": -0.1, "dei3": -3.0}
    assert pm.decide(lp, "dei3", "pdict2", gate) == "dei3"  # our phrase reading's bonus outweighs the model
    assert pm.decide(lp, "dei3", "single", gate) == "de2"  # no bonus for a bare single-character default
    assert pm.decide(lp, "de2", "single", gate, {"cedict": {"dei3"}}) == "de2"  # evidence: 1.5 < 2.9
    assert pm.decide({"de2": -1.0, "dei3": -2.0}, "de2", "single", gate, {"cedict": {"dei3"}}) == "dei3"
    assert pm.decide(lp, "de5", "single", gate) == "de2"  # a reading outside the candidates needs a bonus


def test_phrase_evidence_reads_the_words_around_the_character() -> None:
    ev = phrase_evidence("他在湖里划船", 4)  # 划船 hua2 in both dictionaries
    assert ev["pypinyin"] == {"hua2"} and "hua2" in ev["cedict"]
    assert phrase_evidence("划", 0) == {"pypinyin": set(), "cedict": set()}


def test_gate_file_is_fitted_and_sane() -> None:
    gate = pm.load_gate()
    assert gate.log_prob > 0 and set(gate.ours) >= {"single", "pdict2"}
    assert set(gate.evidence) == {"pypinyin", "cedict"}
    assert gate.ours["pdict2"] > gate.ours["single"]  # a phrase reading is worth more than a default


def test_cedict_phrases_hold_only_polyphone_words() -> None:
    table = pm.cedict_phrases()
    model = pm.model()
    assert len(table) > 30000 and table["划船"] == ["hua2", "chuan2"]
    assert all(2 <= len(w) <= 4 and any(model.is_polyphone(c) for c in w) for w in list(table)[::500])


def test_the_frontend_gives_the_model_the_whole_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hanzi runs split by punctuation are read together: one model call sees the sentence."""
    model = pm.model()
    seen: list[tuple[str, list[int]]] = []
    real = model.log_probs

    def spy(text: str, positions: list[int]) -> list[dict[str, float]]:
        seen.append((text, list(positions)))
        return real(text, positions)

    monkeypatch.setattr(model, "log_probs", spy)
    Frontend().process("他被评为先进，奖金很重。", LinguisticVocab.build())
    assert len(seen) == 1 and seen[0][0].startswith("他被评为先进，奖金很重")


def test_missing_model_files_are_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FrontendError, match="cannot load the g2pM model"):
        pm.PolyphoneModel(tmp_path)


def test_log_probs_rejects_non_polyphones() -> None:
    with pytest.raises(FrontendError, match="not a known polyphone"):
        pm.model().log_probs("您好", [0])


def test_names_reach_the_synthesis_units() -> None:
    """Black box: a customer's surname is read right in what the voice gets."""
    units = Frontend().process("翟先生，您的订单已发货。", LinguisticVocab.build())
    readings = [(s.text, s.lexical) for u in units for s in u.syllables]
    assert readings[0] == ("翟", "zhai2") and ("单", "dan1") in readings
