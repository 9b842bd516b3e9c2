"""Memory report (``make bench-memory``): what the whole pipeline holds, per process.

Starts the app as ``make run`` does (``python -m serve_app.run serve_app/config/local.yaml``: it starts a
local Ray head node and deploys the config on it; ``--dashboard`` as ``make run DASHBOARD=1``), with one
replica per stage (``--replicas``; 0 keeps the config's sizes) on a free loopback port, waits for ``/ready``,
sends a few requests, then lists every process of that Ray instance (``make run``, gcs_server, raylet, agents,
workers by actor name) with RSS, PSS and USS (``psutil.Process.memory_full_info``), how much of each is
torch's shared libraries, and the totals.

PSS splits shared pages (libraries, copy-on-write) between the processes mapping them, so the PSS column adds
up to what the pipeline really occupies; the RSS column double-counts them (the issue's figure was RSS).

``--breakdown`` explains a replica instead: fresh interpreters import and run one component at a time (Ray +
Serve, torch, the frontend and its dictionaries, each model's weights and first inference) and print the RSS
and USS each step adds.

Usage: ``python -m benchmarks.bench_memory [--model-dir DIR] [--replicas 1] [--dashboard] [--json OUT]``,
``python -m benchmarks.bench_memory --breakdown [--model-dir DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml

from compat.ports import free_port

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "serve_app" / "config" / "local.yaml"
MB = 1024 * 1024
TEXTS = ("您好，这里是智能客服中心，请问有什么可以帮您？", "今天天气晴朗，最高气温二十六度。", "会议开始。")
TORCH_LIBS = ("/torch/lib/", "/torch/_C", "libtorch", "libgomp")  # shared objects only torch maps here
# Rows summed per group under the table: what each part of the stack costs.
GROUPS = (
    ("Serve replicas", ("ray::ServeReplica:",)),
    ("Serve controller + proxy", ("ray::ServeController", "ray::ProxyActor")),
    ("dashboard head", ("dashboard.py", "ray-dashboard-", "multiprocessing.")),
    (
        "Ray daemons and agents",
        (
            "gcs_server",
            "raylet",
            "monitor.py",
            "log_monitor.py",
            "ray::DashboardAgent",
            "ray::RuntimeEnvAgent",
            "ray_process_reaper.py",
        ),
    ),
    ("make run", ("make run",)),
)


@dataclass(frozen=True)
class ProcMemory:
    """One process: its role (Ray actor / component name), RSS, PSS, USS and torch-library RSS in MB."""

    role: str
    pid: int
    rss_mb: float
    pss_mb: float
    uss_mb: float
    torch_libs_mb: float  # RSS of mapped torch shared objects (0 when the process never imported torch)


def run_config(model_dir: str | None, port: int, replicas: int) -> dict[str, Any]:
    """``local.yaml`` on ``port`` (loopback) with ``replicas`` per deployment (0: the config's sizes)."""
    cfg = yaml.safe_load(CONFIG.read_text("utf-8"))
    cfg["http_options"].update(host="127.0.0.1", port=port)
    app = cfg["applications"][0]
    if model_dir:
        app["args"]["model_dir"] = model_dir
    if replicas:
        for dep in app["deployments"]:
            dep.pop("autoscaling_config", None)
            dep["num_replicas"] = replicas
    return cfg


def actor_title(title: str) -> str:
    """A Ray worker's title without the ``.<method>`` Ray appends while one runs and without its arguments:
    ``ray::ServeReplica:tts:Vocoder.handle_request x`` -> ``ray::ServeReplica:tts:Vocoder``."""
    return title.split()[0].split(".")[0] if title else title


def role(proc: psutil.Process) -> str:
    """``ray::<actor>`` title for workers (without the ``.<method>`` Ray appends while one runs, so a process
    keeps one role); the executable or script name for Ray's own daemons."""
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return "?"
    if cmd and cmd[0].startswith("ray::"):
        return actor_title(cmd[0])
    if "-c" in cmd[:-1]:  # `python -B -c "from multiprocessing.forkserver import main; ..."`
        code = cmd[cmd.index("-c") + 1]
        return code.split(" import ")[0].removeprefix("from ") if code.startswith("from ") else code[:40]
    if cmd[1:3] == ["-m", "serve_app.run"]:
        return "make run (python -m serve_app.run)"
    for arg in cmd[:3]:
        if arg.endswith(".py"):
            return Path(arg).name
    return Path(cmd[0]).name if cmd else proc.name()


def measure(proc: psutil.Process) -> ProcMemory | None:
    """RSS/PSS/USS of one process and the RSS of torch's libraries mapped in it (None if it is gone)."""
    try:
        full = proc.memory_full_info()
        torch_rss = sum(m.rss for m in proc.memory_maps(grouped=True) if any(k in m.path for k in TORCH_LIBS))
        return ProcMemory(role(proc), proc.pid, full.rss / MB, full.pss / MB, full.uss / MB, torch_rss / MB)
    except psutil.Error:
        return None


def process_tree(root: psutil.Process) -> list[psutil.Process]:
    """``root`` and every process under it (for ``make run``: Ray's daemons, which start the workers)."""
    return [root, *root.children(recursive=True)]


def app_replicas(root: psutil.Process, app: str) -> list[tuple[str, int]]:
    """``(deployment, pid)`` of every replica process of Serve app ``app`` under ``root`` (for a driver that
    started its own Ray: ``psutil.Process()``; another Ray session's workers are not under it)."""
    prefix = f"ray::ServeReplica:{app}:"
    return [(r[len(prefix) :], p.pid) for p in process_tree(root) if (r := role(p)).startswith(prefix)]


def snapshot(root: psutil.Process) -> list[ProcMemory]:
    """Every process under ``make run``'s process."""
    rows = [m for m in (measure(p) for p in process_tree(root)) if m is not None]
    return sorted(rows, key=lambda r: -r.pss_mb)


def group(row: ProcMemory) -> str:
    return next((name for name, keys in GROUPS if any(row.role.startswith(k) for k in keys)), "other")


def _line(name: str, pid: str, rss: float, pss: float, uss: float, peak: str, torch: str) -> str:
    cells = f"{rss:>6.0f} | {pss:>6.0f} | {uss:>6.0f} | {peak:>8}"
    return f"| {name[:44]:<44} | {pid:>7} | {cells} | {torch:>11} |"


def table(rows: list[ProcMemory], peaks: dict[int, float] | None = None) -> str:
    """Markdown table (MB = 2**20 bytes): one row per process, then one per group, then the total.

    ``peaks`` (pid → largest RSS sampled under the requests, see :class:`PeakRss`) fills the peak column.
    """
    peaks = peaks or {}
    head = (
        f"| {'process':<44} | {'pid':>7} | {'RSS':>6} | {'PSS':>6} | {'USS':>6} | {'peak RSS':>8} "
        f"| {'torch libs':>11} |"
    )
    lines = [head, "|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|"]
    for r in rows:
        peak = f"{peaks[r.pid]:.0f}" if r.pid in peaks else ""
        lines.append(_line(r.role, str(r.pid), r.rss_mb, r.pss_mb, r.uss_mb, peak, f"{r.torch_libs_mb:.0f}"))
    names = [name for name, _ in GROUPS] + ["other"]
    for name, members in ((n, [r for r in rows if group(r) == n]) for n in names):
        if members:
            sums = [sum(getattr(r, k) for r in members) for k in ("rss_mb", "pss_mb", "uss_mb")]
            lines.append(_line(f"= {name} ({len(members)})", "", *sums, "", ""))
    sums = [sum(getattr(r, k) for r in rows) for k in ("rss_mb", "pss_mb", "uss_mb")]
    lines.append(_line(f"= TOTAL ({len(rows)} processes)", "", *sums, "", ""))
    return "\n".join(lines)


def gb(mb: float) -> float:
    """MB (2**20 bytes) as decimal GB (10**9 bytes), the unit of the issue's 2.5 GB budget."""
    return mb * MB / 1e9


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Poll ``/ready`` until 200 (bounded); fail early if ``make run`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"make run exited with {proc.returncode} before /ready")
        try:
            if httpx.get(f"{url}/ready", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise TimeoutError(f"{url}/ready not 200 within {timeout_s:.0f} s")


def _synthesize(url: str, text: str, stream: bool) -> None:
    r = httpx.post(f"{url}/api/tts", json={"text": text, "stream": stream}, timeout=300)
    r.raise_for_status()
    if not r.content:
        raise RuntimeError("empty audio")


def send_requests(url: str, n: int, clients: int = 0) -> None:
    """``n`` syntheses one by one (whole and streamed), so every stage has run a real request; then
    ``clients`` concurrent clients, two long requests each, so the stages batch and their allocators see a
    loaded history."""
    for i in range(n):
        _synthesize(url, TEXTS[i % len(TEXTS)] + f"第{i}次。", bool(i % 2))
    long_text = "".join(TEXTS) * 2
    with ThreadPoolExecutor(max(1, clients)) as pool:
        jobs = [pool.submit(_synthesize, url, f"{long_text}{i}。", bool(i % 2)) for i in range(2 * clients)]
        for job in jobs:
            job.result()


class PeakRss:
    """Samples the RSS of the process tree under ``root`` in the background: ``peak_mb`` is the largest sum,
    ``per_pid`` each process's own largest RSS (MB)."""

    def __init__(self, root: psutil.Process, every_s: float = 0.25) -> None:
        self.root, self.every_s, self.peak_mb = root, every_s, 0.0
        self.per_pid: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            total = 0.0
            for p in process_tree(self.root):
                with suppress(psutil.Error):
                    rss = p.memory_info().rss / MB
                    total += rss
                    self.per_pid[p.pid] = max(self.per_pid.get(p.pid, 0.0), rss)
            self.peak_mb = max(self.peak_mb, total)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def stop(proc: subprocess.Popen[bytes], tree: list[psutil.Process], timeout_s: float = 60.0) -> None:
    """SIGINT ``make run`` (it shuts Serve and Ray down); kill what is left of the tree it started."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    _, alive = psutil.wait_procs(tree, timeout=10)
    for p in alive:
        with suppress(psutil.Error):
            p.kill()


@contextmanager
def served(
    cfg: dict[str, Any], dashboard: bool, log_path: Path, timeout_s: float
) -> Iterator[tuple[str, psutil.Process]]:
    """The app on ``cfg`` as ``make run`` starts it; yields (base URL, its process); always stops it."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a new local Ray, like `make run`
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp, log_path.open("wb") as log:
        cfg_path = Path(tmp) / "config.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False), "utf-8")
        command = [sys.executable, "-m", "serve_app.run", str(cfg_path)] + ["--dashboard"] * dashboard
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        root = psutil.Process(proc.pid)
        tree: list[psutil.Process] = [root]
        try:
            url = f"http://127.0.0.1:{cfg['http_options']['port']}"
            wait_ready(url, proc, timeout_s)
            tree += root.children(recursive=True)
            yield url, root
        finally:
            with suppress(psutil.Error):
                tree += root.children(recursive=True)
            stop(proc, tree)


# Each scenario runs in a fresh interpreter; every step is measured after it ran (``{model_dir}`` filled in).
BREAKDOWN: dict[str, tuple[str, ...]] = {
    "Ray worker (Serve, FastAPI)": ("import numpy", "import ray", "from ray import serve", "import fastapi"),
    "torch": ("import numpy", "import torch"),
    "text frontend": (
        "import numpy",
        "import jieba, jieba.posseg",
        "import pypinyin",
        "from engine.frontend import Frontend",
        "from engine.modeldir import load_model_dir; d = load_model_dir({model_dir!r}); f = Frontend()",
        "f.process('您好，请问有什么可以帮您？会议在下午两点半开始。', d.default_voice.vocab)",
        "f.process('Hello world, 2024年3月5日，张三说：长大了要去银行。', d.default_voice.vocab)",
    ),
    "acoustic model": (
        "import numpy; import torch; torch.set_num_threads(1)",
        "from engine.modeldir import load_model_dir; d = load_model_dir({model_dir!r})",
        "from engine.sambert import AcousticModel; m = AcousticModel.from_voice(d.default_voice, 1)",
        "from engine.messages import AcousticInput; from engine.frontend import Frontend; "
        "u = Frontend().process('您好，这里是智能客服中心，请问有什么可以帮您？', d.default_voice.vocab)",
        "o = m.synthesize([AcousticInput(u[0].ids)])[0]",
        "o = m.synthesize([AcousticInput(x.ids) for x in u * 4])",
    ),
    "vocoder": (
        "import numpy; import torch; torch.set_num_threads(1)",
        "from engine.modeldir import load_model_dir; d = load_model_dir({model_dir!r})",
        "from engine.hifigan import Vocoder; v = Vocoder.from_voice(d.default_voice, 1)",
        "a = v.vocode(numpy.random.default_rng(0).standard_normal((200, 80), dtype=numpy.float32))",
        "a = v.vocode_batch([numpy.zeros((400, 80), numpy.float32)] * 4)",
    ),
}
STEP_PROBE = """
import json, psutil
_p = psutil.Process()
def _mem(step):
    f = _p.memory_full_info()
    print("STEP " + json.dumps([step, f.rss / 2**20, f.uss / 2**20]), flush=True)
_mem("python")
for _step in {steps!r}:
    exec(_step)
    _mem(_step)
"""


def breakdown(model_dir: str) -> str:
    """What each component adds to a process (fresh interpreter per scenario), as a markdown table."""
    lines = ["| scenario | step | RSS MB | +RSS | USS MB | +USS |", "|---|---|---|---|---|---|"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    for scenario, steps in BREAKDOWN.items():
        code = STEP_PROBE.format(steps=[s.format(model_dir=model_dir) for s in steps])
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
        )
        if out.returncode:
            raise RuntimeError(f"{scenario}: {out.stderr[-2000:]}")
        prev: tuple[float, float] | None = None
        for line in out.stdout.splitlines():
            if not line.startswith("STEP "):
                continue
            step, rss, uss = json.loads(line[5:])
            step = step.replace(model_dir, "DIR")
            label = step if len(step) <= 60 else step[:57] + "..."
            grew = f"{rss - prev[0]:+.0f} | {uss:.0f} | {uss - prev[1]:+.0f}" if prev else f" | {uss:.0f} | "
            lines.append(f"| {scenario} | `{label}` | {rss:.0f} | {grew} |")
            prev = (rss, uss)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_memory", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--model-dir", default=os.environ.get("TTS_MODEL_DIR") or None)
    parser.add_argument("--replicas", type=int, default=1, help="replicas per deployment (0: as configured)")
    parser.add_argument(
        "--dashboard", action="store_true", help="with the Ray dashboard (make run DASHBOARD=1)"
    )
    parser.add_argument("--requests", type=int, default=4, help="one-by-one requests")
    parser.add_argument("--clients", type=int, default=4, help="then N clients, 2 long requests each")
    parser.add_argument(
        "--settle-s", type=float, default=5.0, help="wait after the requests before measuring"
    )
    parser.add_argument("--timeout-s", type=float, default=600.0, help="bound on start-up until /ready")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    parser.add_argument("--log", type=Path, default=Path(tempfile.gettempdir()) / "bench-memory-serve.log")
    parser.add_argument("--breakdown", action="store_true", help="per-component cost instead (no Ray)")
    args = parser.parse_args(argv)
    if args.breakdown:
        from engine.modeldir import benchmark_model_dir

        print(breakdown(benchmark_model_dir(args.model_dir)))
        return 0

    cfg = run_config(args.model_dir, free_port(), args.replicas)
    print(f"starting the app (log: {args.log}) ...", file=sys.stderr, flush=True)
    with served(cfg, args.dashboard, args.log, args.timeout_s) as (url, root):
        with PeakRss(root) as peak:
            send_requests(url, args.requests, args.clients)
        time.sleep(args.settle_s)
        rows = snapshot(root)
    print(table(rows, peak.per_pid))
    replicas = args.replicas or "as configured"
    dashboard = "on" if args.dashboard else "off"
    total = sum(r.rss_mb for r in rows)
    print(
        f"\nRSS: {total:.0f} MB = {gb(total):.2f} GB (10^9 B) {args.settle_s:.0f} s after the requests "
        f"({args.requests} one by one, then {args.clients} clients); peak under them {peak.peak_mb:.0f} MB = "
        f"{gb(peak.peak_mb):.2f} GB (summed, sampled every {peak.every_s} s). MB = 2^20 B."
    )
    print(f"replicas per stage: {replicas}; dashboard: {dashboard}; load {os.getloadavg()[0]:.2f} (1 min)")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=1), "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
