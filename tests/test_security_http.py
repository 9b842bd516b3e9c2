"""Auth, per-key limits, CORS, headers, body limit and privacy through real HTTP on the shared Serve instance.

``tts`` (at ``/``) runs the default security settings (auth off, CORS closed); ``relsecure`` is deployed here
with API keys, a per-key token bucket and one allowed CORS origin.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks import reliability as rel
from tests._reliability import deploy, stage_options, undeploy

pytestmark = pytest.mark.serve
APP = "relsecure"
KEY_CRM = "crm-" + "a1b2c3d4e5f6a7b8c9d0"
KEY_IVR = "ivr-" + "0f9e8d7c6b5a49382716"
ORIGIN = "https://cs.example.com"


@pytest.fixture(scope="module")
def secure(serve_instance) -> Iterator[str]:  # type: ignore[no-untyped-def]
    args = {
        "model_dir": str(serve_instance.model_dir),
        "threads": {"frontend": 1, "acoustic": 1, "vocoder": 1},
        "ingress": {
            "security": {
                "auth_enabled": True,
                "keys": f"crm:{KEY_CRM},ivr:{KEY_IVR}",
                "rate_limit": {
                    "enabled": True,
                    "rate_per_s": 50,
                    "burst": 50,
                    "per_key": {"ivr": {"rate_per_s": 0.2, "burst": 2}},
                },
                "hardening": {"cors_origins": [ORIGIN], "max_body_bytes": 16384},
            }
        },
        "options": {n: stage_options(num_replicas=1) for n in ("TTSIngress", *rel.STAGES)},
    }
    deploy(APP, f"/{APP}", args)
    try:
        yield serve_instance.url + f"/{APP}"
    finally:
        undeploy(APP)


def test_auth_required_bearer_and_x_api_key(secure: str) -> None:
    body = {"text": "您好。", "format": "pcm"}
    none = httpx.post(secure + "/api/tts", json=body, timeout=60)
    assert none.status_code == 401 and none.json()["error"]["code"] == "unauthorized"
    assert none.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.post(
        secure + "/api/tts", json=body, headers={"Authorization": "Bearer " + "x" * 24}, timeout=60
    )
    assert wrong.status_code == 401
    bearer = httpx.post(
        secure + "/api/tts", json=body, headers={"Authorization": f"Bearer {KEY_CRM}"}, timeout=60
    )
    assert bearer.status_code == 200, bearer.text
    header = httpx.get(secure + "/api/voices", headers={"X-API-Key": KEY_CRM}, timeout=60)
    assert header.status_code == 200
    for path in ("/health", "/openapi.json"):  # probes and the API description stay open
        assert httpx.get(secure + path, timeout=60).status_code == 200, path
    for path in ("/tts", "/v1/audio/speech"):  # every synthesis endpoint is protected
        assert httpx.post(secure + path, json={"text": "好", "input": "好"}, timeout=60).status_code == 401


def test_per_key_rate_limit_429_with_retry_after(secure: str) -> None:
    h = {"X-API-Key": KEY_IVR}
    codes = []
    for _ in range(4):
        r = httpx.get(secure + "/api/voices", headers=h, timeout=60)
        codes.append(r.status_code)
    assert codes[:2] == [200, 200] and codes[2:] == [429, 429]
    assert r.json()["error"]["code"] == "rate_limited" and 1 <= int(r.headers["retry-after"]) <= 5
    other = httpx.get(secure + "/api/voices", headers={"X-API-Key": KEY_CRM}, timeout=60)
    assert other.status_code == 200  # limits are per key


def test_cors_allowlist_on_secure_app(secure: str) -> None:
    pre = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key",
    }
    ok = httpx.options(secure + "/api/tts", headers=pre, timeout=60)
    assert ok.status_code == 204 and ok.headers["access-control-allow-origin"] == ORIGIN
    bad = httpx.options(secure + "/api/tts", headers={**pre, "Origin": "https://evil.example"}, timeout=60)
    assert bad.status_code == 403 and "access-control-allow-origin" not in bad.headers


def test_default_app_cors_closed_and_headers(serve_instance) -> None:  # type: ignore[no-untyped-def]
    url = serve_instance.url
    pre = {"Origin": "https://cs.example.com", "Access-Control-Request-Method": "POST"}
    r = httpx.options(url + "/api/tts", headers=pre, timeout=60)
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers
    page = httpx.get(url + "/", headers={"Origin": "https://cs.example.com"}, timeout=60)
    assert page.status_code == 200 and "access-control-allow-origin" not in page.headers
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    api = httpx.get(url + "/api/voices", timeout=60)
    assert api.headers["x-content-type-options"] == "nosniff"


def test_body_size_limit(serve_instance) -> None:  # type: ignore[no-untyped-def]
    url = serve_instance.url
    t0 = time.monotonic()
    r = httpx.post(
        url + "/api/tts",
        content=b'{"text": "' + b"a" * 200_000 + b'"}',
        timeout=60,
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    assert time.monotonic() - t0 < 5


def _access_lines(logs: Path) -> int:
    n = 0
    for f in logs.glob("serve/replica_tts_TTSIngress_*.log"):
        n += sum("POST /api/tts 200" in line for line in f.read_text("utf-8", "replace").splitlines())
    return n


def test_request_text_is_not_logged(serve_instance) -> None:  # type: ignore[no-untyped-def]
    """Send a unique marker in a valid request and in a malformed SSML request; it must appear in no log file
    of this Ray session, while the request itself is logged (positive control: the ingress access log)."""
    import ray

    marker = "隐私" + uuid.uuid4().hex[:12]
    url = serve_instance.url
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    before = _access_lines(logs)
    ok = httpx.post(url + "/api/tts", json={"text": f"您好{marker}。", "format": "pcm"}, timeout=60)
    assert ok.status_code == 200
    bad = httpx.post(url + "/api/tts", json={"text": f"<speak><prosody>{marker}</speak>"}, timeout=60)
    assert bad.status_code == 400
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _access_lines(logs) <= before:  # logs are flushed asynchronously
        time.sleep(0.5)
    assert _access_lines(logs) > before, "the request's access-log line never appeared (logs not captured?)"
    time.sleep(1.0)
    for f in logs.rglob("*"):
        if f.is_file() and f.suffix in (".log", ".out", ".err"):
            assert marker not in f.read_text("utf-8", "replace"), f"request text leaked into {f}"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/../../../../etc/passwd", None),
        ("GET", "/static/..%2f..%2f..%2fetc%2fpasswd", None),
        ("GET", "/%2e%2e/%2e%2e/etc/passwd", None),
        ("POST", "/api/tts", {"text": "你好", "voice": "../../../../etc/passwd"}),
        ("POST", "/api/tts", {"text": "你好", "format": "../../etc/passwd"}),
        ("POST", "/v1/audio/speech", {"input": "你好", "voice": "/etc/passwd", "response_format": "wav"}),
    ],
)
def test_no_filesystem_access_from_user_input(
    serve_instance, method: str, path: str, body: dict | None
) -> None:  # type: ignore[no-untyped-def]
    r = httpx.request(method, serve_instance.url + path, json=body, timeout=60)
    assert 400 <= r.status_code < 500 and "root:" not in r.text


def _synthesis_events(logs: Path) -> int:
    """Structured per-request records (``tts.ingress``, event=synthesis) in this session's replica logs."""
    n = 0
    for f in logs.rglob("*.log"):
        n += sum(
            1
            for line in f.read_text("utf-8", "replace").splitlines()
            if "synthesis" in line and "latency_ms" in line
        )
    return n


def test_structured_request_log_is_written(serve_instance) -> None:  # type: ignore[no-untyped-def]
    """The ingress's JSON request record reaches the replica logs (tts.* loggers routed through Serve's)."""
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    before = _synthesis_events(logs)
    r = httpx.post(serve_instance.url + "/api/tts", json={"text": "日志测试。", "format": "pcm"}, timeout=60)
    assert r.status_code == 200
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and _synthesis_events(logs) <= before:
        time.sleep(0.5)
    assert _synthesis_events(logs) > before, "no structured synthesis record in the replica logs"
