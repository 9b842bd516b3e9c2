"""Known-bad combinations, detected by version rules rather than by waiting for a crash."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

from packaging.version import Version

from compat.checks._util import distribution_names, module_version, release
from compat.doctor import CheckResult, DoctorOptions, fail, ok, warn

# First release of each compiled package built against the NumPy 2 ABI. Older builds die on import under
# NumPy 2 with "numpy.ndarray size changed" / "A module that was compiled using NumPy 1.x cannot be run".
NUMPY2_FIRST_COMPATIBLE: dict[str, tuple[str, str]] = {
    # dist name: (module name, first compatible version)
    "scipy": ("scipy", "1.13.0"),
    "torch": ("torch", "2.3.0"),
    "pandas": ("pandas", "2.2.2"),
    "pyarrow": ("pyarrow", "16.0.0"),
    "numba": ("numba", "0.60.0"),
    "scikit-learn": ("sklearn", "1.4.2"),
    "matplotlib": ("matplotlib", "3.8.4"),
    "h5py": ("h5py", "3.11.0"),
    "opencv-python": ("cv2", "4.10.0.84"),
}


def check_numpy2_abi(options: DoctorOptions) -> CheckResult:
    numpy_v = release(module_version("numpy"))
    if numpy_v is None:
        return fail("rule-numpy2-abi", "numpy is not installed", "pip install 'numpy>=1.26,<3'")
    if numpy_v.major < 2:
        return ok("rule-numpy2-abi", f"numpy {numpy_v} (1.x ABI): no NumPy-2 rebuild needed")
    bad = []
    for dist, (module, first) in NUMPY2_FIRST_COMPATIBLE.items():
        found = module_version(module, dist)
        v = release(found)
        if v is not None and v < Version(first):
            bad.append((dist, found, first))
    if bad:
        listing = ", ".join(f"{d} {f} (needs >={first})" for d, f, first in bad)
        pins = " ".join(f"'{d}>={first}'" for d, _, first in bad)
        return fail(
            "rule-numpy2-abi",
            f"numpy {numpy_v} with packages built for the NumPy 1 ABI: {listing}",
            f"pip install {pins} (or pin 'numpy<2' only if a package has no NumPy-2 build)",
            packages=[d for d, _, _ in bad],
        )
    return ok("rule-numpy2-abi", f"numpy {numpy_v}: every known compiled dependency is NumPy-2 ready")


def removed_numpy_aliases() -> list[str]:
    """Legacy numpy aliases (np.float, np.NaN, ...) the running numpy no longer has."""
    import numpy as np

    from compat.shims import _numpy_aliases, numpy_aliases_added

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        missing = {name for name in _numpy_aliases() if not hasattr(np, name)}
    return sorted(missing | numpy_aliases_added())


_SKIP_DIRS = {".venv", "venv", ".git", "node_modules", "models", "__pycache__", "build", "dist"}


def _python_files(root: Path) -> Iterator[Path]:
    """``*.py`` under ``root``, pruning virtualenvs, VCS, caches and model directories."""
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
        for name in filenames:
            if name.endswith(".py"):
                yield Path(dirpath) / name


def find_alias_uses(roots: list[Path], aliases: list[str]) -> list[str]:
    """``file:line np.name`` for every attribute access ``np.<alias>``/``numpy.<alias>`` under ``roots``."""
    if not aliases:
        return []
    quick = re.compile(rf"\b(?:np|numpy)\.(?:{'|'.join(map(re.escape, aliases))})\b")
    wanted = set(aliases)
    hits: list[str] = []
    for root in roots:
        for path in _python_files(root):
            try:
                source = path.read_text("utf-8", errors="replace")
            except OSError:
                continue
            if not quick.search(source):
                continue
            try:
                tree = ast.parse(source, str(path))
            except SyntaxError:
                continue
            for node in ast.walk(tree):
                if (
                    isinstance(node, ast.Attribute)
                    and node.attr in wanted
                    and isinstance(node.value, ast.Name)
                    and node.value.id in ("np", "numpy")
                ):
                    hits.append(f"{path}:{node.lineno} {node.value.id}.{node.attr}")
    return hits


def _importable(name: str) -> bool:
    """Whether ``name`` is really installed (a compat stub in ``sys.modules`` does not count)."""
    from compat.shims import _TtsfrdStub

    module = sys.modules.get(name)
    if module is not None:
        return not isinstance(module, _TtsfrdStub)
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _installed_legacy_code() -> list[Path]:
    module = sys.modules.get("kantts")
    spec = getattr(module, "__spec__", None) if module is not None else None
    if spec is None and module is None and _importable("kantts"):
        spec = importlib.util.find_spec("kantts")
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) for p in spec.submodule_search_locations]


def check_numpy_aliases(options: DoctorOptions) -> CheckResult:
    numpy_v = release(module_version("numpy"))
    aliases = removed_numpy_aliases()
    roots = [options.project_root, *options.scan_paths, *_installed_legacy_code()]
    hits = find_alias_uses([r for r in roots if r.exists()], aliases)
    if not hits:
        return ok(
            "rule-numpy-aliases", f"numpy {numpy_v}: no code uses its removed aliases", scanned=len(roots)
        )
    from compat.shims import active

    shown = "; ".join(hits[:3]) + (f" (+{len(hits) - 3} more)" if len(hits) > 3 else "")
    remedy = "replace np.float/np.int/... with float/int/np.float64/...; for unmodifiable legacy code call "
    remedy += "compat.apply('numpy_scalar_aliases') before importing it"
    if "numpy_scalar_aliases" in active():
        return warn("rule-numpy-aliases", f"numpy {numpy_v}, shimmed alias uses: {shown}", remedy, hits=hits)
    return fail("rule-numpy-aliases", f"numpy {numpy_v} lacks aliases used at {shown}", remedy, hits=hits)


def gpu_present() -> bool:
    """Whether an NVIDIA driver/device is visible to this process."""
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def check_cuda_on_cpu(options: DoctorOptions) -> CheckResult:
    nvidia = sorted(n for n in distribution_names() if n.startswith("nvidia-") or n == "triton")
    torch_version = module_version("torch") or "?"
    cuda_build = False
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        import torch

        cuda_build = torch.version.cuda is not None
    if gpu_present():
        return ok(
            "rule-cuda-on-cpu", f"GPU host; torch {torch_version}, {len(nvidia)} nvidia/triton packages"
        )
    if cuda_build or nvidia:
        what = []
        if cuda_build:
            what.append(f"CUDA build torch {torch_version}")
        if nvidia:
            more = "..." if len(nvidia) > 4 else ""
            what.append(f"{len(nvidia)} nvidia-*/triton packages ({', '.join(nvidia[:4])}{more})")
        return fail(
            "rule-cuda-on-cpu",
            f"{' and '.join(what)} on a host with no GPU: GBs of dead weight, slower imports",
            "pip uninstall -y torch triton $(pip list --format=freeze | grep -o '^nvidia-[^=]*'); "
            "make install (the lock pins torch==2.13.0+cpu); never pip install an unpinned torch",
            packages=nvidia,
        )
    return ok("rule-cuda-on-cpu", f"CPU host, CPU torch {torch_version}, no nvidia-* packages")


LEGACY_TTS = ("kantts", "ttsfrd")


def check_legacy_tts_packages(options: DoctorOptions) -> CheckResult:
    dists = distribution_names()
    installed = sorted(n for n in LEGACY_TTS if n in dists or _importable(n))
    if not installed:
        return ok("rule-legacy-tts", "no kantts/ttsfrd installed (not needed: engine replaces them)")
    listing = ", ".join(f"{n} {module_version(n) or '?'}" for n in installed)
    why = (
        f"{listing} installed: modelscope's sambert_hifi refuses Python >=3.11, ttsfrd has no cp311/aarch64 "
        "builds, and PyPI's 'kantts'/'ttsfrd' 0.1.0 are unrelated placeholder packages (dependency confusion)"
    )
    remedy = f"pip uninstall -y {' '.join(installed)} (this project's engine and frontend replace them)"
    return fail("rule-legacy-tts", why, remedy, packages=installed)
