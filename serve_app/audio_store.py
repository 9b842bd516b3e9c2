"""Short-lived audio for the URL response mode (``response: "url"`` → ``{"wav_url": "/audio/<id>.wav"}``).

Bounded by entries and bytes, entries expire after ``ttl_s``; ids are 128-bit random (``secrets``), and the
store is a dict in memory: no user input ever reaches a filesystem path. Per ingress replica: with several
replicas, fetch the URL through the same endpoint soon after the POST (the Helm gateway keeps connections).
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

__all__ = ["AudioStore", "StoredAudio"]

_ID = re.compile(r"[A-Za-z0-9_-]{22}")


@dataclass(frozen=True)
class StoredAudio:
    data: bytes
    media_type: str
    extension: str
    expires_at: float


class AudioStore:
    def __init__(
        self, max_entries: int = 256, max_bytes: int = 64 * 1024 * 1024, ttl_s: float = 600.0
    ) -> None:
        if max_entries < 1 or max_bytes < 1 or ttl_s <= 0:
            raise ValueError("audio_store bounds must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._items: OrderedDict[str, StoredAudio] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def _drop(self, key: str) -> None:
        self._bytes -= len(self._items.pop(key).data)

    def _expire(self, now: float) -> None:
        while self._items:
            key, item = next(iter(self._items.items()))
            if item.expires_at > now:
                break
            self._drop(key)

    def put(self, data: bytes, media_type: str, extension: str) -> str | None:
        """Store ``data``; returns its id, or None when it alone exceeds ``max_bytes``."""
        if len(data) > self.max_bytes:
            return None
        now = time.monotonic()
        self._expire(now)
        key = secrets.token_urlsafe(16)  # 22 characters, 128 bits
        self._items[key] = StoredAudio(data, media_type, extension, now + self.ttl_s)
        self._bytes += len(data)
        while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._items)))
        return key

    def get(self, name: str) -> StoredAudio | None:
        """The audio for ``<id>.<extension>``; None when unknown, malformed or expired."""
        key, dot, ext = name.partition(".")
        if not dot or not _ID.fullmatch(key):
            return None
        self._expire(time.monotonic())
        item = self._items.get(key)
        return item if item is not None and item.extension == ext else None
