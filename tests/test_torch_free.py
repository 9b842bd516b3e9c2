"""Stages that run no model never load torch (≈190 MB per process): the ingress and the text frontend; an
fp32 vocoder never loads numba.

Three views of the same rule: the modules those replicas import, the frontend's whole work path run in a fresh
interpreter, and the live replicas of the shared Serve instance (no libtorch mapped in their address space,
while the model stages' replicas do map it). Likewise the ingress never loads the frontend's dictionaries
(jieba, pypinyin: ≈120 MB), not even to unpickle the units and errors the frontend sends it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from benchmarks.bench_memory import app_replicas

REPO_ROOT = Path(__file__).resolve().parent.parent
# Every module the ingress and text-frontend replicas import. Not serve_app.graph: it builds the app in the
# build task and imports the model deployments on purpose.
TORCH_FREE_MODULES = (
    "serve_app.ingress",
    "serve_app.stages",
    "serve_app.resilience",
    "serve_app.security",
    "serve_app.hardening",
    "serve_app.cache",
    "serve_app.audio_store",
    "serve_app.models",
    "serve_app.errors",
    "deployments.text_frontend",
    "deployments.common",
    "deployments.metrics",
    "engine.modeldir",
    "engine.frontend",
    "engine.orchestrator",
    "engine.stages",
    "engine.messages",
    "engine.audio",
)
INGRESS_MODULES = tuple(m for m in TORCH_FREE_MODULES if m != "deployments.text_frontend")
FRONTEND_DICTIONARIES = ("jieba", "pypinyin", "engine.frontend.frontend")
TORCH_LIB = "libtorch"  # libtorch.so / libtorch_cpu.so: mapped by every process that imported torch
CHECK = """
import sys
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r} or m in {forbidden!r})
assert not loaded, f"imported: {{loaded[:5]}}"
"""


def _run(code: str, forbidden: tuple[str, ...] = ("torch",)) -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + CHECK.format(forbidden=forbidden)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def test_replica_modules_import_no_torch() -> None:
    _run(f"import {', '.join(TORCH_FREE_MODULES)}")


def test_the_check_sees_what_it_forbids() -> None:
    """The subprocess check fails when a forbidden module is imported (so the tests here can fail)."""
    with pytest.raises(AssertionError, match=r"imported: .*torch"):
        _run("import engine.sambert")
    with pytest.raises(AssertionError, match=r"imported: .*engine\.frontend\.frontend"):
        _run("from engine.frontend import Frontend", FRONTEND_DICTIONARIES)


def test_ingress_loads_no_frontend_dictionaries(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The ingress's modules, and unpickling what the frontend replica sends (units, its error), load no
    jieba/pypinyin."""
    import pickle

    from engine.frontend import Frontend, FrontendError
    from engine.modeldir import load_model_dir

    vocab = load_model_dir(tiny_model_dir).default_voice.vocab
    units = Frontend().process("你好，世界。2024年。", vocab)
    sent = tmp_path / "sent.pkl"
    sent.write_bytes(pickle.dumps((units, FrontendError("bad text"))))
    _run(
        f"""
        import pickle
        import {", ".join(INGRESS_MODULES)}
        units, error = pickle.loads(open({str(sent)!r}, "rb").read())
        assert units[0].marks and units[0].ids.shape[0] > 0 and str(error) == "bad text"
        """,
        (*FRONTEND_DICTIONARIES, "torch"),
    )


def test_frontend_replica_work_path_imports_no_torch(tiny_model_dir: Path) -> None:
    """The TextFrontend deployment's class built outside Ray, every table loaded at start, serving requests;
    the model directory read."""
    _run(
        f"""
        import asyncio
        from deployments.text_frontend import TextFrontend
        from engine.messages import SynthesisRequest
        from engine.modeldir import load_model_dir

        stage = TextFrontend.func_or_class({str(tiny_model_dir)!r}, 1)
        from engine.frontend import english, names
        assert english._DICT and names._TAGGER  # loaded at start, not by the first English word or name
        units = asyncio.run(stage.process(SynthesisRequest("你好，世界。Hello 2024年。")))
        assert units and units[0].ids.shape[0] > 0
        asyncio.run(stage.check_health())
        directory = load_model_dir({str(tiny_model_dir)!r})
        assert directory.version and directory.provenance()["random_weights"]
        """
    )


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_fp32_vocoder_replica_loads_no_numba(tiny_model_dir: Path, precision: str) -> None:
    """The HifiGanVocoder deployment's class built outside Ray, vocoding: in fp32 (the default) it loads no
    numba (~40 MB a replica); in bf16 on a CPU with bf16 instructions its residual sums are numba loops."""
    from engine.hifigan.layers import bf16_hardware

    code = f"""
        import asyncio
        from deployments.vocoder import HifiGanVocoder

        stage = HifiGanVocoder.func_or_class({str(tiny_model_dir)!r}, 1, {precision!r})
        assert stage.models[stage.default_voice].backend == "onednn"
        asyncio.run(stage.check_health())  # a real inference (Serve's batching needs a replica)
        """
    if precision == "bf16" and bf16_hardware():
        with pytest.raises(AssertionError, match=r"imported: .*numba"):
            _run(code, ("numba",))
    else:
        _run(code, ("numba", "llvmlite"))


def _replica_pids(app: str) -> dict[str, list[int]]:
    """``{deployment: [pid, ...]}`` of ``app``'s live replicas in the Ray this session started."""
    out: dict[str, list[int]] = {}
    for deployment, pid in app_replicas(psutil.Process(), app):
        out.setdefault(deployment, []).append(pid)
    return out


def _maps_torch(pid: int) -> bool:
    return TORCH_LIB in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.serve
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
def test_live_ingress_and_frontend_replicas_map_no_torch(serve_instance) -> None:  # type: ignore[no-untyped-def]
    import httpx

    r = httpx.post(serve_instance.url + "/api/tts", json={"text": "你好。"}, timeout=120)
    assert r.status_code == 200  # every stage has served a request
    pids = _replica_pids("tts")
    assert {"TTSIngress", "TextFrontend", "SambertAcoustic", "HifiGanVocoder"} <= set(pids), pids
    for deployment in ("SambertAcoustic", "HifiGanVocoder"):  # the detector sees torch where it is
        assert all(_maps_torch(pid) for pid in pids[deployment]), deployment
    for deployment in ("TTSIngress", "TextFrontend"):
        assert not any(_maps_torch(pid) for pid in pids[deployment]), f"{deployment} loaded torch"
