"""Soak (2 minutes, `make test-full`): steady load, no error, no replica RSS growth > 5 % after warm-up.
The 30-minute version is `make soak-rss` (python -m benchmarks.reliability --soak-minutes 30)."""

from __future__ import annotations

import pytest

from benchmarks import reliability as rel
from tests._reliability import deploy, undeploy

APP = "relsoak"


@pytest.mark.slow
@pytest.mark.serve
def test_soak_two_minutes(serve_instance) -> None:  # type: ignore[no-untyped-def]
    deploy(APP, f"/{APP}", rel.soak_args(str(serve_instance.model_dir)))
    try:
        row = rel.soak(serve_instance.url + f"/{APP}", APP, minutes=2.0, warmup_s=30.0)
    finally:
        undeploy(APP)
    print(rel.table([row]), row.extra)
    assert row.extra["replicas_seen"] == 4, row.extra  # RSS really measured for every replica
    assert row.sent > 20 and row.failed == 0, row.extra
    assert row.rss_growth_pct is not None and row.rss_growth_pct <= 5.0, row.extra
