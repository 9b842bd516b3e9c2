"""The built image, run for real with podman (no Docker daemon): `make image image-test`.

Checks inside the image: the dependency doctor, standalone serving (/health, /ready = a real synthesis through
all three stages, a synthesis request from the host), the non-root user, no test/lint tools, compilers or CUDA
packages, a model baked in with ``--build-context model=DIR``, and the Helm chart's rendered KubeRay pod
commands (doctor init container, head start, head and worker probes) under the pods' security context.

``make image-test`` sets TTS_IMAGE (the tag `make image` built) and TTS_IMAGE_REQUIRED=1, so a missing tool or
image fails instead of skipping. Figures (startup to /ready, size) are printed (run with -s).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from compat.ports import free_port
from scripts.image import imagectl

pytestmark = pytest.mark.slow

REQUIRED = os.environ.get("TTS_IMAGE_REQUIRED") == "1"
TAG = os.environ.get("TTS_IMAGE", imagectl.DEFAULT_TAG)
READY_TIMEOUT_S = 420


def _skip_or_fail(reason: str) -> None:
    if REQUIRED:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def image() -> str:
    missing = [t for t in ("buildah", "podman", "runc", "slirp4netns") if not shutil.which(t)]
    if missing:
        _skip_or_fail(f"needs {', '.join(missing)} (apt-get install buildah podman runc slirp4netns)")

    def current() -> bool:
        label = imagectl.image_labels(TAG).get(imagectl.INPUTS_LABEL)
        return label == imagectl.build_inputs_digest()

    if not imagectl.image_exists(TAG) or not current():
        if REQUIRED:  # make image-test: test what `make image` built from this tree, or fail
            pytest.fail(f"{TAG} missing or not built from this tree (did the last `make image` fail?)")
        imagectl.build(TAG)
        assert current()
    return TAG


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full-size random model directory, readable by the image's uid 10001 (like a mounted volume)."""
    root = tmp_path_factory.mktemp("models")
    out = root / "current"
    subprocess.run(
        [sys.executable, "-m", "engine.testing.make_model_dir", str(out), "--size", "full"],
        check=True,
        timeout=300,
        capture_output=True,
    )
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return out


def _run(image: str, *cmd: str, flags: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return imagectl.podman_run(image, cmd, flags, timeout=300)


def _container_name(what: str) -> str:
    return f"tts-imgtest-{what}-{os.getpid()}"


# ------------------------------------------------------------------------------------------- contents
def test_runs_as_non_root_user(image: str) -> None:
    proc = _run(image, "id")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("uid=10001(tts) gid=10001(tts)"), proc.stdout


def test_no_test_or_lint_tools_compilers_or_cuda(image: str) -> None:
    dev = [
        line.split("#", 1)[0].split(">=")[0].split("==")[0].strip()
        for line in (imagectl.REPO / "requirements-dev.txt").read_text().splitlines()
        if line.split("#", 1)[0].strip()
    ]
    script = (
        "import importlib.metadata as m, json, shutil, torch; "
        "print(json.dumps({'dists': sorted(d.metadata['Name'].lower() for d in m.distributions()), "
        "'tools': [t for t in ('gcc', 'cc', 'g++', 'c++', 'make', 'ld', 'pytest', 'ruff', 'hadolint') "
        "if shutil.which(t)], 'cuda': torch.version.cuda, 'torch': torch.__version__}))"
    )
    proc = _run(image, "python", "-c", script)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    normal = {d.replace("_", "-") for d in found["dists"]}
    assert not normal & {d.lower().replace("_", "-") for d in dev}, normal & set(dev)
    assert not [d for d in normal if d.startswith("nvidia-")]
    assert found["tools"] == [], found["tools"]
    assert found["cuda"] is None and found["torch"] == "2.13.0+cpu"
    dpkg = _run(image, "sh", "-c", "dpkg-query -W -f '${Package}\\n'")
    assert dpkg.returncode == 0, dpkg.stderr
    packages = set(dpkg.stdout.split())
    assert not packages & {"build-essential", "gcc", "gcc-12", "g++", "cpp", "make", "libc6-dev"}
    assert {"wget", "tini", "bash"} <= packages
    assert _run(image, "test", "-e", "/app/tests").returncode == 1


def test_audio_io_and_the_native_stack_load(image: str) -> None:
    """soundfile (its wheel's libsndfile: every README format), torch, ray, soxr work on the image's libs."""
    script = (
        "import io, numpy as np, soundfile as sf, soxr, torch, ray; "
        "[sf.write(io.BytesIO(), np.zeros(1600, 'float32'), 16000, format=f, subtype=t) for f, t in "
        "[('WAV', 'PCM_16'), ('FLAC', 'PCM_16'), ('OGG', 'VORBIS'), ('OGG', 'OPUS'), "
        "('MP3', 'MPEG_LAYER_III')]]; "
        "assert len(soxr.resample(np.zeros(1600, 'float32'), 16000, 8000)) == 800; "
        "print(sf.__libsndfile_version__, torch.__version__, ray.__version__)"
    )
    proc = _run(image, "python", "-c", script)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[1:] == ["2.13.0+cpu", "2.60.0"], proc.stdout


def test_doctor_passes_inside(image: str, model_dir: Path) -> None:
    proc = _run(image, "python", "-m", "compat", "doctor", flags=("-v", f"{model_dir}:/models/current:ro"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_doctor_fails_clearly_without_a_model(image: str) -> None:
    proc = _run(image, "python", "-m", "compat", "doctor")
    assert proc.returncode != 0
    assert "/models/current" in proc.stdout + proc.stderr


# ------------------------------------------------------------------------------------------- standalone
def _wait_ready(base: str, deadline_s: float, container: str) -> float:
    start = time.monotonic()
    last = ""
    while time.monotonic() - start < deadline_s:
        status = imagectl.container_status(container)
        assert status == "running", f"container {container} is {status or 'gone'} before /ready (logs above)"
        try:
            resp = httpx.get(f"{base}/ready", timeout=30)
            if resp.status_code == 200:
                return time.monotonic() - start
            last = f"{resp.status_code} {resp.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(2)
    raise AssertionError(f"/ready not 200 within {deadline_s} s: {last}")


@pytest.fixture(scope="class")
def standalone(image: str, model_dir: Path) -> Iterator[tuple[str, str, float]]:
    """The image's default command (doctor, then `serve run` of local.yaml), port 8000 published on loopback.

    Yields (container name, base URL, seconds from `podman run` to the first 200 from /ready).
    """
    port = free_port()
    flags = (
        "--network", "slirp4netns", "-p", f"127.0.0.1:{port}:8000",
        "--shm-size", "512m",
        "-v", f"{model_dir}:/models/current:ro",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    name = _container_name("standalone")
    started = time.monotonic()
    with imagectl.running(image, name, flags):
        _wait_ready(base, READY_TIMEOUT_S, name)
        ready_s = time.monotonic() - started
        print(f"\n[image] standalone: podman run -> /ready 200 in {ready_s:.1f} s")
        yield name, base, ready_s


class TestStandalone:
    """One standalone container (the default command) for these tests, removed after them."""

    def test_standalone_serves_health_ready_and_synthesis(self, standalone: tuple[str, str, float]) -> None:
        _, base, _ = standalone
        health = httpx.get(f"{base}/health", timeout=10)
        assert health.status_code == 200, health.text
        ready = httpx.get(f"{base}/ready", timeout=60)
        assert ready.status_code == 200, ready.text
        wav = httpx.post(f"{base}/api/tts", json={"text": "今天天气真不错。", "format": "wav"}, timeout=60)
        assert wav.status_code == 200, wav.text[:300]
        assert wav.content[:4] == b"RIFF" and wav.content[8:12] == b"WAVE"
        assert len(wav.content) > 16000, "under half a second of 16 kHz audio"
        print(f"\n[image] standalone: synthesis from the host, {len(wav.content)} bytes of WAV")

    def test_standalone_healthcheck_and_non_root_processes(self, standalone: tuple[str, str, float]) -> None:
        name, _, _ = standalone
        # the Dockerfile's HEALTHCHECK (wget /health), run as the engine runs it
        check = subprocess.run(
            [*imagectl.PODMAN, "healthcheck", "run", name], capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, check.stdout + check.stderr
        top = subprocess.run(
            [*imagectl.PODMAN, "top", name, "user", "comm"], capture_output=True, text=True, timeout=60
        )
        assert top.returncode == 0, top.stderr
        users = {line.split()[0] for line in top.stdout.splitlines()[1:] if line.strip()}
        assert users == {"tts"}, top.stdout

    def test_kuberay_worker_probe_passes_on_a_serving_node(
        self, standalone: tuple[str, str, float], ray_cluster_spec: dict
    ) -> None:
        """The worker's exec readiness probe (bash, wget, grep) as rendered, on a Ray node serving the app."""
        name, _, _ = standalone
        proc = _probe(name, _worker_readiness_probe(ray_cluster_spec), timeout=60)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert proc.stdout.count("success") == 2
        worker = ray_cluster_spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
        stop = worker["lifecycle"]["preStop"]["exec"]["command"]
        assert imagectl.podman_exec(name, ["sh", "-c", f"command -v {stop[0]}"]).returncode == 0


# ------------------------------------------------------------------------------------------- baked model
def test_baked_model_build_context(image: str, model_dir: Path) -> None:
    tag = f"{TAG}-baked"
    elapsed = imagectl.build(
        tag,
        build_contexts=[f"model={model_dir}"],
        build_args=["TTS_MODEL_DIR=/opt/models/baked"],
    )
    try:
        env = _run(tag, "sh", "-c", "echo $TTS_MODEL_DIR && ls /opt/models/baked")
        assert env.returncode == 0, env.stderr
        assert env.stdout.split()[0] == "/opt/models/baked"
        assert "configuration.json" in env.stdout.split()
        doctor = _run(tag, "python", "-m", "compat", "doctor")
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        print(f"\n[image] baked-model build (cached layers + model COPY): {elapsed:.1f} s")
    finally:
        subprocess.run([*imagectl.PODMAN, "rmi", "-f", tag], capture_output=True, timeout=120)


# ------------------------------------------------------------------------------------------- KubeRay pods
@pytest.fixture(scope="module")
def ray_cluster_spec() -> dict:
    from tests.k8s.render import render_objects

    service = next(o for o in render_objects("default") if o["kind"] == "RayService")
    return service["spec"]["rayClusterConfig"]


def _pod_flags(pod: dict, container: dict, model_root: Path) -> list[str]:
    """podman flags for the rendered pod's security context, env and volumes (as the kubelet applies them)."""
    sec = pod["securityContext"]
    csec = container["securityContext"]
    flags = ["--user", f"{sec['runAsUser']}:{sec['runAsGroup']}", "--group-add", str(sec["fsGroup"])]
    if csec.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    if "ALL" in csec.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", "ALL"]
    if csec.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    for env in container.get("env", []):
        if "value" in env:
            flags += ["-e", f"{env['name']}={env['value']}"]
        else:  # secretKeyRef: a stand-in secret value
            flags += ["-e", f"{env['name']}=test:{secrets.token_hex(16)}"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container.get("volumeMounts", []):
        vol = volumes[mount["name"]]
        if "emptyDir" in vol:
            flags += ["--tmpfs", f"{mount['mountPath']}:rw,exec,mode=1777"]
        else:
            flags += ["-v", f"{model_root}:{mount['mountPath']}:ro"]
    return flags


def _kuberay_command(params: dict, head: bool) -> str:
    """The start command KubeRay generates from rayStartParams (`ulimit -n 65536; ray start ... --block`)."""
    args = " ".join(f"--{k}={v}" for k, v in sorted(params.items()))
    role = "--head" if head else "--address=127.0.0.1:6379"
    return f"ulimit -n 65536; ray start {role} --block --dashboard-agent-listen-port=52365 {args}"


def _probe(container: str, probe: dict, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a rendered probe inside the container: exec as written, httpGet with the image's wget."""
    if "exec" in probe:
        cmd = probe["exec"]["command"]
    else:
        get = probe["httpGet"]
        cmd = [
            "wget",
            "-q",
            "-T",
            str(probe["timeoutSeconds"]),
            "-O-",
            f"http://127.0.0.1:{get['port']}{get['path']}",
        ]
    return imagectl.podman_exec(container, cmd, timeout=timeout)


@pytest.fixture(scope="class")
def head_pod(image: str, ray_cluster_spec: dict, model_dir: Path) -> Iterator[tuple[str, dict]]:
    """The head pod's container, started as KubeRay starts it, with the pod's security context."""
    group = ray_cluster_spec["headGroupSpec"]
    pod = group["template"]["spec"]
    container = pod["containers"][0]
    flags = [
        "--network", "none", "--shm-size", "512m",
        *_pod_flags(pod, container, model_dir.parent),
        "-e", "RAY_AUTH_MODE=disabled",  # KubeRay's token Secret is not here; auth is Ray's, not the image's
        "--entrypoint", "/bin/bash",
    ]  # fmt: skip
    name = _container_name("head")
    with imagectl.running(image, name, flags, ["-lc", _kuberay_command(group["rayStartParams"], head=True)]):
        yield name, container


def test_kuberay_doctor_init_container(image: str, ray_cluster_spec: dict, model_dir: Path) -> None:
    pod = ray_cluster_spec["headGroupSpec"]["template"]["spec"]
    init = next(c for c in pod["initContainers"] if c["name"] == "doctor")
    flags = ("--entrypoint", init["command"][0], *_pod_flags(pod, init, model_dir.parent))
    proc = _run(image, *init["command"][1:], flags=flags)
    assert proc.returncode == 0, proc.stdout + proc.stderr


class TestKubeRayHead:
    """One head container, started as KubeRay starts it, for these tests."""

    def test_kuberay_head_starts_and_passes_its_probes(self, head_pod: tuple[str, dict]) -> None:
        name, container = head_pod
        start = time.monotonic()
        probe = container["readinessProbe"]
        while True:
            proc = _probe(name, probe, timeout=30)
            if proc.returncode == 0:
                break
            assert imagectl.container_status(name) == "running", (
                "the head container exited (see its logs above)"
            )
            assert time.monotonic() - start < 180, (
                f"head readiness probe never passed: {proc.stdout}{proc.stderr}"
            )
            time.sleep(probe["periodSeconds"])
        live = _probe(name, container["livenessProbe"], timeout=30)
        assert live.returncode == 0, live.stderr
        print(
            f"\n[image] KubeRay head: ray start -> readiness probe passed in {time.monotonic() - start:.1f} s"
        )

    def test_kuberay_worker_probe_fails_on_a_node_without_serve(
        self, head_pod: tuple[str, dict], ray_cluster_spec: dict
    ) -> None:
        """Negative control: the head's raylet agent answers, but no Serve proxy runs there."""
        name, _ = head_pod
        proc = _probe(name, _worker_readiness_probe(ray_cluster_spec), timeout=60)
        assert proc.returncode != 0
        assert "success" in proc.stdout  # the first half (local raylet) passed


def _worker_readiness_probe(ray_cluster_spec: dict) -> dict:
    worker = ray_cluster_spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    probe = worker["readinessProbe"]
    assert probe["exec"]["command"][0] == "bash"
    return probe


def test_image_size_is_reported(image: str) -> None:
    size = imagectl.image_size(image)
    assert size > 0
    print(f"\n[image] {image}: {size / 1e6:.0f} MB")


def test_image_config_matches_the_dockerfile(image: str) -> None:
    """Docker-format config (buildah --format docker): OCI would drop HEALTHCHECK."""
    out = subprocess.run(
        ["buildah", *imagectl.STORAGE, "inspect", "--type", "image", image],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    cfg = json.loads(out)["Docker"]["config"]
    assert cfg["User"] == "10001:10001"
    assert cfg["Entrypoint"] == ["tini", "--"]
    assert "compat doctor" in " ".join(cfg["Cmd"])
    assert cfg["Healthcheck"]["Test"][0] == "CMD"
    assert cfg["Healthcheck"]["Test"][-1] == "http://127.0.0.1:8000/health"
    assert "8000/tcp" in cfg["ExposedPorts"]
