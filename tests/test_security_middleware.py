"""SecurityMiddleware on a small FastAPI app (no Ray): CORS closed by default, headers, body limit, auth."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from serve_app.errors import install_error_handlers
from serve_app.hardening import inline_script_hashes
from serve_app.security import SecurityMiddleware, configure
from serve_app.security import middleware as mw

KEY_A = "alpha-0123456789abcdef"
KEY_B = "beta-0123456789abcdef0"


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(SecurityMiddleware)

    @app.get("/")
    async def index() -> Any:
        from fastapi.responses import HTMLResponse

        return HTMLResponse("<html><script>var x=1;</script></html>")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "healthy"}

    @app.post("/api/tts")
    async def tts(request: Request) -> dict[str, Any]:
        body = await request.body()
        return {"n": len(body), "key": getattr(request.state, "api_key_name", None)}

    return app


@pytest.fixture(autouse=True)
def reset_policy() -> Iterator[None]:
    yield
    mw._policy = None


def call(method: str, path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=make_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.request(method, path, **kw)

    return asyncio.run(go())


def test_defaults_open_auth_closed_cors_and_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TTS_AUTH_ENABLED", raising=False)
    configure({})
    r = call("POST", "/api/tts", json={"text": "x"}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 200  # auth off by default (make run)
    assert "access-control-allow-origin" not in r.headers  # CORS closed by default
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    pre = call(
        "OPTIONS",
        "/api/tts",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert pre.status_code == 403 and "access-control-allow-origin" not in pre.headers


def test_cors_allowlist() -> None:
    configure({"hardening": {"cors_origins": ["https://cs.example.com"]}})
    ok = call(
        "OPTIONS",
        "/api/tts",
        headers={"Origin": "https://cs.example.com", "Access-Control-Request-Method": "POST"},
    )
    assert ok.status_code == 204 and ok.headers["access-control-allow-origin"] == "https://cs.example.com"
    assert "X-API-Key" in ok.headers["access-control-allow-headers"]
    r = call("POST", "/api/tts", json={}, headers={"Origin": "https://cs.example.com"})
    assert (
        r.headers["access-control-allow-origin"] == "https://cs.example.com" and r.headers["vary"] == "Origin"
    )
    other = call("POST", "/api/tts", json={}, headers={"Origin": "https://cs.example.com.evil.io"})
    assert "access-control-allow-origin" not in other.headers
    with pytest.raises(ValueError, match="not allowed"):
        configure({"hardening": {"cors_origins": ["*"]}})


def test_webui_csp_allows_only_hashed_inline_code() -> None:
    configure({})
    r = call("GET", "/")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    from serve_app.hardening import STATIC_INDEX

    scripts, styles = inline_script_hashes(STATIC_INDEX.read_text("utf-8"))
    assert scripts and all(h in csp for h in scripts + styles)  # the real WebUI's inline code is allowed
    assert "content-security-policy" not in call("GET", "/health").headers


def test_body_limit_by_length_and_chunked() -> None:
    configure({"hardening": {"max_body_bytes": 2048}})
    assert call("POST", "/api/tts", content=b"x" * 2048).json()["n"] == 2048
    big = call("POST", "/api/tts", content=b"x" * 2049)
    assert big.status_code == 413 and big.json()["error"]["code"] == "body_too_large"

    async def chunks() -> Any:
        for _ in range(10):
            yield b"y" * 1000

    chunked = call("POST", "/api/tts", content=chunks())  # no Content-Length
    assert chunked.status_code == 413
    assert call("POST", "/api/tts", headers={"content-length": "abc"}, content=b"").status_code == 400


def test_auth_required_and_key_name_exposed_not_key() -> None:
    configure({"auth_enabled": True, "keys": f"crm:{KEY_A},ivr:{KEY_B}"})
    assert call("GET", "/health").status_code == 200  # probes stay open
    no = call("POST", "/api/tts", json={})
    assert no.status_code == 401 and no.headers["www-authenticate"].startswith("Bearer")
    assert (
        call("POST", "/api/tts", headers={"Authorization": "Bearer wrong-key-0123456789"}).status_code == 401
    )
    assert call("POST", "/api/tts", headers={"Authorization": f"Bearer {KEY_A}"}).json()["key"] == "crm"
    assert call("POST", "/api/tts", headers={"X-API-Key": KEY_B}).json()["key"] == "ivr"


def test_auth_via_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"crm:{KEY_A}\n")
    monkeypatch.setenv("TTS_AUTH_ENABLED", "true")
    monkeypatch.setenv("TTS_API_KEYS_FILE", str(keys))
    configure({})
    assert call("POST", "/api/tts").status_code == 401
    assert call("POST", "/api/tts", headers={"X-API-Key": KEY_A}).status_code == 200


def test_rate_limit_per_key_429_retry_after() -> None:
    configure(
        {
            "auth_enabled": True,
            "keys": f"crm:{KEY_A},ivr:{KEY_B}",
            "rate_limit": {"enabled": True, "rate_per_s": 0.2, "burst": 2, "per_key": {"crm": {"burst": 3}}},
        }
    )

    async def burst(key: str, n: int) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=make_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return [await c.post("/api/tts", headers={"X-API-Key": key}) for _ in range(n)]

    crm = asyncio.run(burst(KEY_A, 5))
    ivr = asyncio.run(burst(KEY_B, 3))
    assert [r.status_code for r in crm] == [200, 200, 200, 429, 429]
    assert [r.status_code for r in ivr] == [200, 200, 429]
    limited = crm[-1]
    assert limited.json()["error"]["code"] == "rate_limited" and 1 <= int(limited.headers["retry-after"]) <= 5
