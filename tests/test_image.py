"""Cheap checks of the image build inputs (no buildah needed): the torch wheel the build installs matches the
lock's hash, the runtime subset of the lock, and how the build reaches the package index."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.image import imagectl, runtime_lock

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements.lock"


def _names(path: Path) -> set[str]:
    """Top-level package names of a requirements file."""
    out = set()
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.add(re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return out


def _torch_block() -> tuple[str, set[str]]:
    block, _ = runtime_lock.parse_blocks(LOCK.read_text())["torch"]
    pin = re.match(r"torch==(\S+)", block)
    assert pin, block
    return pin.group(1), set(re.findall(r"--hash=sha256:([0-9a-f]{64})", block))


def _build_find_links() -> list[Path]:
    """The find-links directories `make image` hands to the build (the host pip's, see imagectl)."""
    config = imagectl.host_pip_config()
    return [p for v in config.get("find-links", "").split() if (p := imagectl._local_path(v)) and p.is_dir()]


def _wheel_tag() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


def test_torch_wheel_the_build_installs_matches_the_lock_hash() -> None:
    """The CPU wheel in the build's find-links must be one the lock's --require-hashes accepts."""
    version, hashes = _torch_block()
    assert version.endswith("+cpu") and hashes
    wheels = [
        w
        for d in _build_find_links()
        for w in sorted(d.glob(f"torch-{version}-{_wheel_tag()}-{_wheel_tag()}-*linux*x86_64.whl"))
    ]
    if not wheels:
        pytest.skip(f"no torch-{version} wheel in the build's find-links: the build uses TORCH_INDEX_URL")
    for wheel in wheels:
        digest = hashlib.sha256()
        with wheel.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        assert digest.hexdigest() in hashes, (
            f"{wheel} (sha256 {digest.hexdigest()}) is not among the lock's torch hashes: "
            "the image build would fail with a hash mismatch; regenerate the lock (make lock)"
        )


def test_runtime_subset_is_requirements_txt_closure_with_the_locks_pins() -> None:
    lock = LOCK.read_text()
    blocks = runtime_lock.parse_blocks(lock)
    names = runtime_lock.runtime_closure(blocks)
    runtime = _names(REPO / "requirements.txt")
    assert runtime <= set(names), runtime - set(names)
    assert {"torch", "ray", "numpy", "fastapi", "uvicorn"} <= set(names)
    # test/lint tools and what only they pull in stay out of the image
    dev = _names(REPO / "requirements-dev.txt") - runtime
    assert not dev & set(names), dev & set(names)
    for only_dev in ("hypothesis-graphql", "iniconfig", "pluggy", "matplotlib", "pooch"):
        assert only_dev in blocks and only_dev not in names, only_dev
    assert {"numba", "llvmlite"} <= set(names)  # the decoder kernel (librosa, dev, too)
    # every block is copied verbatim from the lock (same pin, same hashes)
    for name in names:
        assert blocks[name][0].rstrip() in lock


def test_runtime_lock_cli_output_is_an_installable_hashed_file(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "image" / "runtime_lock.py"), str(LOCK)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    reqs = re.findall(r"^([A-Za-z0-9_.-]+)==\S+ \\$", out, re.M)
    assert len(reqs) == len(runtime_lock.runtime_closure(runtime_lock.parse_blocks(LOCK.read_text())))
    assert out.count("==") == len(reqs) and "--hash=sha256:" in out
    assert "pytest==" not in out and "ruff==" not in out


def test_runtime_lock_rejects_a_lock_without_annotations(tmp_path: Path) -> None:
    bare = tmp_path / "bare.lock"
    bare.write_text("torch==2.13.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    with pytest.raises(ValueError, match=r"via -r requirements\.txt"):
        runtime_lock.runtime_closure(runtime_lock.parse_blocks(bare.read_text()))


def test_build_gets_the_host_pip_view_read_only(tmp_path: Path) -> None:
    index = tmp_path / "mirror" / "simple"
    index.mkdir(parents=True)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    cert = tmp_path / "ca.crt"
    cert.write_text("pem")
    config = {
        "extra-index-url": f"file://{index} https://mirror.example/simple",
        "find-links": str(wheels),
        "cert": str(cert),
        "default-timeout": "180",
        "constraint": "/etc/xdg/pip/constraints.txt",
    }
    flags, find_links = imagectl.pip_build_access(config, tmp_path)
    mounts = [flags[i + 1] for i in range(0, len(flags), 2)]
    assert f"{tmp_path / 'pip.conf'}:/etc/pip.conf:ro" in mounts
    # the local index is mounted from its root (its pages link to ../files), read-only, at the same path
    assert f"{index.parent}:{index.parent}:ro" in mounts
    assert f"{wheels}:{wheels}:ro" in mounts and f"{cert}:{cert}:ro" in mounts
    assert all(m.endswith(":ro") for m in mounts) and len(mounts) == 4
    assert find_links == str(wheels)
    conf = (tmp_path / "pip.conf").read_text()
    assert f"extra-index-url = file://{index} https://mirror.example/simple" in conf
    assert f"cert = {cert}" in conf and "timeout = 180" in conf
    assert "constraint" not in conf  # a host-local cap, not how the index is reached


def test_host_pip_config_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    listing = "global.cert='/a'\n:env:.cert='/b'\nuser.find-links='/w'\nglobal.find-links='/x'\n"
    monkeypatch.setattr(imagectl, "_run", lambda *a, **k: listing)
    assert imagectl.host_pip_config() == {"cert": "/b", "find-links": "/w"}


@pytest.mark.parametrize(
    ("name", "qualified"),
    [
        ("python:3.11-slim-bookworm", "docker.io/library/python:3.11-slim-bookworm"),
        ("example/app:1", "docker.io/example/app:1"),
        ("ghcr.io/x/y:2", "ghcr.io/x/y:2"),
        ("localhost/sambert-serve:dev", "localhost/sambert-serve:dev"),
    ],
)
def test_qualify_follows_docker_short_names(name: str, qualified: str) -> None:
    assert imagectl.qualify(name) == qualified


def test_build_uses_the_dockerfiles_base_default() -> None:
    assert imagectl.dockerfile_arg("PYTHON_IMAGE") == "python:3.11-slim-bookworm"
    with pytest.raises(imagectl.ImageError, match="no 'ARG NOPE="):
        imagectl.dockerfile_arg("NOPE")


def test_inputs_digest_tracks_the_build_context_only(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / ".dockerignore").write_text("*\n!app/\n!req.lock\n")
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print(1)\n")
    (tmp_path / "req.lock").write_text("a==1\n")
    (tmp_path / "notes.txt").write_text("not in the context\n")

    def digest() -> str:
        return imagectl.build_inputs_digest(tmp_path / "Dockerfile", tmp_path)

    first = digest()
    (tmp_path / "notes.txt").write_text("changed, still ignored\n")
    assert digest() == first
    (tmp_path / "app" / "main.py").write_text("print(2)\n")
    second = digest()
    assert second != first
    (tmp_path / "Dockerfile").write_text("FROM scratch\nUSER 1\n")
    assert digest() not in (first, second)


@pytest.mark.parametrize(
    ("exists", "reachable", "expected", "action"),
    [
        (False, True, "registry", "pull"),
        (False, False, "stand-in", "standin"),
        (True, True, "local", None),
    ],
)
def test_base_image_comes_from_the_registry_when_it_answers(
    monkeypatch: pytest.MonkeyPatch, exists: bool, reachable: bool, expected: str, action: str | None
) -> None:
    done: list[tuple[str, str]] = []
    monkeypatch.setattr(imagectl, "image_exists", lambda name: exists)
    monkeypatch.setattr(imagectl, "image_labels", lambda name: {})
    monkeypatch.setattr(imagectl, "registry_reachable", lambda name, timeout=30: reachable)
    monkeypatch.setattr(imagectl, "make_standin", lambda name: done.append(("standin", name)))
    monkeypatch.setattr(imagectl, "_run", lambda cmd, **kw: done.append(("pull", cmd[-1])) or "")
    assert imagectl.ensure_base() == expected
    want = "docker.io/library/python:3.11-slim-bookworm"
    assert done == ([(action, want)] if action else [])
