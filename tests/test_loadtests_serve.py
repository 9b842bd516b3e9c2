"""The load-test harness against the real test service (shared Ray Serve instance, tiny model).

A few seconds of the customer-service mix through every endpoint the users call, so neither the
harness nor the API contract it relies on can rot unnoticed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# This run checks the harness and the API contract (fail ratio stays at the default 1 %), not speed: latency
# limits are loose so a busy CI machine cannot make it flaky.
LENIENT_LATENCY = (
    "--slo-p95-ms", "short=120000,medium=120000,long=120000",
    "--slo-ttfa-p95-ms", "120000", "--slo-rtf-p95", "100",
)  # fmt: skip


@pytest.mark.serve
def test_tiny_locust_run_against_test_service(serve_instance, tmp_path: Path) -> None:
    report = tmp_path / "tiny"
    cmd = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
        "-H", serve_instance.url, "-u", "9", "-r", "9", "-t", "5s", "--stop-timeout", "60",
        "--shape", "steady", "--only-summary",
        "--csv", str(report), "--html", f"{report}.html", *LENIENT_LATENCY,
    ]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert "SLO result: PASS" in out
    stats = (tmp_path / "tiny_stats.csv").read_text()
    # --stop-timeout lets in-flight tasks finish, so every IVR user's first stream is recorded
    for name in ("stream-ttfa ", "stream-total ", "stream-rtf ", "voices"):
        assert name in stats, stats
