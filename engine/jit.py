"""numba compilation shared by the engine's compiled loops (the decoder step, the bf16 vocoder's sums)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numba

F = TypeVar("F", bound=Callable[..., object])


def compiled(fn: F) -> F:
    """``numba.njit`` without the GIL, cached on disk (in ``$NUMBA_CACHE_DIR``, else beside ``fn``'s source
    file, else in the user's cache directory); where none is writable it is compiled in every process (seconds
    at load)."""
    try:
        return numba.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(fn)
