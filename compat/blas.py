"""Which BLAS a numpy-style module was built with (read by the doctor and by the engine's product policy)."""

from __future__ import annotations

from typing import Any


def blas_build(module: Any) -> str:
    """``"<name> <version>"`` of ``module``'s BLAS from its ``show_config(mode="dicts")`` (numpy, scipy), or
    ``"unknown"`` on builds without that mode."""
    try:
        cfg = module.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older builds have no dict mode: not worth failing over
        return "unknown"
