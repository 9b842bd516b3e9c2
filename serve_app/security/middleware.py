"""One ASGI middleware for the ingress: body-size limit, CORS, API-key auth, per-key rate limit, headers.

The FastAPI app is frozen (cloudpickled) when ``@serve.ingress`` runs, so the middleware is added at import
time and reads its policy from this module, which :meth:`TTSIngress.__init__` sets with :func:`configure`
(one ingress per replica process). Until then the policy comes from the environment alone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from serve_app.errors import error_response
from serve_app.hardening import (
    BodyTooLargeError,
    HardeningSettings,
    cors_preflight_headers,
    cors_response_headers,
    read_body,
    replay_receive,
    security_headers,
    webui_csp,
)
from serve_app.security.auth import (
    ENV_KEYS,
    ENV_KEYS_FILE,
    ApiKeyStore,
    auth_enabled_from_env,
    extract_key,
)
from serve_app.security.ratelimit import RateLimiter, RateLimitSettings, build_rate_limiter

__all__ = ["SecurityMiddleware", "SecurityPolicy", "SecuritySettings", "configure", "current"]

log = logging.getLogger("tts.security")

# Paths that never need a key: probes, the static WebUI page, the API description.
DEFAULT_PUBLIC_PATHS = ("/health", "/ready", "/", "/docs", "/openapi.json", "/favicon.ico")


@dataclass
class SecuritySettings:
    """``ingress.security`` settings. ``auth_enabled``/``keys_file``/``keys`` None → environment."""

    auth_enabled: bool | None = None  # None → $TTS_AUTH_ENABLED (off unless set: `make run` is open)
    keys_file: str | None = None  # None → $TTS_API_KEYS_FILE
    keys: str | None = None  # None → $TTS_API_KEYS
    public_paths: list[str] = field(default_factory=lambda: list(DEFAULT_PUBLIC_PATHS))
    rate_limit: RateLimitSettings = field(default_factory=RateLimitSettings)
    hardening: HardeningSettings = field(default_factory=HardeningSettings)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> SecuritySettings:
        raw = dict(raw or {})
        rate = RateLimitSettings.from_dict(raw.pop("rate_limit", None))
        hard = HardeningSettings.from_dict(raw.pop("hardening", None))
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown security settings: {sorted(unknown)}")
        return cls(rate_limit=rate, hardening=hard, **raw)


class SecurityPolicy:
    """Resolved settings plus the live key store and limiter for this replica."""

    def __init__(self, settings: SecuritySettings) -> None:
        import os

        self.settings = settings
        enabled = settings.auth_enabled if settings.auth_enabled is not None else auth_enabled_from_env()
        self.keys: ApiKeyStore | None = None
        if enabled:
            self.keys = ApiKeyStore(
                settings.keys_file or os.environ.get(ENV_KEYS_FILE), settings.keys or os.environ.get(ENV_KEYS)
            )
            log.info("API-key auth enabled; keys: %s", ", ".join(self.keys.names))
        else:
            log.warning("API-key auth is DISABLED: every caller is served (set %s=1)", "TTS_AUTH_ENABLED")
        self.limiter: RateLimiter | None = (
            build_rate_limiter(settings.rate_limit) if settings.rate_limit.enabled else None
        )
        self.public = frozenset(settings.public_paths)
        self.csp = webui_csp()

    @property
    def auth_enabled(self) -> bool:
        return self.keys is not None


_policy: SecurityPolicy | None = None


def configure(raw: dict[str, Any] | SecuritySettings | None) -> SecurityPolicy:
    """Install this replica's policy (called from ``TTSIngress.__init__``)."""
    global _policy
    settings = raw if isinstance(raw, SecuritySettings) else SecuritySettings.from_dict(raw)
    _policy = SecurityPolicy(settings)
    return _policy


def current() -> SecurityPolicy:
    global _policy
    if _policy is None:
        _policy = SecurityPolicy(SecuritySettings())
    return _policy


def _route_path(scope: dict[str, Any]) -> str:
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "") or ""
    if root and root != "/" and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


class SecurityMiddleware:
    """Pure ASGI middleware (no response buffering, so audio streaming is unaffected)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = current()
        hard = policy.settings.hardening
        path = _route_path(scope)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        origin = headers.get("origin")
        extra = security_headers(path, hard, policy.csp) + cors_response_headers(origin, hard)

        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                present = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in extra if k not in present
                ]
            await send(message)

        async def reject(status: int, code: str, msg: str, retry: float | None = None, **hdr: str) -> None:
            response = error_response(status, code, msg, retry)
            for k, v in hdr.items():
                response.headers[k.replace("_", "-")] = v
            await response(scope, receive, send_with_headers)

        # CORS preflight: answered here, never reaches the app.
        if scope["method"] == "OPTIONS" and origin and "access-control-request-method" in headers:
            allowed = cors_preflight_headers(origin, hard)
            if allowed is None:
                await reject(403, "cors_forbidden", "this origin is not allowed to call the API")
                return
            await send_with_headers({"type": "http.response.start", "status": 204, "headers": allowed})
            await send({"type": "http.response.body", "body": b""})
            return

        # Body size: refuse by Content-Length up front, and cap chunked bodies while buffering them.
        length = headers.get("content-length")
        limit = hard.max_body_bytes
        if length is not None:
            if not length.isdigit():
                await reject(400, "bad_request", "invalid Content-Length header")
                return
            if int(length) > limit:
                await reject(413, "body_too_large", f"request body exceeds {limit} bytes")
                return
        if scope["method"] in ("POST", "PUT", "PATCH"):
            try:
                body = await read_body(receive, limit)
            except BodyTooLargeError:
                await reject(413, "body_too_large", f"request body exceeds {limit} bytes")
                return
            except ConnectionAbortedError:
                return
            receive = replay_receive(body, receive)

        public = path in policy.public or scope["method"] == "OPTIONS"
        bucket: str | None = None
        if policy.keys is not None and not public:
            name = policy.keys.identify(extract_key(headers))
            if name is None:
                log.info(json.dumps({"event": "auth_failed", "path": path, "method": scope["method"]}))
                await reject(
                    401,
                    "unauthorized",
                    "a valid API key is required (Authorization: Bearer <key> or X-API-Key)",
                    www_authenticate='Bearer realm="tts"',
                )
                return
            scope.setdefault("state", {})["api_key_name"] = name
            bucket = "key:" + name
        if policy.limiter is not None and not public:
            if bucket is None:
                client = scope.get("client") or ("unknown", 0)
                bucket = "ip:" + str(client[0])
            limit_cfg = policy.settings.rate_limit.limit_for(bucket.removeprefix("key:"))
            decision = await policy.limiter.acquire(bucket, limit_cfg)
            if not decision.allowed:
                log.info(json.dumps({"event": "rate_limited", "bucket": bucket, "path": path}))
                await reject(
                    429,
                    "rate_limited",
                    f"rate limit exceeded ({limit_cfg.rate_per_s:g}/s, burst {limit_cfg.burst:g})",
                    max(decision.retry_after_s, 0.001),
                )
                return
        await self.app(scope, receive, send_with_headers)
