"""``TTSIngress``: the FastAPI app (REST, seed-compatible and OpenAI-compatible APIs, WebUI) on Ray Serve."""

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments.common import route_logs_to_serve
from engine import audio as audio_mod
from engine.frontend import FrontendError
from engine.modeldir import load_model_dir
from serve_app.cache import CachedResult, ResultCache, cache_key
from serve_app.errors import TTSError, install_error_handlers
from serve_app.metrics import IngressMetrics
from serve_app.models import (
    OPENAI_FORMAT_MAP,
    OPENAI_PCM_RATE,
    OPENAI_VOICE_ALIASES,
    FormatInfo,
    Limits,
    OpenAISpeechRequest,
    SeedTTSRequest,
    TTSJSONResponse,
    TTSRequest,
    VoiceInfo,
    VoicesResponse,
    emotion_from_instructions,
)
from serve_app.pipeline import Pipeline, StreamSettings, Synthesized
from serve_app.resilience import ResilientHandle, RetryPolicy
from serve_app.security import SecurityMiddleware, SecuritySettings
from serve_app.security import configure as configure_security

__all__ = ["IngressSettings", "TTSIngress", "app"]

log = logging.getLogger("tts.ingress")
STATIC_DIR = Path(__file__).resolve().parent / "static"
# Every media type an audio response can carry (OpenAPI: schemathesis checks responses against it).
AUDIO_CONTENT: dict[str, dict[str, Any]] = {f.media_type: {} for f in audio_mod.FORMATS.values()}
# Emotions the released *_emo voices were trained on (spec §5.4); each must exist in the voice vocabulary.
TRAINED_EMOTIONS = ("neutral", "happy", "angry", "sad", "fear", "hate", "surprise")


@dataclass
class IngressSettings:
    """Ingress knobs (``build_app`` args → ``ingress:`` mapping)."""

    limits: Limits = field(default_factory=Limits)
    cache_max_entries: int = 256
    cache_max_bytes: int = 64 * 1024 * 1024
    max_inflight: int = 48  # per ingress replica; beyond it → 503 JSON + Retry-After
    retry_after_s: float = 1.0
    ready_timeout_s: float = 10.0
    log_text: bool = False
    stream: StreamSettings = field(default_factory=StreamSettings)
    security: dict[str, Any] = field(default_factory=dict)  # serve_app.security.SecuritySettings
    retry: dict[str, Any] = field(default_factory=dict)  # serve_app.resilience.RetryPolicy

    def __post_init__(self) -> None:
        SecuritySettings.from_dict(self.security)  # fail fast on typos (keys are loaded in the replica)
        RetryPolicy.from_dict(self.retry)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "IngressSettings":
        raw = dict(raw or {})
        limits = Limits(**raw.pop("limits", {}))
        stream = StreamSettings(**raw.pop("stream", {}))
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown ingress settings: {sorted(unknown)}")
        return cls(limits=limits, stream=stream, **raw)


@dataclass
class Job:
    """A validated synthesis request, independent of which endpoint it came from."""

    text: str
    voice: str
    emotion: str
    speed: float = 1.0
    pitch: float = 0.0
    volume: float = 1.0
    format: str = "wav"
    sample_rate: int | None = None
    stream: bool = False
    endpoint: str = "api"

    def key(self, model_version: str) -> str:
        return cache_key(
            model_version,
            text=self.text,
            voice=self.voice,
            emotion=self.emotion,
            speed=self.speed,
            pitch=self.pitch,
            volume=self.volume,
            format=self.format,
            sample_rate=self.sample_rate,
        )


@asynccontextmanager
async def _lifespan(_: FastAPI) -> AsyncIterator[None]:
    yield


app = FastAPI(
    title="SAmBERT-HiFiGAN Chinese TTS",
    version="1.0",
    description="Chinese text-to-speech on Ray Serve. Errors are always `{error: {code, message}}`.",
    lifespan=_lifespan,
)
install_error_handlers(app)
app.add_middleware(SecurityMiddleware)  # body limit, CORS, API keys, rate limits, security headers


@serve.deployment(name="TTSIngress", max_ongoing_requests=64, max_queued_requests=128)
@serve.ingress(app)
class TTSIngress:
    """Validates, caches, fans out to the stage deployments and encodes the result."""

    def __init__(
        self,
        frontend: DeploymentHandle,
        acoustic: DeploymentHandle,
        vocoder: DeploymentHandle,
        model_dir: str,
        settings: dict[str, Any] | None = None,
        vocoder_precision: str = "fp32",
    ) -> None:
        route_logs_to_serve()
        self.settings = IngressSettings.from_dict(settings)
        directory = load_model_dir(model_dir)
        # the cache key and /ready report what produces the audio: weights + vocoder arithmetic
        self.model_version = str(directory.version) + (
            "" if vocoder_precision == "fp32" else f"+{vocoder_precision}"
        )
        self.voices = list(directory.voices)
        self.default_voice = self.voices[0]
        self.emotions = {
            name: [e for e in TRAINED_EMOTIONS if f"emotion_{e}" in spec.vocab.emotion]
            for name, spec in directory.voices.items()
        }
        self.speakers = {
            name: [s for s in spec.vocab.speaker if s not in ("_", "~", "@[MASK]")]
            for name, spec in directory.voices.items()
        }
        self.security = configure_security(self.settings.security)
        retry = RetryPolicy.from_dict(self.settings.retry)
        self.pipeline = Pipeline(
            ResilientHandle(frontend, "frontend", retry),  # type: ignore[arg-type]
            ResilientHandle(acoustic, "acoustic", retry),  # type: ignore[arg-type]
            ResilientHandle(vocoder, "vocoder", retry),  # type: ignore[arg-type]
            max_concurrent_units=self.settings.limits.max_concurrent_units,
            retry_after_s=self.settings.retry_after_s,
            stream=self.settings.stream,
        )
        self.cache = ResultCache(self.settings.cache_max_entries, self.settings.cache_max_bytes)
        self.metrics = IngressMetrics()
        self.inflight = 0

    # ---------------------------------------------------------------- validation
    def _job(self, **kw: Any) -> Job:
        job = Job(**kw)
        limit = self.settings.limits.max_text_chars
        if len(job.text) > limit:
            raise TTSError(413, "text_too_long", f"text has {len(job.text)} characters; the limit is {limit}")
        if not job.text.strip():
            raise TTSError(422, "invalid_request", "text is empty")
        if any("\ud800" <= c <= "\udfff" for c in job.text):  # JSON "\ud800" escapes; crashes UTF-8 encoders
            raise TTSError(400, "invalid_text", "text contains lone UTF-16 surrogates (invalid Unicode)")
        if job.voice not in self.emotions:
            raise TTSError(
                400, "unknown_voice", f"unknown voice {job.voice!r}; known: {', '.join(self.voices)}"
            )
        known = self.emotions[job.voice]
        if job.emotion not in known:
            raise TTSError(
                400,
                "unknown_emotion",
                f"unknown emotion {job.emotion!r} for voice {job.voice!r}; known: {known}",
            )
        try:
            spec = audio_mod.get_format(job.format)
            audio_mod.output_rate(spec, 16000, job.sample_rate)
        except audio_mod.AudioError as exc:
            raise TTSError(400, "unsupported_format", str(exc)) from None
        if job.stream and job.format not in audio_mod.STREAMABLE_FORMATS:
            raise TTSError(
                400,
                "unsupported_format",
                f"format {job.format!r} cannot be streamed; use one of {list(audio_mod.STREAMABLE_FORMATS)}",
            )
        return job

    # ---------------------------------------------------------------- core
    def _admit(self) -> None:
        if self.inflight >= self.settings.max_inflight:
            self.metrics.error("overloaded")
            raise TTSError(
                503, "overloaded", "the service is at capacity; retry later", self.settings.retry_after_s
            )

    def _log(self, job: Job, status: str, seconds: float, audio_s: float = 0.0, **extra: Any) -> None:
        record = {
            "event": "synthesis",
            "endpoint": job.endpoint,
            "status": status,
            "chars": len(job.text),
            "voice": job.voice,
            "emotion": job.emotion,
            "format": job.format,
            "stream": job.stream,
            "latency_ms": round(seconds * 1000, 1),
            "audio_s": round(audio_s, 3),
            **extra,
        }
        if self.settings.log_text:
            record["text"] = job.text
        log.info(json.dumps(record, ensure_ascii=False))

    async def _units(self, job: Job) -> list[Any]:
        try:
            units = await self.pipeline.units(job.text, job.voice, job.emotion)
        except FrontendError as exc:
            raise TTSError(400, "invalid_text", str(exc).splitlines()[-1][:500]) from None
        if not units:
            raise TTSError(422, "invalid_request", "text contains nothing speakable")
        return units

    async def _synthesize(self, job: Job) -> tuple[CachedResult, bool]:
        """Encoded result for a non-streamed job, through the cache, within the request deadline."""
        key = job.key(self.model_version)
        if self.cache.enabled:
            hit = self.cache.get(key)
            self.metrics.cache_lookup(hit is not None)
            if hit is not None:
                return hit, True
        self._admit()
        self.inflight += 1
        try:
            async with asyncio.timeout(self.settings.limits.request_timeout_s):
                units = await self._units(job)
                result: Synthesized = await self.pipeline.synthesize_units(
                    units, job.voice, job.speed, job.pitch
                )
        except TimeoutError:
            self.metrics.error("timeout")
            raise TTSError(504, "timeout", "synthesis did not finish within the request deadline") from None
        finally:
            self.inflight -= 1
        try:
            data, rate = audio_mod.encode(
                result.audio, result.sample_rate, job.format, job.sample_rate, job.volume
            )
        except audio_mod.AudioError as exc:
            raise TTSError(400, "unsupported_format", str(exc)) from None
        cached = CachedResult(
            audio=data,
            sample_rate=rate,
            duration_s=result.duration_s,
            timestamps=tuple(result.timestamps),
            timestamp_unit=result.timestamp_unit,
        )
        self.cache.put(key, cached)
        return cached, False

    async def _respond(self, job: Job, request: Request | None, as_json: bool = False) -> Response:
        start = time.perf_counter()
        self.metrics.request(job.endpoint)
        try:
            if job.stream:
                return await self._stream(job, start)
            result, hit = await self._synthesize(job)
        except TTSError as exc:
            self.metrics.error(exc.code)
            self._log(job, exc.code, time.perf_counter() - start)
            raise
        except FrontendError as exc:  # pragma: no cover - mapped in _units
            raise TTSError(400, "invalid_text", str(exc)) from None
        seconds = time.perf_counter() - start
        if not hit:
            self.metrics.done(job.endpoint, False, seconds, result.duration_s)
        self._log(job, "ok", seconds, result.duration_s, cached=hit)
        spec = audio_mod.FORMATS[job.format]
        headers = {
            "X-Audio-Duration": f"{result.duration_s:.3f}",
            "X-Sample-Rate": str(result.sample_rate),
            "X-Cache": "hit" if hit else "miss",
            "Content-Disposition": f'inline; filename="speech.{spec.extension}"',
        }
        if as_json:
            body = TTSJSONResponse(
                audio_base64=base64.b64encode(result.audio).decode("ascii"),
                format=job.format,
                media_type=spec.media_type,
                sample_rate=result.sample_rate,
                duration_s=round(result.duration_s, 4),
                voice=job.voice,
                emotion=job.emotion,
                timestamps=[{"text": t, "start_s": s, "end_s": e} for t, s, e in result.timestamps],
                timestamp_unit=result.timestamp_unit,  # type: ignore[arg-type]
                cached=hit,
                model_version=self.model_version,
            )
            return JSONResponse(body.model_dump(), headers=headers)
        media = spec.media_type + (f";rate={result.sample_rate}" if job.format == "pcm" else "")
        return Response(result.audio, media_type=media, headers=headers)

    async def _stream(self, job: Job, start: float) -> StreamingResponse:
        """Validate and run the frontend first (so errors are proper JSON), then stream audio chunks."""
        self._admit()
        self.inflight += 1
        try:
            async with asyncio.timeout(self.settings.limits.request_timeout_s):
                units = await self._units(job)
            encoder = audio_mod.StreamEncoder(
                job.format, (await self.pipeline.info())["sample_rate"], job.sample_rate, job.volume
            )
        except TimeoutError:
            self.inflight -= 1
            raise TTSError(504, "timeout", "synthesis did not start within the request deadline") from None
        except BaseException:
            self.inflight -= 1
            raise
        spec = audio_mod.FORMATS[job.format]
        media = spec.media_type + (f";rate={encoder.rate}" if job.format == "pcm" else "")
        return StreamingResponse(
            self._stream_body(job, units, encoder, start),
            media_type=media,
            headers={"X-Sample-Rate": str(encoder.rate), "Cache-Control": "no-store"},
        )

    async def _stream_body(
        self, job: Job, units: list[Any], encoder: audio_mod.StreamEncoder, start: float
    ) -> AsyncIterator[bytes]:
        """Unit 0 streams frame by frame; later units are synthesised concurrently once audio is flowing."""
        sr = encoder.src_rate
        produced = 0
        first = True
        rest: asyncio.Future | None = None
        status = "ok"
        deadline = start + self.settings.limits.request_timeout_s
        try:
            header = encoder.header()
            if header:
                yield header
            async for chunk in self.pipeline.stream_unit(units[0], job.voice, job.speed, job.pitch):
                if first:
                    self.metrics.first_audio(time.perf_counter() - start)
                    first = False
                    if len(units) > 1:
                        rest = asyncio.ensure_future(
                            self.pipeline.synthesize_units(units[1:], job.voice, job.speed, job.pitch)
                        )
                produced += len(chunk)
                data = encoder.push(chunk)
                if data:
                    yield data
                if time.perf_counter() > deadline:
                    raise TimeoutError
            pause = audio_mod.silence(units[0].pause_after_s, sr)
            if len(units) > 1:
                if rest is None:
                    rest = asyncio.ensure_future(
                        self.pipeline.synthesize_units(units[1:], job.voice, job.speed, job.pitch)
                    )
                remaining = await asyncio.wait_for(rest, max(0.001, deadline - time.perf_counter()))
                pause = audio_mod.silence(units[0].pause_after_s, sr)
                for piece in (pause, remaining.audio):
                    produced += len(piece)
                    yield encoder.push(piece)
            else:
                produced += len(pause)
                yield encoder.push(pause)
            tail = encoder.finish()
            if tail:
                yield tail
        except TimeoutError:
            status = "timeout"
            self.metrics.error("timeout")
            raise  # abort the chunked body: a clean end would pass truncated audio off as complete
        except asyncio.CancelledError:
            status = "client_disconnected"
            raise
        except TTSError as exc:
            status = exc.code
            self.metrics.error(exc.code)
            raise  # status and headers are already sent; only an aborted body tells the client
        finally:
            if rest is not None and not rest.done():
                rest.cancel()
            self.inflight -= 1
            seconds = time.perf_counter() - start
            if status == "ok":
                self.metrics.done(job.endpoint, True, seconds, produced / sr)
            self._log(job, status, seconds, produced / sr)

    # ---------------------------------------------------------------- routes
    @app.get("/", include_in_schema=False)
    async def webui(self) -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/health", summary="Liveness", tags=["ops"])
    async def health(self) -> dict[str, str]:
        return {"status": "healthy"}

    @app.get("/ready", summary="Readiness: a real tiny synthesis through all three stages", tags=["ops"])
    async def ready(self) -> JSONResponse:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(self.settings.ready_timeout_s):
                units = await self.pipeline.units("你好。", self.default_voice, "neutral")
                result = await self.pipeline.synthesize_units(units, self.default_voice, 1.0, 0.0)
        except TimeoutError:
            raise TTSError(
                503, "not_ready", f"probe synthesis exceeded {self.settings.ready_timeout_s}s"
            ) from None
        except TTSError as exc:
            raise TTSError(503, "not_ready", exc.message, exc.retry_after_s) from None
        except Exception as exc:
            raise TTSError(503, "not_ready", f"probe synthesis failed: {type(exc).__name__}") from None
        if result.audio.size == 0:
            raise TTSError(503, "not_ready", "probe synthesis produced no audio")
        return JSONResponse(
            {
                "status": "ready",
                "latency_ms": round((time.perf_counter() - start) * 1000, 1),
                "model_version": self.model_version,
            }
        )

    @app.get(
        "/api/voices",
        response_model=VoicesResponse,
        summary="Voices, emotions, formats, limits",
        tags=["tts"],
    )
    async def list_voices(self) -> VoicesResponse:
        info = await self.pipeline.info()
        return VoicesResponse(
            voices=[
                VoiceInfo(
                    name=v,
                    default=v == self.default_voice,
                    emotions=self.emotions[v],
                    speakers=self.speakers[v],
                )
                for v in self.voices
            ],
            emotions=sorted({e for es in self.emotions.values() for e in es}, key=TRAINED_EMOTIONS.index),
            formats=[
                FormatInfo(
                    name=f.name,
                    media_type=f.media_type,
                    streamable=f.name in audio_mod.STREAMABLE_FORMATS,
                    fixed_sample_rate=f.fixed_rate,
                )
                for f in audio_mod.FORMATS.values()
            ],
            sample_rate=info["sample_rate"],
            sample_rates=list(audio_mod.SUPPORTED_SAMPLE_RATES),
            limits=self.settings.limits,
            model_version=self.model_version,
        )

    @app.post(
        "/api/tts",
        summary="Synthesize speech",
        tags=["tts"],
        responses={
            200: {
                "content": {
                    **AUDIO_CONTENT,
                    "application/json": {"schema": TTSJSONResponse.model_json_schema()},
                },
                "description": "Audio bytes, or JSON on `Accept: application/json`.",
            },
            413: {"description": "Text longer than the configured limit."},
            503: {"description": "At capacity (Retry-After set)."},
            504: {"description": "Deadline exceeded."},
        },
    )
    async def tts(self, body: TTSRequest, request: Request) -> Response:
        job = self._job(
            text=body.text,
            voice=body.voice or self.default_voice,
            emotion=body.emotion or "neutral",
            speed=body.speed,
            pitch=body.pitch,
            volume=body.volume,
            format=body.format,
            sample_rate=body.sample_rate,
            stream=body.stream,
        )
        as_json = "application/json" in request.headers.get("accept", "")
        if as_json and job.stream:
            raise TTSError(
                400, "invalid_request", "stream=true returns audio bytes; drop Accept: application/json"
            )
        return await self._respond(job, request, as_json)

    @app.post(
        "/tts",
        summary="Seed-compatible: {text, emotion, speed} → WAV",
        tags=["compat"],
        responses={200: {"content": {"audio/wav": {}}, "description": "WAV audio."}},
    )
    async def seed_tts(self, body: SeedTTSRequest, request: Request) -> Response:
        job = self._job(
            text=body.text,
            voice=body.voice or self.default_voice,
            emotion=body.emotion or "neutral",
            speed=body.speed,
            endpoint="seed",
        )
        return await self._respond(job, request)

    @app.post(
        "/v1/audio/speech",
        summary="OpenAI-compatible speech endpoint",
        tags=["compat"],
        responses={200: {"content": AUDIO_CONTENT, "description": "Audio in `response_format`."}},
    )
    async def openai_speech(self, body: OpenAISpeechRequest, request: Request) -> Response:
        voice = body.voice if body.voice in self.emotions else None
        if voice is None and body.voice.lower() in OPENAI_VOICE_ALIASES:
            voice = self.default_voice
        if voice is None:
            raise TTSError(
                400, "unknown_voice", f"unknown voice {body.voice!r}; known: {', '.join(self.voices)}"
            )
        fmt = OPENAI_FORMAT_MAP.get(body.response_format)
        if fmt is None:
            raise TTSError(
                400,
                "unsupported_format",
                f"response_format {body.response_format!r} not supported; use {list(OPENAI_FORMAT_MAP)}",
            )
        emotion = (
            body.emotion or emotion_from_instructions(body.instructions, self.emotions[voice]) or "neutral"
        )
        job = self._job(
            text=body.input,
            voice=voice,
            emotion=emotion,
            speed=body.speed,
            format=fmt,
            sample_rate=OPENAI_PCM_RATE if fmt == "pcm" else None,
            endpoint="openai",
        )
        return await self._respond(job, request)
