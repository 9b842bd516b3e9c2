"""``make run``: ``serve run CONFIG`` on a local Ray started here, without the Ray dashboard head by default.

``serve run`` cannot turn the dashboard off; it skips its own ``ray.init`` when Ray is already initialised, so
this starts Ray first (same namespace, same address rules: ``$RAY_ADDRESS`` connects to a running cluster) and
then runs the unchanged ``serve run`` command. The dashboard head (``dashboard.py`` and its nine module
subprocesses) holds ≈0.9 GB RSS, ≈0.25 GB PSS (docs/performance.md, "Memory") for the web UI on :8265 and the
REST API behind ``serve status``/``serve config``; the service needs neither: readiness is ``/ready``, metrics
come from the per-node dashboard agent (still started), logs go to the console. ``--dashboard`` keeps it.

Usage: ``python -m serve_app.run serve_app/config/local.yaml [--dashboard]``.
"""

from __future__ import annotations

import argparse

import ray
from ray.serve._private.constants import SERVE_NAMESPACE
from ray.serve.scripts import cli


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serve_app.run", description=__doc__.split("\n")[0])
    parser.add_argument("config", help="Serve config file (e.g. serve_app/config/local.yaml)")
    parser.add_argument(
        "--dashboard", action="store_true", help="also start the Ray dashboard (:8265, `serve status`)"
    )
    args = parser.parse_args(argv)
    ray.init(namespace=SERVE_NAMESPACE, include_dashboard=args.dashboard)
    cli.main(["run", args.config], prog_name="serve")  # blocks until Ctrl-C, then shuts Serve down


if __name__ == "__main__":
    main()
