"""Static guarantees: every queue and cache is bounded, shutdown drains, and no request handler touches the
filesystem with user input (AST checks over the serving code, plus the shipped Serve config)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from serve_app.cache import ResultCache
from serve_app.ingress import IngressSettings
from serve_app.security.ratelimit import MemoryRateLimiter, RateLimitSettings

REPO = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((REPO / "serve_app/config/local.yaml").read_text("utf-8"))
SOURCES = sorted(
    p
    for d in ("serve_app", "deployments", "engine")
    for p in (REPO / d).rglob("*.py")
    if "testing" not in p.parts
)


def test_every_deployment_has_bounded_queue_and_drain_settings() -> None:
    assert CONFIG["http_options"]["request_timeout_s"] > 0
    for app in CONFIG["applications"]:
        deployments = {d["name"]: d for d in app["deployments"]}
        assert set(deployments) == {"TTSIngress", "TextFrontend", "SambertAcoustic", "HifiGanVocoder"}
        timeout = app["args"]["ingress"]["limits"]["request_timeout_s"]
        for name, d in deployments.items():
            assert 0 < d["max_ongoing_requests"] <= 256, name
            assert 0 < d["max_queued_requests"] <= 1024, name  # -1 would be unbounded
            assert d["backpressure_config"]["retry_after_s"] > 0, name
            assert d["graceful_shutdown_wait_loop_s"] > 0, name
            assert d["graceful_shutdown_timeout_s"] > timeout, name  # in-flight work can finish


def test_deployment_defaults_are_bounded_too() -> None:
    from deployments.acoustic import SambertAcoustic
    from deployments.text_frontend import TextFrontend
    from deployments.vocoder import HifiGanVocoder
    from serve_app.ingress import TTSIngress

    for dep in (TTSIngress, TextFrontend, SambertAcoustic, HifiGanVocoder):
        assert dep.max_queued_requests > 0, dep.name


def _ingress_room(
    ingress_args: dict, deployments: list[dict], overrides: dict | None = None
) -> tuple[int, int]:
    """(max_inflight + max_waiting, TTSIngress max_ongoing_requests) for one config."""
    settings = IngressSettings.from_dict(ingress_args)
    (ingress,) = [d for d in deployments if d["name"] == "TTSIngress"]
    ongoing = (overrides or {}).get("max_ongoing_requests", ingress["max_ongoing_requests"])
    return settings.max_inflight + settings.max_waiting, ongoing


def test_admission_fits_in_the_ingress_replica() -> None:
    """Requests waiting for a slot wait inside the replica (bounded by the wait budget); beyond Serve's
    max_ongoing_requests they would queue in the proxy with no time bound. Local config, defaults, Helm."""
    from serve_app.ingress import TTSIngress
    from tests.k8s.render import VALUE_SETS, effective_values

    app = CONFIG["applications"][0]
    room, ongoing = _ingress_room(app["args"]["ingress"], app["deployments"])
    assert room <= ongoing, (room, ongoing)
    defaults = IngressSettings()
    assert defaults.max_inflight + defaults.max_waiting <= TTSIngress.max_ongoing_requests
    for value_set in VALUE_SETS:
        serve = effective_values(value_set)["serve"]
        merged = {**app["args"]["ingress"], **serve.get("appArgs", {}).get("ingress", {})}
        override = serve.get("deployments", {}).get("TTSIngress", {})
        room, ongoing = _ingress_room(merged, app["deployments"], override)
        assert room <= ongoing, (value_set, room, ongoing)


def test_ingress_caches_and_inflight_are_bounded() -> None:
    ingress = IngressSettings.from_dict(CONFIG["applications"][0]["args"]["ingress"])
    assert 0 < ingress.max_inflight <= 1024
    assert 0 < ingress.cache_max_entries <= 100_000 and 0 < ingress.cache_max_bytes <= 1 << 30
    assert 0 < ingress.limits.max_text_chars <= 10_000 and ingress.limits.max_concurrent_units > 0
    cache = ResultCache(max_entries=2, max_bytes=10**6)
    from serve_app.cache import CachedResult

    for i in range(5):
        cache.put(str(i), CachedResult(b"x" * 10, 16000, 0.1, (), "syllable"))
    assert len(cache) == 2
    assert RateLimitSettings().max_buckets > 0 and MemoryRateLimiter().max_buckets > 0


UNBOUNDED = {"cache"}  # functools.cache


def _unbounded_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            kw = {k.arg: k.value for k in node.keywords}
            if (
                name == "lru_cache"
                and isinstance(kw.get("maxsize"), ast.Constant)
                and kw["maxsize"].value is None
            ):
                found.append(f"lru_cache(maxsize=None) line {node.lineno}")
            if (
                name in ("Queue", "LifoQueue", "PriorityQueue", "SimpleQueue")
                and not node.args
                and "maxsize" not in kw
            ):
                found.append(f"{name}() without maxsize line {node.lineno}")
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for dec in node.decorator_list:
                name = dec.attr if isinstance(dec, ast.Attribute) else getattr(dec, "id", "")
                if name in UNBOUNDED:
                    found.append(f"@functools.cache on {node.name} line {node.lineno}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_unbounded_cache_or_queue(path: Path) -> None:
    assert _unbounded_calls(ast.parse(path.read_text("utf-8"))) == []


FS_CALLS = {"open", "FileResponse", "read_text", "read_bytes", "write_text", "write_bytes", "Path", "unlink"}


def test_request_handlers_never_touch_files_with_user_input() -> None:
    """Inside TTSIngress the only file access is the WebUI page at a constant path."""
    tree = ast.parse((REPO / "serve_app/ingress.py").read_text("utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "TTSIngress")
    calls = []
    for node in ast.walk(cls):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in FS_CALLS:
                calls.append((name, ast.unparse(node)))
    assert calls == [("FileResponse", "FileResponse(STATIC_DIR / 'index.html', media_type='text/html')")]
    # The request-path modules: no file access at all, except the CSP hash of the WebUI page, read from a
    # constant path (the default argument of webui_csp), never from anything a request carries.
    allowed = {
        "serve_app/hardening.py": [
            ("Path", "Path(__file__)"),
            ("read_text", "index.read_text('utf-8')"),
        ],
    }
    for module in ("serve_app/security/middleware.py", "serve_app/hardening.py", "serve_app/stages.py"):
        tree = ast.parse((REPO / module).read_text("utf-8"))
        found = [
            (name, ast.unparse(node))
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and (name := _call_name(node)) in FS_CALLS | {"open", "iterdir", "glob", "mkdir", "rename"}
        ]
        assert sorted(found) == sorted(allowed.get(module, [])), (module, found)
    csp = next(
        n
        for n in ast.walk(ast.parse((REPO / "serve_app/hardening.py").read_text("utf-8")))
        if isinstance(n, ast.FunctionDef) and n.name == "webui_csp"
    )
    assert [ast.unparse(d) for d in csp.args.defaults] == ["STATIC_INDEX"]


def _call_name(node: ast.Call) -> str:
    return node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
