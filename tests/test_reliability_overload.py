"""Overload: ≥5× capacity for a bounded time against a deliberately small deployment (shared Serve instance).

Capacity = 2 admitted syntheses (ingress ``max_inflight``), stage queues of 4. SLOs asserted here:
  * every excess request is shed with 429/503 + Retry-After, p95 rejection latency < 1 s;
  * admitted requests: p95 < 10 × the unloaded median + 2 s (queues are bounded, so waiting is too);
  * no other error; replica RSS grows < 150 MB; afterwards requests succeed again at near-unloaded latency.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks import reliability as rel
from tests._reliability import deploy, undeploy

pytestmark = pytest.mark.serve
APP = "reloverload"
CAPACITY = 2


@pytest.fixture(scope="module")
def small(serve_instance) -> Iterator[str]:  # type: ignore[no-untyped-def]
    deploy(APP, f"/{APP}", rel.overload_args(str(serve_instance.model_dir), CAPACITY))
    try:
        yield serve_instance.url + f"/{APP}"
    finally:
        undeploy(APP)


def check_overload(row: rel.Row) -> None:
    x = row.extra
    print(rel.table([row]), x)
    assert row.failed == 0, x  # only 200 or a shed 429/503: no 500/504/connection error
    assert x["admitted"] >= 3 and x["rejected"] >= x["admitted"], x  # ≥5× capacity really overloads
    assert x["rejected_without_retry_after"] == 0, x
    assert x["reject_p95_s"] < 1.0, x
    assert row.p95_s < 10 * x["baseline_p50_s"] + 2.0, x
    assert x["rss_growth_mb"] < 150, x
    assert x["after_ok"] == 3 and x["after_p50_s"] < 3 * x["baseline_p50_s"] + 1.0, x


def test_overload_sheds_fast_and_recovers(small: str) -> None:
    check_overload(rel.overload(small, APP, capacity=CAPACITY, factor=6, duration_s=8.0))


@pytest.mark.slow
def test_overload_long(small: str) -> None:
    check_overload(rel.overload(small, APP, capacity=CAPACITY, factor=8, duration_s=45.0))
