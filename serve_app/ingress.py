"""``TTSIngress``: the FastAPI app (REST, seed-compatible and OpenAI-compatible APIs, WebUI) on Ray Serve.

Every route maps its body onto one :class:`~engine.messages.SynthesisRequest`; the shared
:class:`~engine.orchestrator.Orchestrator` runs it over the stage deployments (:mod:`serve_app.stages`).
"""

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from deployments.common import route_logs_to_serve
from deployments.metrics import IngressMetrics
from engine import audio as audio_mod
from engine.controls import EMOTION_ALIASES, ControlError, canonical_emotion, check_range
from engine.frontend import FrontendError, SynthesisUnit
from engine.messages import SynthesisRequest
from engine.modeldir import load_model_dir
from engine.orchestrator import Orchestrator, StreamSettings
from serve_app import admission
from serve_app.audio_store import AudioStore
from serve_app.cache import CachedResult, ResultCache, cache_key
from serve_app.errors import TTSError, install_error_handlers
from serve_app.models import (
    OPENAI_FORMAT_MAP,
    OPENAI_PCM_RATE,
    OPENAI_VOICE_ALIASES,
    FormatInfo,
    Limits,
    OpenAISpeechRequest,
    SeedTTSRequest,
    Timestamp,
    TTSJSONResponse,
    TTSRequest,
    TTSURLResponse,
    VoiceInfo,
    VoicesResponse,
    emotion_from_instructions,
    error_responses,
    intensity_from_instructions,
)
from serve_app.resilience import ResilientHandle, RetryPolicy
from serve_app.security import SecurityMiddleware, SecuritySettings
from serve_app.security import configure as configure_security
from serve_app.stages import ServeStages, backpressure

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
    max_inflight: int = 48  # syntheses per ingress replica (serve_app.admission)
    max_waiting: int = 16  # beyond max_inflight: requests waiting for a slot; more → 503 at once
    max_wait_s: float = 0.5  # longest wait for a slot (and at most wait_fraction × service time) → 503
    wait_fraction: float = 0.5
    retry_after_s: float = 1.0  # least Retry-After of a 503/429 (admission: the expected wait)
    ready_timeout_s: float = 10.0
    log_text: bool = False
    stream: StreamSettings = field(default_factory=StreamSettings)
    security: dict[str, Any] = field(default_factory=dict)  # serve_app.security.SecuritySettings
    retry: dict[str, Any] = field(default_factory=dict)  # serve_app.resilience.RetryPolicy
    audio_store: dict[str, Any] = field(default_factory=dict)  # serve_app.audio_store.AudioStore (URL mode)

    def __post_init__(self) -> None:
        if self.max_inflight < 1 or self.max_waiting < 0 or self.max_wait_s < 0 or self.wait_fraction < 0:
            raise ValueError("max_inflight must be >= 1; max_waiting, max_wait_s, wait_fraction >= 0")
        SecuritySettings.from_dict(self.security)  # fail fast on typos (keys are loaded in the replica)
        RetryPolicy.from_dict(self.retry)
        AudioStore(**self.audio_store)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "IngressSettings":
        raw = dict(raw or {})
        limits = Limits(**raw.pop("limits", {}))
        stream = StreamSettings(**raw.pop("stream", {}))
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown ingress settings: {sorted(unknown)}")
        return cls(limits=limits, stream=stream, **raw)


app = FastAPI(
    title="SAmBERT-HiFiGAN Chinese TTS",
    version="1.0",
    description="Chinese text-to-speech on Ray Serve. Errors are always `{error: {code, message}}`.",
)
install_error_handlers(app)
# Every POST route is a synthesis: the gate (inside the security checks, before the body is parsed) admits
# it or answers 503 itself, so a refusal costs no FastAPI, validation, cache or logging work.
app.add_middleware(admission.AdmissionGate)
app.add_middleware(SecurityMiddleware)  # body limit, CORS, API keys, rate limits, security headers


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _sse_events(chunks: AsyncIterator[bytes], input_chars: int) -> AsyncIterator[bytes]:
    """OpenAI's speech SSE: ``speech.audio.delta`` events (base64 audio), then ``speech.audio.done``."""
    async for chunk in chunks:
        if chunk:
            event = {"type": "speech.audio.delta", "audio": base64.b64encode(chunk).decode("ascii")}
            yield f"data: {json.dumps(event)}\n\n".encode()
    usage = {"input_tokens": input_chars, "output_tokens": 0, "total_tokens": input_chars}
    yield f"data: {json.dumps({'type': 'speech.audio.done', 'usage': usage})}\n\n".encode()


@serve.deployment(name="TTSIngress", max_ongoing_requests=64, max_queued_requests=128)
@serve.ingress(app)
class TTSIngress:
    """Maps every route onto one :class:`SynthesisRequest`, checks it, caches, and runs the orchestrator."""

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
        self.model_version = directory.audio_version(vocoder_precision)
        self.random_weights = directory.random_weights  # said on /api/voices, /ready and every audio response
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
        stages = ServeStages(
            ResilientHandle(frontend, "frontend", retry),
            ResilientHandle(acoustic, "acoustic", retry),
            ResilientHandle(vocoder, "vocoder", retry),
            retry_after_s=self.settings.retry_after_s,
        )
        self.orchestrator = Orchestrator(
            stages, self.settings.stream, self.settings.limits.max_concurrent_units
        )
        self.cache = ResultCache(self.settings.cache_max_entries, self.settings.cache_max_bytes)
        self.audio_store = AudioStore(**self.settings.audio_store)
        self.metrics = IngressMetrics()
        self.admission = admission.Admission(
            capacity=self.settings.max_inflight,
            max_waiting=self.settings.max_waiting,
            max_wait_s=self.settings.max_wait_s,
            wait_fraction=self.settings.wait_fraction,
            retry_after_s=self.settings.retry_after_s,
            max_retry_after_s=self.settings.limits.request_timeout_s,
            on_refuse=lambda: self.metrics.error("overloaded"),
        )
        admission.configure(self.admission)

    # ---------------------------------------------------------------- validation
    def _request(self, **fields: Any) -> SynthesisRequest:
        """The one request object, checked against this deployment's limits and voices."""
        req = SynthesisRequest(**fields)
        limits = self.settings.limits
        if len(req.text) > limits.max_text_chars:
            raise TTSError(
                413,
                "text_too_long",
                f"text has {len(req.text)} characters; the limit is {limits.max_text_chars}",
            )
        if not req.text.strip():
            raise TTSError(422, "invalid_request", "text is empty")
        if any("\ud800" <= c <= "\udfff" for c in req.text):  # JSON "\ud800" escapes; crashes UTF-8 encoders
            raise TTSError(400, "invalid_text", "text contains lone UTF-16 surrogates (invalid Unicode)")
        try:
            check_range("speed", req.speed, limits.speed)
            check_range("pitch", req.pitch, limits.pitch, "st")
            check_range("volume", req.volume, limits.volume)
            check_range("emotion_intensity", req.emotion_intensity, limits.emotion_intensity)
        except ControlError as exc:
            raise TTSError(400, "out_of_range", str(exc)) from None
        voice = req.voice or self.default_voice
        req = replace(req, emotion=canonical_emotion(req.emotion))
        if voice not in self.emotions:
            raise TTSError(400, "unknown_voice", f"unknown voice {voice!r}; known: {', '.join(self.voices)}")
        known = self.emotions[voice]
        if req.emotion not in known:
            aliases = sorted(a for e in known for a in EMOTION_ALIASES.get(e, ()) if a != e)
            raise TTSError(
                400,
                "unknown_emotion",
                f"unknown emotion {req.emotion!r} for voice {voice!r}; known: {known}; aliases: {aliases}",
            )
        if req.speaker is not None and req.speaker not in self.speakers[voice]:
            raise TTSError(
                400,
                "unknown_speaker",
                f"unknown speaker {req.speaker!r} for voice {voice!r}; known: {self.speakers[voice]}",
            )
        try:
            spec = audio_mod.get_format(req.format)
            audio_mod.output_rate(spec, 16000, req.sample_rate)
        except audio_mod.AudioError as exc:
            raise TTSError(400, "unsupported_format", str(exc)) from None
        if req.stream and req.format not in audio_mod.STREAMABLE_FORMATS:
            raise TTSError(
                400,
                "unsupported_format",
                f"format {req.format!r} cannot be streamed; use one of {list(audio_mod.STREAMABLE_FORMATS)}",
            )
        return replace(req, voice=voice)

    # ---------------------------------------------------------------- core
    def _log(
        self,
        req: SynthesisRequest,
        endpoint: str,
        status: str,
        seconds: float,
        audio_s: float = 0.0,
        **extra: Any,
    ) -> None:
        record = {
            "event": "synthesis",
            "endpoint": endpoint,
            "status": status,
            "chars": len(req.text),
            "voice": req.voice,
            "emotion": req.emotion,
            "format": req.format,
            "stream": req.stream,
            "latency_ms": round(seconds * 1000, 1),
            "audio_s": round(audio_s, 3),
            **extra,
        }
        if self.settings.log_text:
            record["text"] = req.text
        log.info(json.dumps(record, ensure_ascii=False))

    async def _units(self, req: SynthesisRequest) -> list[SynthesisUnit]:
        try:
            units = await self.orchestrator.units(req)
        except FrontendError as exc:
            message = getattr(exc, "message", None) or str(exc).splitlines()[-1]
            raise TTSError(400, "invalid_text", message[:500]) from None
        if not units:
            raise TTSError(422, "invalid_request", "text contains nothing speakable")
        return units

    async def _synthesize(self, req: SynthesisRequest) -> tuple[CachedResult, bool]:
        """Encoded result for a non-streamed request, through the cache, within the request deadline."""
        key = cache_key(self.model_version, **req.output_fields())
        if self.cache.enabled:
            hit = self.cache.get(key)
            self.metrics.cache_lookup(hit is not None)
            if hit is not None:
                return hit, True
        try:
            async with asyncio.timeout(self.settings.limits.request_timeout_s):
                result = await self.orchestrator.synthesize(req, await self._units(req))
        except TimeoutError:
            self.metrics.error("timeout")
            raise TTSError(504, "timeout", "synthesis did not finish within the request deadline") from None
        data, rate = audio_mod.encode(result.audio, result.sample_rate, req.format, req.sample_rate)
        cached = CachedResult(
            audio=data,
            sample_rate=rate,
            duration_s=result.duration_s,
            timestamps=tuple(result.timestamps),
            units=tuple(result.units),
        )
        self.cache.put(key, cached)
        return cached, False

    async def _respond(
        self, req: SynthesisRequest, endpoint: str, mode: str = "audio", sse: bool = False
    ) -> Response:
        """Answer in ``mode``: ``audio`` bytes (streamed when ``req.stream``; OpenAI SSE events with
        ``sse``), ``json`` (base64 audio, timestamps, unit reports) or ``url`` (``{"wav_url": ...}``)."""
        start = time.perf_counter()
        self.metrics.request(endpoint)
        try:
            try:
                if req.stream:
                    return await self._stream(req, endpoint, start, sse)
                result, hit = await self._synthesize(req)
            except BackPressureError as exc:  # the stage adapters map these; never let one reach Serve's text
                log.warning("unmapped stage backpressure", exc_info=True)
                raise backpressure(exc, self.settings.retry_after_s) from None
        except TTSError as exc:
            self.metrics.error(exc.code)
            self._log(req, endpoint, exc.code, time.perf_counter() - start)
            raise
        seconds = time.perf_counter() - start
        if not hit:
            self.metrics.done(endpoint, False, seconds, result.duration_s)
        self._log(req, endpoint, "ok", seconds, result.duration_s, cached=hit)
        spec = audio_mod.FORMATS[req.format]
        headers = {
            "X-Audio-Duration": f"{result.duration_s:.3f}",
            "X-Sample-Rate": str(result.sample_rate),
            "X-Cache": "hit" if hit else "miss",
            "X-Random-Weights": str(self.random_weights).lower(),
            "Content-Disposition": f'inline; filename="speech.{spec.extension}"',
        }
        if mode == "url":
            key = self.audio_store.put(result.audio, spec.media_type, spec.extension)
            if key is None:
                raise TTSError(413, "audio_too_large", "the audio exceeds the URL store's size limit")
            link = f"/audio/{key}.{spec.extension}"
            url_body = TTSURLResponse(
                wav_url=link if req.format == "wav" else None,
                audio_url=link,
                format=req.format,
                duration_s=round(result.duration_s, 4),
                expires_in_s=self.audio_store.ttl_s,
            )
            return JSONResponse(url_body.model_dump(mode="json"), headers=headers)
        if sse:  # a format that cannot be streamed: the whole encoded audio in one delta event
            events = _sse_events(_one(result.audio), len(req.text))
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        if mode == "json":
            body = TTSJSONResponse(
                audio_base64=base64.b64encode(result.audio).decode("ascii"),
                format=req.format,
                media_type=spec.media_type,
                sample_rate=result.sample_rate,
                duration_s=round(result.duration_s, 4),
                voice=req.voice or self.default_voice,
                emotion=req.emotion,
                emotion_intensity=req.emotion_intensity,
                speaker=req.speaker,
                timestamps=[Timestamp(text=t, start_s=s, end_s=e) for t, s, e in result.timestamps],
                timestamp_unit="syllable",
                cached=hit,
                model_version=self.model_version,
                units=list(result.units),
            )
            return JSONResponse(body.model_dump(mode="json"), headers=headers)
        media = spec.media_type + (f";rate={result.sample_rate}" if req.format == "pcm" else "")
        return Response(result.audio, media_type=media, headers=headers)

    async def _stream(
        self, req: SynthesisRequest, endpoint: str, start: float, sse: bool = False
    ) -> StreamingResponse:
        """Run the frontend first (so errors are proper JSON), then stream audio chunks."""
        try:
            async with asyncio.timeout(self.settings.limits.request_timeout_s):
                units = await self._units(req)
                info = await self.orchestrator.info()
            encoder = audio_mod.StreamEncoder(req.format, info["sample_rate"], req.sample_rate)
        except TimeoutError:
            raise TTSError(504, "timeout", "synthesis did not start within the request deadline") from None
        spec = audio_mod.FORMATS[req.format]
        media = spec.media_type + (f";rate={encoder.rate}" if req.format == "pcm" else "")
        body = self._stream_body(req, endpoint, units, encoder, start)
        if sse:
            body, media = _sse_events(body, len(req.text)), "text/event-stream"
        return StreamingResponse(
            body,
            media_type=media,
            headers={
                "X-Sample-Rate": str(encoder.rate),
                "X-Random-Weights": str(self.random_weights).lower(),
                "Cache-Control": "no-store",
            },
        )

    async def _stream_body(
        self,
        req: SynthesisRequest,
        endpoint: str,
        units: list[SynthesisUnit],
        encoder: audio_mod.StreamEncoder,
        start: float,
    ) -> AsyncIterator[bytes]:
        """Encoded chunks of the orchestrator's stream; a deadline or stage error aborts the body."""
        produced = 0
        status = "ok"
        deadline = start + self.settings.limits.request_timeout_s
        chunks = self.orchestrator.stream(req, units)
        try:
            header = encoder.header()
            if header:
                yield header
            async for chunk in chunks:
                if produced == 0 and chunk.size:
                    self.metrics.first_audio(time.perf_counter() - start)
                produced += len(chunk)
                data = encoder.push(chunk)
                if data:
                    yield data
                if time.perf_counter() > deadline:
                    raise TimeoutError
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
            await chunks.aclose()
            seconds = time.perf_counter() - start
            audio_s = produced / encoder.src_rate
            if status == "ok":
                self.metrics.done(endpoint, True, seconds, audio_s)
            self._log(req, endpoint, status, seconds, audio_s)

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
                result = await self.orchestrator.synthesize(SynthesisRequest("你好。", self.default_voice))
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
                "random_weights": self.random_weights,
            }
        )

    @app.get(
        "/api/voices",
        response_model=VoicesResponse,
        summary="Voices, emotions, formats, limits",
        tags=["tts"],
    )
    async def list_voices(self) -> VoicesResponse:
        info = await self.orchestrator.info()
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
            random_weights=self.random_weights,
        )

    @app.post(
        "/api/tts",
        summary="Synthesize speech",
        tags=["tts"],
        responses={
            200: {
                "model": TTSJSONResponse | TTSURLResponse,
                "content": AUDIO_CONTENT,
                "description": "Audio bytes; JSON with `response: json` / `Accept: application/json` "
                "(base64 audio, timestamps) or `response: url`.",
            },
            **error_responses(400, 413, 422, 429, 503, 504),
        },
    )
    async def tts(self, body: TTSRequest, request: Request) -> Response:
        req = self._request(
            text=body.text,
            voice=body.voice,
            emotion=body.emotion or "neutral",
            emotion_intensity=body.emotion_intensity,
            speaker=body.speaker,
            speed=body.speed,
            pitch=body.pitch,
            volume=body.volume,
            format=body.format,
            sample_rate=body.sample_rate,
            stream=body.stream,
        )
        mode = body.response or (
            "json" if "application/json" in request.headers.get("accept", "") else "audio"
        )
        if mode != "audio" and req.stream:
            raise TTSError(
                400,
                "invalid_request",
                f"stream=true returns audio bytes; drop response={mode!r}/Accept: json",
            )
        return await self._respond(req, "api", mode)

    @app.post(
        "/tts",
        summary="Seed-compatible: {text, emotion, speed} → WAV",
        tags=["compat"],
        responses={
            200: {"model": TTSURLResponse, "content": {"audio/wav": {}}, "description": "WAV, or a URL."},
            **error_responses(400, 413, 422, 429, 503, 504),
        },
    )
    async def seed_tts(self, body: SeedTTSRequest) -> Response:
        req = self._request(
            text=body.text, voice=body.voice, emotion=body.emotion or "neutral", speed=body.speed
        )
        return await self._respond(req, "seed", body.response)

    @app.post(
        "/v1/audio/speech",
        response_class=Response,
        summary="OpenAI-compatible speech endpoint",
        tags=["compat"],
        responses={
            200: {
                "content": {**AUDIO_CONTENT, "text/event-stream": {}},
                "description": "Audio in `response_format` (streamed for pcm/wav), or SSE events.",
            },
            **error_responses(400, 413, 422, 429, 503, 504),
        },
    )
    async def openai_speech(self, body: OpenAISpeechRequest) -> Response:
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
        intensity = intensity_from_instructions(body.instructions)
        req = self._request(
            text=body.input,
            voice=voice,
            emotion=emotion,
            emotion_intensity=1.0 if intensity is None else intensity,
            speed=body.speed,
            format=fmt,
            sample_rate=OPENAI_PCM_RATE if fmt == "pcm" else None,
            stream=fmt in audio_mod.STREAMABLE_FORMATS,  # OpenAI streams its audio (chunked transfer)
        )
        sse = body.stream_format == "sse"
        return await self._respond(req, "openai", sse=sse)

    @app.get(
        "/audio/{name}",
        response_class=Response,
        summary="Audio stored by a `response: url` request (expires; 404 after)",
        tags=["compat"],
        responses={
            200: {"content": AUDIO_CONTENT, "description": "The stored audio."},
            **error_responses(404),
        },
    )
    async def stored_audio(self, name: str) -> Response:
        item = self.audio_store.get(name)
        if item is None:
            raise TTSError(404, "not_found", "no such audio (unknown id, or expired)")
        headers = {
            "Cache-Control": "private, max-age=60",
            "X-Random-Weights": str(self.random_weights).lower(),
        }
        return Response(item.data, media_type=item.media_type, headers=headers)
