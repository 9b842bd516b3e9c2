"""``make run``: a local Ray head node, the app deployed on it from CONFIG, the replicas' logs on the console.

This process starts the head node's daemons (``gcs_server``, ``raylet`` and their agents) as ``ray start
--head --block`` does, deploys the config with ``serve run --non-blocking`` (a short-lived driver), then
follows Serve's log files until Ctrl-C or SIGTERM, when it shuts Serve down gracefully (replicas drain) and
stops the node. It never connects to Ray itself, and the node runs only what serving needs
(docs/performance.md, "Memory"), ≈0.4 GB RSS less than ``ray.init`` + ``serve run``:

- no driver process left holding a Ray core worker (146 MB RSS): the deploy driver exits once submitted;
- no autoscaler monitor (84 MB): one node, nothing to add or remove;
- no log monitor (80 MB): it only forwards worker output to drivers; this process reads Serve's files;
- no Ray Client server, and no dashboard process (117 MB even in its minimal mode, which only reports usage
  stats) unless ``--dashboard`` (:8265, ``serve status``).

Metrics still come from the node's dashboard agent. ``$RAY_ADDRESS`` set: ``serve run CONFIG`` on that
running cluster instead (blocking, as before).

Usage: ``python -m serve_app.run serve_app/config/local.yaml [--dashboard]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

DEPLOY_TIMEOUT_S = 300.0  # the deploy driver: connect, start Serve, submit the config
SHUTDOWN_TIMEOUT_S = 90.0  # serve.shutdown(): replicas drain (graceful_shutdown_timeout_s is 40 s)
FOLLOW_EVERY_S = 0.5
SERVE_CLI = "from ray.serve.scripts import cli; cli()"
SERVE_SHUTDOWN = (
    "import sys, ray; from ray import serve; "
    "ray.init(address=sys.argv[1], namespace='serve', log_to_driver=False); serve.shutdown()"
)


def start_head(dashboard: bool) -> Any:
    """The head node's processes, started from here (Ray's ``Node``, what ``ray start --head`` uses)."""
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    from serve_app.ray_system import system_config

    class ServingHead(Node):  # type: ignore[misc]
        """Without the dashboard, no API server process at all: its minimal mode only reports usage stats
        (off here), for 117 MB RSS."""

        def start_api_server(self, *, include_dashboard: bool | None, raise_on_failure: bool) -> None:
            if include_dashboard:
                super().start_api_server(include_dashboard=True, raise_on_failure=raise_on_failure)

    params = RayParams(
        _system_config=system_config(),
        include_dashboard=dashboard,
        no_monitor=True,
        include_log_monitor=False,
        ray_client_server_port=None,
    )
    # shutdown_at_exit=False: this process stops the node itself (after Serve's graceful shutdown); the
    # reaper still kills the node's processes if this one dies without doing so.
    return ServingHead(params, head=True, shutdown_at_exit=False, spawn_reaper=True)


def serve_run(address: str, config: str, env: dict[str, str]) -> None:
    """Deploy ``config`` on the node with a short-lived ``serve run --non-blocking`` driver."""
    command = [sys.executable, "-c", SERVE_CLI, "run", "--non-blocking", "-a", address, config]
    done = subprocess.run(command, env=env, timeout=DEPLOY_TIMEOUT_S, check=False)
    if done.returncode:
        raise RuntimeError(f"serve run exited with {done.returncode}")


def serve_shutdown(address: str, env: dict[str, str]) -> None:
    """``serve.shutdown()`` from a short-lived driver: every replica drains, then exits."""
    command = [sys.executable, "-c", SERVE_SHUTDOWN, address]
    try:
        subprocess.run(command, env=env, timeout=SHUTDOWN_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        print(f"serve shutdown took over {SHUTDOWN_TIMEOUT_S:.0f} s; stopping the node", file=sys.stderr)


def log_line(raw: str) -> str:
    """One line of Serve's JSON log files, as ``time level component: message`` (other lines as they are)."""
    try:
        record = json.loads(raw)
    except ValueError:
        return raw
    if not isinstance(record, dict) or "message" not in record:
        return raw
    actor = str(record.get("actor_name") or record.get("component_name") or "")
    component = actor.split("#")[1] if actor.count("#") >= 2 else actor or "serve"
    clock = str(record.get("asctime", "")).split(" ")[-1]
    text = f"{clock} {record.get('levelname', '')} {component}: {record['message']}"
    if record.get("exc_text"):
        text += "\n" + str(record["exc_text"])
    return text


class LogFollower:
    """Prints the new complete lines of Serve's log files (``logs/serve/*.log``, new files included)."""

    def __init__(self, log_dir: Path, out: TextIO) -> None:
        self.log_dir, self.out = log_dir, out
        self._offsets: dict[Path, int] = {}

    def poll(self) -> int:
        """Print what was appended since the last poll; returns the number of lines printed."""
        printed = 0
        for path in sorted(self.log_dir.glob("*.log")):
            start = self._offsets.get(path, 0)
            try:
                with path.open("rb") as f:
                    f.seek(start)
                    chunk = f.read()
            except OSError:
                continue
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._offsets[path] = start + len(complete)
            for raw in complete.decode("utf-8", "replace").splitlines():
                print(log_line(raw), file=self.out)
                printed += 1
        if printed:
            self.out.flush()
        return printed


def _connect_existing_cluster(config: str) -> None:
    """``$RAY_ADDRESS``: ``serve run CONFIG`` (blocking, logs from Ray) on that cluster."""
    from ray.serve.scripts import cli

    cli.main(["run", config], prog_name="serve")  # blocks until Ctrl-C, then shuts Serve down


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve_app.run", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="Serve config file (e.g. serve_app/config/local.yaml)")
    parser.add_argument(
        "--dashboard", action="store_true", help="also start the Ray dashboard (:8265, `serve status`)"
    )
    args = parser.parse_args(argv)
    if not Path(args.config).is_file():
        parser.error(f"no such config file: {args.config}")
    if os.environ.get("RAY_ADDRESS"):
        _connect_existing_cluster(args.config)
        return 0

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # as ray.init does for release wheels
    node = start_head(args.dashboard)
    env = {**os.environ, "RAY_ADDRESS": node.address}
    try:
        serve_run(node.address, args.config, env)
        log_dir = Path(node.get_logs_dir_path()) / "serve"
        metrics = f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"
        print(f"Serving {args.config} on Ray {node.address}; Prometheus metrics at {metrics};", flush=True)
        print(f"logs in {log_dir}; Ctrl-C stops.", flush=True)
        follower = LogFollower(log_dir, sys.stdout)
        while not stop.wait(FOLLOW_EVERY_S):
            follower.poll()
            if dead := node.dead_processes():
                kinds = ", ".join(kind for kind, _ in dead)
                print(f"Ray node process(es) died: {kinds}; stopping", file=sys.stderr, flush=True)
                return 1
        print("Shutting down Serve (replicas drain), then Ray ...", flush=True)
        serve_shutdown(node.address, env)
        follower.poll()
        return 0
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"make run: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)


if __name__ == "__main__":
    raise SystemExit(main())
