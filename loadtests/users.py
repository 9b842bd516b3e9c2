"""Locust users modelling a customer-service platform's TTS traffic.

* ``IvrCallerUser`` — phone IVR: short/medium prompts, streamed, 8 kHz μ-law/A-law/PCM telephony audio.
* ``WebChatUser`` — web/app assistant: mostly whole files (mp3/ogg/wav), some streamed wav.
* ``NoticeUser`` — back-office notices and integrations: long texts (flac/wav), the seed-compatible
  ``POST /tts`` and the OpenAI-compatible ``POST /v1/audio/speech``.

Request names are ``"<kind> <length_class>"`` (kinds: ``tts``, ``stream-ttfa``, ``stream-total``, ``seed``,
``openai``) so ``loadtests.slo`` can gate p95 per class. A streamed request reports two entries:
time to first audio byte (past any container header) and total time to the last byte.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from locust import HttpUser, between, task

from loadtests.corpus import Corpus, Sentence, load_corpus

CORPUS: Corpus = load_corpus()
MAX_RETRY_AFTER_S = 5.0

# Emotion mixes (weights) per channel, over the emotions the released *_emo voices were trained on;
# agents never sound angry, fearful or disgusted. Emotions the service does not list fall back to neutral.
IVR_EMOTIONS = {"neutral": 60, "happy": 25, "sad": 10, "surprise": 5}
CHAT_EMOTIONS = {"neutral": 50, "happy": 35, "sad": 8, "surprise": 7}
NOTICE_EMOTIONS = {"neutral": 85, "happy": 10, "sad": 5}
APOLOGY_EMOTIONS = {"sad": 60, "neutral": 40}  # apologies sound apologetic whatever the channel

# Streamed formats: WAV containers (16-bit wav; 8-bit G.711 μ-law/A-law at 8 kHz) and raw 16-bit pcm.
WAV_CONTAINERS = ("wav", "mulaw", "alaw")
BYTES_PER_SAMPLE = {"wav": 2, "pcm": 2, "mulaw": 1, "alaw": 1}
MAGIC = {
    **{f: (b"RIFF",) for f in WAV_CONTAINERS},
    "flac": (b"fLaC",),
    "ogg": (b"OggS",),
    "mp3": (b"ID3", b"\xff\xfb", b"\xff\xf3"),
}
MIN_HEADER = {"wav": 44, "mulaw": 44, "alaw": 44}


def weighted_choice(rng: random.Random, weights: Mapping[str, float]) -> str:
    """Pick a key with probability proportional to its weight."""
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys], k=1)[0]


def choose_emotion(
    rng: random.Random, mix: Mapping[str, float], topic: str, supported: Sequence[str] | None
) -> str:
    """Emotion for one request: topic-aware (apologies), restricted to what the service supports."""
    emotion = weighted_choice(rng, APOLOGY_EMOTIONS if topic == "apology" else mix)
    if supported and emotion not in supported:
        return "neutral"
    return emotion


def audio_offset(head: bytes, fmt: str) -> int | None:
    """Byte offset of the first audio sample: past the WAV ``data`` chunk header for WAV containers
    (μ-law/A-law WAVs carry extra ``fact`` chunks), 0 for raw formats; None while not yet known."""
    if fmt not in WAV_CONTAINERS:
        return 0
    idx = head.find(b"data", 12)
    return None if idx < 0 or len(head) < idx + 8 else idx + 8


def check_audio(body: bytes, fmt: str, sample_rate: int | None) -> str | None:
    """Return a problem description, or None when ``body`` plausibly is ``fmt`` audio."""
    if len(body) <= MIN_HEADER.get(fmt, 0) + 16:
        return f"{fmt} body too short ({len(body)} bytes)"
    magics = MAGIC.get(fmt)
    if magics and not body.startswith(magics):
        return f"{fmt} body has wrong magic {body[:4]!r}"
    if fmt == "wav" and sample_rate is not None:
        got = int.from_bytes(body[24:28], "little")
        if got != sample_rate:
            return f"wav sample rate {got} != requested {sample_rate}"
    return None


def error_text(response: Any) -> str:
    """Short failure text from a non-200 response (JSON ``{error:{code,message}}`` when available)."""
    if response.status_code == 0:  # locust's marker for a connection-level error
        return f"connection error: {type(getattr(response, 'error', None)).__name__}"
    try:
        err = response.json().get("error", {})
        return f"HTTP {response.status_code} {err.get('code', '?')}: {str(err.get('message', ''))[:80]}"
    except Exception:
        return f"HTTP {response.status_code}"


class TTSUser(HttpUser):
    """Shared request helpers; concrete users define tasks."""

    abstract = True
    emotion_mix: Mapping[str, float] = {"neutral": 1}

    def on_start(self) -> None:
        self.rng = random.Random()
        self.emotions: list[str] | None = None
        self.voice: str | None = None
        with self.client.get("/api/voices", name="voices", catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(error_text(resp))
                return
            try:
                info = resp.json()
                self.emotions = [str(e) for e in info.get("emotions", [])] or None
                voices = info.get("voices") or []
                first = voices[0] if voices else None
                self.voice = first.get("name") if isinstance(first, dict) else first
            except (ValueError, AttributeError, IndexError) as exc:
                resp.failure(f"bad /api/voices body: {exc}")

    # -- helpers -------------------------------------------------------------------------------
    def _body(self, sentence: Sentence, fmt: str, sample_rate: int | None, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "text": sentence.text,
            "emotion": choose_emotion(self.rng, self.emotion_mix, sentence.topic, self.emotions),
            "speed": round(self.rng.uniform(0.9, 1.15), 2),
            "format": fmt,
            "stream": stream,
        }
        if sample_rate:
            body["sample_rate"] = sample_rate
        if self.voice:
            body["voice"] = self.voice
        return body

    @staticmethod
    def _shed(resp: Any, length_class: str) -> bool:
        """A 429/503 with ``Retry-After`` is the service refusing excess load as designed: reported as
        ``shed <class>`` (gated by the shed ratio and its own p95), not as a failure or a latency sample of
        the request class."""
        if resp.status_code in (429, 503) and resp.headers.get("Retry-After"):
            resp.request_meta["name"] = f"shed {length_class}"
            resp.success()
            return True
        return False

    def _backoff(self, response: Any) -> None:
        """Honour Retry-After on overload like a well-behaved client (bounded)."""
        if response.status_code in (429, 503):
            try:
                delay = float(response.headers.get("Retry-After", 1))
            except ValueError:
                delay = 1.0
            time.sleep(min(max(delay, 0.0), MAX_RETRY_AFTER_S))

    def synth(self, length_class: str, fmt: str, sample_rate: int | None = None) -> None:
        """Non-streaming ``POST /api/tts``: the whole file in one response."""
        sentence = CORPUS.pick(length_class, self.rng)
        body = self._body(sentence, fmt, sample_rate, stream=False)
        with self.client.post("/api/tts", json=body, name=f"tts {length_class}", catch_response=True) as resp:
            if self._shed(resp, length_class):
                pass
            elif resp.status_code != 200:
                resp.failure(error_text(resp))
            elif problem := check_audio(resp.content, fmt, sample_rate):
                resp.failure(problem)
            else:
                resp.success()
        self._backoff(resp)

    def synth_stream(self, length_class: str, fmt: str, sample_rate: int | None = None) -> None:
        """Streaming ``POST /api/tts``: reports ``stream-ttfa`` and ``stream-total`` separately."""
        sentence = CORPUS.pick(length_class, self.rng)
        body = self._body(sentence, fmt, sample_rate, stream=True)
        name = f"stream-total {length_class}"
        start = time.perf_counter()
        with self.client.post("/api/tts", json=body, name=name, stream=True, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.request_meta["response_time"] = (time.perf_counter() - start) * 1000
                if not self._shed(resp, length_class):
                    resp.failure(error_text(resp))
                self._backoff(resp)
                return
            received, first_ms, head, offset = 0, None, b"", None
            try:
                for chunk in resp.iter_content(chunk_size=None):
                    if not chunk:
                        continue
                    if offset is None:
                        head += chunk
                        offset = audio_offset(head[:4096], fmt)
                    received += len(chunk)
                    if first_ms is None and offset is not None and received > offset:
                        first_ms = (time.perf_counter() - start) * 1000
            except Exception as exc:  # connection reset / chunked encoding errors mid-stream
                resp.request_meta["response_time"] = (time.perf_counter() - start) * 1000
                resp.failure(f"stream broke after {received} bytes: {type(exc).__name__}")
                return
            total_ms = (time.perf_counter() - start) * 1000
            resp.request_meta["response_time"] = total_ms
            resp.request_meta["response_length"] = received
            magics = MAGIC.get(fmt)
            if first_ms is None or offset is None:
                resp.failure(f"stream ended without audio ({received} bytes)")
            elif magics and not head.startswith(magics):
                resp.failure(f"{fmt} stream has wrong magic {head[:4]!r}")
            else:
                resp.success()
                self._fire(f"stream-ttfa {length_class}", first_ms)
                rate = 8000 if fmt in ("mulaw", "alaw") else (sample_rate or 16000)
                audio_s = (received - offset) / (rate * BYTES_PER_SAMPLE.get(fmt, 2))
                if audio_s > 0:  # real-time factor x1000: > 1000 means playback would stall
                    self._fire(f"stream-rtf {length_class}", total_ms / audio_s)

    def _fire(self, name: str, value_ms: float) -> None:
        self.environment.events.request.fire(
            request_type="POST",
            name=name,
            response_time=value_ms,
            response_length=0,
            exception=None,
            context={},
        )

    def seed_tts(self, length_class: str) -> None:
        """Seed-compatible ``POST /tts {text, emotion, speed}`` → wav."""
        sentence = CORPUS.pick(length_class, self.rng)
        body = {
            "text": sentence.text,
            "emotion": choose_emotion(self.rng, self.emotion_mix, sentence.topic, self.emotions),
            "speed": 1.0,
        }
        with self.client.post("/tts", json=body, name=f"seed {length_class}", catch_response=True) as resp:
            if self._shed(resp, length_class):
                pass
            elif resp.status_code != 200:
                resp.failure(error_text(resp))
            elif problem := check_audio(resp.content, "wav", None):
                resp.failure(problem)
            else:
                resp.success()
        self._backoff(resp)

    def openai_speech(self, length_class: str) -> None:
        """OpenAI-compatible ``POST /v1/audio/speech`` → wav."""
        sentence = CORPUS.pick(length_class, self.rng)
        voice = self.voice or "default"
        body = {"model": "sambert", "input": sentence.text, "voice": voice, "response_format": "wav"}
        with self.client.post(
            "/v1/audio/speech", json=body, name=f"openai {length_class}", catch_response=True
        ) as resp:
            if self._shed(resp, length_class):
                pass
            elif resp.status_code != 200:
                resp.failure(error_text(resp))
            elif problem := check_audio(resp.content, "wav", None):
                resp.failure(problem)
            else:
                resp.success()
        self._backoff(resp)


class IvrCallerUser(TTSUser):
    """Phone IVR: streamed 8 kHz telephony prompts (think time = caller listening/keying)."""

    weight = 5
    wait_time = between(1, 3)
    emotion_mix = IVR_EMOTIONS

    @task(4)
    def prompt_mulaw(self) -> None:
        self.synth_stream("short", "mulaw", 8000)

    @task(3)
    def details_alaw(self) -> None:
        self.synth_stream("medium", "alaw", 8000)

    @task(1)
    def details_pcm(self) -> None:
        self.synth_stream("medium", "pcm", 8000)


class WebChatUser(TTSUser):
    """Web/app assistant: read-aloud of chat answers, mostly as whole files."""

    weight = 3
    wait_time = between(2, 5)
    emotion_mix = CHAT_EMOTIONS

    @task(3)
    def answer_mp3(self) -> None:
        self.synth("medium", "mp3")

    @task(2)
    def greeting_ogg(self) -> None:
        self.synth("short", "ogg")

    @task(2)
    def answer_wav_stream(self) -> None:
        self.synth_stream("medium", "wav", 16000)

    @task(1)
    def policy_wav(self) -> None:
        self.synth("long", "wav", 24000)


class NoticeUser(TTSUser):
    """Back-office notices and legacy/OpenAI integrations: long texts, whole files."""

    weight = 1
    wait_time = between(4, 8)
    emotion_mix = NOTICE_EMOTIONS

    @task(3)
    def notice_flac(self) -> None:
        self.synth("long", "flac")

    @task(2)
    def legacy_seed_client(self) -> None:
        self.seed_tts("medium")

    @task(1)
    def openai_client(self) -> None:
        self.openai_speech("short")

    @task(1)
    def notice_stream(self) -> None:
        self.synth_stream("long", "wav", 16000)
