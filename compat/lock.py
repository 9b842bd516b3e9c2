"""Lock-file tooling: parse hashed pip locks, prove they satisfy the requirements, lock the --no-deps extras.

``requirements.lock`` is produced by pip-compile (``make lock``). ``requirements-nodeps.lock`` holds packages
that must be installed with ``--no-deps --ignore-requires-python`` (helm-sdkpy); pip-compile cannot resolve
those, so ``python -m compat.lock nodeps`` pins them by downloading each wheel with pip and hashing it.

``python -m compat.lock check`` exits 1 if a lock misses a requirement, lacks hashes or would pull CUDA.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
CUDA_PREFIXES = ("nvidia-", "triton", "cuda-")


class LockError(ValueError):
    """A lock file line that is not ``name==version`` with hashes."""


@dataclass(frozen=True)
class LockEntry:
    name: str  # canonical
    version: Version
    hashes: tuple[str, ...]


def _logical_lines(text: str) -> Iterable[tuple[int, str]]:
    buf, start = "", 0
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not buf:
            start = n
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        if buf.strip():
            yield start, buf.strip()
        buf = ""
    if buf.strip():
        yield start, buf.strip()


def parse_lock(path: Path) -> dict[str, LockEntry]:
    """Entries of a hashed lock; raises :class:`LockError` naming the line for anything unpinned."""
    entries: dict[str, LockEntry] = {}
    for n, line in _logical_lines(path.read_text("utf-8")):
        if line.startswith("-"):
            continue  # global options such as --extra-index-url
        parts = line.split()
        req = Requirement(parts[0])
        hashes = tuple(p.split("=", 1)[1] for p in parts[1:] if p.startswith("--hash="))
        pins = list(req.specifier)
        if len(pins) != 1 or pins[0].operator != "==" or "*" in pins[0].version:
            raise LockError(f"{path.name}:{n}: {parts[0]!r} is not pinned with ==")
        if not hashes:
            raise LockError(f"{path.name}:{n}: {req.name} has no --hash")
        entries[canonicalize_name(req.name)] = LockEntry(
            canonicalize_name(req.name), Version(pins[0].version), hashes
        )
    return entries


def read_requirements(path: Path) -> list[Requirement]:
    """Requirements of a pip requirements file (comments and option lines skipped)."""
    return [
        Requirement(line) for _, line in _logical_lines(path.read_text("utf-8")) if not line.startswith("-")
    ]


def unsatisfied(requirements: Iterable[Requirement], lock: Mapping[str, LockEntry]) -> list[str]:
    """Requirements the lock does not pin a matching version for (markers false here are ignored)."""
    problems = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate():
            continue
        entry = lock.get(canonicalize_name(req.name))
        if entry is None:
            problems.append(f"{req} is not in the lock")
        elif not req.specifier.contains(entry.version, prereleases=True):
            problems.append(f"{req} but the lock pins {entry.name}=={entry.version}")
    return problems


def cuda_entries(lock: Mapping[str, LockEntry]) -> list[str]:
    """Locked packages that only a CUDA torch needs (nvidia-*, triton)."""
    return sorted(name for name in lock if name.startswith(CUDA_PREFIXES))


def check(root: Path = ROOT) -> list[str]:
    """Everything wrong with the project's locks, as readable lines (empty: all good)."""
    problems: list[str] = []
    try:
        main = parse_lock(root / "requirements.lock")
        nodeps = parse_lock(root / "requirements-nodeps.lock")
    except (OSError, LockError) as exc:
        return [str(exc)]
    for name in ("requirements.txt", "requirements-dev.txt"):
        problems += [f"{name}: {p}" for p in unsatisfied(read_requirements(root / name), main)]
    problems += [
        f"requirements-nodeps.txt: {p}"
        for p in unsatisfied(read_requirements(root / "requirements-nodeps.txt"), nodeps)
    ]
    torch = main.get("torch")
    if torch is None or torch.version.local != "cpu":
        problems.append(
            f"torch must be pinned to a +cpu build, lock has {torch.version if torch else 'none'}"
        )
    if cuda := cuda_entries(main):
        problems.append(f"CUDA-only packages in requirements.lock: {cuda}")
    return problems


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def lock_nodeps(requirements: Path, output: Path) -> str:
    """Download each ``--no-deps`` requirement's wheel with pip and write ``name==version --hash`` lines."""
    lines = [
        "# Generated by `python -m compat.lock nodeps` (make lock). Install with:",
        "#   pip install --no-deps --ignore-requires-python --require-hashes -r requirements-nodeps.lock",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for req in read_requirements(requirements):
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--ignore-requires-python",
                 "--only-binary", ":all:", "-d", tmp, str(req)],
                check=True,
            )  # fmt: skip
        for wheel in sorted(Path(tmp).glob("*.whl")):
            name, version, _, _ = parse_wheel_filename(wheel.name)
            lines.append(f"{name}=={version} \\\n    --hash=sha256:{sha256(wheel)}")
    text = "\n".join(lines) + "\n"
    output.write_text(text, "utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compat.lock", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check", help="verify requirements.lock / requirements-nodeps.lock")
    nd = sub.add_parser("nodeps", help="pin --no-deps requirements with hashes")
    nd.add_argument("requirements", type=Path)
    nd.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "nodeps":
        print(lock_nodeps(args.requirements, args.output), end="")
        return 0
    problems = check()
    for p in problems:
        print(p)
    print("locks OK" if not problems else f"{len(problems)} lock problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
