"""Multi-node reliability drills on loopback (``make reliability-cluster``): node loss, GCS outage, scaling.

Real Ray code, several raylets on this host (``ray.cluster_utils.Cluster``; the autoscaling drill lets the
fake multi-node provider launch and terminate them), all settings read from the rendered Helm chart and
scaled to this box (``benchmarks.cluster_settings``), the tiny random model. Each drill runs in its own
process with a private ``RAY_TMPDIR`` (never ``ray start``) and tears down everything it started.

1. ``node-loss``: head (num-cpus 0) + worker_min + 1 workers (the chart's spare "+1 for a lost node"); stage
   replicas spread by the chart's ``max_replicas_per_node``; closed-loop load through the chart's nginx
   gateway; SIGKILL a whole worker node (raylet, agents, replicas; no drain). Pass: <= 0.5 % failed, every
   deployment back at its replica count on the surviving nodes within 60 s.
2. ``gcs``: GCS fault tolerance on a real redis-server (the chart renders ``gcsFaultToleranceOptions``);
   SIGKILL the GCS under load, keep it down >= 20 s, restart it. Pass: 0 failed requests, the app RUNNING
   again with exactly the replicas it had (no duplicates, none lost).
3. ``autoscale``: the standby's worker group (min 1) and stage bounds; a load spike makes Serve add
   replicas, the autoscaler (chart's version, fake provider) adds nodes for them, both come back down. Pass:
   worker nodes 1 -> >=3 -> 1, no failed requests besides shed ones (503/429 with Retry-After). One PNG.

Usage: ``python -m benchmarks.reliability_cluster [--drill node-loss|gcs|autoscale|all] [--short]``.
Figures are noisy: the 2 cores are shared with other work, and every "node" is on the same two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import cluster_harness as ch
from benchmarks.cluster_settings import DrillSettings, read_chart, scaled
from benchmarks.reliability import Gateway, LoadStats, Row, _fanout, drive, pct, table, unique_text

REPO = ch.REPO
RESULTS = REPO / "benchmarks" / "results"
DRILLS = ("node-loss", "gcs", "autoscale")
MAX_FAIL_PCT = 0.5
MAX_RECOVERY_S = 60.0
MIN_OUTAGE_S = 20.0


# ----------------------------------------------------------------------------------------------- load
class Load:
    """Closed-loop clients in a background thread (``benchmarks.reliability.drive``); stop() joins it."""

    def __init__(
        self,
        url: str,
        concurrency: int,
        max_s: float,
        body: Callable[[int], dict[str, Any]] | None = None,
    ) -> None:
        self.stop_event = threading.Event()
        self.box: dict[str, LoadStats] = {}
        self.max_s = max_s
        self.thread = threading.Thread(
            target=lambda: self.box.setdefault(
                "s", asyncio.run(drive(url, concurrency, max_s, body=body, stop=self.stop_event))
            ),
            daemon=True,
        )
        self.thread.start()

    def wait(self) -> LoadStats:
        """Let the clients run to ``max_s``."""
        self.thread.join(self.max_s + 120)
        return self.box.get("s", LoadStats())

    def stop(self) -> LoadStats:
        self.stop_event.set()
        return self.wait()


def _simple(i: int) -> dict[str, Any]:
    return {"text": unique_text(i), "format": "pcm"}


def _wait(cond: Callable[[], bool], timeout_s: float, period_s: float = 0.5) -> float | None:
    """Seconds until ``cond()`` holds, None after ``timeout_s``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            if cond():
                return time.monotonic() - t0
        except Exception:  # GCS/controller briefly unreachable while reconciling
            pass
        time.sleep(period_s)
    return None


def _window_rps(stats: LoadStats, t0: float, t1: float) -> float:
    n = sum(1 for s in stats.samples if s.status == 200 and t0 <= s.start + s.latency < t1)
    return n / max(1e-9, t1 - t0)


# ------------------------------------------------------------------------------------------ node loss
@contextlib.contextmanager
def chart_gateway(serve_url: str, overlay: dict[str, Any]) -> Iterator[Gateway]:
    """Real nginx with the gateway config the chart renders (values-primary.yaml + ``overlay``'s
    ``gateway``), the Serve proxies as the primary, a closed port as the standby (only same-cluster replays
    can save a request)."""
    from tests.k8s.failover import gateway_nginx_conf, start_nginx

    closed = ch.free_port()
    port = int(serve_url.rsplit(":", 1)[1])
    extra = overlay.get("gateway")
    nginx, listen = start_nginx(lambda listen: gateway_nginx_conf(port, closed, listen, extra))
    try:
        yield Gateway(f"http://127.0.0.1:{listen}", nginx)
    finally:
        nginx.stop()


def node_loss(model_dir: str, short: bool, overlay: dict[str, Any]) -> Row:
    s = scaled(read_chart("default", overlay))
    workers = min(s.worker_min + 1, s.worker_max)  # README "Capacity": +1 node for a lost node
    target = {d: s.replicas(d)[0] for d in s.deployments}
    port = ch.free_port()
    cfg = s.serve_config(port, model_dir, pin_at_min=True)
    cluster = ch.LocalCluster(s.head_num_cpus, s.worker_num_cpus).start()
    try:
        nodes = [cluster.add_worker() for _ in range(workers)]
        cluster.connect()
        ch.deploy(cfg)
        before = ch.alive_replica_actors()
        # the victim: the worker node holding the most replicas (ingress included when possible)
        ids = {n.node_id: n for n in nodes}
        load_on = {nid: sum(v.count(nid) for v in before.values()) for nid in ids}
        victim_id = max(ids, key=lambda nid: (nid in before.get("TTSIngress", []), load_on[nid]))
        lost = {d: v.count(victim_id) for d, v in before.items() if victim_id in v}
        warm, tail = (6.0, 8.0) if short else (12.0, 12.0)
        base = f"http://127.0.0.1:{port}"
        with chart_gateway(base, overlay) as gw:
            load = Load(gw.url, 4, warm + MAX_RECOVERY_S + 60 + tail, body=_fanout)
            time.sleep(warm)
            t_kill = time.monotonic()
            cluster.kill_node(ids[victim_id])

            def recovered() -> bool:
                actors = ch.alive_replica_actors()
                counts = ch.running_counts()
                return all(
                    counts.get(d, 0) == n and len(actors.get(d, [])) == n and victim_id not in actors[d]
                    for d, n in target.items()
                )

            rec = _wait(recovered, MAX_RECOVERY_S + 60)
            t_rec = time.monotonic()
            time.sleep(tail)
            stats = load.stop()
            replays = gw.replays()
            err_log = gw.nginx.prefix / "error.log"
            upstream_errors = [
                line.split("] ", 1)[-1][:160]
                for line in (err_log.read_text().splitlines() if err_log.exists() else [])
                if "upstream" in line
            ]
        after = ch.alive_replica_actors()
        failed = stats.failed(allow_rejections=False)
        fail_pct = 100.0 * len(failed) / max(1, stats.sent)
        pre = _window_rps(stats, t_kill - warm + 2, t_kill)
        post = _window_rps(stats, t_rec, t_rec + tail)
        return Row(
            "node loss",
            f"4 clients via gateway, {workers} workers",
            f"SIGKILL worker node ({sum(lost.values())} replicas)",
            stats.sent,
            len(failed),
            stats.p95("ok"),
            recovery_s=rec,
            extra={
                "fail_pct": round(fail_pct, 3),
                "lost_replicas": lost,
                "workers": workers,
                "target_replicas": target,
                "placement_before": {d: sorted(n[:8] for n in v) for d, v in before.items()},
                "placement_after": {d: sorted(n[:8] for n in v) for d, v in after.items()},
                "victim": victim_id[:8],
                "rps_before": round(pre, 2),
                "rps_after_recovery": round(post, 2),
                "in_flight_at_kill": sum(
                    1 for x in stats.samples if x.start <= t_kill <= x.start + x.latency
                ),
                "failed_at_s": [round(x.start - t_kill, 2) for x in failed][:20],
                "gateway": replays,
                "gateway_upstream_errors": upstream_errors[:8],
                "statuses": stats.statuses(),
                "errors": dict(stats.errors.most_common(5)),
                "ok": rec is not None and rec <= MAX_RECOVERY_S and fail_pct <= MAX_FAIL_PCT,
            },
        )
    finally:
        cluster.close()


# ----------------------------------------------------------------------------------------- GCS outage
def gcs_outage(model_dir: str, short: bool, overlay: dict[str, Any]) -> Row:
    from tests._reliability import start_redis

    s = scaled(read_chart("default", overlay))
    ft = s.chart.gcs_fault_tolerance  # rendered gcsFaultToleranceOptions -> external Redis, as KubeRay does
    workdir = Path(tempfile.mkdtemp(prefix="ttsc-redis-", dir="/tmp"))
    redis = start_redis(workdir) if ft else None
    if redis is not None:
        os.environ["RAY_REDIS_ADDRESS"] = redis.url.removeprefix("redis://").rsplit("/", 1)[0]
    target = {d: s.replicas(d)[0] for d in s.deployments}
    port = ch.free_port()
    cfg = s.serve_config(port, model_dir, pin_at_min=True)
    cluster = ch.LocalCluster(s.head_num_cpus, s.worker_num_cpus).start()
    outage = MIN_OUTAGE_S + (2.0 if short else 10.0)
    try:
        for _ in range(s.worker_min):
            cluster.add_worker()
        cluster.connect()
        ch.deploy(cfg)
        before = ch.alive_replica_actors()
        names_before = _replica_names()
        warm, tail = (5.0, 5.0) if short else (10.0, 10.0)
        load = Load(f"http://127.0.0.1:{port}", 3, warm + outage + 180 + tail, body=_simple)
        time.sleep(warm)
        t_kill = time.monotonic()
        cluster.cluster.head_node.kill_gcs_server()
        time.sleep(outage)
        t_restart = time.monotonic()
        restart_error = ""
        try:
            cluster.cluster.head_node.start_gcs_server()
        except Exception as exc:  # reported: without FT a restarted GCS may not come back
            restart_error = f"{type(exc).__name__}: {exc}"

        def reconciled() -> bool:
            actors = ch.alive_replica_actors()
            counts = ch.running_counts()
            return ch.app_status() == "RUNNING" and all(
                counts.get(d, 0) == n and len(actors.get(d, [])) == n for d, n in target.items()
            )

        rec = _wait(reconciled, 120.0) if not restart_error else None
        time.sleep(tail)
        stats = load.stop()
        try:
            after = ch.alive_replica_actors()
            names_after = _replica_names()
            status = ch.app_status()
        except Exception as exc:  # reported in the row
            after, names_after, status = {}, [], f"unreachable: {type(exc).__name__}"
        failed = stats.failed(allow_rejections=False)
        in_outage = [x for x in failed if t_kill <= x.start + x.latency and x.start <= t_restart]
        served_in_outage = sum(1 for x in stats.ok if x.start >= t_kill and x.start + x.latency <= t_restart)
        dup = {d: len(after.get(d, [])) for d in target if len(after.get(d, [])) != target[d]}
        ok = (
            not failed
            and rec is not None
            and not dup
            and set(names_after) >= set(names_before)
            and outage >= MIN_OUTAGE_S
        )
        return Row(
            "GCS outage",
            f"3 clients, {s.worker_min} workers, Redis {'on' if ft else 'OFF'}",
            f"SIGKILL GCS, down {outage:.0f} s",
            stats.sent,
            len(failed),
            stats.p95("ok"),
            recovery_s=rec,
            extra={
                "outage_s": round(t_restart - t_kill, 1),
                "served_during_outage": served_in_outage,
                "failed_during_outage": len(in_outage),
                "replicas_before": {d: len(v) for d, v in before.items()},
                "replicas_after": {d: len(v) for d, v in after.items()},
                "wrong_replica_counts": dup,
                "same_replicas_as_before": sorted(names_before) == sorted(names_after),
                "app_status_after": status,
                "restart_error": restart_error,
                "statuses": stats.statuses(),
                "errors": dict(stats.errors.most_common(5)),
                "ok": ok,
            },
        )
    finally:
        cluster.close()
        if redis is not None:
            redis.stop()
        os.environ.pop("RAY_REDIS_ADDRESS", None)
        ch.cleanup_tmp(workdir)


def _replica_names() -> list[str]:
    import ray

    return sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["namespace"] == "serve" and a["name"].startswith(f"SERVE_REPLICA::{ch.APP}#")
    )


# ---------------------------------------------------------------------------------------- autoscaling
def autoscaling_config(s: DrillSettings, gcs_port: int) -> dict[str, Any]:
    """The fake multi-node provider's cluster config: one worker type = the chart's worker group."""
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    speed = {"Default": 1.0, "Aggressive": 1000.0, "Conservative": 1.0}[s.chart.upscaling_mode]
    return {
        "cluster_name": "tts-drill",
        "max_workers": s.worker_max,
        "upscaling_speed": speed,
        "idle_timeout_minutes": s.idle_timeout_s / 60.0,
        "provider": {
            # = type fake_multinode, loaded as an external provider: this Ray wheel lacks the defaults file
            # (fake_multi_node/example.yaml) that the built-in type reads; the provider class is the same.
            "type": "external",
            "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
            "gcs_address": f"127.0.0.1:{gcs_port}",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "launch_multiple": True,
            "head_node_id": FAKE_HEAD_NODE_ID,
        },
        "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {
                "resources": {"CPU": s.head_num_cpus},
                "node_config": {},
                "max_workers": 0,
            },
            s.chart.worker_group: {
                "resources": {"CPU": s.worker_num_cpus, "object_store_memory": ch.OBJECT_STORE_BYTES},
                "node_config": {},
                "min_workers": s.worker_min,
                "max_workers": s.worker_max,
            },
        },
        "auth": {"ssh_user": "nobody"},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def autoscale(model_dir: str, short: bool, png: Path | None, overlay: dict[str, Any]) -> Row:
    from ray.autoscaler._private.fake_multi_node.node_provider import FAKE_HEAD_NODE_ID

    s = scaled(read_chart("standby", overlay))
    use_autoscaler = s.chart.autoscaler_enabled  # enableInTreeAutoscaling
    cluster = ch.LocalCluster(s.head_num_cpus, s.worker_num_cpus)
    if use_autoscaler:
        conf = Path(os.environ["RAY_TMPDIR"]) / "autoscaling.json"
        conf.write_text(json.dumps(autoscaling_config(s, cluster.gcs_port)))
        os.environ.update({"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"})
        head_env = {}
        if s.chart.autoscaler_version == "v2":
            os.environ["RAY_enable_autoscaler_v2"] = "1"  # noqa: SIM112 - Ray's system-config env name
            # the head must be the provider's head node id (what AutoscalingCluster does for v2)
            head_env = {
                "RAY_CLOUD_INSTANCE_ID": FAKE_HEAD_NODE_ID,
                "RAY_OVERRIDE_NODE_ID_FOR_TESTING": FAKE_HEAD_NODE_ID,
            }
        cluster.head_args = {"autoscaling_config": str(conf), "env_vars": head_env}
    port = ch.free_port()
    cfg = s.serve_config(port, model_dir)
    minimum = {d: s.replicas(d)[0] for d in s.deployments}
    cluster.start()
    series: list[dict[str, Any]] = []
    stop = threading.Event()
    try:
        if not use_autoscaler:
            for _ in range(s.worker_min):
                cluster.add_worker()
        cluster.connect()
        if _wait(lambda: ch.worker_node_count() >= s.worker_min, 180.0) is None:
            raise TimeoutError(f"{s.worker_min} worker node(s) did not come up")
        ch.deploy(cfg)
        t0 = time.monotonic()

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(Exception):
                    series.append(
                        {"t": time.monotonic() - t0, "nodes": ch.worker_node_count(), **ch.running_counts()}
                    )
                stop.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        low_s, spike_s, settle_max = (10.0, 60.0, 150.0) if short else (20.0, 90.0, 200.0)
        spike_clients = 16
        url = f"http://127.0.0.1:{port}"
        parts: list[LoadStats] = []
        base = Load(url, 2, low_s + spike_s + settle_max + 10, body=_simple)
        time.sleep(low_s)
        t_spike = time.monotonic() - t0
        spike = Load(url, spike_clients - 2, spike_s, body=_simple)
        parts.append(spike.wait())
        t_spike_end = time.monotonic() - t0

        def settled() -> bool:
            counts = ch.running_counts()
            at_min = all(counts.get(d) == n for d, n in minimum.items())
            return at_min and ch.worker_node_count() <= s.worker_min

        settle = _wait(settled, settle_max, period_s=1.0)
        time.sleep(3.0)
        parts.append(base.stop())
        stop.set()
        sampler.join(10)
        stats = LoadStats()
        for p in parts:
            stats.samples += p.samples
            stats.errors.update(p.errors)
        for x in stats.samples:
            x.start -= t0  # seconds since the app was deployed (same clock as the series)
        peak_nodes = max((p["nodes"] for p in series), default=0)
        nodes_trace = _dedupe([p["nodes"] for p in series])
        peak_replicas = {d: max((p.get(d, 0) for p in series), default=0) for d in minimum}
        failed = stats.failed(allow_rejections=True)
        shed = stats.rejected
        ok = (
            peak_nodes >= 3
            and series
            and series[0]["nodes"] == s.worker_min
            and settle is not None
            and not failed
            and all(x.retry_after for x in shed)
        )
        if png is not None:
            plot(series, stats, t_spike, t_spike_end, png, s)
        return Row(
            "autoscaling",
            f"2 -> {spike_clients} -> 2 clients, spike {spike_s:.0f} s",
            f"spike; workers {s.worker_min}..{s.worker_max} ({s.chart.autoscaler_version}, fake provider)",
            stats.sent,
            len(failed),
            stats.p95("ok"),
            recovery_s=None if settle is None else settle,
            extra={
                "nodes_trace": nodes_trace,
                "peak_worker_nodes": peak_nodes,
                "peak_replicas": peak_replicas,
                "min_replicas": minimum,
                "settle_after_spike_s": settle,
                "spike_window_s": [round(t_spike, 1), round(t_spike_end, 1)],
                "shed": len(shed),
                "shed_without_retry_after": sum(1 for x in shed if not x.retry_after),
                "statuses": stats.statuses(),
                "errors": dict(stats.errors.most_common(5)),
                "png": str(png) if png else None,
                "ok": bool(ok),
            },
        )
    finally:
        stop.set()
        cluster.close()


def _dedupe(xs: list[int]) -> list[int]:
    return [x for i, x in enumerate(xs) if i == 0 or xs[i - 1] != x]


def plot(
    series: list[dict[str, Any]], stats: LoadStats, t0: float, t1: float, png: Path, s: DrillSettings
) -> None:
    """Nodes, replicas per deployment, RPS and p95 over time (one PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [p["t"] for p in series]
    fig, ax = plt.subplots(4, 1, figsize=(8, 8), sharex=True, dpi=80)
    ax[0].step(t, [p["nodes"] for p in series], where="post", color="k")
    ax[0].set_ylabel("worker nodes")
    for d in s.deployments:
        ax[1].step(t, [p.get(d, 0) for p in series], where="post", label=d)
    ax[1].set_ylabel("replicas")
    ax[1].legend(fontsize=7, loc="upper right")
    end = max([*t, *(x.start + x.latency for x in stats.samples)], default=1.0)
    bins = np.arange(0.0, end + 1.0, 1.0)
    done_ok = [x.start + x.latency for x in stats.ok]
    done_shed = [x.start + x.latency for x in stats.rejected]
    ax[2].plot(bins[:-1], np.histogram(done_ok, bins)[0], label="200")
    ax[2].plot(bins[:-1], np.histogram(done_shed, bins)[0], label="shed (503/429)")
    ax[2].set_ylabel("req/s")
    ax[2].legend(fontsize=7, loc="upper right")
    win = np.arange(0.0, end + 5.0, 5.0)
    p95 = [pct([x.latency for x in stats.ok if a <= x.start + x.latency < a + 5], 95) for a in win]
    ax[3].plot(win, p95, marker=".")
    ax[3].set_ylabel("p95 (s), 5-s bins")
    ax[3].set_xlabel("seconds since deploy")
    for a in ax:
        a.axvspan(t0, t1, color="orange", alpha=0.15)
        a.grid(alpha=0.3)
    fig.suptitle("Autoscaling drill (fake multi-node provider, tiny model, 2 shared cores)", fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ main
def run_one(
    drill: str,
    short: bool,
    png: Path | None,
    model_dir: str | None,
    root: Path | None = None,
    overlay: dict[str, Any] | None = None,
) -> Row:
    """Run one drill in THIS process (which must not have started Ray yet), Ray's temp root ``root``."""
    root = ch.private_ray_tmp(root)
    try:
        from serve_app.graph import ensure_model_dir

        md = ensure_model_dir(model_dir, "tiny")
        if drill == "node-loss":
            return node_loss(md, short, overlay or {})
        if drill == "gcs":
            return gcs_outage(md, short, overlay or {})
        return autoscale(md, short, png, overlay or {})
    finally:
        time.sleep(2.0)  # let the shutdown finish, then kill whatever is left
        left = ch.reap(root)
        if left:
            print(f"reaped {len(left)} leftover processes of this drill: {left}", file=sys.stderr)
        ch.cleanup_tmp(root)


def run_subprocess(
    drill: str,
    short: bool,
    png: Path | None,
    timeout_s: float = 1200.0,
    overlay: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One drill in a child process (own Ray, own temp root); returns its row as a dict. Whatever the child
    leaves behind (e.g. if Ray aborts it) is killed by its temp root afterwards."""
    root = ch.new_tmp_root()
    with tempfile.TemporaryDirectory(prefix="ttsc-out-") as d:
        out = Path(d) / "row.json"
        cmd = [sys.executable, "-m", "benchmarks.reliability_cluster", "--drill", drill, "--json", str(out)]
        cmd += ["--tmp-root", str(root)]
        cmd += ["--values-json", json.dumps(overlay)] if overlay else []
        cmd += ["--short"] if short else []
        cmd += ["--png", str(png)] if png else []
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait(30)
            raise
        finally:
            ch.reap(root)
            ch.cleanup_tmp(root)
        if not out.exists():
            raise RuntimeError(f"drill {drill} exited {proc.returncode} without a result")
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--drill", default="all", choices=[*DRILLS, "all"])
    p.add_argument("--short", action="store_true", help="shorter phases (the slow pytest)")
    p.add_argument("--png", type=Path, default=None, help="autoscaling plot (default: benchmarks/results)")
    p.add_argument("--json", type=Path, default=None, help="write the row here (single drill)")
    p.add_argument("--model-dir", default=None, help="model dir (default: generated tiny random voice)")
    p.add_argument(
        "--values-json",
        type=json.loads,
        default=None,
        help="chart values overlay (like helm --set-json): evaluate a values change before making it",
    )
    p.add_argument("--tmp-root", type=Path, default=None, help="Ray temp root (default: a fresh /tmp/ttsc-*)")
    a = p.parse_args(argv)
    if a.drill != "all":
        row = run_one(a.drill, a.short, a.png, a.model_dir, a.tmp_root, a.values_json)
        if a.json:
            a.json.write_text(json.dumps(asdict(row), default=str))
        print(table([row]))
        print(f"  {row.test}: {row.extra}")
        return 0 if row.extra.get("ok") else 1
    png = a.png or RESULTS / "reliability-cluster-autoscale.png"
    rows = []
    for drill in DRILLS:
        d = run_subprocess(drill, a.short, png if drill == "autoscale" else None, overlay=a.values_json)
        rows.append(Row(**d))
    print()
    print(table(rows))
    for r in rows:
        print(f"  {r.test}: {r.extra}")
    print("(figures are noisy: 2 shared cores; every 'node' runs on the same cores)")
    return 0 if all(r.extra.get("ok") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
