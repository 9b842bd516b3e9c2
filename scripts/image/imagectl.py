"""Build and run the service image without a Docker daemon: buildah builds the Dockerfile, podman runs it.

    python -m scripts.image.imagectl build [--tag T] [--build-context model=DIR] [--build-arg K=V]
    python -m scripts.image.imagectl base          # make sure the Dockerfile's FROM image exists locally
    python -m scripts.image.imagectl size [--tag T]

The base image (the Dockerfile's ``PYTHON_IMAGE`` default) is used from local storage if present, else pulled
when its registry answers, else a stand-in is made under the same name: Debian bookworm (mmdebstrap minbase)
plus this machine's CPython 3.11 in /usr/local, which is how the official python:3.11-slim-bookworm is laid
out. (Debian's own python3 is 3.11.2, older than the 3.11.3 the lock was resolved for: redis would then need
async-timeout, which the lock does not carry.)

pip inside the build reaches the package index the way the host's pip does: the host's effective pip settings
(``pip config list``: index URLs, certificate bundle, find-links, timeout) are written to a pip.conf mounted
read-only, and every local path they name (file:// indexes, find-links directories, the CA bundle) is mounted
read-only at the same place. The find-links directories go to the Dockerfile's PIP_FIND_LINKS build arg; when
the PyTorch CPU index is unreachable TORCH_INDEX_URL is emptied and the CPU wheel comes from find-links.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
WORK = REPO / "build" / "image"
DEFAULT_TAG = "localhost/sambert-serve:dev"
STORAGE = ["--storage-driver", "overlay"]
STANDIN_LABEL = "sambert-serve.stand-in"
# Libraries the stdlib's extension modules link against (what python:3.11-slim keeps), plus its base set.
STANDIN_PACKAGES = [
    "ca-certificates",
    "netbase",
    "tzdata",
    "libssl3",
    "libffi8",
    "libsqlite3-0",
    "libbz2-1.0",
    "liblzma5",
    "zlib1g",
    "libreadline8",
    "libncursesw6",
    "libuuid1",
    "libgdbm6",
    "libgdbm-compat4",
    "libexpat1",
    "libnsl2",
    "libtirpc3",
]
# podman as measured on this machine type: crun cannot setrlimit here (no CAP_SYS_RESOURCE), runc can.
PODMAN = ["podman"]  # storage: what buildah made (overlay), auto-detected
RUN_FLAGS = ["--runtime", "runc", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]
# pip settings that decide how the index is reached (copied into the build's pip.conf).
PIP_KEYS = ("index-url", "extra-index-url", "trusted-host", "cert", "client-cert", "timeout", "retries")
PIP_SCOPE_RANK = {"global": 0, "user": 1, "site": 2, ":env:": 3}


class ImageError(RuntimeError):
    """A build or run step failed; the message says which and why."""


def log(msg: str) -> None:
    print(f"[image] {msg}", file=sys.stderr, flush=True)


def _run(cmd: Sequence[str], *, timeout: float, check: bool = True, quiet: bool = False) -> str:
    """Run a command; return stdout. Failures raise ImageError with the command's output."""
    if not quiet:
        log("$ " + shlex.join(cmd))
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise ImageError(f"timed out after {timeout:.0f} s: {shlex.join(cmd)}") from exc
    if check and proc.returncode != 0:
        output = proc.stdout[-4000:] + proc.stderr[-4000:]
        raise ImageError(f"failed ({proc.returncode}): {shlex.join(cmd)}\n{output}")
    return proc.stdout


def require_tools(*tools: str) -> None:
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        raise ImageError(
            f"missing {', '.join(missing)}: apt-get install buildah podman skopeo runc mmdebstrap slirp4netns"
        )


# ------------------------------------------------------------------------------------------------ base image
def dockerfile_arg(name: str, dockerfile: Path = DOCKERFILE) -> str:
    """Default value of a global ``ARG name=value`` in the Dockerfile."""
    match = re.search(rf"^ARG {re.escape(name)}=(\S+)", dockerfile.read_text(), re.M)
    if not match:
        raise ImageError(f"{dockerfile} has no 'ARG {name}=...'")
    return match.group(1)


def qualify(name: str) -> str:
    """Docker's short-name normalisation: python:3.11 -> docker.io/library/python:3.11."""
    first = name.split("/", 1)[0]
    if "/" not in name:
        return f"docker.io/library/{name}"
    if "." not in first and ":" not in first and first != "localhost":
        return f"docker.io/{name}"
    return name


def image_exists(name: str) -> bool:
    proc = subprocess.run(
        ["buildah", *STORAGE, "inspect", "--type", "image", name], capture_output=True, timeout=60
    )
    return proc.returncode == 0


def image_labels(name: str) -> dict[str, str]:
    out = _run(["buildah", *STORAGE, "inspect", "--type", "image", name], timeout=60, quiet=True)
    return json.loads(out).get("OCIv1", {}).get("config", {}).get("Labels") or {}


def registry_reachable(name: str, timeout: float = 30) -> bool:
    """True when the registry serves the image's manifest (skopeo, no pull)."""
    try:
        proc = subprocess.run(
            ["skopeo", "inspect", "--retry-times", "0", "--raw", f"docker://{name}"],
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def ensure_base(name: str | None = None) -> str:
    """Make the Dockerfile's base image available locally; returns how: local, registry or stand-in."""
    name = qualify(name or dockerfile_arg("PYTHON_IMAGE"))
    if image_exists(name):
        kind = "stand-in" if STANDIN_LABEL in image_labels(name) else "local"
        log(f"base {name}: already in local storage ({kind})")
        return kind
    if registry_reachable(name):
        _run(["buildah", *STORAGE, "pull", name], timeout=900)
        return "registry"
    log(f"base {name}: registry unreachable, making a stand-in (Debian bookworm + this machine's CPython)")
    make_standin(name)
    return "stand-in"


def _python_tree(prefix: Path, dest: Path) -> Path:
    """A tar of this interpreter's CPython (binary, libpython, stdlib without site-packages/tests)."""
    ver = f"{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = prefix / "lib" / f"python{ver}"
    skip_top = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "__pycache__"}

    def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = Path(info.name).parts
        if len(parts) > 2 and parts[:2] == ("lib", f"python{ver}") and parts[2] in skip_top:
            return None
        if "__pycache__" in parts:
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    out = dest / "python.tar"
    with tarfile.open(out, "w") as tar:
        binary = prefix / "bin" / f"python{ver}"
        tar.add(binary.resolve(), arcname=f"bin/python{ver}", filter=keep)
        for lib in (prefix / "lib").glob(f"libpython{ver}*.so*"):
            tar.add(lib, arcname=f"lib/{lib.name}", filter=keep)
        tar.add(stdlib, arcname=f"lib/python{ver}", filter=keep)
        for link, target in (("python3", f"python{ver}"), ("python", "python3")):
            info = tarfile.TarInfo(f"bin/{link}")
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        site = tarfile.TarInfo(f"lib/python{ver}/site-packages")
        site.type, site.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(site)
    return out


def make_standin(name: str, suite: str = "bookworm") -> None:
    """Debian ``suite`` minbase + this machine's CPython in /usr/local, committed as ``name``."""
    require_tools("mmdebstrap", "buildah")
    if sys.version_info < (3, 11, 3) or sys.version_info[:2] != (3, 11):
        raise ImageError(f"the stand-in needs a CPython 3.11.3+ to copy, this is {sys.version.split()[0]}")
    prefix = Path(sys.base_prefix)
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="standin-", dir=WORK) as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        include = ",".join(STANDIN_PACKAGES)
        _run(["mmdebstrap", "--variant=minbase", f"--include={include}", suite, str(rootfs)], timeout=900)
        pytar = _python_tree(prefix, Path(tmp))
        ctr = _run(["buildah", *STORAGE, "from", "scratch"], timeout=60).strip()
        try:
            _run(["buildah", *STORAGE, "add", ctr, str(rootfs), "/"], timeout=600)
            _run(["buildah", *STORAGE, "add", ctr, str(pytar), "/usr/local"], timeout=600)
            brun = ["buildah", *STORAGE, "run", "--isolation", "chroot", ctr, "--"]
            _run([*brun, "ldconfig"], timeout=60)
            stdlib_check = "import ssl, sqlite3, bz2, lzma, zlib, ctypes, uuid, venv, ensurepip"
            _run([*brun, "python", "-c", stdlib_check], timeout=60)
            _run(
                [
                    "buildah", *STORAGE, "config",
                    "--env", "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "--env", "LANG=C.UTF-8",
                    "--env", f"PYTHON_VERSION={sys.version.split()[0]}",
                    "--cmd", "python3",
                    "--label", f"{STANDIN_LABEL}=Debian {suite} minbase + CPython {sys.version.split()[0]}",
                    ctr,
                ],
                timeout=60,
            )  # fmt: skip
            _run(["buildah", *STORAGE, "commit", "--format", "docker", "-q", ctr, name], timeout=600)
        finally:
            subprocess.run(["buildah", *STORAGE, "rm", ctr], capture_output=True, timeout=120)


# ------------------------------------------------------------------------------------------------ pip access
def host_pip_config(python: str = sys.executable) -> dict[str, str]:
    """The host pip's effective settings (``pip config list``, highest-precedence scope wins)."""
    out = _run([python, "-m", "pip", "config", "list"], timeout=60, quiet=True)
    ranked: dict[str, tuple[int, str]] = {}
    for line in out.splitlines():
        match = re.match(r"^(:env:|[a-z]+)\.([a-z0-9-]+)='(.*)'$", line.strip())
        if not match:
            continue
        scope, key, value = match.groups()
        rank = PIP_SCOPE_RANK.get(scope, 0)
        if key not in ranked or rank >= ranked[key][0]:
            ranked[key] = (rank, value)
    return {k: v for k, (_, v) in ranked.items()}


def _local_path(value: str) -> Path | None:
    if value.startswith("file://"):
        value = value[len("file://") :]
    return Path(value) if value.startswith("/") else None


def pip_build_access(config: dict[str, str], conf_dir: Path) -> tuple[list[str], str]:
    """(buildah ``-v`` flags, find-links value) giving the build the host pip's view of the index."""
    mounts: dict[str, str] = {}
    lines = ["[global]"]
    for key in PIP_KEYS:
        if key not in config:
            continue
        values = config[key].split()
        for value in values:
            path = _local_path(value)
            if path is not None and path.exists():
                # A local PEP 503 index (.../simple) links to files beside it (.../files): mount its root.
                root = path.parent if key.endswith("index-url") and path.name == "simple" else path
                mounts[str(root)] = str(root)
        lines.append(f"{key} = {' '.join(values)}")
    if "timeout" not in config and "default-timeout" in config:
        lines.append(f"timeout = {config['default-timeout']}")
    find_links = []
    for value in config.get("find-links", "").split():
        path = _local_path(value)
        if path is None or path.is_dir():
            find_links.append(value)
            if path is not None:
                mounts[str(path)] = str(path)
    conf = conf_dir / "pip.conf"
    conf.write_text("\n".join(lines) + "\n")
    flags = ["-v", f"{conf}:/etc/pip.conf:ro"]
    for src, dst in sorted(mounts.items()):
        flags += ["-v", f"{src}:{dst}:ro"]
    return flags, " ".join(find_links)


def url_reachable(url: str, timeout: float = 10) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------ build
INPUTS_LABEL = "sambert-serve.inputs"


def build_inputs_digest(dockerfile: Path = DOCKERFILE, context: Path = REPO) -> str:
    """sha256 over the Dockerfile, .dockerignore and every file its ``!`` entries let into the context.

    Stored as a label on the image: `make image-test` refuses an image built from other sources (a stale tag
    left by an earlier successful build when the latest build failed).
    """
    ignore = context / ".dockerignore"
    digest = hashlib.sha256()
    files = [dockerfile, ignore]
    for line in ignore.read_text().splitlines():
        if line.startswith("!"):
            path = context / line[1:].strip().rstrip("/")
            files += sorted(path.rglob("*")) if path.is_dir() else [path]
    for path in files:
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(context)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def build(
    tag: str = DEFAULT_TAG,
    build_contexts: Sequence[str] = (),
    build_args: Sequence[str] = (),
    dockerfile: Path = DOCKERFILE,
    context: Path = REPO,
) -> float:
    """``buildah bud`` of the real Dockerfile; returns the build's wall time in seconds."""
    require_tools("buildah", "skopeo", "mmdebstrap")
    base_arg = next((a.split("=", 1)[1] for a in build_args if a.startswith("PYTHON_IMAGE=")), None)
    ensure_base(base_arg or dockerfile_arg("PYTHON_IMAGE", dockerfile))
    args = list(build_args)
    WORK.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pipconf-", dir=WORK) as tmp:
        os.chmod(tmp, 0o755)
        mounts, find_links = pip_build_access(host_pip_config(), Path(tmp))
        if find_links and not any(a.startswith("PIP_FIND_LINKS=") for a in args):
            args.append(f"PIP_FIND_LINKS={find_links}")
        torch_index = dockerfile_arg("TORCH_INDEX_URL", dockerfile)
        overridden = any(a.startswith("TORCH_INDEX_URL=") for a in args)
        if not overridden and not url_reachable(torch_index):
            log(f"{torch_index} unreachable: the CPU torch wheel comes from find-links: {find_links}")
            args.append("TORCH_INDEX_URL=")
        cmd = [
            "buildah", *STORAGE, "bud",
            "--isolation", "chroot",
            "--format", "docker",   # OCI format drops SHELL and HEALTHCHECK
            "--layers",
            "--pull=never",
            "-f", str(dockerfile),
            "-t", tag,
            "--label", f"{INPUTS_LABEL}={build_inputs_digest(dockerfile, context)}",
            *mounts,
        ]  # fmt: skip
        for arg in args:
            cmd += ["--build-arg", arg]
        for ctx in build_contexts:
            cmd += ["--build-context", ctx]
        cmd.append(str(context))
        log("$ " + shlex.join(cmd))
        start = time.monotonic()
        proc = subprocess.run(cmd, timeout=3600)
        elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise ImageError(f"buildah bud failed ({proc.returncode}) after {elapsed:.0f} s")
    return elapsed


def image_size(tag: str = DEFAULT_TAG) -> int:
    out = _run([*PODMAN, "image", "inspect", "--format", "{{.Size}}", tag], timeout=60, quiet=True)
    return int(out.strip())


# ------------------------------------------------------------------------------------------------ run
def podman_run(
    tag: str, cmd: Sequence[str] = (), flags: Sequence[str] = (), timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``podman run --rm`` to completion (own network namespace unless ``flags`` say otherwise)."""
    full = [*PODMAN, "run", "--rm", "--no-healthcheck", *RUN_FLAGS, "--network", "none", *flags, tag, *cmd]
    return subprocess.run(full, capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def running(tag: str, name: str, flags: Sequence[str] = (), cmd: Sequence[str] = ()) -> Iterator[str]:
    """A detached container, force-removed on exit (logs printed if the block fails)."""
    subprocess.run([*PODMAN, "rm", "-f", name], capture_output=True, timeout=120)
    _run([*PODMAN, "run", "-d", "--name", name, *RUN_FLAGS, *flags, tag, *cmd], timeout=300)
    try:
        yield name
    except BaseException:
        logs = subprocess.run(
            [*PODMAN, "logs", "--tail", "60", name], capture_output=True, text=True, timeout=60
        )
        log(f"--- logs of {name} ---\n{logs.stdout}{logs.stderr}")
        raise
    finally:
        subprocess.run([*PODMAN, "rm", "-f", "-t", "10", name], capture_output=True, timeout=180)


def container_status(name: str) -> str:
    """podman's state of a container: running, exited, ... ('' when it does not exist)."""
    cmd = [*PODMAN, "inspect", "--format", "{{.State.Status}}", name]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def podman_exec(
    name: str, cmd: Sequence[str], timeout: float = 120, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    full = [*PODMAN, "exec", *(["--user", user] if user else []), name, *cmd]
    return subprocess.run(full, capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------------------------------ CLI
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="buildah bud of the Dockerfile (makes the base first if needed)")
    b.add_argument("--tag", default=DEFAULT_TAG)
    b.add_argument("--build-context", action="append", default=[], metavar="NAME=DIR")
    b.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")
    sub.add_parser("base", help="make the Dockerfile's base image available locally")
    s = sub.add_parser("size", help="image size in bytes")
    s.add_argument("--tag", default=DEFAULT_TAG)
    args = parser.parse_args(argv)
    try:
        if args.action == "base":
            print(ensure_base())
        elif args.action == "size":
            print(image_size(args.tag))
        else:
            elapsed = build(args.tag, args.build_context, args.build_arg)
            size = image_size(args.tag)
            print(f"image {args.tag}: built in {elapsed:.1f} s, size {size / 1e6:.0f} MB")
    except ImageError as exc:
        print(f"image: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
