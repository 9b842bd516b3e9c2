"""Every control the README claims, sent the way a user sends it (HTTP JSON, SSML, OpenAI SDK), and checked
for its *effect* on the output: frames and predicted F0 reported by the model, RMS, silence, readings, audio.

Runs on the shared Serve instance (tiny random model). ``units`` in the JSON response is what the acoustic
model was given and predicted per unit (see README "Controls").
"""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
import soundfile as sf

from engine.controls import PITCH_UNITS_PER_SEMITONE

pytestmark = pytest.mark.serve

TEXT = "今天天气真不错，我们去公园散步吧。"


@pytest.fixture(scope="module")
def url(serve_instance) -> str:  # type: ignore[no-untyped-def]
    return serve_instance.url


def same_audio(a: np.ndarray, b: np.ndarray) -> None:
    """Two served requests give the same audio to one int16 step: the acoustic stage batches utterances
    continuously and the vocoder runs the chunks it gets, so float rounding depends on what ran beside them
    (bit-exact properties are tested on the engine, e.g. tests/test_sambert_infer.py)."""
    np.testing.assert_allclose(a, b, rtol=0, atol=1)


def tts_json(url: str, **body: object) -> dict:
    r = httpx.post(url + "/api/tts", json=body, headers={"Accept": "application/json"}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def pcm(url: str, **body: object) -> np.ndarray:
    r = httpx.post(url + "/api/tts", json={"format": "pcm", **body}, timeout=120)
    assert r.status_code == 200, r.text
    return np.frombuffer(r.content, "<i2").astype(np.float64)


def wav(url: str, **body: object) -> np.ndarray:
    r = httpx.post(url + "/api/tts", json={"format": "wav", **body}, timeout=120)
    assert r.status_code == 200, r.text
    data, _ = sf.read(io.BytesIO(r.content), dtype="int16")
    return data.astype(np.float64)


def audio_of(resp: dict) -> np.ndarray:
    data, _ = sf.read(io.BytesIO(base64.b64decode(resp["audio_base64"])), dtype="int16")
    return data.astype(np.float64)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def speak(inner: str) -> str:
    return f"<speak>{inner}</speak>"


# ------------------------------------------------------------------ rate / speed
@pytest.mark.parametrize(
    "slow",
    [{"text": speak(f'<prosody rate="50%">{TEXT}</prosody>')}, {"text": TEXT, "speed": 0.5}],
    ids=["ssml-rate-50%", "request-speed-0.5"],
)
def test_rate_half_doubles_the_frames_the_model_predicts(url: str, slow: dict) -> None:
    base = tts_json(url, text=TEXT)
    got = tts_json(url, **slow)
    ratio = sum(u["frames"] for u in got["units"]) / sum(u["frames"] for u in base["units"])
    assert ratio == pytest.approx(2.0, rel=0.05)
    assert got["units"][0]["rate"] == pytest.approx(0.5)
    pauses = sum(u["pause_after_s"] for u in base["units"])
    assert (got["duration_s"] - pauses) / (base["duration_s"] - pauses) == pytest.approx(2.0, rel=0.05)


def test_nested_rates_multiply(url: str) -> None:
    text = speak(f'<prosody rate="50%"><prosody rate="+100%">{TEXT}</prosody></prosody>')
    got = tts_json(url, text=text, speed=1.5)
    assert got["units"][0]["rate"] == pytest.approx(1.5)  # 1.5 × 0.5 × 2


# ------------------------------------------------------------------ pitch
@pytest.mark.parametrize(
    ("body", "semitones"),
    [
        ({"text": TEXT, "pitch": 4}, 4.0),
        ({"text": speak(f'<prosody pitch="+2st">{TEXT}</prosody>'), "pitch": 2}, 4.0),
        ({"text": speak(f'<prosody pitch="+20%">{TEXT}</prosody>')}, 12 * np.log2(1.2)),
        ({"text": speak(f'<prosody pitch="x-low">{TEXT}</prosody>')}, -4.0),
    ],
    ids=["request+4st", "request+2st&ssml+2st", "ssml+20%", "ssml-x-low"],
)
def test_pitch_moves_the_predicted_f0(url: str, body: dict, semitones: float) -> None:
    base = tts_json(url, text=TEXT)["units"]
    got = tts_json(url, **body)["units"]
    for b, g in zip(base, got, strict=True):
        assert g["pitch"] == pytest.approx(semitones)
        shift = g["mean_pitch"] - b["mean_pitch"]
        assert shift == pytest.approx(semitones * PITCH_UNITS_PER_SEMITONE, abs=1e-3)


# ------------------------------------------------------------------ volume
@pytest.mark.parametrize(
    ("body", "gain"),
    [
        ({"text": TEXT, "volume": 0.5}, 0.5),
        ({"text": speak(f'<prosody volume="-6dB">{TEXT}</prosody>')}, 10 ** (-6 / 20)),
        ({"text": speak(f'<prosody volume="x-soft">{TEXT}</prosody>')}, 0.3),
        ({"text": speak(f'<prosody volume="50%">{TEXT}</prosody>'), "volume": 0.8}, 0.4),
    ],
    ids=["request-0.5", "ssml--6dB", "ssml-x-soft", "request-0.8&ssml-50%"],
)
def test_volume_scales_the_rms(url: str, body: dict, gain: float) -> None:
    base = pcm(url, text=TEXT)
    got = pcm(url, **body)
    assert len(got) == len(base)
    assert rms(got) / rms(base) == pytest.approx(gain, rel=0.01)


def test_streamed_volume_equals_whole(url: str) -> None:
    whole = pcm(url, text=TEXT, volume=0.5)
    with httpx.stream(
        "POST",
        url + "/api/tts",
        json={"text": TEXT, "volume": 0.5, "format": "pcm", "stream": True},
        timeout=60,
    ) as r:
        streamed = np.frombuffer(b"".join(r.iter_raw()), "<i2").astype(np.float64)
    assert len(streamed) == len(whole)
    assert np.abs(streamed - whole).max() <= 8  # int16 steps (2e-4 of full scale)


# ------------------------------------------------------------------ emotion and intensity
def test_emotion_intensity(url: str) -> None:
    plain = pcm(url, text=TEXT, emotion="happy")
    full = pcm(url, text=TEXT, emotion="happy", emotion_intensity=1.0)
    weak = pcm(url, text=TEXT, emotion="happy", emotion_intensity=0.2)
    zero = pcm(url, text=TEXT, emotion="happy", emotion_intensity=0.0)
    neutral = pcm(url, text=TEXT, emotion="neutral")
    same_audio(full, plain)  # intensity 1 is the trained emotion
    assert len(weak) != len(full) or np.abs(weak - full).max() > 100
    same_audio(zero, neutral)  # intensity 0 is the neutral embedding
    assert len(plain) != len(neutral) or np.abs(plain - neutral).max() > 100  # the emotion itself counts


def test_ssml_emotion_spans_and_intensity(url: str) -> None:
    text = speak(
        '<emotion category="happy" intensity="0.2">今天天气真不错。</emotion>'
        '<emotion category="sad">我们去公园散步吧。</emotion>'
    )
    got = tts_json(url, text=text)
    assert [(u["emotion"], u["emotion_intensity"]) for u in got["units"]] == [("happy", 0.2), ("sad", 1.0)]
    first = tts_json(url, text="今天天气真不错。", emotion="happy", emotion_intensity=0.2)
    second = tts_json(url, text="我们去公园散步吧。", emotion="sad")
    whole, a, b = audio_of(got), audio_of(first), audio_of(second)
    same_audio(whole, np.concatenate([a, b]))  # each span = that emotion alone


# ------------------------------------------------------------------ breaks, say-as, phoneme
def test_break_is_silence_of_that_length(url: str) -> None:
    got = tts_json(url, text=speak('今天天气真不错<break time="700ms"/>我们去公园散步吧。'))
    assert got["units"][0]["pause_after_s"] == pytest.approx(0.7)
    audio = audio_of(got)
    start = got["units"][0]["frames"] * 200  # hop 200: the first unit's samples
    gap = audio[start : start + int(0.7 * 16000)]
    assert len(gap) == int(0.7 * 16000) and not gap.any()
    strong = tts_json(url, text=speak('今天天气真不错<break strength="x-strong"/>我们去公园散步吧。'))
    assert strong["units"][0]["pause_after_s"] == pytest.approx(1.2)
    assert strong["duration_s"] - got["duration_s"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    ("markup", "reading"),
    [
        ('<say-as interpret-as="digits">110</say-as>', ["yi1", "yi1", "ling2"]),
        ('<say-as interpret-as="cardinal">110</say-as>', ["yi4", "bai3", "yi1", "shi2"]),
        ('<say-as interpret-as="telephone">110</say-as>', ["yao1", "yao1", "ling2"]),
        ('<phoneme alphabet="py" ph="hang2">行</phoneme>', ["hang2"]),
        ('<phoneme alphabet="py" ph="xing2">行</phoneme>', ["xing2"]),
    ],
)
def test_say_as_and_phoneme_change_the_reading(url: str, markup: str, reading: list[str]) -> None:
    got = tts_json(url, text=speak(markup))
    assert [p for u in got["units"] for p in u["pinyin"]] == reading


def test_phoneme_changes_the_audio(url: str) -> None:
    hang = pcm(url, text=speak('<phoneme alphabet="py" ph="hang2">行</phoneme>'))
    xing = pcm(url, text=speak('<phoneme alphabet="py" ph="xing2">行</phoneme>'))
    assert len(hang) != len(xing) or np.abs(hang - xing).max() > 100


# ------------------------------------------------------------------ voice and speaker
def test_voice_and_speaker_choose_the_model_input(url: str) -> None:
    voices = httpx.get(url + "/api/voices", timeout=30).json()["voices"]
    assert len(voices) >= 2
    default, other = voices[0], voices[1]
    a = tts_json(url, text=TEXT)
    b = tts_json(url, text=TEXT, voice=other["name"])
    assert (a["voice"], b["voice"]) == (default["name"], other["name"])
    assert not np.array_equal(audio_of(a), audio_of(b))
    assert len(default["speakers"]) >= 2
    s0 = tts_json(url, text=TEXT, speaker=default["speakers"][0])
    s1 = tts_json(url, text=TEXT, speaker=default["speakers"][1])
    assert (s0["units"][0]["speaker"], s1["speaker"]) == (default["speakers"][0], default["speakers"][1])
    same_audio(audio_of(s0), audio_of(a))  # the first speaker is the default
    assert not np.array_equal(audio_of(s0), audio_of(s1))


# ------------------------------------------------------------------ errors name the control and its range
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (speak('<prosody rate="10">你好</prosody>'), "prosody rate 10 is outside 0.25..4"),
        (speak('<prosody pitch="+13st">你好</prosody>'), "prosody pitch 13 st is outside -12..12 st"),
        (speak('<prosody volume="+20dB">你好</prosody>'), "prosody volume (gain) 10 is outside 0..4"),
        (speak('<prosody pitch="200Hz">你好</prosody>'), "use semitones"),
        (speak('<emotion category="happy" intensity="3">你好</emotion>'), "outside 0..2"),
    ],
)
def test_out_of_range_ssml_is_a_400_naming_it(url: str, text: str, needle: str) -> None:
    r = httpx.post(url + "/api/tts", json={"text": text}, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_text"
    assert needle in r.json()["error"]["message"]


def test_combined_rate_out_of_range_is_a_400(url: str) -> None:
    r = httpx.post(
        url + "/api/tts",
        json={"text": speak('<prosody rate="x-fast">你好</prosody>'), "speed": 3},
        timeout=60,
    )
    assert (
        r.status_code == 400 and "speed × prosody rate 4.5 is outside 0.25..4" in r.json()["error"]["message"]
    )


# ------------------------------------------------------------------ OpenAI: speed and instructions
def test_openai_speed_and_instructions(url: str) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused")

    def speech(**kw: object) -> np.ndarray:
        data = client.audio.speech.create(
            model="tts-1", voice="alloy", input=TEXT, response_format="wav", **kw
        )
        audio, _ = sf.read(io.BytesIO(data.content), dtype="int16")
        return audio.astype(np.float64)

    very_happy = speech(instructions="Speak in a very happy voice.")
    same_audio(very_happy, wav(url, text=TEXT, emotion="happy", emotion_intensity=1.5))
    slightly_sad = speech(instructions="有点悲伤")
    same_audio(slightly_sad, wav(url, text=TEXT, emotion="sad", emotion_intensity=0.5))
    fast = speech(speed=2.0)
    same_audio(fast, wav(url, text=TEXT, speed=2.0))
    assert len(fast) < 0.75 * len(speech())


# ------------------------------------------------------------------ served == the Ray-free orchestrator
@pytest.mark.parametrize("stream", [False, True], ids=["whole-or-pipelined", "streamed"])
def test_controls_served_equal_the_local_orchestrator(serve_instance, stream: bool) -> None:  # type: ignore[no-untyped-def]
    from engine.messages import SynthesisRequest
    from engine.synthesizer import Synthesizer

    text = speak(
        '<prosody rate="80%" pitch="+1st" volume="-3dB">今天天气真不错，</prosody>'
        '<emotion category="happy" intensity="0.6">我们去公园散步吧。</emotion>'
    )
    fields = {"text": text, "speed": 1.1, "pitch": -1.0, "volume": 0.9, "emotion": "sad"}
    served = pcm(serve_instance.url, **fields, stream=stream) / 32767
    local = Synthesizer(str(serve_instance.model_dir), threads=1).synthesize(SynthesisRequest(**fields)).audio
    assert len(served) == len(local)
    np.testing.assert_allclose(served, np.clip(local, -1, 1), atol=2e-4)


def test_whole_units_served_equal_the_local_orchestrator(serve_instance) -> None:  # type: ignore[no-untyped-def]
    """The under-load path (whole units through the batched acoustic and vocoder calls, ``pipeline_below``
    0) gives the local orchestrator's audio too."""
    from engine.messages import SynthesisRequest
    from engine.synthesizer import Synthesizer
    from tests._reliability import deploy, stage_options, undeploy

    args = {
        "model_dir": str(serve_instance.model_dir),
        "threads": {"frontend": 1, "acoustic": 1, "vocoder": 1},
        "ingress": {"stream": {"pipeline_below": 0}, "cache_max_entries": 0},
        "options": {
            name: {**stage_options(), "num_replicas": 1}
            for name in ("TTSIngress", "TextFrontend", "SambertAcoustic", "HifiGanVocoder")
        },
    }
    deploy("wholeunits", "/wholeunits", args)
    try:
        fields = {
            "text": speak('<prosody pitch="+2st">今天天气真不错，</prosody>我们去公园散步吧。'),
            "volume": 0.7,
        }
        served = pcm(serve_instance.url + "/wholeunits", **fields) / 32767
    finally:
        undeploy("wholeunits")
    local = Synthesizer(str(serve_instance.model_dir), threads=1).synthesize(SynthesisRequest(**fields)).audio
    assert len(served) == len(local)
    np.testing.assert_allclose(served, np.clip(local, -1, 1), atol=2e-4)
