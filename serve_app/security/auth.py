"""API-key authentication: named keys from a file, a directory (Kubernetes Secret mount) or an env var.

Clients send ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. Keys are compared in constant time
(``hmac.compare_digest`` on SHA-256 digests, against *every* configured key, no early exit), and only the
key's *name* ever reaches logs or rate-limit buckets.

Sources (all merged; a name defined twice is a configuration error):
  * ``TTS_API_KEYS_FILE`` / ``keys_file``: a file of ``name:key`` lines (``#`` comments), or a directory in
    which every regular file is one key named after the file (how a Secret volume is laid out).
  * ``TTS_API_KEYS`` / ``keys``: inline ``name:key,name2:key2`` (local runs; prefer the file in production).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "ENV_AUTH_ENABLED",
    "ENV_KEYS",
    "ENV_KEYS_FILE",
    "MIN_KEY_LENGTH",
    "ApiKeyStore",
    "AuthConfigError",
    "extract_key",
    "load_keys",
]

log = logging.getLogger("tts.security.auth")

ENV_AUTH_ENABLED = "TTS_AUTH_ENABLED"
ENV_KEYS_FILE = "TTS_API_KEYS_FILE"
ENV_KEYS = "TTS_API_KEYS"
MIN_KEY_LENGTH = 16
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")


class AuthConfigError(ValueError):
    """The key configuration is unusable (auth on without keys, short keys, duplicate names...)."""


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _add(out: dict[str, str], name: str, key: str, where: str) -> None:
    name, key = name.strip(), key.strip()
    if not name or not set(name) <= _NAME_CHARS:
        raise AuthConfigError(f"{where}: key name {name!r} must be non-empty [A-Za-z0-9._-]")
    if len(key) < MIN_KEY_LENGTH:
        raise AuthConfigError(f"{where}: key {name!r} is shorter than {MIN_KEY_LENGTH} characters")
    if name in out:
        raise AuthConfigError(f"{where}: key name {name!r} defined twice")
    out[name] = key


def _parse_lines(text: str, where: str, out: dict[str, str]) -> None:
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if ":" not in line:
            raise AuthConfigError(f"{where} line {n}: expected 'name:key'")
        name, key = line.split(":", 1)
        _add(out, name, key, f"{where} line {n}")


def load_keys(keys_file: str | None = None, inline: str | None = None) -> dict[str, str]:
    """Named keys from a file or Secret directory and/or an inline ``name:key,...`` string."""
    out: dict[str, str] = {}
    if keys_file:
        path = Path(keys_file)
        if path.is_dir():
            for entry in sorted(path.iterdir()):
                if entry.name.startswith(".") or not entry.is_file():
                    continue  # Secret mounts carry ..data symlink dirs and dotfiles
                _add(out, entry.name, entry.read_text("utf-8"), f"{path}/{entry.name}")
        elif path.is_file():
            _parse_lines(path.read_text("utf-8"), str(path), out)
        else:
            raise AuthConfigError(f"API key file {keys_file} does not exist")
    if inline:
        for n, item in enumerate(inline.split(","), 1):
            if item.strip():
                if ":" not in item:
                    raise AuthConfigError(f"{ENV_KEYS} item {n}: expected 'name:key'")
                name, key = item.split(":", 1)
                _add(out, name, key, f"{ENV_KEYS} item {n}")
    return out


def extract_key(headers: Mapping[str, str]) -> str | None:
    """The presented key from ``Authorization: Bearer`` (preferred) or ``X-API-Key``; None if absent."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    value = headers.get("x-api-key")
    return value.strip() if value and value.strip() else None


@dataclass
class ApiKeyStore:
    """Named keys, checked in constant time; reloads the key file when it changes (key rotation)."""

    keys_file: str | None = None
    inline: str | None = None
    reload_interval_s: float = 10.0
    _digests: list[tuple[str, bytes]] = field(default_factory=list, init=False, repr=False)
    _inline: list[tuple[str, bytes]] = field(default_factory=list, init=False, repr=False)
    _mtime: float | None = field(default=None, init=False)
    _checked: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        # Inline keys are hashed once and the clear text dropped; only the file is re-read on rotation.
        self._inline = [(n, _digest(k)) for n, k in load_keys(None, self.inline).items()]
        self.inline = None
        self._load()
        if not self._digests:
            raise AuthConfigError(
                f"auth is enabled but no API keys are configured (set {ENV_KEYS_FILE} or {ENV_KEYS})"
            )

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._digests]

    def _file_mtime(self) -> float | None:
        if not self.keys_file:
            return None
        path = Path(self.keys_file)
        try:
            if path.is_dir():  # Secret updates swap the ..data symlink: the directory mtime changes
                return max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.iterdir()])
            return path.stat().st_mtime
        except OSError:
            return None

    def _load(self) -> None:
        keys = load_keys(self.keys_file, None)
        inline = getattr(self, "_inline", [])
        clash = set(keys) & {name for name, _ in inline}
        if clash:
            raise AuthConfigError(f"key names defined in both the file and {ENV_KEYS}: {sorted(clash)}")
        self._digests = [(name, _digest(key)) for name, key in keys.items()] + list(inline)
        self._mtime = self._file_mtime()

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if not self.keys_file or now - self._checked < self.reload_interval_s:
            return
        self._checked = now
        if self._file_mtime() != self._mtime:
            try:
                self._load()
                log.info("reloaded API keys: %s", ", ".join(self.names))
            except (AuthConfigError, OSError) as exc:  # keep serving with the previous keys
                log.error("API key reload failed, keeping previous keys: %s", exc)

    def identify(self, presented: str | None) -> str | None:
        """The name of the key that matches ``presented`` (None if none); constant time over all keys."""
        self._maybe_reload()
        if not presented:
            return None
        probe = _digest(presented)
        match: str | None = None
        for name, digest in self._digests:
            if hmac.compare_digest(probe, digest) and match is None:
                match = name
        return match


def auth_enabled_from_env(default: bool = False) -> bool:
    """``TTS_AUTH_ENABLED`` as a bool (1/true/yes/on)."""
    raw = os.environ.get(ENV_AUTH_ENABLED)
    if raw is None or not raw.strip():
        return default
    return raw.strip().lower() in ("1", "true", "yes", "on")
