"""Per-key token-bucket rate limits: an in-process backend and a Redis-backed shared backend.

Choice (see README "Security"): the **memory** backend keeps one bucket table per ingress replica, so the
effective limit of a key is ``rate × number of ingress replicas`` and it resets when a replica restarts; it
needs nothing else and costs ~1 µs. The **redis** backend keeps one bucket per key for the whole
deployment (all replicas, both clusters if they share the Redis) with an atomic Lua script that reads the
Redis server clock, so the limit is exact under autoscaling; it costs one round trip per request. If Redis is
unreachable the limiter falls back to the in-process buckets (limits stay enforced per replica, the call path
never fails because of the limiter) and retries Redis after ``redis_retry_s``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ENV_REDIS_URL",
    "Decision",
    "MemoryRateLimiter",
    "RateLimit",
    "RateLimitSettings",
    "RateLimiter",
    "RedisRateLimiter",
    "build_rate_limiter",
]

log = logging.getLogger("tts.security.ratelimit")
ENV_REDIS_URL = "TTS_RATELIMIT_REDIS_URL"


@dataclass(frozen=True)
class RateLimit:
    """``rate_per_s`` tokens refill per second up to ``burst``; each request costs one token."""

    rate_per_s: float
    burst: float

    def __post_init__(self) -> None:
        if not (self.rate_per_s > 0 and math.isfinite(self.rate_per_s)):
            raise ValueError(f"rate_per_s must be a positive number, got {self.rate_per_s}")
        if not (self.burst >= 1 and math.isfinite(self.burst)):
            raise ValueError(f"burst must be >= 1, got {self.burst}")


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: float  # 0 when allowed
    remaining: float


@dataclass
class RateLimitSettings:
    """``security.rate_limit`` settings. ``per_key`` overrides the default limit by key name."""

    enabled: bool = False
    rate_per_s: float = 10.0
    burst: float = 20.0
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str | None = None  # None → $TTS_RATELIMIT_REDIS_URL
    redis_prefix: str = "tts:rl:"
    redis_timeout_s: float = 0.2
    redis_retry_s: float = 5.0
    per_key: dict[str, dict[str, float]] = field(default_factory=dict)
    max_buckets: int = 10_000  # memory backend: least-recently-used buckets beyond this are dropped

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> RateLimitSettings:
        raw = dict(raw or {})
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown rate_limit settings: {sorted(unknown)}")
        out = cls(**raw)
        if out.backend not in ("memory", "redis"):
            raise ValueError(f"rate_limit.backend must be 'memory' or 'redis', got {out.backend!r}")
        if out.max_buckets < 1:
            raise ValueError("rate_limit.max_buckets must be >= 1")
        out.limit_for("")  # validate the default and every override now
        for name in out.per_key:
            out.limit_for(name)
        return out

    def limit_for(self, name: str) -> RateLimit:
        over = self.per_key.get(name, {})
        return RateLimit(float(over.get("rate_per_s", self.rate_per_s)), float(over.get("burst", self.burst)))


class RateLimiter:
    """Interface: ``await acquire(bucket, limit)``."""

    async def acquire(self, bucket: str, limit: RateLimit, cost: float = 1.0) -> Decision:
        raise NotImplementedError

    async def close(self) -> None:
        return None


class MemoryRateLimiter(RateLimiter):
    """In-process token buckets (one table per replica), LRU-bounded to ``max_buckets``."""

    def __init__(self, max_buckets: int = 10_000, clock: Any = time.monotonic) -> None:
        self.max_buckets = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # bucket → (tokens, ts)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, bucket: str, limit: RateLimit, cost: float = 1.0) -> Decision:
        now = self._clock()
        tokens, ts = self._buckets.pop(bucket, (limit.burst, now))
        tokens = min(limit.burst, tokens + max(0.0, now - ts) * limit.rate_per_s)
        if tokens >= cost:
            tokens -= cost
            decision = Decision(True, 0.0, tokens)
        else:
            decision = Decision(False, (cost - tokens) / limit.rate_per_s, tokens)
        self._buckets[bucket] = (tokens, now)
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)
        return decision

    async def acquire(self, bucket: str, limit: RateLimit, cost: float = 1.0) -> Decision:
        return self.take(bucket, limit, cost)


# KEYS[1] bucket key; ARGV: rate, burst, cost. Uses the Redis server clock (no client clock skew between
# replicas); the key expires once it would be full again, so idle keys cost no memory.
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1])
local ts = tonumber(data[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst / rate) * 1000) + 1000)
return {allowed, tostring(retry), tostring(tokens)}
"""


class RedisRateLimiter(RateLimiter):
    """Shared token buckets in Redis (atomic Lua script); falls back to in-process buckets on Redis errors."""

    def __init__(
        self,
        url: str,
        prefix: str = "tts:rl:",
        timeout_s: float = 0.2,
        retry_s: float = 5.0,
        fallback: MemoryRateLimiter | None = None,
    ) -> None:
        import redis.asyncio as aioredis

        self.prefix = prefix
        self.retry_s = retry_s
        self.fallback = fallback or MemoryRateLimiter()
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, decode_responses=True
        )
        self._script = self._client.register_script(TOKEN_BUCKET_LUA)
        self._down_until = 0.0
        self.fallbacks = 0

    async def acquire(self, bucket: str, limit: RateLimit, cost: float = 1.0) -> Decision:
        if time.monotonic() < self._down_until:
            self.fallbacks += 1
            return self.fallback.take(bucket, limit, cost)
        try:
            allowed, retry, remaining = await self._script(
                keys=[self.prefix + bucket], args=[limit.rate_per_s, limit.burst, cost]
            )
        except Exception as exc:  # connection refused, timeout, auth, script errors: never fail the request
            self._down_until = time.monotonic() + self.retry_s
            self.fallbacks += 1
            log.warning("rate limiter: Redis unavailable (%s); using per-replica buckets", type(exc).__name__)
            return self.fallback.take(bucket, limit, cost)
        return Decision(bool(int(allowed)), float(retry), float(remaining))

    async def close(self) -> None:
        await self._client.aclose()


def build_rate_limiter(settings: RateLimitSettings) -> RateLimiter:
    """The backend named by ``settings.backend`` (redis needs a URL from settings or the environment)."""
    memory = MemoryRateLimiter(settings.max_buckets)
    if settings.backend == "memory":
        return memory
    url = settings.redis_url or os.environ.get(ENV_REDIS_URL)
    if not url:
        raise ValueError(f"rate_limit.backend is 'redis' but no redis_url / ${ENV_REDIS_URL} is set")
    return RedisRateLimiter(
        url, settings.redis_prefix, settings.redis_timeout_s, settings.redis_retry_s, fallback=memory
    )
