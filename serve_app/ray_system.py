"""The Ray system settings every serving cluster runs with, declared once: ``make run`` (serve_app/run.py),
the benchmarks and the test session pass them to the Ray they start; the Helm chart's pods set them as
``RAY_<name>`` environment variables (``tts.rayEnv``; a test holds the two equal).

``max_direct_call_object_size``: Ray sends a call's arguments and results inside the call up to this size
(default 100 KiB); larger ones go through the node's object store (a put, a raylet round trip, a fetch). Each
vocoder chunk of a causal voice carries its layers' left context, ~160-200 KiB each way, so every chunk call
took the slow path twice. Inline up to 1 MiB: a Serve handle call with 200 KiB each way took 3.1 instead of
5.5 ms (10 KiB: 2.7 ms either way; docs/performance.md, session 27). Results above it (a long unit's whole
audio) still use the object store.
"""

from __future__ import annotations

__all__ = ["RAY_SYSTEM_CONFIG", "ray_env", "system_config"]

RAY_SYSTEM_CONFIG: dict[str, int] = {"max_direct_call_object_size": 1 << 20}


def system_config(**extra: int) -> dict[str, int]:
    """``_system_config`` for ``ray.init`` / a head node: the serving settings plus ``extra`` (e.g. a test's
    faster metrics reporting)."""
    return {**RAY_SYSTEM_CONFIG, **extra}


def ray_env() -> dict[str, str]:
    """The same settings as environment variables, read by every Ray process started with them (``ray start``
    in a KubeRay pod)."""
    return {f"RAY_{name}": str(value) for name, value in RAY_SYSTEM_CONFIG.items()}
