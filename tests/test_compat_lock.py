"""The committed locks satisfy the requirements files, are fully hashed, and pin the CPU torch."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from compat import lock

ROOT = Path(__file__).resolve().parent.parent
LOCAL_TORCH_WHEELS = sorted(Path("/opt/wheels").glob("torch-*+cpu-*.whl"))


@pytest.fixture(scope="module")
def main_lock() -> dict[str, lock.LockEntry]:
    return lock.parse_lock(ROOT / "requirements.lock")


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-dev.txt"])
def test_lock_satisfies_requirements(name: str, main_lock: dict[str, lock.LockEntry]) -> None:
    reqs = lock.read_requirements(ROOT / name)
    assert reqs, f"{name} is empty"
    for req in reqs:
        entry = main_lock.get(canonicalize_name(req.name))
        assert entry is not None, f"{req} from {name} is not in requirements.lock: run make lock"
        assert req.specifier.contains(entry.version, prereleases=True), f"{req} vs locked {entry.version}"


def test_nodeps_lock_satisfies_its_requirements() -> None:
    nodeps = lock.parse_lock(ROOT / "requirements-nodeps.lock")
    assert lock.unsatisfied(lock.read_requirements(ROOT / "requirements-nodeps.txt"), nodeps) == []
    assert "helm-sdkpy" in nodeps


def test_every_entry_is_hashed_and_torch_is_the_cpu_build(main_lock: dict[str, lock.LockEntry]) -> None:
    assert all(e.hashes for e in main_lock.values())
    torch = main_lock["torch"]
    assert torch.version.local == "cpu", torch.version
    assert lock.cuda_entries(main_lock) == []  # nothing a CUDA torch would drag in
    assert lock.check(ROOT) == []


@pytest.mark.skipif(not LOCAL_TORCH_WHEELS, reason="no local torch CPU wheel on this machine")
def test_torch_hash_is_the_local_cpu_wheel(main_lock: dict[str, lock.LockEntry]) -> None:
    torch = main_lock["torch"]
    wheel = next(w for w in LOCAL_TORCH_WHEELS if w.name.startswith(f"torch-{torch.version}-"))
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    assert f"sha256:{digest}" in torch.hashes


def test_unsatisfied_names_each_gap(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    path.write_text(
        "# header\nnumpy==1.26.4 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
        "    # via -r requirements.txt\n"
        "ray==2.60.0 --hash=sha256:cc\n"
    )
    entries = lock.parse_lock(path)
    assert entries["numpy"].hashes == ("sha256:aa", "sha256:bb")
    reqs = [Requirement("numpy>=2"), Requirement("ray[serve]==2.60.0"), Requirement("scipy>=1.13")]
    reqs.append(Requirement("pywin32>=300; sys_platform == 'win32'"))  # marker false here: ignored
    assert lock.unsatisfied(reqs, entries) == [
        "numpy>=2 but the lock pins numpy==1.26.4",
        "scipy>=1.13 is not in the lock",
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [("numpy>=1.26 --hash=sha256:aa", "not pinned"), ("numpy==1.26.4", "has no --hash")],
)
def test_parse_lock_rejects_unpinned_or_unhashed(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.lock"
    path.write_text(line + "\n")
    with pytest.raises(lock.LockError, match=message):
        lock.parse_lock(path)


def test_install_target_uses_the_hashed_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    install = makefile.split("\ninstall:", 1)[1].split("\n\n", 1)[0]
    assert "--require-hashes" in install and "$(LOCK)" in install and "$(NODEPS_LOCK)" in install
    assert "requirements.txt" not in install
