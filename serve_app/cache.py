"""Bounded, content-addressed result cache (LRU by entries and bytes) for encoded synthesis results."""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from engine.orchestrator import UnitReport

__all__ = ["CachedResult", "ResultCache", "cache_key"]


def cache_key(model_version: str, **params: Any) -> str:
    """SHA-256 over the model version and every parameter that changes the output."""
    blob = json.dumps({"model_version": model_version, **params}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedResult:
    """An encoded result plus what the JSON response needs."""

    audio: bytes
    sample_rate: int
    duration_s: float
    timestamps: tuple[tuple[str, float, float], ...]
    units: tuple[UnitReport, ...] = ()

    @property
    def nbytes(self) -> int:
        return len(self.audio) + 64 * len(self.timestamps) + 256 * len(self.units)


class ResultCache:
    """LRU cache bounded by ``max_entries`` and ``max_bytes``; ``max_entries=0`` disables it."""

    def __init__(self, max_entries: int = 256, max_bytes: int = 64 * 1024 * 1024) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("cache bounds must be >= 0")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, CachedResult] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: str) -> CachedResult | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key: str, value: CachedResult) -> None:
        if not self.enabled or value.nbytes > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= old.nbytes
        self._items[key] = value
        self._bytes += value.nbytes
        while len(self._items) > self.max_entries or self._bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._bytes -= evicted.nbytes
