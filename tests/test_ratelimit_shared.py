"""README: with the Redis backend, one key's limit is ONE bucket across ingress replicas. Two ingress replicas
behind Serve's proxy, a real redis-server, requests through HTTP: exactly ``burst`` of them are admitted, and
both replicas answered some (so per-replica buckets would have admitted more)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from benchmarks import reliability as rel
from tests._reliability import RedisServer, deploy, redis_server, stage_options, undeploy

__all__ = ["redis_server"]  # the module fixture, used by `shared`

pytestmark = [pytest.mark.serve, pytest.mark.slow]
APP = "relredis"
KEY = "crm-" + "5e6f7a8b9c0d1e2f3a4b"
BURST = 6


@pytest.fixture(scope="module")
def shared(serve_instance, redis_server: RedisServer) -> Iterator[str]:  # type: ignore[no-untyped-def]
    limit = {"rate_per_s": 0.01, "burst": BURST}
    args = {
        "model_dir": str(serve_instance.model_dir),
        "threads": {"frontend": 1, "acoustic": 1, "vocoder": 1},
        "ingress": {
            "security": {
                "auth_enabled": True,
                "keys": f"crm:{KEY}",
                "rate_limit": {"enabled": True, "backend": "redis", "redis_url": redis_server.url, **limit},
            }
        },
        "options": {
            "TTSIngress": stage_options(num_replicas=2),
            **{n: stage_options(num_replicas=1) for n in rel.STAGES},
        },
    }
    deploy(APP, f"/{APP}", args)
    try:
        yield serve_instance.url + f"/{APP}"
    finally:
        undeploy(APP)


def _answers_per_replica(logs: Path) -> list[int]:
    counts = []
    for f in sorted(logs.glob(f"serve/replica_{APP}_TTSIngress_*.log")):
        text = f.read_text("utf-8", "replace")
        counts.append(sum(f"GET /{APP}/api/voices" in line for line in text.splitlines()))
    return counts


def test_redis_limit_is_one_bucket_across_ingress_replicas(shared: str) -> None:
    import ray

    codes = []
    for _ in range(4 * BURST):  # a new connection each time: the proxy spreads them over both replicas
        with httpx.Client(timeout=60) as client:
            codes.append(client.get(shared + "/api/voices", headers={"X-API-Key": KEY}).status_code)
    assert codes.count(200) == BURST and codes.count(429) == 3 * BURST, codes
    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    deadline = time.monotonic() + 20  # replica logs are flushed asynchronously
    while time.monotonic() < deadline and sum(_answers_per_replica(logs)) < 4 * BURST:
        time.sleep(0.5)
    per_replica = _answers_per_replica(logs)
    assert len(per_replica) == 2 and min(per_replica) > 0, per_replica  # both replicas took requests
