"""Serving integration tests through real HTTP on the shared Serve instance (tiny random model)."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

from engine.audio import FORMATS
from tests._observe import batch_counts, post_chunks, settled, wait_for
from tests.conftest import post_limited, post_past_limited_deadline

pytestmark = pytest.mark.serve

TEXT = "今天天气真不错。我们去公园散步吧！"


@pytest.fixture(scope="module")
def url(serve_instance) -> str:  # type: ignore[no-untyped-def]
    return serve_instance.url


def _post(url: str, path: str, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(url + path, json=body, headers=headers, timeout=60)


def _decode(data: bytes, fmt: str, rate: int) -> tuple[np.ndarray, int]:
    if fmt == "pcm":
        return np.frombuffer(data, "<i2").astype(np.float32) / 32767, rate
    if fmt in ("ulaw_raw", "alaw_raw"):
        sub = "ULAW" if fmt == "ulaw_raw" else "ALAW"
        y, _ = sf.read(io.BytesIO(data), samplerate=rate, channels=1, format="RAW", subtype=sub)
        return y, rate
    return sf.read(io.BytesIO(data))


# ------------------------------------------------------------------ ops endpoints
def test_health_ready_docs(url: str) -> None:
    assert httpx.get(url + "/health").json() == {"status": "healthy"}
    ready = httpx.get(url + "/ready", timeout=30)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    spec = httpx.get(url + "/openapi.json").json()
    for path in ("/api/tts", "/tts", "/v1/audio/speech", "/api/voices", "/health", "/ready"):
        assert path in spec["paths"], path
    assert httpx.get(url + "/docs").status_code == 200


def test_voices_lists_voices_emotions_formats_limits(url: str) -> None:
    body = httpx.get(url + "/api/voices").json()
    names = [v["name"] for v in body["voices"]]
    assert names == ["zhitian_emo", "zhiyan_emo"] and body["voices"][0]["default"]
    assert "neutral" in body["emotions"] and "happy" in body["emotions"]
    assert {f["name"] for f in body["formats"]} == set(FORMATS)
    assert body["limits"]["max_text_chars"] == 600 and body["sample_rate"] == 16000


def test_webui_is_served_without_cdn(url: str) -> None:
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "<audio" in page.text and "api/tts" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no external assets


# ------------------------------------------------------------------ formats
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_decodes(url: str, fmt: str) -> None:
    r = _post(url, "/api/tts", {"text": "你好，世界。", "format": fmt})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith(FORMATS[fmt].media_type.split(";")[0])
    expected = FORMATS[fmt].fixed_rate or 16000  # telephony formats are 8 kHz, the rest the model's rate
    assert int(r.headers["x-sample-rate"]) == expected
    audio, sr = _decode(r.content, fmt, expected)
    assert sr == expected
    # the decoded length at that rate is the audio's duration (a wrong rate would stretch or squeeze it)
    slack = 0.06 if fmt in ("mp3", "ogg", "opus") else 2 / expected  # codec delay/padding frames
    assert len(audio) / expected == pytest.approx(float(r.headers["x-audio-duration"]), abs=slack + 1e-3)


def test_telephony_mulaw_is_8k_g711(url: str) -> None:
    r = _post(url, "/api/tts", {"text": "您好，请问有什么可以帮您？", "format": "mulaw"})
    info = sf.info(io.BytesIO(r.content))
    assert (info.samplerate, info.subtype, info.channels) == (8000, "ULAW", 1)


def test_resampled_output_rate(url: str) -> None:
    r = _post(url, "/api/tts", {"text": "你好。", "format": "flac", "sample_rate": 48000})
    assert sf.info(io.BytesIO(r.content)).samplerate == 48000


def test_json_response_has_audio_and_timestamps(url: str) -> None:
    r = _post(url, "/api/tts", {"text": TEXT, "emotion": "happy"}, accept="application/json")
    assert r.status_code == 200, r.text
    body = r.json()
    audio, sr = sf.read(io.BytesIO(base64.b64decode(body["audio_base64"])))
    assert sr == body["sample_rate"] == 16000
    assert abs(len(audio) / sr - body["duration_s"]) < 0.01
    stamps = body["timestamps"]
    assert len(stamps) >= 10
    assert all(s["end_s"] >= s["start_s"] for s in stamps)
    assert all(a["start_s"] <= b["start_s"] for a, b in itertools.pairwise(stamps))
    assert stamps[-1]["end_s"] <= body["duration_s"] + 1e-3


def test_speed_changes_duration(url: str) -> None:
    slow = _post(url, "/api/tts", {"text": TEXT, "speed": 0.5}, accept="application/json").json()
    fast = _post(url, "/api/tts", {"text": TEXT, "speed": 2.0}, accept="application/json").json()
    assert slow["duration_s"] > 1.5 * fast["duration_s"]


def test_volume_scales_signal(url: str) -> None:
    loud, _ = sf.read(io.BytesIO(_post(url, "/api/tts", {"text": "你好。", "volume": 1.0}).content))
    quiet, _ = sf.read(io.BytesIO(_post(url, "/api/tts", {"text": "你好。", "volume": 0.25}).content))
    assert np.abs(quiet).max() < 0.3 * np.abs(loud).max() + 1e-3


# ------------------------------------------------------------------ compat endpoints
def test_seed_request_shape_returns_wav(url: str) -> None:
    r = _post(url, "/tts", {"text": "你好，世界。", "emotion": "happy", "speed": 1.2})
    assert r.status_code == 200 and r.headers["content-type"].startswith("audio/wav")
    audio, sr = sf.read(io.BytesIO(r.content))
    assert sr == 16000 and len(audio) > 0


def test_openai_sdk_against_service(url: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="not-needed", max_retries=0)
    resp = client.audio.speech.create(
        model="sambert-hifigan",
        voice="alloy",
        input="你好，欢迎使用。",
        response_format="wav",
        instructions="Speak in a happy, cheerful tone.",
    )
    audio, sr = sf.read(io.BytesIO(resp.content))
    assert sr == 16000 and len(audio) > 0
    pcm = client.audio.speech.create(model="tts-1", voice="zhiyan_emo", input="你好。", response_format="pcm")
    assert len(pcm.content) % 2 == 0 and len(pcm.content) > 0
    mp3 = client.audio.speech.create(model="tts-1", voice="nova", input="你好。")  # default mp3
    assert sf.info(io.BytesIO(mp3.content)).format == "MP3"


# ------------------------------------------------------------------ validation → 4xx JSON
@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"text": ""}, 422, "invalid_request"),
        ({"text": "你好", "speed": 9}, 422, "invalid_request"),
        ({"text": "你好", "volume": -1}, 422, "invalid_request"),
        ({"text": "你好", "pitch": 13}, 422, "invalid_request"),
        ({"text": "你好", "emotion_intensity": 2.5}, 422, "invalid_request"),
        ({"text": "你好", "speaker": "nobody"}, 400, "unknown_speaker"),
        ({"text": "你好", "voice": "nobody"}, 400, "unknown_voice"),
        ({"text": "你好", "emotion": "ecstatic"}, 400, "unknown_emotion"),
        ({"text": "你好", "format": "aac"}, 400, "unsupported_format"),
        ({"text": "你好", "format": "opus", "sample_rate": 22050}, 400, "unsupported_format"),
        ({"text": "你好", "format": "flac", "stream": True}, 400, "unsupported_format"),
        ({"text": "你好", "unknown_field": 1}, 422, "invalid_request"),
        ({"text": "好" * 601}, 413, "text_too_long"),
    ],
)
def test_bad_requests_get_json_errors(url: str, body: dict, status: int, code: str) -> None:
    r = _post(url, "/api/tts", body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_malformed_json_and_unknown_route_are_json(url: str) -> None:
    r = httpx.post(url + "/api/tts", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "error" in r.json()
    r = httpx.get(url + "/nope")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


# ------------------------------------------------------------------ long text, cache
def test_long_text_is_split_and_ordered(url: str) -> None:
    text = "第一句话。第二句话比较长一些，对吧？第三句！" * 6
    r = _post(url, "/api/tts", {"text": text}, accept="application/json")
    assert r.status_code == 200, r.text
    stamps = r.json()["timestamps"]
    starts = [s["start_s"] for s in stamps]
    assert starts == sorted(starts) and len(stamps) >= 60


def test_cache_hit_on_repeat(url: str) -> None:
    body = {"text": f"缓存测试{time.time_ns()}。", "format": "wav"}
    first = _post(url, "/api/tts", body)
    second = _post(url, "/api/tts", body)
    assert first.headers["x-cache"] == "miss" and second.headers["x-cache"] == "hit"
    assert first.content == second.content
    third = _post(url, "/api/tts", {**body, "speed": 1.1})
    assert third.headers["x-cache"] == "miss"


# ------------------------------------------------------------------ streaming
def test_streaming_delivers_chunks_before_completion(url: str) -> None:
    """A chunked body whose first HTTP chunk is first_chunk_frames (4 in the test app) of audio, sent before
    the rest exists: a buffered body (Content-Length, or one chunk split by TCP) fails here."""
    text = "流式合成应该在整句完成之前就开始输出音频，这样用户可以更快地听到声音。"
    r = post_chunks(url + "/api/tts", {"text": text, "stream": True, "format": "pcm"})
    assert r.status == 200 and r.chunked and "content-length" not in r.headers, r.headers
    assert int(r.headers["x-sample-rate"]) == 16000
    sizes = [len(c) for c in r.chunks if c]
    assert len(sizes) >= 5 and sizes[0] == 4 * 200 * 2, sizes  # 4 frames x hop 200 x s16
    # the first chunk left the server while the decoder was still producing the rest
    assert r.arrivals[0] < r.arrivals[-1] - 0.05, r.arrivals
    # streamed audio is the non-streamed synthesis of the same text
    whole = _post(url, "/api/tts", {"text": text, "format": "pcm"}).content
    assert len(r.body) == len(whole)
    got = np.frombuffer(r.body, "<i2").astype(np.int32)
    assert np.abs(got - np.frombuffer(whole, "<i2")).max() <= 2


def test_streaming_wav_decodes(url: str) -> None:
    with httpx.stream(
        "POST", url + "/api/tts", json={"text": "你好，世界。", "stream": True}, timeout=60
    ) as r:
        data = b"".join(r.iter_raw())
    audio, sr = sf.read(io.BytesIO(data))
    assert sr == 16000 and len(audio) > 0


# ------------------------------------------------------------------ batching
def test_batched_equals_single(serve_instance) -> None:  # type: ignore[no-untyped-def]
    from ray import serve

    from engine.messages import SynthesisRequest, VocodeRequest
    from engine.orchestrator import acoustic_input

    frontend = serve.get_deployment_handle("TextFrontend", app_name="tts")
    acoustic = serve.get_deployment_handle("SambertAcoustic", app_name="tts")
    vocoder = serve.get_deployment_handle("HifiGanVocoder", app_name="tts")
    texts = ["你好。", "今天天气真不错。", "我们去公园散步吧！", "好的。"]
    reqs = [acoustic_input(frontend.process.remote(SynthesisRequest(t)).result()[0]) for t in texts]
    single = [acoustic.synthesize.remote(None, r).result() for r in reqs]
    before = settled(lambda: batch_counts("acoustic", application="tts"))
    assert isinstance(before, tuple)
    batched = [f.result() for f in [acoustic.synthesize.remote(None, r) for r in reqs * 2]][: len(reqs)]
    # some batch held more than one call: the batch sizes observed since `before` sum to more than the
    # number of batches (metrics are exported periodically: bounded wait)
    wait_for(
        lambda: _more_batches_of_several("acoustic", before, len(reqs) * 2),
        30,
        "acoustic batch of more than one call",
    )
    for a, b in zip(single, batched, strict=True):
        np.testing.assert_array_equal(a.durations, b.durations)
        np.testing.assert_allclose(a.mel, b.mel, atol=1e-4)
    voc_single = [vocoder.vocode.remote(VocodeRequest(a.mel)).result() for a in single]
    before = settled(lambda: batch_counts("vocoder", application="tts"))
    assert isinstance(before, tuple)
    calls = [vocoder.vocode.remote(VocodeRequest(a.mel)) for a in single * 2]
    voc_batched = [f.result() for f in calls][: len(single)]
    wait_for(
        lambda: _more_batches_of_several("vocoder", before, len(single) * 2),
        30,
        "vocoder batch of more than one call",
    )
    for a, b in zip(voc_single, voc_batched, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def _more_batches_of_several(stage: str, before: tuple[float, float], calls: int) -> bool:
    """Every call's batch is exported and at least one batch held more than one call."""
    after = batch_counts(stage, application="tts")
    return after[0] > before[0] and after[1] > before[1]


# ------------------------------------------------------------------ backpressure, timeout
def test_backpressure_gives_429_with_retry_after(url: str) -> None:
    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            body = {"text": "排队测试。" * 20}
            return await asyncio.gather(
                *[client.post(url + "/limited/api/tts", json=body) for _ in range(12)]
            )

    start = time.perf_counter()
    responses = asyncio.run(burst())
    rejected = [r for r in responses if r.status_code in (429, 503)]
    assert rejected, [r.status_code for r in responses]
    for r in rejected:
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["error"]["code"] == "overloaded"
    assert time.perf_counter() - start < 30


def test_deadline_gives_json_504(url: str) -> None:
    r = post_past_limited_deadline(url)
    assert r.status_code == 504, r.text
    assert r.json()["error"]["code"] == "timeout"


def test_streamed_deadline_aborts_the_body_instead_of_ending_cleanly(url: str) -> None:
    """Headers are already sent when a stream hits its deadline: the body must be cut, not completed."""
    sentence, repeat = "这是一个很长的句子，用来测试流式请求在中途超时的处理。", 70
    text = sentence * repeat  # 1890 characters: far more audio than the tiny model makes in 0.25 s
    # One sentence's audio, from the main app (same model; CI once took a 93-byte error body for it).
    whole = httpx.post(url + "/api/tts", json={"text": sentence, "format": "pcm"}, timeout=60)
    assert whole.status_code == 200, whole.text
    one = len(whole.content)
    body = {"text": text, "stream": True, "format": "pcm"}
    statuses: list[int | None] = []
    for _ in range(5):  # bounded: on a slow or busy box the deadline may strike before the first audio
        # Each attempt after a one-sentence request to the limited app: it warms this sentence's shapes
        # (oneDNN builds primitives per new length) and waits out calls that earlier timed-out requests left
        # in its tiny queues. On a busy box it may miss the 0.25 s deadline itself (504): it still warms.
        post_limited(url, {"text": sentence, "format": "pcm"})
        received, status = 0, None
        try:
            with httpx.stream("POST", url + "/limited/api/tts", json=body, timeout=60) as r:
                status = r.status_code
                if status == 200:
                    for chunk in r.iter_raw():
                        received += len(chunk)
        except (httpx.RemoteProtocolError, httpx.ReadError):
            assert status == 200
            break  # the body was cut
        # 504: the deadline struck first; 429/503: earlier timed-out calls still fill the tiny queues
        assert status in (429, 503, 504), f"a stream past its deadline ended cleanly (status {status})"
        statuses.append(status)
        time.sleep(1.0)
    else:
        pytest.fail(f"in 5 attempts the deadline always struck before the first audio: {statuses}")
    # Usually far less than the whole text's audio arrived; on a fast box the tiny model may have sent all of
    # it before the deadline struck the request's end, and then too the body is aborted, never ended cleanly.
    assert received <= one * repeat


def test_vocode_chunk_state_round_trip_equals_whole(serve_instance) -> None:  # type: ignore[no-untyped-def]
    """Chunks whose vocoder state travels through the caller equal one whole-utterance vocode call."""
    from ray import serve

    from engine.messages import VocodeChunk, VocodeRequest

    vocoder = serve.get_deployment_handle("HifiGanVocoder", app_name="tts")
    assert vocoder.info.remote().result()["stateful_stream"] == 1
    mel = np.random.default_rng(0).standard_normal((45, 80)).astype(np.float32)
    whole = vocoder.vocode.remote(VocodeRequest(mel)).result()
    pieces, state, pos = [], None, 0
    for n in (8, 32, 5):
        res = vocoder.vocode_chunk.remote(VocodeChunk(mel[pos : pos + n], state, pos + n == 45)).result()
        pieces.append(res.audio)
        state, pos = res.state, pos + n
    assert state is None
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-5)


@pytest.mark.parametrize("stream", [False, True], ids=["pipelined", "streamed"])
def test_served_audio_equals_the_engine(serve_instance, stream: bool) -> None:  # type: ignore[no-untyped-def]
    """One client: the chunk-pipelined and the streamed paths give the Ray-free engine's audio."""
    from engine.synthesizer import Synthesizer

    text = f"引擎一致性测试{'流式' if stream else '整句'}。"
    body = {"text": text, "format": "pcm", "stream": stream}
    got = np.frombuffer(_post(serve_instance.url, "/api/tts", body).content, "<i2") / 32767
    expected = Synthesizer(str(serve_instance.model_dir), threads=1).synthesize(text).audio
    assert len(got) == len(expected)
    np.testing.assert_allclose(got, np.clip(expected, -1, 1), atol=2e-4)
