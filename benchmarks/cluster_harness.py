"""A multi-node Ray cluster on loopback for the drills: ``ray.cluster_utils.Cluster`` (one raylet per "node")
with explicit ports, a private temp root, Serve deployed from a config dict, node kills and placement views.

Never ``ray start``: the cluster's address file and sessions live under a private ``RAY_TMPDIR``, so no other
``ray.init()`` on this machine can attach to it. :func:`private_ray_tmp` must run before anything starts Ray.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from compat.ports import free_port
from serve_app.ray_system import system_config

REPO = Path(__file__).resolve().parent.parent
APP = "tts"
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # the app passes no big objects; keeps /dev/shm use small


def new_tmp_root() -> Path:
    """A fresh, short temp root (Ray's unix sockets live under it)."""
    return Path(tempfile.mkdtemp(prefix="ttsc-", dir="/tmp"))


def private_ray_tmp(root: Path | None = None) -> Path:
    """Make ``root`` (default: a fresh one) this process's Ray temp root (``RAY_TMPDIR``): session dirs and
    the address file go there, not to /tmp/ray."""
    root = root or new_tmp_root()
    os.environ["RAY_TMPDIR"] = str(root)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_AUTH_MODE"] = "disabled"  # loopback-only test cluster, like `make run`
    # Every node (also those the fake provider starts) advertises 127.0.0.1, not the host's interface address:
    # with this off, Ray's get_node_ip_address() returns the loopback address.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(REPO), os.environ.get("PYTHONPATH", "")] if p)
    return root


def node_ports() -> dict[str, Any]:
    """Explicit loopback ports for one node's raylet and agents (no defaults shared with other Rays)."""
    return {
        "node_ip_address": "127.0.0.1",
        "node_manager_port": free_port(),
        "object_manager_port": free_port(),
        "dashboard_agent_listen_port": free_port(),
        "metrics_agent_port": free_port(),
        "metrics_export_port": free_port(),
        "runtime_env_agent_port": free_port(),
    }


@dataclass
class LocalCluster:
    """Head + worker raylets on this host; ``close()`` kills every process it started."""

    head_num_cpus: float
    worker_num_cpus: float
    gcs_port: int = field(default_factory=free_port)
    head_args: dict[str, Any] = field(default_factory=dict)
    cluster: Any = None
    workers: list[Any] = field(default_factory=list)

    def start(self) -> LocalCluster:
        from ray.cluster_utils import Cluster

        args = {
            "num_cpus": self.head_num_cpus,
            "gcs_server_port": self.gcs_port,
            "include_dashboard": False,
            "object_store_memory": OBJECT_STORE_BYTES,
            **node_ports(),
            "_system_config": system_config(),
            **self.head_args,
        }
        self.cluster = Cluster(initialize_head=True, head_node_args=args)
        return self

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def add_worker(self) -> Any:
        node = self.cluster.add_node(
            num_cpus=self.worker_num_cpus, object_store_memory=OBJECT_STORE_BYTES, **node_ports()
        )
        self.workers.append(node)
        return node

    def connect(self) -> None:
        import ray

        ray.init(address=self.address, namespace="serve", log_to_driver=False, configure_logging=False)

    def kill_node(self, node: Any) -> float:
        """SIGKILL the node's raylet, agents and every worker process under it (its replicas) at once: a lost
        machine, no drain. Returns the wall time of the kill."""
        pids: set[int] = set()
        for infos in node.all_processes.values():
            for info in infos:
                pids.add(info.process.pid)
        for pid in list(pids):
            with contextlib.suppress(psutil.Error):
                pids.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        t = time.time()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.cluster.remove_node(node, allow_graceful=False)
        if node in self.workers:
            self.workers.remove(node)
        return t

    def close(self) -> None:
        import ray

        with contextlib.suppress(Exception):
            from ray import serve

            serve.shutdown()
        with contextlib.suppress(Exception):
            ray.shutdown()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.shutdown()


def deploy(config: dict[str, Any], timeout_s: float = 600.0) -> None:
    """Start Serve (proxy location and HTTP options from ``config``) and deploy it like ``serve deploy``;
    wait until the app is RUNNING."""
    from ray.serve._private import api as serve_api
    from ray.serve.config import ProxyLocation
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(config)
    client = serve_api.serve_start(
        http_options=schema.http_options.model_dump(), proxy_location=ProxyLocation(schema.proxy_location)
    )
    client.deploy_apps(schema, _blocking=False)
    wait_app_running(timeout_s)


def app_status() -> str:
    from ray import serve

    st = serve.status().applications.get(APP)
    return "MISSING" if st is None else str(st.status.value if hasattr(st.status, "value") else st.status)


def wait_app_running(timeout_s: float) -> float:
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    last = ""
    while time.monotonic() < deadline:
        last = app_status()
        if last == "RUNNING":
            return time.monotonic() - t0
        if last == "DEPLOY_FAILED":
            break
        time.sleep(1.0)
    from ray import serve

    raise TimeoutError(f"app {APP} not RUNNING after {timeout_s:.0f}s: {last}: {serve.status().applications}")


def running_counts() -> dict[str, int]:
    """RUNNING replicas per deployment as the Serve controller reports them."""
    from ray import serve

    st = serve.status().applications.get(APP)
    if st is None:
        return {}
    return {name: int(d.replica_states.get("RUNNING", 0)) for name, d in st.deployments.items()}


def alive_replica_actors() -> dict[str, list[str]]:
    """ALIVE replica actors per deployment from the GCS actor table, with their node ids (duplicates = a
    deployment with more actors than the controller counts)."""
    import ray

    out: dict[str, list[str]] = {}
    prefix = f"SERVE_REPLICA::{APP}#"
    for info in ray._private.state.actors().values():
        name = info.get("Name") or ""
        if info.get("State") != "ALIVE" or not name.startswith(prefix):
            continue
        deployment = name[len(prefix) :].split("#", 1)[0]
        out.setdefault(deployment, []).append(info["Address"]["NodeID"])
    return out


def placement() -> dict[str, dict[str, int]]:
    """``{deployment: {node id prefix: replicas}}``."""
    return {d: dict(Counter(n[:8] for n in nodes)) for d, nodes in alive_replica_actors().items()}


def alive_nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def worker_node_count() -> int:
    """Alive nodes with CPUs (the head renders num-cpus 0)."""
    return sum(1 for n in alive_nodes() if n.get("Resources", {}).get("CPU", 0) > 0)


def reap(root: Path) -> list[int]:
    """SIGKILL every process left from this drill: those started with ``RAY_TMPDIR=<root>`` in their
    environment (Ray rewrites process titles, the environment stays). Catches raylets the fake provider
    started inside the autoscaler monitor, which outlive the head's shutdown. Returns the pids killed."""
    me = os.getpid()
    killed = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid != me and proc.environ().get("RAY_TMPDIR") == str(root):
                proc.kill()
                killed.append(proc.pid)
    return killed


def cleanup_tmp(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
