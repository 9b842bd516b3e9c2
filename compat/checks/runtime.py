"""Interpreter and core-library checks: versions, builds, threads, BLAS."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import platform
import re
import sys
from typing import Any

from packaging.requirements import Requirement

from compat.blas import blas_build
from compat.checks._util import module_version, read_requirements, release, required_spec, usable_cpus
from compat.doctor import CheckResult, DoctorOptions, fail, ok, warn

TESTED_PYTHON = (3, 11)
REINSTALL = (
    "reinstall from the lock: make install (or pip install --no-deps --require-hashes -r requirements.lock)"
)


def check_python(options: DoctorOptions) -> CheckResult:
    v = sys.version_info
    found = f"Python {v.major}.{v.minor}.{v.micro} ({platform.python_implementation()}, {platform.machine()})"
    if (v.major, v.minor) < TESTED_PYTHON:
        return fail(
            "python", f"{found}: below the supported minimum 3.11", "use Python 3.11 (python3.11 -m venv)"
        )
    if (v.major, v.minor) > TESTED_PYTHON:
        return warn(
            "python",
            f"{found}: newer than the tested 3.11; requirements.lock is resolved for cp311",
            "use Python 3.11 for production, or regenerate the lock on this version (make lock)",
        )
    return ok("python", found, executable=sys.executable)


def _version_against_spec(
    name: str, dist: str, version: str | None, options: DoctorOptions
) -> CheckResult | None:
    """A failure if ``version`` is outside ``requirements.txt``'s range for ``dist``, else None."""
    req = required_spec(options.project_root, dist)
    v = release(version)
    if req is None or v is None or req.specifier.contains(v, prereleases=True):
        return None
    return fail(
        name, f"{dist} {version} is outside requirements.txt ({req})", f"pip install '{req}' (or {REINSTALL})"
    )


def check_requirements(options: DoctorOptions) -> CheckResult:
    """Every runtime requirement in requirements.txt is installed in a matching version."""
    path = options.project_root / "requirements.txt"
    if not path.is_file():
        return ok("requirements", "no requirements.txt next to compat/ (installed package): skipped")
    problems: list[str] = []
    for req in read_requirements(path):
        if req.marker is not None and not req.marker.evaluate():
            continue
        problems.extend(_requirement_problems(req))
    if problems:
        return fail("requirements", "; ".join(problems), REINSTALL, problems=problems)
    return ok("requirements", f"all {len(read_requirements(path))} runtime requirements satisfied")


def _requirement_problems(req: Requirement) -> list[str]:
    try:
        dist = md.distribution(req.name)
    except md.PackageNotFoundError:
        return [f"{req.name} missing"]
    version = release(dist.version)
    if version is not None and not req.specifier.contains(version, prereleases=True):
        return [f"{req.name} {dist.version} does not match {req.specifier}"]
    return []


def check_numpy(options: DoctorOptions) -> CheckResult:
    import numpy as np

    bad = _version_against_spec("numpy", "numpy", np.__version__, options)
    if bad:
        return bad
    blas = blas_build(np)
    return ok("numpy", f"numpy {np.__version__}, BLAS {blas}", version=np.__version__, blas=blas)


def check_scipy(options: DoctorOptions) -> CheckResult:
    import scipy

    bad = _version_against_spec("scipy", "scipy", scipy.__version__, options)
    if bad:
        return bad
    blas = blas_build(scipy)
    return ok("scipy", f"scipy {scipy.__version__}, BLAS {blas}", version=scipy.__version__, blas=blas)


def check_torch(options: DoctorOptions) -> CheckResult:
    import torch

    bad = _version_against_spec("torch", "torch", torch.__version__, options)
    if bad:
        return bad
    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    facts: dict[str, Any] = {
        "version": torch.__version__,
        "build": build,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "usable_cpus": usable_cpus(),
        "blas": blas.group(1) if blas else "unknown",
        "mkl": torch.backends.mkl.is_available(),
        "onednn": torch.backends.mkldnn.is_available(),
    }
    onoff = {True: "on", False: "off"}
    summary = (
        f"torch {torch.__version__} ({build}), {facts['threads']} threads / {facts['usable_cpus']:g} "
        f"usable CPUs, BLAS {facts['blas']}, MKL {onoff[facts['mkl']]}, oneDNN {onoff[facts['onednn']]}"
    )
    if facts["threads"] > max(1, int(facts["usable_cpus"])):
        return warn(
            "torch",
            summary + ": more intra-op threads than usable CPUs (oversubscription)",
            "set OMP_NUM_THREADS (or the engine's threads=) to the container's CPU quota",
            **facts,
        )
    return ok("torch", summary, **facts)


def check_ray(options: DoctorOptions) -> CheckResult:
    import ray

    bad = _version_against_spec("ray", "ray", ray.__version__, options)
    if bad:
        return bad
    try:
        importlib.import_module("ray.serve")
    except ImportError as exc:
        return fail("ray", f"ray {ray.__version__} without Serve: {exc}", "pip install 'ray[serve]==2.60.0'")
    return ok("ray", f"ray {ray.__version__} with ray.serve", version=ray.__version__)


def check_fastapi_pydantic(options: DoctorOptions) -> CheckResult:
    import fastapi
    import pydantic

    pyd = module_version("pydantic") or "?"
    major = release(pyd)
    if major is None or major.major != 2:
        return fail(
            "fastapi-pydantic",
            f"pydantic {pyd}: the API models need pydantic 2",
            "pip install 'pydantic>=2.7,<3'",
        )
    for _name, dist, version in (("fastapi", "fastapi", fastapi.__version__), ("pydantic", "pydantic", pyd)):
        bad = _version_against_spec("fastapi-pydantic", dist, version, options)
        if bad:
            return bad

    class Probe(pydantic.BaseModel):  # exercises pydantic-core, the compiled half
        text: str
        speed: float = 1.0

    parsed = Probe.model_validate({"text": "你好", "speed": "1.5"})
    if parsed.speed != 1.5:
        return fail("fastapi-pydantic", "pydantic-core returned a wrong value", REINSTALL)
    return ok("fastapi-pydantic", f"fastapi {fastapi.__version__}, pydantic {pyd} (core validated a model)")
