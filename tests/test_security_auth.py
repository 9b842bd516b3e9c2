"""API keys: loading (file, Secret dir, env), header extraction, constant-time identification, reload."""

from __future__ import annotations

import hmac
import os
import time
from pathlib import Path

import pytest

from serve_app.security import auth
from serve_app.security.auth import ApiKeyStore, AuthConfigError, extract_key, load_keys

K1 = "k1-0123456789abcdef"
K2 = "k2-fedcba9876543210"


def test_file_lines_with_comments(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text(f"# comment\n\nalpha:{K1}\nbeta: {K2}\n")
    assert load_keys(str(f)) == {"alpha": K1, "beta": K2}


def test_secret_directory_layout(tmp_path: Path) -> None:
    """A mounted Secret: one file per key, plus ..data and dotfiles that must be ignored."""
    (tmp_path / "..data").mkdir()
    (tmp_path / ".hidden").write_text("x" * 20)
    (tmp_path / "crm-prod").write_text(K1 + "\n")
    (tmp_path / "ivr").write_text(K2)
    assert load_keys(str(tmp_path)) == {"crm-prod": K1, "ivr": K2}


def test_inline_env_format_and_merge(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text(f"alpha:{K1}\n")
    assert load_keys(str(f), f"beta:{K2}") == {"alpha": K1, "beta": K2}


@pytest.mark.parametrize(
    ("inline", "why"),
    [
        ("alpha:short", "shorter than"),
        (f"alpha:{K1},alpha:{K2}", "defined twice"),
        (f"bad name:{K1}", "key name"),
        ("nocolon", "expected 'name:key'"),
    ],
)
def test_bad_key_config_is_refused_with_reason(inline: str, why: str) -> None:
    with pytest.raises(AuthConfigError, match=why):
        load_keys(None, inline)


def test_auth_on_without_keys_refuses_to_start() -> None:
    with pytest.raises(AuthConfigError, match="no API keys"):
        ApiKeyStore(None, None)
    with pytest.raises(AuthConfigError, match="does not exist"):
        ApiKeyStore("/nonexistent/keys", None)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"authorization": f"Bearer {K1}"}, K1),
        ({"authorization": f"bearer   {K1} "}, K1),
        ({"x-api-key": K2}, K2),
        ({"authorization": f"Bearer {K1}", "x-api-key": K2}, K1),
        ({"authorization": f"Basic {K1}"}, None),
        ({"authorization": "Bearer "}, None),
        ({}, None),
    ],
)
def test_extract_key(headers: dict[str, str], expected: str | None) -> None:
    assert extract_key(headers) == expected


def test_identify_returns_name_and_compares_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    store = ApiKeyStore(None, f"alpha:{K1},beta:{K2}")
    assert store.identify(K1) == "alpha" and store.identify(K2) == "beta"
    assert store.identify(K1 + "x") is None and store.identify(None) is None and store.identify("") is None
    calls: list[int] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    store.identify(K1)  # matches the first key; must still compare against the second (no early exit)
    assert len(calls) == 2


def test_keys_never_stored_in_clear() -> None:
    store = ApiKeyStore(None, f"alpha:{K1}")
    assert K1 not in repr(store.__dict__)


def test_rotation_reloads_changed_file(tmp_path: Path) -> None:
    f = tmp_path / "keys"
    f.write_text(f"alpha:{K1}\n")
    store = ApiKeyStore(str(f), None, reload_interval_s=0.0)
    assert store.identify(K1) == "alpha"
    f.write_text(f"beta:{K2}\n")
    later = time.time() + 5
    os.utime(f, (later, later))
    assert store.identify(K2) == "beta" and store.identify(K1) is None
    f.write_text("broken line\n")  # a bad rotation keeps the previous keys
    os.utime(f, (later + 5, later + 5))
    assert store.identify(K2) == "beta"


def test_env_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(auth.ENV_AUTH_ENABLED, raising=False)
    assert auth.auth_enabled_from_env() is False  # `make run` default: open
    for value, expected in (("1", True), ("true", True), ("ON", True), ("0", False), ("no", False)):
        monkeypatch.setenv(auth.ENV_AUTH_ENABLED, value)
        assert auth.auth_enabled_from_env() is expected
