"""Helpers shared by the checks: versions as the import system sees them, CPU quota, requirements files."""

from __future__ import annotations

import importlib.metadata as md
import os
import sys
from functools import lru_cache
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version


def module_version(module_name: str, dist_name: str | None = None) -> str | None:
    """Version of a library: the loaded module's ``__version__`` if any, else the installed distribution's."""
    module = sys.modules.get(module_name)
    version = getattr(module, "__version__", None) if module is not None else None
    if isinstance(version, str):
        return version
    try:
        return md.version(dist_name or module_name)
    except md.PackageNotFoundError:
        return None


def parse_version(text: str | None) -> Version | None:
    if text is None:
        return None
    try:
        return Version(text)
    except InvalidVersion:
        return None


def release(text: str | None) -> Version | None:
    """Version without local label/pre/dev parts (``2.13.0+cpu`` -> ``2.13.0``), for range rules."""
    v = parse_version(text)
    return Version(v.base_version) if v is not None else None


def distribution_names() -> set[str]:
    """Canonical names of every installed distribution visible on ``sys.path``."""
    names = set()
    for dist in md.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            names.add(canonicalize_name(name))
    return names


def usable_cpus() -> float:
    """CPUs this process may use: affinity mask, further limited by a cgroup v2/v1 CPU quota."""
    try:
        cpus: float = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        cpus = float(os.cpu_count() or 1)
    quota = _cgroup_quota()
    return min(cpus, quota) if quota else cpus


def _cgroup_quota() -> float | None:
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text and text[0] != "max":
            return int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        pass
    try:
        q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        p = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return q / p if q > 0 and p > 0 else None
    except (OSError, ValueError):
        return None


@lru_cache(maxsize=8)
def read_requirements(path: Path) -> tuple[Requirement, ...]:
    """Parse a pip requirements file (comments, blank lines and ``-r``/``--`` option lines skipped)."""
    reqs = []
    for raw in path.read_text("utf-8").splitlines():
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")):
            continue
        reqs.append(Requirement(line))
    return tuple(reqs)


def required_spec(project_root: Path, dist: str) -> Requirement | None:
    """The runtime requirement for ``dist`` from ``requirements.txt``, if the file and the entry exist."""
    path = project_root / "requirements.txt"
    if not path.is_file():
        return None
    for req in read_requirements(path):
        if canonicalize_name(req.name) == canonicalize_name(dist):
            return req
    return None
