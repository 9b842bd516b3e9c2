"""Settings of the multi-node drills (``benchmarks.reliability_cluster``), read from the rendered Helm chart.

One source of truth: the drills render ``helm/tts`` with the real Helm engine (``tests.k8s.render``) and take
the RayService's Serve config (placement, autoscaling bounds, replica CPUs), head and worker-group shape, GCS
fault tolerance and autoscaler options from the rendered object. :func:`scaled` then shrinks what does not fit
a 2-core box, by the explicit factors below, and nothing else: the number of worker nodes is capped, every
delay/timeout is multiplied by ``TIME_SCALE``, torch threads drop to 1 and the model directory is a local
one. Per-replica ``num_cpus``, ``max_replicas_per_node`` and the worker node's logical CPUs stay as rendered,
so the chart's "one pipeline slice per worker node" packing is what the drills exercise.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import yaml

TIME_SCALE = 0.05  # Serve up/downscale delays and node idle timeouts: 300 s in the chart -> 15 s here
MAX_WORKERS = 3  # worker nodes this box holds (each is a raylet + agents + one replica of every stage)
THREADS = 1  # torch intra-op threads per replica (the chart uses num_cpus; 2 shared cores here)


@dataclass(frozen=True)
class ChartCluster:
    """What the chart renders for one value set (``default``, ``primary``, ``standby``)."""

    value_set: str
    serve_config: dict[str, Any]  # serveConfigV2, parsed
    head_num_cpus: float
    worker_group: str
    worker_num_cpus: float
    worker_min: int
    worker_max: int
    worker_idle_timeout_s: float
    autoscaler_enabled: bool
    autoscaler_version: str
    upscaling_mode: str
    gcs_fault_tolerance: bool

    def deployments(self) -> dict[str, dict[str, Any]]:
        (app,) = self.serve_config["applications"]
        return {d["name"]: d for d in app["deployments"]}


def read_chart(value_set: str = "default", extra: dict[str, Any] | None = None) -> ChartCluster:
    """Render the chart (``extra`` = additional ``--set``-style values) and pick the drill-relevant fields."""
    from tests.k8s.render import render_objects

    (rs,) = [o for o in render_objects(value_set, extra) if o["kind"] == "RayService"]
    rc = rs["spec"]["rayClusterConfig"]
    groups = rc["workerGroupSpecs"]
    if len(groups) != 1:
        raise ValueError(f"the drills model one worker group; the chart renders {len(groups)}")
    (group,) = groups
    auto = rc.get("autoscalerOptions") or {}
    return ChartCluster(
        value_set=value_set,
        serve_config=yaml.safe_load(rs["spec"]["serveConfigV2"]),
        head_num_cpus=float(rc["headGroupSpec"]["rayStartParams"]["num-cpus"]),
        worker_group=group["groupName"],
        worker_num_cpus=float(group["rayStartParams"]["num-cpus"]),
        worker_min=int(group["minReplicas"]),
        worker_max=int(group["maxReplicas"]),
        worker_idle_timeout_s=float(group.get("idleTimeoutSeconds", auto.get("idleTimeoutSeconds", 60))),
        autoscaler_enabled=bool(rc.get("enableInTreeAutoscaling", False)),
        autoscaler_version=str(auto.get("version", "v1")),
        upscaling_mode=str(auto.get("upscalingMode", "Default")),
        gcs_fault_tolerance="gcsFaultToleranceOptions" in rc,
    )


@dataclass(frozen=True)
class DrillSettings:
    """The chart's settings scaled to this box (see module docstring for the factors)."""

    chart: ChartCluster
    worker_min: int
    worker_max: int
    idle_timeout_s: float
    # per deployment: the rendered options with min/initial/max replicas and delays scaled
    deployments: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def worker_num_cpus(self) -> float:
        return self.chart.worker_num_cpus

    @property
    def head_num_cpus(self) -> float:
        return self.chart.head_num_cpus

    def replicas(self, name: str) -> tuple[int, int]:
        auto = self.deployments[name]["autoscaling_config"]
        return int(auto["min_replicas"]), int(auto["max_replicas"])

    def serve_config(
        self, http_port: int, model_dir: str, pin_at_min: bool = False, app_args: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A Serve deploy config (``ServeDeploySchema`` shape) for the drill: the rendered config with the
        scaled deployments, loopback HTTP, a local model directory. ``pin_at_min``: max_replicas =
        min_replicas (no Serve autoscaling: keeps a spare node spare in the node-loss drill). ``app_args``
        deep-merge onto the application's args (a deliberate breakage, e.g. retries off)."""
        from tests.k8s.render import deep_merge

        cfg = copy.deepcopy(self.chart.serve_config)
        cfg["http_options"] = {**cfg.get("http_options", {}), "host": "127.0.0.1", "port": http_port}
        (app,) = cfg["applications"]
        app["args"] = deep_merge(app.get("args") or {}, {"model_dir": model_dir, **(app_args or {})})
        app["args"]["threads"] = {k: THREADS for k in app["args"].get("threads", {})}
        deps = []
        for d in app["deployments"]:
            d = copy.deepcopy(self.deployments[d["name"]])
            if pin_at_min:
                auto = d["autoscaling_config"]
                auto["max_replicas"] = auto["min_replicas"]
            deps.append(d)
        app["deployments"] = deps
        return cfg


def scaled(
    chart: ChartCluster, max_workers: int = MAX_WORKERS, time_scale: float = TIME_SCALE
) -> DrillSettings:
    """Shrink ``chart`` to this box: worker max capped at ``max_workers`` (stage max_replicas follow it, as
    the chart keeps them equal), delays and idle timeouts x ``time_scale``; everything else as rendered."""
    worker_max = min(chart.worker_max, max_workers)
    if chart.worker_min > worker_max:
        raise ValueError(f"chart worker minReplicas {chart.worker_min} > {worker_max} nodes this box holds")
    deps: dict[str, dict[str, Any]] = {}
    for name, d in chart.deployments().items():
        d = copy.deepcopy(d)
        auto = d.get("autoscaling_config")
        if auto is None:
            raise ValueError(f"deployment {name} has no autoscaling_config in the rendered chart")
        auto["max_replicas"] = min(int(auto["max_replicas"]), worker_max)
        for key in ("upscale_delay_s", "downscale_delay_s"):
            if key in auto:
                auto[key] = float(auto[key]) * time_scale
        deps[name] = d
    return DrillSettings(
        chart=chart,
        worker_min=chart.worker_min,
        worker_max=worker_max,
        idle_timeout_s=chart.worker_idle_timeout_s * time_scale,
        deployments=deps,
    )
