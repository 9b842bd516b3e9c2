"""Autoscaling demo: a locust spike against a local single-node Ray Serve with fast autoscaling.

Starts its own Ray (``address="local"``, 2 CPUs, so it never attaches to another cluster), deploys
``loadtests/config/autoscale-fast.yaml`` on a free port, runs ``loadtests/locustfile.py --shape spike``,
and records every second: users, RPS and p95 (locust's stats history), running replicas per deployment
(``serve.status()``) and queue lengths per deployment (Serve's Prometheus metrics
``ray_serve_deployment_queued_queries`` = waiting in the caller's router for a replica, and
``ray_serve_replica_processing_queries`` = being processed by replicas). Draws one PNG.

    python -m benchmarks.autoscale_demo [--users 2] [--spike-seconds 60] [--out loadtests/reports/autoscale]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compat.ports import free_port
from serve_app.ray_system import system_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "loadtests" / "config" / "autoscale-fast.yaml"
DEPLOYMENTS = ("TTSIngress", "TextFrontend", "SambertAcoustic", "HifiGanVocoder")
METRIC_RE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)")
LABEL_RE = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str, names: set[str]) -> dict[str, dict[str, float]]:
    """Sum Prometheus samples of ``names`` per ``deployment`` label: ``{metric: {deployment: value}}``."""
    out: dict[str, dict[str, float]] = {n: {} for n in names}
    for line in text.splitlines():
        m = METRIC_RE.match(line)
        if not m or m["name"] not in names:
            continue
        labels = dict(LABEL_RE.findall(m["labels"]))
        dep = labels.get("deployment")
        if not dep:
            continue
        try:
            value = float(m["value"])
        except ValueError:
            continue
        out[m["name"]][dep] = out[m["name"]].get(dep, 0.0) + value
    return out


@dataclass
class Sample:
    t: float
    replicas: dict[str, int]
    queued: dict[str, float]
    processing: dict[str, float]


@dataclass
class Sampler:
    """Polls Serve status and metrics once per second in a background thread."""

    metrics_url: str
    t0: float
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _once(self) -> Sample:
        from ray import serve

        replicas = {d: 0 for d in DEPLOYMENTS}
        app = serve.status().applications.get("tts")
        if app is not None:
            for name, dep in app.deployments.items():
                replicas[name] = sum(
                    n for state, n in dep.replica_states.items() if str(state).endswith("RUNNING")
                )
        names = {"ray_serve_deployment_queued_queries", "ray_serve_replica_processing_queries"}
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=2) as resp:
                metrics = parse_prometheus(resp.read().decode(), names)
        except OSError:
            metrics = {n: {} for n in names}
        return Sample(
            round(time.time() - self.t0, 2),
            replicas,
            metrics["ray_serve_deployment_queued_queries"],
            metrics["ray_serve_replica_processing_queries"],
        )

    def run(self) -> None:
        while not self._stop.is_set():
            start = time.time()
            try:
                self.samples.append(self._once())
            except Exception as exc:  # keep sampling through transient controller hiccups
                print(f"sampler: {exc}", file=sys.stderr)
            self._stop.wait(max(0.0, 1.0 - (time.time() - start)))

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        return thread

    def stop(self) -> None:
        self._stop.set()


def start_serve(config_path: Path, port: int, metrics_port: int) -> None:
    """Private local Ray (2 CPUs) + Serve, deploying the config file like ``serve run`` does."""
    import ray
    import yaml
    from ray import serve
    from ray.serve._private import api as serve_api
    from ray.serve.schema import ServeDeploySchema

    os.environ.setdefault("RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "0.5")
    os.environ.setdefault("RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S", "0.5")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # private local cluster on 127.0.0.1
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    raw = yaml.safe_load(config_path.read_text())
    raw["http_options"]["port"] = port
    config = ServeDeploySchema.model_validate(raw)
    ray.init(
        address="local",
        num_cpus=2,
        include_dashboard=False,
        _metrics_export_port=metrics_port,
        _system_config=system_config(metrics_report_interval_ms=1000),
        logging_level="WARNING",
    )
    client = serve_api.serve_start(
        http_options=config.http_options.model_dump(), proxy_location=config.proxy_location
    )
    client.deploy_apps(config, _blocking=False)
    del serve  # imported so that serve.status() works from the sampler thread


def wait_ready(base_url: str, timeout_s: float) -> float:
    """Poll ``GET /ready`` until 200 (fails fast if the app's deploy failed); returns seconds waited."""
    from ray import serve

    start = time.time()
    while time.time() - start < timeout_s:
        app = serve.status().applications.get("tts")
        if app is not None and str(app.status).endswith("DEPLOY_FAILED"):
            raise RuntimeError(f"application 'tts' failed to deploy: {app.message[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/ready", timeout=5) as resp:
                if resp.status == 200:
                    return time.time() - start
        except OSError:
            pass
        time.sleep(2)
    raise TimeoutError(f"service at {base_url} not ready after {timeout_s:.0f} s")


def run_locust(base_url: str, args: argparse.Namespace, prefix: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable, "-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless",
        "-H", base_url, "--shape", "spike", "-u", str(args.users), "-r", str(args.users),
        "--warmup-seconds", str(args.warmup_seconds), "--spike-seconds", str(args.spike_seconds),
        "--recovery-seconds", str(args.recovery_seconds), "--spike-multiplier", str(args.multiplier),
        "--csv", str(prefix), "--csv-full-history", "--html", f"{prefix}.html", "--only-summary",
        # the demo shows scaling; SLO verdicts are printed but must not abort the picture
        "--slo-fail-ratio", "1",
    ]  # fmt: skip
    return subprocess.run(cmd, text=True, capture_output=True, cwd=ROOT)


def _num(row: dict[str, str], key: str) -> float:
    try:
        return float(row[key])
    except (KeyError, ValueError):
        return math.nan


def load_history(path: Path, t0: float) -> list[dict[str, float]]:
    """Per-second Aggregated rows of locust's ``*_stats_history.csv``: t, users, rps, p95.

    With ``--csv-full-history`` locust writes *current* percentiles (a sliding ~10-s window), not
    cumulative ones, so the p95 curve follows the load."""
    rows = []
    with path.open() as f:
        for r in csv.DictReader(f):
            if r["Name"] != "Aggregated":
                continue
            rows.append(
                {
                    "t": _num(r, "Timestamp") - t0,
                    "users": _num(r, "User Count"),
                    "rps": _num(r, "Requests/s"),
                    "p95": _num(r, "95%"),
                }
            )
    return rows


def plot(
    samples: list[Sample],
    history: list[dict[str, float]],
    png: Path,
    title: str,
    spike: tuple[float, float] | None = None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=True)
    ht = [h["t"] for h in history]
    ax = axes[0]
    ax.step(ht, [h["users"] for h in history], where="post", color="black", label="users")
    ax.set_ylabel("locust users")
    ax2 = ax.twinx()
    ax2.plot(ht, [h["rps"] for h in history], color="tab:green", label="requests/s")
    ax2.set_ylabel("requests/s", color="tab:green")
    ax.legend(loc="upper left")
    ax2.legend(loc="upper right")
    axes[1].plot(ht, [h["p95"] for h in history], color="tab:red")
    axes[1].set_ylabel("p95 latency ms\n(10-s window)")
    st = [s.t for s in samples]
    for dep in DEPLOYMENTS:
        axes[2].step(st, [s.replicas.get(dep, 0) for s in samples], where="post", label=dep, linewidth=2)
        axes[3].plot(st, [s.queued.get(dep, 0.0) + s.processing.get(dep, 0.0) for s in samples], label=dep)
    axes[2].set_ylabel("running replicas")
    axes[2].legend(loc="upper right", fontsize=8)
    axes[3].set_ylabel("requests queued +\nin progress")
    axes[3].legend(loc="upper right", fontsize=8)
    axes[3].set_xlabel("seconds since load start")
    for a in axes:
        a.grid(alpha=0.3)
        if spike is not None:
            a.axvspan(*spike, color="orange", alpha=0.12)
    fig.suptitle(title)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)


def summarize(samples: list[Sample], args: argparse.Namespace, offset: float = 0.0) -> dict[str, Any]:
    """Acoustic replica counts before, during (max) and after the spike (``offset``: load start in s)."""
    spike_start = offset + args.warmup_seconds
    spike_end = spike_start + args.spike_seconds
    acoustic = [(s.t, s.replicas.get("SambertAcoustic", 0)) for s in samples]

    def window(a: float, b: float) -> list[int]:
        return [n for t, n in acoustic if a <= t < b] or [0]

    return {
        "acoustic_before_spike": max(window(0, spike_start)),
        "acoustic_max_during_spike": max(window(spike_start, spike_end + 5)),
        "acoustic_at_end": acoustic[-1][1] if acoustic else 0,
        "acoustic_min_after_spike": min(window(spike_end + 5, math.inf)),
        "max_replicas": {d: max((s.replicas.get(d, 0) for s in samples), default=0) for d in DEPLOYMENTS},
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--users", type=int, default=2, help="base users; the spike is --multiplier times this")
    p.add_argument("--multiplier", type=float, default=5.0)
    p.add_argument("--warmup-seconds", type=float, default=30.0)
    p.add_argument("--spike-seconds", type=float, default=60.0)
    p.add_argument("--recovery-seconds", type=float, default=90.0)
    p.add_argument("--tail-seconds", type=float, default=20.0, help="keep sampling after locust stops")
    p.add_argument("--ready-timeout", type=float, default=600.0)
    p.add_argument("--out", type=Path, default=ROOT / "loadtests" / "reports" / "autoscale")
    args = p.parse_args(argv)
    if not args.config.is_file():
        p.error(f"config file not found: {args.config}")

    port, metrics_port = free_port(), free_port()
    base_url = f"http://127.0.0.1:{port}"
    print(
        f"starting local Ray + Serve on {base_url} (metrics :{metrics_port}) from {args.config}", flush=True
    )
    start_serve(args.config, port, metrics_port)
    try:
        print(f"ready after {wait_ready(base_url, args.ready_timeout):.0f} s; running the spike", flush=True)
        t0 = time.time()
        sampler = Sampler(f"http://127.0.0.1:{metrics_port}/metrics", t0)
        sampler.start()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        result = run_locust(base_url, args, args.out)
        time.sleep(args.tail_seconds)
        sampler.stop()
    finally:
        import ray

        ray.shutdown()
    print(result.stdout[-4000:])
    history = load_history(Path(f"{args.out}_stats_history.csv"), t0)
    png = Path(f"{args.out}.png")
    title = (
        f"Spike x{args.multiplier:g} ({args.users}->{round(args.users * args.multiplier)} users), "
        f"2-CPU local Ray, {args.config.name}"
    )
    offset = history[0]["t"] if history else 0.0  # locust's start-up before its first tick
    spike = (offset + args.warmup_seconds, offset + args.warmup_seconds + args.spike_seconds)
    plot(sampler.samples, history, png, title, spike)
    summary = summarize(sampler.samples, args, offset)
    Path(f"{args.out}.json").write_text(
        json.dumps({"summary": summary, "samples": [s.__dict__ for s in sampler.samples]}, indent=1)
    )
    print(f"PNG: {png}\nsamples: {args.out}.json\nsummary: {json.dumps(summary)}")
    scaled = summary["acoustic_max_during_spike"] > summary["acoustic_before_spike"]
    came_back = summary["acoustic_min_after_spike"] < summary["acoustic_max_during_spike"]
    print(f"acoustic scaled up during spike: {scaled}; scaled back down after: {came_back}")
    return 0 if scaled and came_back else 1


if __name__ == "__main__":
    raise SystemExit(main())
