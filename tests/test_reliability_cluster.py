"""Multi-node drills (benchmarks/reliability_cluster.py): their settings come from the rendered chart; the
slow tests run each drill (shortened) in its own process on a private multi-node Ray on loopback."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from benchmarks.cluster_settings import MAX_WORKERS, TIME_SCALE, read_chart, scaled
from benchmarks.reliability_cluster import MAX_FAIL_PCT, MAX_RECOVERY_S, MIN_OUTAGE_S, autoscaling_config

# A chart overlay with values no file in helm/tts carries: if the drills copied settings instead of reading
# the rendered chart, these would not show up in what they run.
OVERLAY: dict[str, Any] = {
    "workerGroups": [
        {
            "name": "spot",
            "minReplicas": 2,
            "maxReplicas": 7,
            "replicas": 2,
            "numCpus": 6,
            "idleTimeoutSeconds": 120,
            "resources": {"requests": {"cpu": "6", "memory": "9Gi"}, "limits": {"cpu": "6", "memory": "9Gi"}},
        }
    ],
    "serve": {
        "deployments": {
            "SambertAcoustic": {
                "max_replicas_per_node": 2,
                "ray_actor_options": {"num_cpus": 3},
                "autoscaling_config": {"min_replicas": 2, "max_replicas": 7, "downscale_delay_s": 100},
            }
        }
    },
    "autoscaler": {"upscalingMode": "Aggressive"},
    "gcsFaultTolerance": {"enabled": False},
}


def test_drill_settings_are_read_from_the_rendered_chart() -> None:
    s = scaled(read_chart("default", OVERLAY))
    assert (s.worker_min, s.worker_max, s.worker_num_cpus) == (2, min(7, MAX_WORKERS), 6.0)
    assert s.idle_timeout_s == pytest.approx(120 * TIME_SCALE)
    assert s.chart.worker_group == "spot" and s.chart.head_num_cpus == 0.0
    assert s.chart.gcs_fault_tolerance is False
    acoustic = s.deployments["SambertAcoustic"]
    assert acoustic["max_replicas_per_node"] == 2
    assert acoustic["ray_actor_options"]["num_cpus"] == 3
    assert acoustic["autoscaling_config"]["downscale_delay_s"] == pytest.approx(100 * TIME_SCALE)
    assert s.replicas("SambertAcoustic") == (2, min(7, MAX_WORKERS))

    # what the drills deploy and what the autoscaler launches carry the same values
    cfg = s.serve_config(18000, "/m", pin_at_min=True)
    (app,) = cfg["applications"]
    deployed = {d["name"]: d for d in app["deployments"]}
    assert deployed["SambertAcoustic"]["max_replicas_per_node"] == 2
    assert deployed["SambertAcoustic"]["autoscaling_config"]["max_replicas"] == 2  # pinned at min
    assert cfg["proxy_location"] == read_chart("default", OVERLAY).serve_config["proxy_location"]
    assert cfg["http_options"]["host"] == "127.0.0.1" and app["args"]["model_dir"] == "/m"
    auto = autoscaling_config(s, 6379)
    spot = auto["available_node_types"]["spot"]
    assert (spot["min_workers"], spot["max_workers"], spot["resources"]["CPU"]) == (2, 3, 6.0)
    assert auto["upscaling_speed"] == 1000.0 and auto["idle_timeout_minutes"] == pytest.approx(0.1)


def test_default_chart_settings_match_the_drills_assumptions() -> None:
    """The shipped values: head without CPUs, one slice per worker, GCS FT on, spare node for a loss."""
    default, standby = scaled(read_chart("default")), scaled(read_chart("standby"))
    slice_cpus = sum(d["ray_actor_options"]["num_cpus"] for d in default.deployments.values())
    assert default.head_num_cpus == 0 and default.worker_num_cpus == slice_cpus
    assert all(d["max_replicas_per_node"] == 1 for d in default.deployments.values())
    assert default.chart.gcs_fault_tolerance and default.chart.autoscaler_enabled
    assert default.worker_min + 1 <= default.worker_max  # node-loss drill: one spare node
    assert standby.worker_min == 1 and standby.worker_max >= 3  # autoscaling drill: 1 -> 3 -> 1


def test_box_too_small_for_the_chart_minimum_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="minReplicas 2 > 1"):
        scaled(read_chart("default"), max_workers=1)


# ----------------------------------------------------------------------------------------- the drills
def _drill(name: str, png: Path | None = None) -> dict[str, Any]:
    from benchmarks.reliability_cluster import run_subprocess

    row = run_subprocess(name, short=True, png=png, timeout_s=900)
    print(row)
    return row


@pytest.mark.slow
@pytest.mark.cluster
def test_node_loss_under_load_fails_few_requests_and_recovers() -> None:
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        pytest.skip("nginx not installed: the node-loss drill sends traffic through the chart's gateway")
    row = _drill("node-loss")
    extra = row["extra"]
    assert sum(extra["lost_replicas"].values()) >= 2, extra  # a whole node's worth of replicas went
    assert extra["fail_pct"] <= MAX_FAIL_PCT, extra
    assert row["recovery_s"] is not None and row["recovery_s"] <= MAX_RECOVERY_S, extra
    victim = extra["victim"]
    assert all(victim not in nodes for nodes in extra["placement_after"].values()), extra
    assert all(len(v) == extra["target_replicas"][d] for d, v in extra["placement_after"].items()), extra


@pytest.mark.slow
@pytest.mark.cluster
def test_gcs_outage_with_redis_loses_no_request_and_reconciles() -> None:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed (apt-get install -y redis-server)")
    row = _drill("gcs")
    extra = row["extra"]
    assert extra["outage_s"] >= MIN_OUTAGE_S and extra["served_during_outage"] > 0, extra
    assert row["failed"] == 0 and extra["failed_during_outage"] == 0, extra
    assert extra["app_status_after"] == "RUNNING" and not extra["wrong_replica_counts"], extra
    assert extra["same_replicas_as_before"], extra


@pytest.mark.slow
@pytest.mark.cluster
def test_spike_adds_nodes_and_they_go_away(tmp_path: Path) -> None:
    png = tmp_path / "autoscale.png"
    row = _drill("autoscale", png)
    extra = row["extra"]
    assert extra["nodes_trace"][0] == 1 and extra["peak_worker_nodes"] >= 3, extra
    assert extra["settle_after_spike_s"] is not None, extra  # back to 1 node and min replicas
    assert any(extra["peak_replicas"][d] > n for d, n in extra["min_replicas"].items()), extra
    assert row["failed"] == 0 and extra["shed_without_retry_after"] == 0, extra
    assert png.stat().st_size > 10_000
