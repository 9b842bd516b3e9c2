"""Per-key token buckets: in-process backend, and the Redis backend against a REAL redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from compat.ports import free_port
from serve_app.security.ratelimit import (
    MemoryRateLimiter,
    RateLimit,
    RateLimitSettings,
    RedisRateLimiter,
    build_rate_limiter,
)
from tests._reliability import RedisServer, start_redis


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on 127.0.0.1 (skipped with a reason if the binary is missing)."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_memory_bucket_burst_refill_and_retry_after() -> None:
    clock = Clock()
    rl = MemoryRateLimiter(clock=clock)
    lim = RateLimit(rate_per_s=2.0, burst=3)
    assert [rl.take("a", lim).allowed for _ in range(4)] == [True, True, True, False]
    denied = rl.take("a", lim)
    assert not denied.allowed and denied.retry_after_s == pytest.approx(0.5)  # 1 token at 2/s
    assert rl.take("b", lim).allowed  # buckets are per key
    clock.t += 0.5
    assert rl.take("a", lim).allowed and not rl.take("a", lim).allowed
    clock.t += 100
    assert sum(rl.take("a", lim).allowed for _ in range(10)) == 3  # refill is capped at burst


def test_memory_bucket_table_is_bounded() -> None:
    rl = MemoryRateLimiter(max_buckets=100)
    lim = RateLimit(1, 1)
    for i in range(1000):
        rl.take(f"ip:{i}", lim)
    assert len(rl) == 100


def test_settings_validation_and_per_key_override() -> None:
    s = RateLimitSettings.from_dict(
        {"enabled": True, "rate_per_s": 5, "burst": 10, "per_key": {"ivr": {"burst": 2}}}
    )
    assert s.limit_for("ivr") == RateLimit(5, 2) and s.limit_for("other") == RateLimit(5, 10)
    for bad, why in (
        ({"rate_per_s": 0}, "rate_per_s"),
        ({"burst": 0.5}, "burst"),
        ({"backend": "memcached"}, "backend"),
        ({"per_key": {"x": {"rate_per_s": -1}}}, "rate_per_s"),
        ({"rate": 1}, "unknown"),
    ):
        with pytest.raises(ValueError, match=why):
            RateLimitSettings.from_dict(bad)
    with pytest.raises(ValueError, match="redis_url"):
        build_rate_limiter(RateLimitSettings(enabled=True, backend="redis"))


def test_redis_backend_shared_between_replicas(redis_server: RedisServer) -> None:
    """Two limiter instances (= two ingress replicas) draw from ONE bucket; concurrent calls are atomic."""

    async def run() -> None:
        a = RedisRateLimiter(redis_server.url, prefix="t1:", timeout_s=3)
        b = RedisRateLimiter(redis_server.url, prefix="t1:", timeout_s=3)
        lim = RateLimit(rate_per_s=0.01, burst=20)  # effectively no refill during the test
        results = await asyncio.gather(*[(a if i % 2 else b).acquire("key:alpha", lim) for i in range(60)])
        assert sum(r.allowed for r in results) == 20  # exactly burst, across both "replicas"
        denied = [r for r in results if not r.allowed]
        assert all(r.retry_after_s > 0 for r in denied)
        assert (await a.acquire("key:beta", lim)).allowed  # other keys untouched
        assert a.fallbacks == 0 and b.fallbacks == 0
        await a.close()
        await b.close()

    asyncio.run(run())


def test_redis_backend_refills_by_server_clock(redis_server: RedisServer) -> None:
    async def run() -> None:
        rl = RedisRateLimiter(redis_server.url, prefix="t2:", timeout_s=3)
        lim = RateLimit(rate_per_s=20, burst=1)
        assert (await rl.acquire("k", lim)).allowed
        denied = await rl.acquire("k", lim)
        assert not denied.allowed and 0 < denied.retry_after_s <= 0.05 + 1e-6
        await asyncio.sleep(0.12)
        assert (await rl.acquire("k", lim)).allowed
        await rl.close()

    asyncio.run(run())


def test_redis_keys_expire(redis_server: RedisServer) -> None:
    import redis

    async def run() -> None:
        rl = RedisRateLimiter(redis_server.url, prefix="t3:", timeout_s=3)
        await rl.acquire("k", RateLimit(rate_per_s=10, burst=5))
        await rl.close()

    asyncio.run(run())
    ttl_ms = redis.Redis.from_url(redis_server.url).pttl("t3:k")
    assert 0 < ttl_ms <= 1500  # burst/rate + 1 s: idle buckets cost no Redis memory


def test_redis_down_falls_back_to_per_replica_limits() -> None:
    async def run() -> None:
        rl = RedisRateLimiter(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.1, retry_s=60)
        lim = RateLimit(rate_per_s=0.01, burst=2)
        results = [await rl.acquire("k", lim) for _ in range(3)]
        assert [r.allowed for r in results] == [True, True, False]  # still limited, never an exception
        assert rl.fallbacks == 3
        await rl.close()

    asyncio.run(run())
