"""Replica kills under load (ingress retries stage calls) and graceful drain, on the shared Serve instance.

The short vocoder-kill test runs in `make test`; killing every stage and the ingress, and the drain test, are
slow (`make test-full`). Budget: at most 1 % of client requests may fail.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks import reliability as rel
from tests._reliability import deploy, undeploy

pytestmark = pytest.mark.serve
APP = "relchaos"
MAX_FAIL_PCT = 1.0


@pytest.fixture(scope="module")
def chaos(serve_instance) -> Iterator[tuple[str, dict]]:  # type: ignore[no-untyped-def]
    args = rel.chaos_args(str(serve_instance.model_dir))
    deploy(APP, f"/{APP}", args)
    try:
        yield serve_instance.url + f"/{APP}", args
    finally:
        undeploy(APP)


def _check(row: rel.Row) -> None:
    print(rel.table([row]), row.extra)
    assert row.sent >= 20, row.extra
    assert row.extra["fail_pct"] <= MAX_FAIL_PCT, row.extra
    assert row.recovery_s is not None and row.recovery_s < 90, row.extra


def test_kill_vocoder_replica_under_load(chaos: tuple[str, dict]) -> None:
    url, _ = chaos
    _check(rel.faults(url, APP, ["HifiGanVocoder"], concurrency=3, warmup_s=2.0, gap_s=6.0))


@pytest.mark.slow
def test_kill_every_stage_and_ingress_under_load(chaos: tuple[str, dict]) -> None:
    url, _ = chaos
    _check(rel.faults(url, APP, ["SambertAcoustic", "TextFrontend", "TTSIngress", "HifiGanVocoder"]))


@pytest.mark.slow
def test_graceful_drain_completes_in_flight_requests(chaos: tuple[str, dict]) -> None:
    url, args = chaos
    row = rel.drain(url, APP, "TTSIngress", 2, args["options"]["TTSIngress"], args)
    print(rel.table([row]), row.extra)
    assert row.sent >= 4 and row.failed == 0, row.extra
