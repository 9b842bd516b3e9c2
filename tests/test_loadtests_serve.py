"""The load-test harness against the real test service (shared Ray Serve instance, tiny model).

A few seconds of the customer-service mix through every endpoint the users call, so neither the
harness nor the API contract it relies on can rot unnoticed.
"""

from __future__ import annotations

import csv
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
    # The same harness with impossibly tight SLOs against the real service, at the same time (bounded: 3 s
    # of load, 3 users): the gate must fail the run (exit 3) on measured latencies, not on a fake's.
    tight_cmd = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
        "-H", serve_instance.url, "-u", "3", "-r", "3", "-t", "3s", "--stop-timeout", "30",
        "--shape", "steady", "--only-summary", "--csv", str(tmp_path / "tight"),
        "--slo-p95-ms", "short=1,medium=1,long=1", "--slo-ttfa-p95-ms", "1",
    ]  # fmt: skip
    tight = subprocess.Popen(tight_cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
        tight_out, _ = tight.communicate(timeout=120)
    finally:
        if tight.poll() is None:
            tight.kill()
            tight.wait(10)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-4000:]
    assert tight.returncode == 3, tight_out[-4000:]
    assert "MISSED" in tight_out and "SLO result: FAIL" in tight_out
    with (tmp_path / "tight_stats.csv").open() as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    served = int(rows["Aggregated"]["Request Count"]) - int(rows["Aggregated"]["Failure Count"])
    assert served >= 1, rows["Aggregated"]  # it failed on latencies of requests the service answered
    assert "SLO result: PASS" in out
    stats = (tmp_path / "tiny_stats.csv").read_text()
    # --stop-timeout lets in-flight tasks finish, so every IVR user's first stream is recorded
    for name in ("stream-ttfa ", "stream-total ", "stream-rtf ", "voices"):
        assert name in stats, stats
