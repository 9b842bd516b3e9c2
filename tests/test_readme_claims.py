"""README claims not covered by test_controls_http.py / test_user_path.py, each checked for its *effect*
through the public interface (HTTP on the shared Serve instance, tiny random model; the metrics endpoint
Ray publishes; the replicas' logs).

Fast tests use the shared apps (``tts`` at ``/``, ``limited`` at ``/limited``, see tests/conftest.py). The
claims that need their own deployment (auth + log_text + bf16 + no cache, live ``user_config``, a stage
broken under ``/ready``) deploy one throwaway app and are ``slow`` (``make test-full``).
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import soundfile as sf

from benchmarks import reliability as rel
from tests._observe import batch_counts, post_chunks, scrape, serve_log_text, settled, total, wait_for
from tests._reliability import stage_options, undeploy
from tests.conftest import post_limited, post_past_limited_deadline

pytestmark = pytest.mark.serve

HOP = 200  # samples per mel frame at 16 kHz
SR = 16000


@pytest.fixture(scope="module")
def url(serve_instance) -> str:  # type: ignore[no-untyped-def]
    return serve_instance.url


def tts(url: str, body: dict, **headers: str) -> httpx.Response:
    r = httpx.post(url + "/api/tts", json=body, headers=headers, timeout=120)
    assert r.status_code == 200, r.text
    return r


def tts_json(url: str, **body: object) -> dict:
    return tts(url, body, accept="application/json").json()


def unique(text: str) -> str:
    """A sentence the result cache has never seen (a ticket number)."""
    return f"{text}工单{time.time_ns() % 10**9}号。"


def toneless(pinyin: list[str]) -> list[str]:
    return [p.rstrip("012345") for p in pinyin]


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    audio, sr = sf.read(io.BytesIO(data), dtype="int16")
    return audio.astype(np.int32), sr


# ------------------------------------------------------------------ say-as, <p>
@pytest.mark.parametrize(
    ("kind", "value", "reading", "pinyin"),
    [
        ("date", "2024-11-21", "二零二四年十一月二十一日", "er ling er si nian shi yi yue er shi yi ri"),
        ("time", "14:30", "十四点三十分", "shi si dian san shi fen"),
        ("currency", "¥1,280.50", "一千二百八十元五角", "yi qian er bai ba shi yuan wu jiao"),
        ("address", "朝阳路3号院12号楼", "朝阳路三号院十二号楼", "chao yang lu san hao yuan shi er hao lou"),
        ("cardinal", "110", "一百一十", "yi bai yi shi"),
    ],
)
def test_say_as_reads_the_value_as_that_kind(
    url: str, kind: str, value: str, reading: str, pinyin: str
) -> None:
    """The reading reaches the model: the unit's text and pinyin (what the acoustic model was given)."""
    got = tts_json(url, text=f'<speak><say-as interpret-as="{kind}">{value}</say-as></speak>')
    (unit,) = got["units"]
    assert unit["text"] == reading
    assert toneless(unit["pinyin"]) == pinyin.split()
    assert [t["text"] for t in got["timestamps"]] == list(reading)


def test_paragraph_pauses_longer_than_sentence(url: str) -> None:
    """``<p>`` ends with a paragraph pause (longer than ``<s>``'s), and it is silence in the audio."""
    text = "您好。感谢来电。"
    s = tts_json(url, text=f"<speak><s>{text[:3]}</s><s>{text[3:]}</s></speak>")
    p = tts_json(url, text=f"<speak><p>{text[:3]}</p><p>{text[3:]}</p></speak>")
    assert [u["frames"] for u in s["units"]] == [u["frames"] for u in p["units"]]
    s_pause, p_pause = s["units"][0]["pause_after_s"], p["units"][0]["pause_after_s"]
    assert p_pause > s_pause > 0
    # the pause follows the first unit's predicted frames: silence in the audio, and the second unit's
    # syllables start after it
    for resp, pause in ((s, s_pause), (p, p_pause)):
        unit_end = resp["units"][0]["frames"] * HOP / SR
        n_first = len(resp["units"][0]["pinyin"])
        assert resp["timestamps"][n_first]["start_s"] >= unit_end + pause - 1e-3
        audio, sr = decode_wav(base64.b64decode(resp["audio_base64"]))
        gap = audio[int(unit_end * sr) + 1 : int((unit_end + pause) * sr) - 1]
        assert len(gap) == pytest.approx(pause * sr, abs=3) and np.abs(gap).max() == 0
    assert p["duration_s"] - s["duration_s"] == pytest.approx(
        sum(u["pause_after_s"] for u in p["units"]) - sum(u["pause_after_s"] for u in s["units"]), abs=0.01
    )


# ------------------------------------------------------------------ OpenAI pcm rate, voice aliases
def test_openai_pcm_is_24khz(url: str) -> None:
    text = unique("您好")
    ours = tts(url, {"text": text, "format": "pcm"})
    r = httpx.post(
        url + "/v1/audio/speech",
        json={"model": "tts-1", "voice": "alloy", "input": text, "response_format": "pcm"},
        timeout=120,
    )
    assert r.status_code == 200, r.text
    n16, n24 = len(ours.content) // 2, len(r.content) // 2
    assert abs(n24 - n16 * 24000 / 16000) <= 4, (n16, n24)
    assert int(r.headers["x-sample-rate"]) == 24000


@pytest.mark.parametrize("alias", ["alloy", "nova", "shimmer"])
def test_openai_voice_aliases_are_the_default_voice(url: str, alias: str) -> None:
    def speech(voice: str) -> np.ndarray:
        body = {"model": "tts-1", "voice": voice, "input": "您好，欢迎致电。", "response_format": "flac"}
        r = httpx.post(url + "/v1/audio/speech", json=body, timeout=120)
        assert r.status_code == 200, r.text
        return sf.read(io.BytesIO(r.content), dtype="int16")[0]

    default = speech("zhitian_emo")
    np.testing.assert_allclose(speech(alias), default, rtol=0, atol=1)  # to one int16 step
    assert not np.array_equal(speech("zhiyan_emo"), default)  # the test can tell voices apart


# ------------------------------------------------------------------ JSON fields, X-Audio-Duration
def test_json_fields_and_cache_flag(url: str) -> None:
    body = {"text": unique("字段测试"), "voice": "zhiyan_emo", "emotion": "happy"}
    first = tts_json(url, **body)
    second = tts_json(url, **body)
    ready = httpx.get(url + "/ready", timeout=60).json()
    for got in (first, second):
        assert (got["voice"], got["emotion"], got["timestamp_unit"]) == ("zhiyan_emo", "happy", "syllable")
        assert got["model_version"] == ready["model_version"] and len(got["model_version"]) >= 16
        assert all(u["emotion"] == "happy" for u in got["units"])
    assert (first["cached"], second["cached"]) == (False, True)
    assert first["audio_base64"] == second["audio_base64"]
    default = tts_json(url, text=unique("字段测试"))
    assert (default["voice"], default["emotion"]) == ("zhitian_emo", "neutral")


@pytest.mark.parametrize("fmt", ["wav", "flac", "mulaw", "mp3"])
def test_x_audio_duration_is_the_decoded_duration(url: str, fmt: str) -> None:
    r = tts(url, {"text": unique("时长测试"), "format": fmt})
    info = sf.info(io.BytesIO(r.content))
    samples = len(sf.read(io.BytesIO(r.content))[0])
    assert info.samplerate == int(r.headers["x-sample-rate"])
    slack = 0.06 if fmt == "mp3" else 1.0 / info.samplerate  # mp3 adds encoder delay/padding frames
    assert float(r.headers["x-audio-duration"]) == pytest.approx(samples / info.samplerate, abs=slack + 1e-3)


def test_syllable_timestamps_follow_the_predicted_frames(url: str) -> None:
    """One timestamp per syllable the model was given; each unit's syllables fill its predicted frames, and
    units are laid end to end with their pauses (the audio's duration)."""
    got = tts_json(url, text="您好，欢迎致电客服中心。请问有什么可以帮您？")
    stamps, units = got["timestamps"], got["units"]
    assert len(stamps) == sum(len(u["pinyin"]) for u in units)
    assert "".join(t["text"] for t in stamps) == "".join(u["text"] for u in units).replace("，", "")
    offset, i = 0.0, 0
    for u in units:
        speech = u["frames"] * HOP / SR
        mine = stamps[i : i + len(u["pinyin"])]
        i += len(u["pinyin"])
        assert mine[0]["start_s"] >= offset - 1e-3
        assert mine[-1]["end_s"] <= offset + speech + 1e-3
        # syllables cover most of the unit's frames (the rest: boundary/silence tokens)
        covered = sum(t["end_s"] - t["start_s"] for t in mine)
        assert 0.5 * speech < covered <= speech + 1e-3, (covered, speech)
        assert all(t["end_s"] > t["start_s"] for t in mine)
        offset += speech + u["pause_after_s"]
    assert got["duration_s"] == pytest.approx(offset, abs=2e-3)


# ------------------------------------------------------------------ streaming chunk sizes, G.711 streams
def test_stream_chunks_start_small_then_grow(url: str) -> None:
    """first_chunk_frames (4 in the test app) of audio first, then chunk_frames (8) doubling to 64."""
    r = post_chunks(
        url + "/api/tts",
        {"text": unique("流式分块测试，我们来看每一块的大小是否正确"), "stream": True, "format": "pcm"},
    )
    assert r.status == 200 and r.chunked, r.headers
    sizes = [len(c) // 2 for c in r.chunks if c]
    assert sizes[:5] == [4 * HOP, 8 * HOP, 16 * HOP, 32 * HOP, 64 * HOP], sizes[:8]


@pytest.mark.parametrize("fmt", ["ulaw_raw", "alaw_raw", "mulaw", "alaw"])
def test_g711_stream_decodes_to_the_whole_file(url: str, fmt: str) -> None:
    text = "您好，请问有什么可以帮您？"
    whole = tts(url, {"text": text, "format": fmt}).content
    with httpx.stream(
        "POST", url + "/api/tts", json={"text": text, "format": fmt, "stream": True}, timeout=120
    ) as r:
        assert r.status_code == 200 and r.headers["x-sample-rate"] == "8000"
        streamed = b"".join(r.iter_raw())

    def decode(data: bytes) -> np.ndarray:
        if fmt.endswith("_raw"):
            sub = "ULAW" if fmt.startswith("ulaw") else "ALAW"
            return sf.read(io.BytesIO(data), samplerate=8000, channels=1, format="RAW", subtype=sub)[0]
        audio, sr = sf.read(io.BytesIO(data))
        assert sr == 8000
        return audio

    a, b = decode(whole), decode(streamed)
    assert abs(len(a) - len(b)) <= 8, (len(a), len(b))
    n = min(len(a), len(b))
    # same audio up to G.711 quantisation of a streamed (chunk-by-chunk resampled) signal
    assert np.corrcoef(a[:n], b[:n])[0, 1] > 0.99
    assert np.abs(a[:n] - b[:n]).max() < 0.05


# ------------------------------------------------------------------ cache key parts
CACHE_VARIANTS = {
    "voice": {"voice": "zhiyan_emo"},
    "emotion": {"emotion": "happy"},
    "pitch": {"pitch": 2},
    "volume": {"volume": 0.5},
    "format": {"format": "flac"},
    "sample_rate": {"sample_rate": 8000},
    "emotion_intensity": {"emotion": "happy", "emotion_intensity": 0.5},
    "speaker": None,  # filled from /api/voices
}


@pytest.mark.parametrize("part", list(CACHE_VARIANTS))
def test_cache_key_parts_each_miss(url: str, part: str) -> None:
    base = {"text": unique("缓存键"), "format": "wav"}
    if part == "emotion_intensity":
        base["emotion"] = "happy"
    variant = CACHE_VARIANTS[part]
    if variant is None:
        voices = httpx.get(url + "/api/voices").json()["voices"]
        speakers = voices[0]["speakers"]
        assert len(speakers) >= 2, voices
        base["speaker"] = speakers[0]
        variant = {"speaker": speakers[1]}
    assert tts(url, base).headers["x-cache"] == "miss"
    assert tts(url, base).headers["x-cache"] == "hit"
    changed = tts(url, {**base, **variant})
    assert changed.headers["x-cache"] == "miss", part
    assert tts(url, {**base, **variant}).headers["x-cache"] == "hit"


def test_cache_zero_entries_is_off(url: str) -> None:
    """The ``limited`` app has cache_max_entries 0: the same request is synthesised every time."""
    body = {"text": "你好。", "format": "wav"}
    got = [post_limited(url, body) for _ in range(3)]
    ok = [r for r in got if r.status_code == 200]
    assert ok, [r.status_code for r in got]  # the short deadline may 504 one on a busy box
    assert all(r.headers["x-cache"] == "miss" for r in ok)
    main = [tts(url, body).headers["x-cache"] for _ in range(2)]
    assert main[-1] == "hit"  # the same request is cached where the cache is on


# ------------------------------------------------------------------ pipeline_below, max_concurrent_units
def _stage_calls(app: str) -> dict[str, float]:
    """Acoustic calls so far by method: ``stream`` (a unit pipelined chunk by chunk) and
    ``synthesize_batch`` (whole units, batched), from tts_stage_latency_ms on the metrics endpoint."""
    samples = scrape()
    return {
        m: total(samples, "ray_tts_stage_latency_ms_count", stage="acoustic", method=m, application=app)
        for m in ("stream", "synthesize_batch")
    }


def units_by_path(app_url: str, app: str, text: str, **headers: str) -> dict[str, float]:
    """How the units of one non-streamed request reached the acoustic stage (per method, from metrics)."""
    before = settled(lambda: _stage_calls(app))
    assert isinstance(before, dict)
    r = httpx.post(app_url + "/api/tts", json={"text": text, "format": "pcm"}, headers=headers, timeout=120)
    assert r.status_code == 200, r.text

    def delta() -> dict[str, float]:
        return {k: v - before[k] for k, v in _stage_calls(app).items()}

    wait_for(lambda: sum(delta().values()) >= 1, 30, "stage metrics exported")
    time.sleep(2.5)  # two more export periods: every call of this (finished) request is counted
    return delta()


FOUR_UNITS = "第一句话。第二句话。第三句话。第四句话。"


def test_pipeline_below_pipelines_only_the_first_units(url: str) -> None:
    """pipeline_below 2 (default): a lone unit is vocoded chunk by chunk as the decoder runs; of four
    concurrent units, two are pipelined and the others go whole through the batched calls."""
    one = units_by_path(url, "tts", unique("单句流水线"))
    assert one == {"stream": 1, "synthesize_batch": 0}, one
    four = units_by_path(url, "tts", FOUR_UNITS.replace("第一", unique("首")[:-1]))
    assert four["stream"] == 2 and four["synthesize_batch"] >= 1, four


# ------------------------------------------------------------------ Prometheus metric names
README_METRICS = {
    "ray_tts_stage_latency_ms_bucket": {"stage": "acoustic"},
    "ray_tts_stage_batch_size_bucket": {"stage": "vocoder"},
    "ray_tts_request_latency_ms_bucket": {},
    "ray_tts_rtf_bucket": {},
    "ray_tts_time_to_first_audio_ms_bucket": {},
    "ray_tts_audio_seconds_total": {},
    "ray_tts_cache_total": {"result": "hit"},
    "ray_tts_errors_total": {"kind": "timeout"},
}


def test_prometheus_metric_names_on_the_real_endpoint(url: str) -> None:
    body = {"text": unique("指标"), "format": "pcm"}
    tts(url, body)
    tts(url, body)  # a cache hit
    with httpx.stream("POST", url + "/api/tts", json={**body, "stream": True}, timeout=60) as r:
        b"".join(r.iter_raw())  # time to first audio
    slow = post_past_limited_deadline(url)  # tts_errors{kind="timeout"}
    assert slow.status_code == 504, slow.text

    def missing() -> list[str]:
        samples = scrape()
        return [
            name
            for name, labels in README_METRICS.items()
            if not any(all(lab.get(k) == v for k, v in labels.items()) for lab, _ in samples.get(name, []))
        ]

    wait_for(lambda: not missing(), 30, "every README metric exported")


# ------------------------------------------------------------ throwaway app: auth, log_text, bf16, no cache
KEY_NAME, KEY_VALUE = "callcenter", "cc-" + "5e1f0c9a7b3d2e4f6a8b"
CLAIMS_APP = "claims"


def claims_args(model_dir: str, max_batch_size: int = 1) -> dict:
    return {
        "model_dir": model_dir,
        "threads": {"frontend": 1, "acoustic": 1, "vocoder": 1},
        "vocoder_precision": "bf16",
        "ingress": {
            "cache_max_entries": 0,
            "log_text": True,
            "ready_timeout_s": 2.0,
            "retry": {"max_attempts": 1},
            "security": {"auth_enabled": True, "keys": f"{KEY_NAME}:{KEY_VALUE}"},
            "limits": {"max_concurrent_units": 1},
        },
        "options": {
            **{n: stage_options(num_replicas=1) for n in ("TTSIngress", *rel.STAGES)},
            "SambertAcoustic": stage_options(
                num_replicas=1,
                user_config={"max_batch_size": max_batch_size, "batch_wait_timeout_s": 0.05},
            ),
        },
    }


def deploy_pinned(name: str, args: dict) -> None:
    """Deploy ``build_app(args)`` with a fixed code version on every deployment, as a config-file deploy
    (``serve deploy``, KubeRay) has: Serve then applies a ``user_config``-only change in place. (A Python
    redeploy otherwise gets a fresh random version, i.e. new replicas.) Ray 2.60 removed the public
    ``version`` option; the private attribute is what its deploy path reads."""
    from ray import serve
    from ray.serve.deployment import Application

    from serve_app.graph import build_app
    from tests.conftest import _wait_running

    def pin(app: Application) -> None:
        deployment = app._bound_deployment
        deployment._version = f"{name}-pinned"
        for arg in [*deployment.init_args, *deployment.init_kwargs.values()]:
            if isinstance(arg, Application):
                pin(arg)

    app = build_app(args)
    pin(app)
    serve._run(app, name=name, route_prefix=f"/{name}", _blocking=False)
    _wait_running(name, 180)


@pytest.fixture(scope="module")
def claims(serve_instance) -> Iterator[str]:  # type: ignore[no-untyped-def]
    deploy_pinned(CLAIMS_APP, claims_args(str(serve_instance.model_dir)))
    try:
        yield serve_instance.url + f"/{CLAIMS_APP}"
    finally:
        undeploy(CLAIMS_APP)


AUTH = {"authorization": f"Bearer {KEY_VALUE}"}


@pytest.mark.slow
def test_bf16_is_in_the_model_version_and_changes_the_audio(url: str, claims: str) -> None:
    fp32 = httpx.get(url + "/ready", timeout=60).json()["model_version"]
    bf16 = httpx.get(claims + "/ready", timeout=60).json()["model_version"]
    assert bf16 == fp32 + "+bf16"
    text = "您好，欢迎致电。"
    a = tts(url, {"text": text, "format": "pcm"}).content
    r = httpx.post(claims + "/api/tts", json={"text": text, "format": "pcm"}, headers=AUTH, timeout=120)
    assert r.status_code == 200, r.text
    x = np.frombuffer(a, "<i2").astype(np.float64) / 32767
    y = np.frombuffer(r.content, "<i2").astype(np.float64) / 32767
    assert len(x) == len(y)
    err = np.abs(x - y).max()
    from engine.hifigan.layers import bf16_hardware  # this machine's CPU is the replicas' CPU

    if bf16_hardware():
        assert 0 < err < 0.05, err  # different arithmetic, same speech (README: max error ~1e-2)
    else:  # README: without bf16 instructions the oneDNN backend runs fp32, output equal to fp32
        assert err == 0, err


@pytest.mark.slow
def test_max_concurrent_units_one_runs_units_one_at_a_time(claims: str) -> None:
    """max_concurrent_units 1: the units of a request never overlap, so each is alone in flight and
    pipelined (the shared app, at 4, sends the 3rd and 4th whole: test_pipeline_below...)."""
    got = units_by_path(claims, CLAIMS_APP, FOUR_UNITS.replace("第一", unique("首")[:-1]), **AUTH)
    assert got == {"stream": 4, "synthesize_batch": 0}, got


@pytest.mark.slow
def test_only_the_key_name_is_logged_and_log_text_logs_text(claims: str) -> None:
    text = unique("日志测试")
    ok = httpx.post(claims + "/api/tts", json={"text": text}, headers=AUTH, timeout=120)
    assert ok.status_code == 200, ok.text
    wrong = "cc-" + "0000000000deadbeef00"
    bad = httpx.post(claims + "/api/tts", json={"text": text}, headers={"x-api-key": wrong}, timeout=60)
    assert bad.status_code == 401

    def logged() -> str:
        return serve_log_text(CLAIMS_APP, "TTSIngress")

    wait_for(lambda: text in logged(), 20, "log_text: the request text in the ingress log")
    log_text = logged()
    assert KEY_NAME in log_text
    assert KEY_VALUE not in log_text and wrong not in log_text


@pytest.mark.slow
def test_log_text_off_never_logs_the_text(url: str) -> None:
    text = unique("默认不记录")
    tts(url, {"text": text})
    time.sleep(2)
    assert "默认不记录" not in serve_log_text("tts", "TTSIngress")


def _acoustic_batches(calls: int) -> tuple[float, float]:
    """Send ``calls`` concurrent acoustic calls to the claims app: (batches, batches of more than one)."""
    from ray import serve

    from engine.messages import SynthesisRequest
    from engine.orchestrator import acoustic_input

    frontend = serve.get_deployment_handle("TextFrontend", app_name=CLAIMS_APP)
    acoustic = serve.get_deployment_handle("SambertAcoustic", app_name=CLAIMS_APP)
    inp = acoustic_input(frontend.process.remote(SynthesisRequest("批处理测试。")).result()[0])

    def stats() -> tuple[float, float]:
        return batch_counts("acoustic", application=CLAIMS_APP)

    before = settled(stats)
    assert isinstance(before, tuple)
    for f in [acoustic.synthesize.remote(None, inp) for _ in range(calls)]:
        f.result()
    wait_for(lambda: stats()[0] > before[0], 30, "batch metrics exported")
    after = settled(stats)
    assert isinstance(after, tuple)
    return after[0] - before[0], after[1] - before[1]


@pytest.mark.slow
def test_user_config_changes_max_batch_size_live(serve_instance, claims: str) -> None:  # type: ignore[no-untyped-def]
    """``user_config {max_batch_size}`` applies without a restart: same replica, batches 1 -> up to 8."""
    replicas = rel.replica_names(CLAIMS_APP, "SambertAcoustic")
    batches, several = _acoustic_batches(8)
    assert (batches, several) == (8, 0)  # max_batch_size 1: every call alone
    deploy_pinned(CLAIMS_APP, claims_args(str(serve_instance.model_dir), max_batch_size=8))
    time.sleep(3)  # the controller pushes the new user_config to the running replica
    assert rel.replica_names(CLAIMS_APP, "SambertAcoustic") == replicas  # reconfigured, not restarted
    batches, several = _acoustic_batches(8)
    assert 1 <= batches < 8 and several >= 1  # batches of more than one call now form


@pytest.mark.slow
def test_ready_is_503_while_a_stage_is_broken(claims: str) -> None:
    assert httpx.get(claims + "/ready", timeout=60).status_code == 200
    rel.kill_replica(CLAIMS_APP, "HifiGanVocoder")
    r = httpx.get(claims + "/ready", timeout=60)
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "not_ready"
    # and ready again once Serve has replaced the vocoder replica
    wait_for(lambda: httpx.get(claims + "/ready", timeout=60).status_code == 200, 120, "/ready back to 200")
