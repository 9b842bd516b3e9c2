"""Opt-in compatibility shims for legacy ModelScope/KAN-TTS-era code and checkpoints.

Nothing here runs on import. Call ``compat.apply("name", ...)`` or ``compat.apply_all()``; both return an
:class:`Applied` handle that undoes exactly what it did (``.revert()`` or use it as a context manager).
Each shim only fills in what is missing, so it never replaces a working attribute of a newer library.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

Undo = Callable[[], None]


class ShimError(RuntimeError):
    """An unknown shim name, or a shim whose target library is missing."""


@dataclass(frozen=True)
class Shim:
    """One shim: what legacy symptom it fixes and how to install it (``install`` returns its undo)."""

    name: str
    fixes: str
    install: Callable[[], Undo]


_MISSING = object()


def _set_attrs(target: Any, values: dict[str, Any]) -> Undo:
    """Set only the attributes ``target`` does not already have; return an undo for exactly those."""
    with warnings.catch_warnings():  # numpy warns on hasattr(np, "object") etc.
        warnings.simplefilter("ignore")
        added = [name for name in values if not hasattr(target, name)]
    for name in added:
        setattr(target, name, values[name])

    def undo() -> None:
        for name in added:
            if name in vars(target):
                delattr(target, name)

    return undo


def _scipy_misc_logsumexp() -> Undo:
    import scipy
    import scipy.special

    undos: list[Undo] = []
    try:
        misc = importlib.import_module("scipy.misc")
    except ImportError:  # SciPy 2.0 removes the module entirely.
        misc = types.ModuleType("scipy.misc", "compat shim: legacy scipy.misc names")
        sys.modules["scipy.misc"] = misc
        undos.append(_set_attrs(scipy, {"misc": misc}))
        undos.append(lambda: sys.modules.pop("scipy.misc", None) and None)
    undos.append(_set_attrs(misc, {"logsumexp": scipy.special.logsumexp}))

    def undo() -> None:
        for step in reversed(undos):
            step()

    return undo


# scipy.signal window functions that moved to scipy.signal.windows (the plain names went in SciPy 1.13).
_SCIPY_WINDOWS: tuple[str, ...] = (
    "barthann", "bartlett", "blackman", "blackmanharris", "bohman", "boxcar", "chebwin", "cosine",
    "exponential", "flattop", "gaussian", "general_cosine", "general_gaussian", "general_hamming",
    "hamming", "hann", "kaiser", "nuttall", "parzen", "taylor", "triang", "tukey",
)  # fmt: skip


def _scipy_signal_kaiser() -> Undo:
    import scipy.signal
    import scipy.signal.windows as windows

    return _set_attrs(scipy.signal, {name: getattr(windows, name) for name in _SCIPY_WINDOWS})


def _numpy_aliases() -> dict[str, Any]:
    import numpy as np

    return {
        # Removed in NumPy 1.24 (deprecated 1.20): the builtin-type aliases.
        "float": float,
        "int": int,
        "bool": bool,
        "object": object,
        "complex": complex,
        "str": str,
        "unicode": str,
        "long": int,
        # Removed in NumPy 2.0.
        "float_": np.float64,
        "complex_": np.complex128,
        "string_": np.bytes_,
        "unicode_": np.str_,
        "int0": np.intp,
        "uint0": np.uintp,
        "bool8": np.bool_,
        "object0": np.object_,
        "Inf": np.inf,
        "Infinity": np.inf,
        "infty": np.inf,
        "PINF": np.inf,
        "NINF": -np.inf,
        "NaN": np.nan,
        "NAN": np.nan,
        "PZERO": 0.0,
        "NZERO": -0.0,
    }


_numpy_added: set[str] = set()


def numpy_aliases_added() -> set[str]:
    """Names the active ``numpy_scalar_aliases`` shim put on numpy (empty when it is not applied)."""
    return set(_numpy_added)


def _numpy_scalar_aliases() -> Undo:
    import numpy as np

    # NumPy 2 defines np.bool/np.long again (as NumPy scalar types): _set_attrs leaves those alone.
    before = set(vars(np))
    undo_attrs = _set_attrs(np, _numpy_aliases())
    _numpy_added.update(set(vars(np)) - before)

    def undo() -> None:
        undo_attrs()
        _numpy_added.clear()

    return undo


def legacy_numpy_globals() -> list[Any]:
    """The minimal allowlist for numpy objects pickled inside old checkpoints (arrays, dtypes, scalars).

    Each entry is ``(object, "module.name")`` so both the NumPy 1.x names (``numpy.core.multiarray``)
    and the NumPy 2.x names (``numpy._core.multiarray``) resolve. Nothing here can run arbitrary code:
    ``_reconstruct``/``scalar`` only build arrays and scalars from raw bytes and a dtype.
    """
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy 1.x
        from numpy.core import multiarray

    entries: list[Any] = [
        np.ndarray,
        np.dtype,
        (multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        (multiarray.scalar, "numpy._core.multiarray.scalar"),
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
    ]
    # Pickled dtypes reference their dtype class (numpy.dtypes.Float32DType, ...) since NumPy 1.25.
    dtype_codes = "?bBhHiIlLqQefdgFDGSUV"
    entries.extend({type(np.dtype(code)) for code in dtype_codes})
    return entries


def _torch_load_legacy_numpy() -> Undo:
    import torch.serialization as ser

    before = list(ser.get_safe_globals())
    ser.add_safe_globals(legacy_numpy_globals())

    def undo() -> None:
        ser.clear_safe_globals()
        ser.add_safe_globals(before)

    return undo


class _TtsfrdStub(types.ModuleType):
    """Placeholder for Alibaba's closed ``ttsfrd`` frontend: importable, unusable, says why."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise ShimError(
            f"ttsfrd.{name}: ttsfrd is a stub from compat (shim 'ttsfrd_stub'). The closed-source ttsfrd "
            "frontend has no Python >=3.11 or aarch64 builds; use engine.frontend.Frontend instead."
        )


def _ttsfrd_stub() -> Undo:
    if "ttsfrd" in sys.modules or importlib.util.find_spec("ttsfrd") is not None:
        return lambda: None  # a real ttsfrd is importable: never shadow it.
    sys.modules["ttsfrd"] = _TtsfrdStub("ttsfrd", "compat stub for the closed-source ttsfrd frontend")

    def undo() -> None:
        sys.modules.pop("ttsfrd", None)

    return undo


SHIMS: dict[str, Shim] = {
    s.name: s
    for s in (
        Shim(
            "scipy_misc_logsumexp",
            "AttributeError: module 'scipy.misc' has no attribute 'logsumexp' (moved to scipy.special)",
            _scipy_misc_logsumexp,
        ),
        Shim(
            "scipy_signal_kaiser",
            "ImportError: cannot import name 'kaiser' from 'scipy.signal' (KAN-TTS pqmf.py; windows moved "
            "to scipy.signal.windows in SciPy 1.13)",
            _scipy_signal_kaiser,
        ),
        Shim(
            "numpy_scalar_aliases",
            "AttributeError: module 'numpy' has no attribute 'float' (np.float/int/object/... removed in "
            "NumPy 1.24; np.float_/NaN/Inf/... removed in 2.0)",
            _numpy_scalar_aliases,
        ),
        Shim(
            "torch_load_legacy_numpy",
            "torch.load(weights_only=True): Unsupported global numpy.core.multiarray._reconstruct "
            "(numpy arrays/dtypes/scalars pickled inside old checkpoints)",
            _torch_load_legacy_numpy,
        ),
        Shim(
            "ttsfrd_stub",
            "ModuleNotFoundError: No module named 'ttsfrd' (top-level import in KAN-TTS ling_unit)",
            _ttsfrd_stub,
        ),
    )
}

_active: dict[str, Undo] = {}


class Applied:
    """Handle for shims applied by one call; reverts them (and only them) on ``revert()`` or ``with`` exit."""

    def __init__(self, names: list[str]) -> None:
        self.names = names

    def revert(self) -> None:
        revert(*self.names)
        self.names = []

    def __enter__(self) -> Applied:
        return self

    def __exit__(self, *exc: object) -> None:
        self.revert()

    def __repr__(self) -> str:
        return f"Applied({self.names!r})"


def available() -> dict[str, str]:
    """Shim names and the legacy symptom each one fixes."""
    return {name: shim.fixes for name, shim in SHIMS.items()}


def active() -> list[str]:
    """Names of the shims currently applied in this process."""
    return list(_active)


def apply(*names: str) -> Applied:
    """Apply the named shims (already-active ones are left as they are); return a handle to undo them."""
    unknown = [n for n in names if n not in SHIMS]
    if unknown:
        raise ShimError(f"unknown shim(s) {unknown}; available: {sorted(SHIMS)}")
    done: list[str] = []
    for name in names:
        if name in _active:
            continue
        try:
            _active[name] = SHIMS[name].install()
        except ImportError as exc:
            revert(*done)
            raise ShimError(f"shim {name!r} needs a library that is not installed: {exc}") from exc
        done.append(name)
    return Applied(done)


def apply_all() -> Applied:
    """Apply every shim."""
    return apply(*SHIMS)


def revert(*names: str) -> None:
    """Undo the named shims (all active ones if no name is given); unknown or inactive names are ignored."""
    for name in reversed(names or tuple(_active)):
        undo = _active.pop(name, None)
        if undo is not None:
            undo()


@contextmanager
def shimmed(*names: str) -> Iterator[Applied]:
    """``with shimmed("numpy_scalar_aliases"): ...`` applies for the block only."""
    handle = apply(*names)
    try:
        yield handle
    finally:
        handle.revert()
