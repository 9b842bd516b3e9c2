"""The Ray system settings every serving cluster runs with, declared once: ``make run`` (serve_app/run.py),
the benchmarks and the test session pass them to the Ray they start; the Helm chart's pods set them as
``RAY_<name>`` environment variables (``tts.rayEnv``; a test holds the two equal).

``max_direct_call_object_size``: Ray sends a call's arguments and results inside the call up to this size
(default 100 KiB); larger ones go through the node's object store (a put, a raylet round trip, a fetch). Each
vocoder chunk of a causal voice carries its layers' left context, ~160-200 KiB each way, so every chunk call
took the slow path twice. Inline up to 1 MiB: a Serve handle call with 200 KiB each way took 3.1 instead of
5.5 ms (10 KiB: 2.7 ms either way; docs/performance.md, session 27). Results above it (a long unit's whole
audio) still use the object store.

``SERVE_ENV`` holds Ray Serve's own settings, which only environment variables set (read by the Serve
controller at import). ``RAY_SERVE_CONTROL_LOOP_INTERVAL_S`` 0.5 (default 0.1): the controller's loop (replica
states, autoscaling, routing updates) ran 10 times a second and, with the GCS calls it makes, took ~7 % of a
core on an idle 2-core node, ~2.7 % at 0.5 (docs/performance.md, session 31); its reactions (a dead replica
replaced, a scaling decision) come up to 0.4 s later, against replica starts of 10-20 s.
"""

from __future__ import annotations

import os

__all__ = ["RAY_SYSTEM_CONFIG", "SERVE_ENV", "ray_env", "system_config"]

RAY_SYSTEM_CONFIG: dict[str, int] = {"max_direct_call_object_size": 1 << 20}
SERVE_ENV: dict[str, str] = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5"}


def system_config(**extra: int) -> dict[str, int]:
    """``_system_config`` for ``ray.init`` / a head node: the serving settings plus ``extra`` (e.g. a test's
    faster metrics reporting). Called just before a Ray node starts, it also puts :data:`SERVE_ENV` in this
    process's environment (unless set), which the node's processes, and so the Serve controller, inherit."""
    for name, value in SERVE_ENV.items():
        os.environ.setdefault(name, value)
    return {**RAY_SYSTEM_CONFIG, **extra}


def ray_env() -> dict[str, str]:
    """The same settings as environment variables, read by every Ray process started with them (``ray start``
    in a KubeRay pod)."""
    return {f"RAY_{name}": str(value) for name, value in RAY_SYSTEM_CONFIG.items()} | SERVE_ENV
