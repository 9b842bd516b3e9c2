"""Run one independent single-node Ray cluster serving the `tts` app from a Serve config (failover test).

Starts its own Ray (own temp dir, no dashboard, random internal ports), then deploys the config exactly like
`serve run CONFIG` does (serve_start + deploy_apps), with the HTTP proxy on 127.0.0.1:--http-port, and blocks.
Kill the process group to kill the whole cluster (that is what the failover test does).

    python -m tests.k8s.serve_cluster --config serve_app/config/local.yaml --http-port 18001 \
        --temp-dir /tmp/rayA --model-dir /tmp/tiny
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml


def cluster_config(
    config_path: Path, http_port: int, model_dir: str, max_replicas: int = 1
) -> dict[str, Any]:
    """The Serve config for a small test cluster: the given file with loopback HTTP, the model directory and
    every stage pinned to one replica (two clusters share this 2-core machine)."""
    cfg = yaml.safe_load(config_path.read_text())
    cfg["proxy_location"] = "HeadOnly"
    cfg["http_options"] = {**(cfg.get("http_options") or {}), "host": "127.0.0.1", "port": http_port}
    for app in cfg["applications"]:
        app["args"] = {**(app.get("args") or {}), "model_dir": model_dir}
        for dep in app.get("deployments", []):
            auto = dict(dep.get("autoscaling_config") or {})
            auto.update(min_replicas=1, initial_replicas=1, max_replicas=max_replicas)
            dep["autoscaling_config"] = auto
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--temp-dir", type=Path, required=True)
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--num-cpus", type=int, default=4, help="logical CPUs of this Ray node")
    args = parser.parse_args(argv)

    import ray
    from ray.serve._private import api as serve_api
    from ray.serve.config import ProxyLocation
    from ray.serve.schema import ServeDeploySchema

    cfg = ServeDeploySchema.model_validate(cluster_config(args.config, args.http_port, args.model_dir))
    args.temp_dir.mkdir(parents=True, exist_ok=True)
    ray.init(
        num_cpus=args.num_cpus,
        include_dashboard=False,
        namespace="serve",
        _temp_dir=str(args.temp_dir),
        configure_logging=False,
    )
    client = serve_api.serve_start(
        http_options=cfg.http_options.model_dump(),
        proxy_location=ProxyLocation(cfg.proxy_location),
    )
    client.deploy_apps(cfg, _blocking=False)
    print(f"serve_cluster: deployed on 127.0.0.1:{args.http_port} (pid {os.getpid()})", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
