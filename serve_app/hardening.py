"""HTTP hardening primitives: security headers, CORS (closed unless origins are listed), body-size limit.

Used by :class:`serve_app.security.middleware.SecurityMiddleware`; these functions hold no state.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BodyTooLargeError",
    "HardeningSettings",
    "cors_preflight_headers",
    "cors_response_headers",
    "inline_script_hashes",
    "read_body",
    "replay_receive",
    "security_headers",
]

STATIC_INDEX = Path(__file__).resolve().parent / "static" / "index.html"
WEBUI_PATHS = frozenset({"/", "/index.html"})
_SCRIPT_RE = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)
_STYLE_RE = re.compile(r"<style[^>]*>(.*?)</style>", re.S | re.I)


@dataclass
class HardeningSettings:
    """``security.hardening`` settings. Defaults are closed: no CORS origin, 64 KiB bodies, headers on."""

    cors_origins: list[str] = field(default_factory=list)  # exact origins, e.g. https://cs.example.com
    cors_methods: list[str] = field(default_factory=lambda: ["GET", "POST"])
    cors_headers: list[str] = field(
        default_factory=lambda: ["Authorization", "X-API-Key", "Content-Type", "Accept"]
    )
    cors_max_age_s: int = 600
    max_body_bytes: int = 64 * 1024  # 2000 CJK chars as JSON \\u escapes is ~12 KiB
    security_headers: bool = True
    hsts: bool = False  # only behind TLS termination

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> HardeningSettings:
        raw = dict(raw or {})
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown hardening settings: {sorted(unknown)}")
        out = cls(**raw)
        if out.max_body_bytes < 1024:
            raise ValueError("hardening.max_body_bytes must be >= 1024")
        if "*" in out.cors_origins:
            raise ValueError("hardening.cors_origins: '*' is not allowed; list exact origins")
        return out


def _sha256_sources(pattern: re.Pattern[str], html: str) -> list[str]:
    return [
        "'sha256-" + base64.b64encode(hashlib.sha256(m.encode("utf-8")).digest()).decode("ascii") + "'"
        for m in pattern.findall(html)
    ]


def inline_script_hashes(html: str) -> tuple[list[str], list[str]]:
    """CSP hash sources for the page's inline ``<script>`` and ``<style>`` blocks."""
    return _sha256_sources(_SCRIPT_RE, html), _sha256_sources(_STYLE_RE, html)


def webui_csp(index: Path = STATIC_INDEX) -> str:
    """A strict CSP for the WebUI: same-origin only, inline code allowed by hash, no framing."""
    try:
        scripts, styles = inline_script_hashes(index.read_text("utf-8"))
    except OSError:
        scripts, styles = [], []
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self' " + " ".join(scripts),
            "style-src 'self' " + " ".join(styles),
            "img-src 'self' data:",
            "media-src 'self' blob: data:",
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def security_headers(path: str, settings: HardeningSettings, csp: str) -> list[tuple[bytes, bytes]]:
    """Headers added to every response; the WebUI page also gets the CSP."""
    if not settings.security_headers:
        return []
    out = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"cross-origin-resource-policy", b"same-origin"),
        (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
    ]
    if path in WEBUI_PATHS:
        out.append((b"content-security-policy", csp.encode("ascii")))
        out.append((b"cache-control", b"no-store"))
    if settings.hsts:
        out.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
    return out


def cors_response_headers(origin: str | None, settings: HardeningSettings) -> list[tuple[bytes, bytes]]:
    """``Access-Control-Allow-Origin`` for an allowed origin; nothing otherwise (browsers then block)."""
    if not origin or origin not in settings.cors_origins:
        return []
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-expose-headers", b"X-Audio-Duration, X-Sample-Rate, X-Cache, Retry-After"),
        (b"vary", b"Origin"),
    ]


def cors_preflight_headers(origin: str, settings: HardeningSettings) -> list[tuple[bytes, bytes]] | None:
    """Headers for an allowed preflight; None when the origin is not allowed."""
    if origin not in settings.cors_origins:
        return None
    return [
        (b"access-control-allow-origin", origin.encode("latin-1")),
        (b"access-control-allow-methods", ", ".join(settings.cors_methods).encode("ascii")),
        (b"access-control-allow-headers", ", ".join(settings.cors_headers).encode("ascii")),
        (b"access-control-max-age", str(settings.cors_max_age_s).encode("ascii")),
        (b"vary", b"Origin"),
    ]


class BodyTooLargeError(Exception):
    """The request body exceeded ``max_body_bytes``."""


Receive = Callable[[], Awaitable[dict[str, Any]]]


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body (chunked or not), refusing to buffer more than ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionAbortedError("client disconnected while sending the body")
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise BodyTooLargeError(f"request body exceeds {limit} bytes")
        chunks.append(body)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay_receive(body: bytes, receive: Receive) -> Receive:
    """An ASGI ``receive`` that yields the buffered body once, then defers to the real one (disconnects)."""
    sent = False

    async def wrapped() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped
