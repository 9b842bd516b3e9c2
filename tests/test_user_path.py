"""A new user's first hour, through the interfaces they use: the seeds' request shapes and response mode,
the official OpenAI SDK (streaming and SSE), a client generated from our OpenAPI document, schemathesis'
own CLI, and the error shapes. Runs on the shared Serve instance (tiny random model)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.conftest import post_limited

pytestmark = pytest.mark.serve

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LONG = "您好，这里是客服中心。您的订单已经发货，预计明天下午送达。请保持电话畅通，谢谢您的耐心等待。"


@pytest.fixture(scope="module")
def url(serve_instance) -> str:  # type: ignore[no-untyped-def]
    return serve_instance.url


def wav_samples(data: bytes) -> np.ndarray:
    audio, _ = sf.read(io.BytesIO(data), dtype="int16")
    return audio


# ------------------------------------------------------------------ the seeds' clients, unchanged
@pytest.mark.parametrize(
    ("alias", "emotion"), [("normal", "neutral"), ("普通", "neutral"), ("开心", "happy"), ("悲伤", "sad"),
                           ("愤怒", "angry"), ("Happy", "happy")],
)  # fmt: skip
def test_seed_emotion_aliases(url: str, alias: str, emotion: str) -> None:
    # seed 002's request: curl -X POST /tts -d '{"text":"你好","emotion":"normal","speed":1.0}'
    got = httpx.post(url + "/tts", json={"text": "你好", "emotion": alias, "speed": 1.0}, timeout=60)
    assert got.status_code == 200, got.text
    same = httpx.post(url + "/tts", json={"text": "你好", "emotion": emotion, "speed": 1.0}, timeout=60)
    np.testing.assert_allclose(wav_samples(got.content), wav_samples(same.content), rtol=0, atol=1)  # 1 step


def test_unknown_emotion_lists_names_and_aliases(url: str) -> None:
    r = httpx.post(url + "/api/tts", json={"text": "你好", "emotion": "ecstatic"}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "unknown_emotion"
    message = r.json()["error"]["message"]
    assert "'happy'" in message and "开心" in message and "normal" in message


@pytest.mark.parametrize("path", ["/api/tts", "/tts"])
def test_seed_url_response_mode(url: str, path: str) -> None:
    # seed 002's API: requests.post(url, json={...}).json()["wav_url"], then GET it
    r = httpx.post(
        url + path, json={"text": "您的订单已发货。", "emotion": "normal", "response": "url"}, timeout=60
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["wav_url"].startswith("/audio/") and body["wav_url"].endswith(".wav")
    got = httpx.get(url + body["wav_url"], timeout=60)
    assert got.status_code == 200 and got.headers["content-type"] == "audio/wav"
    direct = httpx.post(url + path, json={"text": "您的订单已发货。", "emotion": "normal"}, timeout=60)
    np.testing.assert_allclose(wav_samples(got.content), wav_samples(direct.content), rtol=0, atol=1)
    assert len(wav_samples(got.content)) / 16000 == pytest.approx(body["duration_s"], abs=1e-3)


@pytest.mark.parametrize("name", ["AAAAAAAAAAAAAAAAAAAAAA.wav", "../../etc/passwd", "x.wav", "%2e%2e%2fetc"])
def test_unknown_audio_is_404(url: str, name: str) -> None:
    r = httpx.get(url + "/audio/" + name, timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_stored_audio_expires(url: str) -> None:
    r = post_limited(url, {"text": "你好", "response": "url"})
    assert r.status_code == 200, r.text
    link = url + "/limited" + r.json()["wav_url"]
    assert httpx.get(link, timeout=30).status_code == 200
    time.sleep(1.3)  # the limited app's audio_store.ttl_s is 1
    assert httpx.get(link, timeout=30).status_code == 404


# ------------------------------------------------------------------ OpenAI SDK: streaming and SSE
def test_openai_speech_streams_like_api_tts(url: str) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")

    def first_and_total(chunks: object) -> tuple[float, float, bytes]:
        start, first, data = time.perf_counter(), None, b""
        for chunk in chunks:  # type: ignore[attr-defined]
            if chunk and first is None:
                first = time.perf_counter() - start
            data += chunk
        return first or 0.0, time.perf_counter() - start, data

    kw = {"model": "tts-1", "voice": "alloy", "input": LONG, "response_format": "pcm"}
    with client.audio.speech.with_streaming_response.create(**kw) as resp:
        assert resp.headers.get("transfer-encoding") == "chunked"
        o_first, o_total, o_data = first_and_total(resp.iter_bytes(4096))
    body = {"text": LONG, "format": "pcm", "sample_rate": 24000, "stream": True}
    with httpx.stream("POST", url + "/api/tts", json=body, timeout=120) as r:
        a_first, a_total, a_data = first_and_total(r.iter_raw())
    print(f"first byte: /v1/audio/speech {o_first * 1000:.0f} ms of {o_total:.2f} s; "
          f"/api/tts {a_first * 1000:.0f} ms of {a_total:.2f} s")  # fmt: skip
    assert len(o_data) == len(a_data) > 24000  # same audio (to one int16 step), 24 kHz s16le as OpenAI pcm
    o_pcm, a_pcm = (np.frombuffer(d, "<i2").astype(int) for d in (o_data, a_data))
    assert np.abs(o_pcm - a_pcm).max() <= 1
    assert o_first < 0.5 * o_total  # audio flows before synthesis has finished


def test_openai_sse_stream_format(url: str) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")
    kw = {"model": "tts-1", "voice": "alloy", "input": LONG, "response_format": "pcm"}
    with client.audio.speech.with_streaming_response.create(**kw, stream_format="sse") as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[5:]) for line in resp.iter_lines() if line.startswith("data:")]
    assert [e["type"] for e in events[-1:]] == ["speech.audio.done"] and len(events) > 3
    audio = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    whole = client.audio.speech.create(**kw).content
    assert len(audio) == len(whole)  # same audio to one int16 step (batching changes float rounding)
    diff = np.abs(np.frombuffer(audio, "<i2").astype(int) - np.frombuffer(whole, "<i2").astype(int))
    assert diff.max() <= 1
    mp3 = client.audio.speech.with_streaming_response.create(
        **{**kw, "response_format": "mp3"}, stream_format="sse"
    )
    with mp3 as resp:  # not streamable: the whole file in one delta
        events = [json.loads(line[5:]) for line in resp.iter_lines() if line.startswith("data:")]
    assert [e["type"] for e in events] == ["speech.audio.delta", "speech.audio.done"]
    assert sf.info(io.BytesIO(base64.b64decode(events[0]["audio"]))).format == "MP3"


# ------------------------------------------------------------------ errors and the OpenAPI document
def test_errors_never_show_class_paths(url: str) -> None:
    r = httpx.post(url + "/api/tts", json={"text": "<speak><foo>你好</foo></speak>"}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_text"
    message = r.json()["error"]["message"]
    assert message.startswith("invalid SSML: unsupported element <foo>")
    assert "engine." not in message and "Error" not in message and "Traceback" not in message


def test_405_carries_allow(url: str) -> None:
    r = httpx.get(url + "/api/tts", timeout=30)
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["error"]["code"] == "method_not_allowed"


def test_schemathesis_cli_all_checks_pass(url: str) -> None:
    """What a new user runs: `st run <service>/openapi.json --checks all` (repo root: schemathesis.toml)."""
    cmd = [str(BIN / "st"), "run", url + "/openapi.json", "--checks", "all", "-n", "8", "--seed", "7",
           "--request-timeout", "60", "--workers", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "passed" in proc.stdout


def test_generated_python_client(url: str, tmp_path: Path) -> None:
    """A client generated from /openapi.json by openapi-python-client calls the service with typed models."""
    (tmp_path / "openapi.json").write_bytes(httpx.get(url + "/openapi.json", timeout=30).content)
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    gen = subprocess.run(
        [str(BIN / "openapi-python-client"), "generate", "--path", "openapi.json", "--meta", "none",
         "--output-path", "tts_client"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stdout + gen.stderr
    script = f"""
from tts_client import Client
from tts_client.api.compat import stored_audio_audio_name_get
from tts_client.api.tts import list_voices_api_voices_get, tts_api_tts_post
from tts_client.models import TTSJSONResponse, TTSRequest, TTSURLResponse
from tts_client.models.tts_request_response_type_0 import TTSRequestResponseType0

client = Client(base_url={url!r}, timeout=120)
voices = list_voices_api_voices_get.sync(client=client)
assert voices.random_weights is True and voices.limits.pitch == [-12.0, 12.0]
json_res = tts_api_tts_post.sync(client=client, body=TTSRequest(text="你好，世界。", pitch=2.0,
                                                              response=TTSRequestResponseType0.JSON))
assert isinstance(json_res, TTSJSONResponse) and json_res.units[0].pitch == 2.0, json_res
url_body = TTSRequest(text="你好", response=TTSRequestResponseType0.URL)
url_res = tts_api_tts_post.sync(client=client, body=url_body)
assert isinstance(url_res, TTSURLResponse), url_res
name = url_res.wav_url.rsplit("/", 1)[1]
audio = stored_audio_audio_name_get.sync_detailed(name=name, client=client)
assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
print("ok", len(json_res.timestamps))
"""
    run = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0 and run.stdout.startswith("ok"), run.stdout + run.stderr
