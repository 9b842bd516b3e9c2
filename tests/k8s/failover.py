"""Loopback failover drill: two independent Ray clusters behind the chart's own nginx gateway.

1. Render the chart (values-primary.yaml) with the gateway's upstreams pointed at two loopback ports, take
   nginx.conf out of the rendered ConfigMap and run real nginx with it (own prefix, unprivileged).
2. Start two independent single-node Ray clusters serving the `tts` app (tiny random model), the primary and
   the hot standby, each from serve_app/config/local.yaml (the config `make run` and the chart use).
3. Steady closed-loop load through the gateway; SIGKILL the primary's whole process group; keep the load;
   restart the primary; check traffic fails back. Every client request must succeed.

    python -m tests.k8s.failover            # full drill (make failover-test)
    python -m tests.k8s.failover --short    # shortened (the slow pytest)
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pwd
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from compat.ports import free_port
from tests.k8s.render import REPO, render_manifest

SERVE_CONFIG = REPO / "serve_app" / "config" / "local.yaml"
SYNTH_PATH = "/api/tts"


def gateway_nginx_conf(
    primary_port: int, standby_port: int, listen_port: int, extra: dict[str, Any] | None = None
) -> str:
    """nginx.conf exactly as the chart renders it for values-primary.yaml, upstreams on loopback ports."""
    gateway = {
        "scheme": "http",
        "listenPort": listen_port,
        "primary": {"host": "127.0.0.1", "port": primary_port},
        "standby": {"host": "127.0.0.1", "port": standby_port},
        **(extra or {}),
    }
    docs = [d for d in yaml.safe_load_all(render_manifest("primary", {"gateway": gateway})) if d]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-gateway")]
    return cm["data"]["nginx.conf"]


class Nginx:
    """Debian nginx running the rendered config with its own prefix, as an unprivileged user."""

    def __init__(self, conf: str) -> None:
        # Its own world-traversable prefix (pytest's tmp dirs are root-only; the workers run as nobody).
        self.prefix = Path(tempfile.mkdtemp(prefix="tts-nginx-", dir="/tmp"))
        self.prefix.chmod(0o755)
        self.access_log = self.prefix / "access.log"
        conf = conf.replace("/tmp/", f"{self.prefix}/")
        conf = conf.replace("/dev/stdout", str(self.access_log)).replace(
            "/dev/stderr", str(self.prefix / "error.log")
        )
        self.conf_path = self.prefix / "nginx.conf"
        self.conf_path.write_text(conf)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port: int, timeout: float = 10.0) -> None:
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        user = None
        if os.geteuid() == 0:  # never run the gateway as root: drop to nobody
            user = "nobody"
            nobody = pwd.getpwnam(user)
            for path in [self.prefix, *self.prefix.rglob("*")]:
                os.chown(path, nobody.pw_uid, nobody.pw_gid)
        cmd = [nginx, "-p", str(self.prefix), "-c", str(self.conf_path), "-e", str(self.prefix / "error.log")]
        check = subprocess.run([*cmd, "-t"], capture_output=True, text=True, user=user, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"nginx -t failed: {check.stderr}")
        self.proc = subprocess.Popen([*cmd, "-g", "daemon off;"], user=user, start_new_session=True)
        deadline = time.monotonic() + timeout
        # nginx exits at once when it cannot bind: no need to wait out the deadline then
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/gateway/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"nginx did not come up: {(self.prefix / 'error.log').read_text()}")

    def stop(self, keep: bool = False) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        if not keep:
            shutil.rmtree(self.prefix, ignore_errors=True)

    def log_entries(self) -> list[dict[str, Any]]:
        """Access-log lines: end time, status, path, and the upstream that finally answered."""
        out = []
        pattern = re.compile(r'msec=(\S+) rid=(\S+) .*?"(\S+) (\S+) [^"]*" (\d+) .*? upstream="([^"]*)"')
        for line in self.access_log.read_text().splitlines() if self.access_log.exists() else []:
            m = pattern.search(line)
            if m:
                # "a, b" = tried a then b; "a : b" = internal redirect
                tried = [u for u in re.split(r"\s*[,:]\s+", m.group(6).strip()) if u and u != "-"]
                out.append(
                    {
                        "t": float(m.group(1)),
                        "rid": m.group(2),
                        "method": m.group(3),
                        "path": m.group(4),
                        "status": int(m.group(5)),
                        "tried": tried,
                        "final": tried[-1] if tried else "",
                    }
                )
        return out


def start_nginx(
    conf_for: Callable[[int], str], attempts: int = 3, port: int | None = None
) -> tuple[Nginx, int]:
    """nginx running ``conf_for(port)`` on ``port`` (default: a free loopback port). A port picked free can be
    taken before nginx binds it (another process's outgoing connection gets it as its ephemeral port): then a
    fresh pick (bounded)."""
    for attempt in range(attempts):
        listen = port if attempt == 0 and port is not None else free_port()
        nginx = Nginx(conf_for(listen))
        try:
            nginx.start(listen)
            return nginx, listen
        except RuntimeError as e:
            nginx.stop()
            if "Address already in use" not in str(e) or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


class ClusterExited(RuntimeError):
    """A test cluster's process exited before its /ready answered."""


class RayCluster:
    """One independent Ray cluster (its own process group) serving the app on 127.0.0.1:port."""

    def __init__(
        self, name: str, port: int, workdir: Path, model_dir: Path, config: Path = SERVE_CONFIG
    ) -> None:
        self.name, self.port, self.workdir, self.model_dir = name, port, workdir, model_dir
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        temp = self.workdir / f"ray{self.name[0]}{self.starts}"
        log = open(self.workdir / f"{self.name}-{self.starts}.log", "wb")  # noqa: SIM115 - lives with proc
        # Loopback-only test clusters: Ray token auth off, like `make run`.
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
        env["PYTHONPATH"] = str(REPO)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.k8s.serve_cluster",
                "--config",
                str(self.config),
                "--http-port",
                str(self.port),
                "--temp-dir",
                str(temp),
                "--model-dir",
                str(self.model_dir),
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}-{self.starts}.log"

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of this start's log (the work directory is deleted after the drill)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no log: {exc})"

    def wait_ready(self, timeout: float = 240.0) -> float:
        """Block until GET /ready (a real tiny synthesis) answers 200 directly; returns that time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise ClusterExited(
                    f"{self.name} cluster exited (code {code}) before it was ready; "
                    f"{self.log_path} ends:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/ready", timeout=5).status_code == 200:
                    return time.time()
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"{self.name} cluster not ready after {timeout:.0f}s")

    def start_ready(self, attempts: int = 2) -> float:
        """Start the cluster (unless already starting) and wait until ready; a cluster whose processes exit
        while booting (two Ray clusters booting at once on one small host) is started again, at most
        `attempts` starts in all, and the failed start's log tail is printed."""
        for attempt in range(1, attempts + 1):
            if self.proc is None or self.proc.poll() is not None:
                self.start()
            try:
                return self.wait_ready()
            except ClusterExited as exc:
                if attempt == attempts:
                    raise
                print(f"[drill] {exc}\n[drill] starting the {self.name} cluster again", flush=True)
                self.proc = None
        raise AssertionError("unreachable")

    def kill(self) -> float:
        """SIGKILL every process of the cluster (GCS, raylet, proxy, replicas) at once."""
        t = time.time()
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        return t


@dataclass
class Sample:
    start: float
    end: float
    status: int
    error: str = ""
    rid: str = ""


@dataclass
class Load:
    """Closed-loop load: `workers` threads each sending one synthesis after another through the gateway."""

    url: str
    workers: int = 3
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self, worker: int) -> None:
        n = 0
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                n += 1
                body = {"text": f"您好，这里是客服中心，您的工单号是{worker}{n:04d}，请稍候。"}
                t0 = time.time()
                try:
                    r = client.post(self.url, json=body)
                    s = Sample(t0, time.time(), r.status_code, "" if r.status_code == 200 else r.text[:200])
                    s.rid = r.headers.get("x-request-id", "")
                except httpx.HTTPError as exc:
                    s = Sample(t0, time.time(), 0, f"{type(exc).__name__}: {exc}")
                with self._lock:
                    self.samples.append(s)

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._run, args=(i,), daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(90)


@dataclass
class Report:
    requests: int
    failures: list[Sample]
    baseline_p50_ms: float
    failover_s: float
    max_latency_during_failover_ms: float
    longest_gap_s: float
    failback_s: float
    served_by: dict[str, int]
    retried_on_backup: int

    def lines(self) -> list[str]:
        return [
            f"requests through the gateway: {self.requests}, client-visible failures: {len(self.failures)}",
            f"served by: {self.served_by}; replayed on the backup after a primary error: "
            f"{self.retried_on_backup}",
            f"baseline latency p50: {self.baseline_p50_ms:.0f} ms",
            f"FAILOVER time (primary killed -> first response from the standby): {self.failover_s:.2f} s",
            f"worst request latency across the failover: {self.max_latency_during_failover_ms:.0f} ms; "
            f"longest gap between successes: {self.longest_gap_s:.2f} s",
            f"FAILBACK time (primary ready again -> first response from the primary): "
            f"{self.failback_s:.2f} s",
        ]


def make_tiny_model(workdir: Path) -> Path:
    out = workdir / "model"
    subprocess.run(
        [sys.executable, "-m", "engine.testing.make_model_dir", str(out), "--size", "tiny"],
        check=True,
        cwd=REPO,
        capture_output=True,
        timeout=300,
    )
    return out


def drill(steady_s: float, after_kill_s: float, after_failback_s: float, workers: int, keep: bool) -> Report:
    workdir = Path(tempfile.mkdtemp(prefix="tts-failover-", dir="/tmp"))
    p_port, s_port = free_port(), free_port()
    primary = RayCluster("primary", p_port, workdir, Path())
    standby = RayCluster("standby", s_port, workdir, Path())
    nginx: Nginx | None = None
    load: Load | None = None
    try:
        model = make_tiny_model(workdir)
        primary.model_dir = standby.model_dir = model
        print(f"[drill] workdir {workdir}; primary :{p_port}, standby :{s_port}", flush=True)
        primary.start()
        standby.start()
        nginx, g_port = start_nginx(lambda port: gateway_nginx_conf(p_port, s_port, port))
        print(f"[drill] gateway :{g_port}", flush=True)
        fail_timeout = float(re.search(r"fail_timeout=(\d+)s", nginx.conf_path.read_text()).group(1))
        load = Load(f"http://127.0.0.1:{g_port}{SYNTH_PATH}", workers=workers)
        t0 = time.time()
        primary.start_ready()
        standby.start_ready()
        print(
            f"[drill] both clusters ready in {time.time() - t0:.1f}s; steady load {steady_s:.0f}s", flush=True
        )
        load.start()
        time.sleep(steady_s)
        t_kill = primary.kill()
        print("[drill] primary cluster killed (SIGKILL to its process group)", flush=True)
        time.sleep(after_kill_s)
        t_ready = primary.start_ready()
        print(f"[drill] primary back and ready {t_ready - t_kill:.1f}s after the kill", flush=True)
        time.sleep(after_failback_s + fail_timeout)
        load.stop()
        time.sleep(0.5)
        return _report(load.samples, nginx.log_entries(), t_kill, t_ready, p_port, s_port)
    finally:
        if load is not None:
            load.stop()
        primary.kill()
        standby.kill()
        if nginx is not None:
            nginx.stop(keep)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def _report(
    samples: list[Sample], log: list[dict[str, Any]], t_kill: float, t_ready: float, p_port: int, s_port: int
) -> Report:
    primary, standby = f"127.0.0.1:{p_port}", f"127.0.0.1:{s_port}"
    synth = [e for e in log if e["path"] == SYNTH_PATH]
    ok_before = [s for s in samples if s.status == 200 and s.end < t_kill]
    after_kill_standby = [
        e["t"] for e in synth if e["t"] > t_kill and e["final"] == standby and e["status"] == 200
    ]
    back_on_primary = [
        e["t"] for e in synth if e["t"] > t_ready and e["final"] == primary and e["status"] == 200
    ]
    window = [s for s in samples if s.end >= t_kill and s.start <= t_kill + 10]
    ends = sorted(s.end for s in samples if s.status == 200 and t_kill - 2 <= s.end <= t_kill + 15)
    gaps = [b - a for a, b in itertools.pairwise(ends)]
    served: dict[str, int] = {}
    for e in synth:
        label = "primary" if e["final"] == primary else "standby" if e["final"] == standby else e["final"]
        served[label] = served.get(label, 0) + 1
    return Report(
        requests=len(samples),
        failures=[s for s in samples if s.status != 200],
        baseline_p50_ms=1000 * statistics.median(s.end - s.start for s in ok_before)
        if ok_before
        else float("nan"),
        failover_s=(min(after_kill_standby) - t_kill) if after_kill_standby else float("inf"),
        max_latency_during_failover_ms=1000 * max((s.end - s.start for s in window), default=0.0),
        longest_gap_s=max(gaps, default=float("inf")),
        failback_s=(min(back_on_primary) - t_ready) if back_on_primary else float("inf"),
        served_by=served,
        retried_on_backup=sum(1 for e in synth if len(e["tried"]) > 1 and e["final"] == standby),
    )


def check(report: Report) -> list[str]:
    """Acceptance: zero client-visible failures, failover happened, traffic failed back."""
    problems = []
    if report.failures:
        problems.append(f"{len(report.failures)} client-visible failures, e.g. {report.failures[:3]}")
    if report.failover_s == float("inf"):
        problems.append("the standby never answered after the primary was killed")
    if report.failback_s == float("inf"):
        problems.append("traffic never failed back to the primary")
    if report.served_by.get("primary", 0) == 0 or report.served_by.get("standby", 0) == 0:
        problems.append(f"both clusters should have served traffic: {report.served_by}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="shortened drill (CI)")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON")
    args = parser.parse_args(argv)
    durations = (5.0, 8.0, 5.0) if args.short else (20.0, 20.0, 20.0)
    report = drill(*durations, workers=args.workers, keep=args.keep)
    for line in report.lines():
        print(line)
    if args.json:
        data = {k: v for k, v in report.__dict__.items() if k != "failures"}
        data["failures"] = len(report.failures)
        args.json.write_text(json.dumps(data, indent=2))
    problems = check(report)
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
