"""Unit tests of the load-test harness: corpus, shapes, SLO gate logic, response checks."""

from __future__ import annotations

import os
import random
import re

import pytest

# Importing locust gevent-monkey-patches the whole process, which would break Ray and asyncio in other
# tests of the same pytest session: import it unpatched, and don't leak the switch to subprocesses.
_saved = os.environ.get("LOCUST_SKIP_MONKEY_PATCH")
os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"
try:
    from locust.stats import RequestStats

    from loadtests import shapes, slo
    from loadtests.corpus import LENGTH_CLASSES, CorpusError, load_corpus, parse_corpus
    from loadtests.users import (
        CHAT_EMOTIONS,
        IVR_EMOTIONS,
        audio_offset,
        check_audio,
        choose_emotion,
        weighted_choice,
    )
finally:
    if _saved is None:
        del os.environ["LOCUST_SKIP_MONKEY_PATCH"]
    else:
        os.environ["LOCUST_SKIP_MONKEY_PATCH"] = _saved

# -- corpus ----------------------------------------------------------------------------------------


def test_corpus_has_enough_customer_service_sentences() -> None:
    corpus = load_corpus()
    assert len(corpus) >= 150
    short, medium, long_ = (corpus.of(c) for c in LENGTH_CLASSES)
    assert min(len(short), len(medium), len(long_)) >= 30
    assert max(len(s.text) for s in short) <= 24
    assert min(len(s.text) for s in long_) >= 50
    # medium sentences carry the hard normalisation cases: amounts, phone numbers, dates/times
    texts = [s.text for s in medium]
    assert any("¥1,280.50" in t for t in texts)
    assert any(re.search(r"\d{3}-\d{3}-\d{4}", t) for t in texts)
    assert any(re.search(r"\d{1,2}:\d{2}", t) for t in texts)
    assert sum(bool(re.search(r"\d", t)) for t in texts) >= 0.9 * len(texts)


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("short\tgreeting", "expected 3 tab-separated fields"),
        ("tiny\tgreeting\t你好。", "unknown length class 'tiny'"),
        ("short\t\t你好。", "empty topic or text"),
    ],
)
def test_corpus_rejects_malformed_lines(line: str, fragment: str) -> None:
    with pytest.raises(CorpusError, match=re.escape(fragment)) as info:
        parse_corpus(["# comment", line], "x.tsv")
    assert "x.tsv:2" in str(info.value)


def test_corpus_rejects_duplicates_and_empty() -> None:
    with pytest.raises(CorpusError, match="duplicate"):
        parse_corpus(["short\ta\t你好。", "short\tb\t你好。"])
    with pytest.raises(CorpusError, match="no sentences"):
        parse_corpus(["# only a comment"])


# -- user helpers ------------------------------------------------------------------------------------


def test_emotion_mix_is_realistic_and_respects_support() -> None:
    rng = random.Random(1)
    picks = [choose_emotion(rng, IVR_EMOTIONS, "status", None) for _ in range(4000)]
    share = picks.count("neutral") / len(picks)
    assert 0.55 < share < 0.65  # IVR mix: 60 % neutral
    assert set(picks) == set(IVR_EMOTIONS)
    apologies = {choose_emotion(rng, CHAT_EMOTIONS, "apology", None) for _ in range(200)}
    assert apologies == {"sad", "neutral"}
    limited = {choose_emotion(rng, CHAT_EMOTIONS, "status", ["neutral", "happy"]) for _ in range(500)}
    assert limited == {"neutral", "happy"}
    assert weighted_choice(rng, {"only": 1.0}) == "only"


def test_check_audio_validates_magic_and_sample_rate() -> None:
    wav = b"RIFF" + b"\0" * 20 + (8000).to_bytes(4, "little") + b"\0" * 100
    assert check_audio(wav, "wav", 8000) is None
    assert "sample rate 8000 != requested 16000" in (check_audio(wav, "wav", 16000) or "")
    assert "wrong magic" in (check_audio(b"XXXX" + b"\0" * 100, "flac", None) or "")
    assert "too short" in (check_audio(b"RIFF", "wav", None) or "")
    assert check_audio(b"RIFF" + bytes(200), "mulaw", 8000) is None
    assert check_audio(bytes(200), "pcm", 16000) is None


# -- shapes ------------------------------------------------------------------------------------------


def _series(profile: shapes.Profile, until: float) -> list[int | None]:
    return [profile.users_at(float(t)) for t in range(int(until))]


def test_spike_shape_is_five_times_for_sixty_seconds_then_back() -> None:
    p = shapes.ShapeParams(users=4, warmup_seconds=30, spike_seconds=60, recovery_seconds=90)
    spike = shapes.make_profile("spike", p)
    series = _series(spike, 181)
    assert series[:30] == [4] * 30
    assert series[30:90] == [20] * 60
    assert series[90:180] == [4] * 90
    assert series[180] is None
    assert spike.rate_at(31) >= 10  # reaches the peak within ~2 s


def test_step_wave_steady_soak_shapes() -> None:
    p = shapes.ShapeParams(users=2, step_seconds=10, steps=3, wave_period=40, run_time=5)
    assert _series(shapes.make_profile("step", p), 31) == [2] * 10 + [4] * 10 + [6] * 10 + [None]
    wave = _series(shapes.make_profile("doublewave", p), 81)
    assert wave[0] == 2 and wave[10] == 8 and wave[20] == 2 and wave[30] == 8 and wave[80] is None
    assert _series(shapes.make_profile("steady", p), 6) == [2] * 5 + [None]
    soak = shapes.make_profile("soak", shapes.ShapeParams(users=3))
    assert soak.users_at(1799) == 3 and soak.users_at(1800) is None


def test_shape_errors_are_clear() -> None:
    with pytest.raises(shapes.ShapeError, match="unknown shape 'burst'"):
        shapes.make_profile("burst", shapes.ShapeParams())
    with pytest.raises(shapes.ShapeError, match="base users"):
        shapes.ShapeParams(users=0)


# -- SLO gate ------------------------------------------------------------------------------------------


def _stats(samples: dict[str, list[float]], failures: dict[str, int] | None = None) -> RequestStats:
    stats = RequestStats()
    for name, times in samples.items():
        for t in times:
            stats.log_request("POST", name, t, 100)
    for name, n in (failures or {}).items():
        for _ in range(n):
            stats.log_request("POST", name, 10, 0)
            stats.log_error("POST", name, "HTTP 503")
    return stats


def test_slo_gate_passes_within_limits() -> None:
    samples = {"tts short": [100] * 50, "stream-ttfa medium": [300] * 50, "stream-total long": [5000] * 20}
    stats = _stats(samples)
    checks = slo.evaluate(stats, slo.SloConfig())
    assert all(c.ok for c in checks)
    assert {c.name for c in checks} >= {"tts short", "stream-ttfa medium", "stream-total long"}
    assert "SLO result: PASS" in slo.format_summary(stats, checks)


def test_slo_gate_fails_when_set_impossibly_tight() -> None:
    stats = _stats({"tts short": [100] * 50, "stream-ttfa short": [300] * 50})
    cfg = slo.SloConfig(p95_ms=slo.parse_class_limits("short=1"), ttfa_p95_ms=1)
    missed = {c.name for c in slo.evaluate(stats, cfg) if not c.ok}
    assert missed == {"tts short", "stream-ttfa short"}
    assert "MISSED" in slo.format_summary(stats, slo.evaluate(stats, cfg))


def test_slo_gate_uses_p95_per_class_and_fail_ratio() -> None:
    # 94 fast + 6 slow → p95 is slow; the medium class limit applies to "tts medium" only
    stats = _stats({"tts medium": [100] * 94 + [9000] * 6, "tts short": [100] * 100}, {"tts short": 5})
    checks = {(c.name, c.metric): c for c in slo.evaluate(stats, slo.SloConfig(max_fail_ratio=0.01))}
    assert not checks[("tts medium", "p95 ms")].ok
    assert checks[("tts short", "p95 ms")].ok
    assert not checks[("requests", "fail ratio")].ok
    relaxed = slo.evaluate(stats, slo.SloConfig(max_fail_ratio=0.05, p95_ms={"medium": 10000}))
    assert all(c.ok for c in relaxed)


def test_slo_gate_rtf_and_fail_ratio_over_real_requests_only() -> None:
    # 10 streamed requests, 1 failed: TTFA/RTF entries must not dilute the 10 % failure ratio
    stats = _stats(
        {"stream-total short": [900] * 9, "stream-ttfa short": [90] * 9, "stream-rtf short": [1200] * 9},
        {"stream-total short": 1},
    )
    checks = {(c.name, c.metric): c for c in slo.evaluate(stats, slo.SloConfig(max_fail_ratio=0.05))}
    assert checks[("requests", "fail ratio")].value == pytest.approx(0.1)
    assert checks[("requests", "requests")].value == 10
    rtf = checks[("stream-rtf short", "RTF p95")]
    assert rtf.value == pytest.approx(1.2) and not rtf.ok  # slower than real time: playback stalls
    assert slo.evaluate(stats, slo.SloConfig(max_fail_ratio=0.2, rtf_p95=1.5))[-1].ok


def test_audio_offset_finds_the_wav_data_chunk() -> None:
    mulaw_head = b"RIFF" + bytes(4) + b"WAVEfmt " + bytes(22) + b"fact" + bytes(8) + b"data" + bytes(4)
    assert audio_offset(mulaw_head, "mulaw") == len(mulaw_head)
    assert audio_offset(mulaw_head[:20], "mulaw") is None  # header not complete yet
    assert audio_offset(b"", "pcm") == 0


def test_slo_gate_fails_a_run_that_measured_nothing() -> None:
    checks = slo.evaluate(RequestStats(), slo.SloConfig())
    assert [c.metric for c in checks if not c.ok] == ["requests"]


def test_slo_config_errors_are_clear() -> None:
    with pytest.raises(slo.SloConfigError, match="bad p95 limit 'tiny=5'"):
        slo.parse_class_limits("tiny=5")
    with pytest.raises(slo.SloConfigError, match="is not a number"):
        slo.parse_class_limits("short=fast")
    with pytest.raises(slo.SloConfigError, match=r"\[0, 1\]"):
        slo.SloConfig(max_fail_ratio=2)
    assert slo.split_name("stream-ttfa long") == ("stream-ttfa", "long")
    assert slo.split_name("voices") is None


def test_shed_requests_are_gated_apart_from_failures_and_latency() -> None:
    """429/503 + Retry-After refusals count toward the shed ratio (and their own p95), not the fail ratio."""
    stats = _stats({"tts short": [100] * 60, "shed short": [20] * 40})
    checks = {(c.name, c.metric): c for c in slo.evaluate(stats, slo.SloConfig(max_shed_ratio=0.5))}
    assert checks[("requests", "fail ratio")].value == 0 and checks[("requests", "fail ratio")].ok
    assert checks[("requests", "shed ratio")].value == pytest.approx(0.4)
    assert checks[("tts short", "p95 ms")].value == pytest.approx(100, rel=0.05)  # refusals not mixed in
    assert all(c.ok for c in checks.values())
    strict = slo.evaluate(stats, slo.SloConfig())  # default: at most 5 % shed
    assert not next(c for c in strict if c.metric == "shed ratio").ok
    slow = _stats({"tts short": [100] * 60, "shed short": [5000] * 5})
    assert not next(
        c for c in slo.evaluate(slow, slo.SloConfig(max_shed_ratio=1)) if c.name == "shed short"
    ).ok
    with pytest.raises(slo.SloConfigError, match="shed ratio"):
        slo.SloConfig(max_shed_ratio=2)
