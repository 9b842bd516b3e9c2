"""Model resolution through the real ``modelscope`` client against a fake ModelScope hub on loopback.

Order under test: --model-dir/TTS_MODEL_DIR (path or ModelScope id) → the released id in the ModelScope
cache → ``snapshot_download`` from the hub → only when the hub is unreachable, a generated random voice
(with a banner).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.modeldir import (
    DEFAULT_MODEL_ID,
    ENV_MODEL_DIR,
    RELEASED_MODEL_IDS,
    ModelDirError,
    load_model,
    resolve_model,
)
from tests.conftest import REPO_ROOT
from tests.fake_modelscope_hub import FakeModelScopeHub

IIC, DAMO = RELEASED_MODEL_IDS
CKPT = "voices/zhitian_emo/am/ckpt/checkpoint_0.pth"
BANNER = "RANDOM WEIGHTS - this voice is untrained"


@pytest.fixture
def released(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """What the hub holds: a model directory shaped like the release (a model card without the generator's
    marker), plus the ttsfrd ``resource.zip`` the engine never reads."""
    repo = Path(shutil.copytree(tiny_model_dir, tmp_path / "repo"))
    card = json.loads((repo / "configuration.json").read_text())
    del card["generated"]
    (repo / "configuration.json").write_text(json.dumps(card, indent=2))
    (repo / "resource.zip").write_bytes(os.urandom(4096))
    return repo


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty ModelScope cache, no model chosen, no hub configured; returns the cache root."""
    cache = tmp_path / "mscache"
    monkeypatch.setenv("MODELSCOPE_CACHE", str(cache))
    monkeypatch.setenv("MODELSCOPE_HOME", str(tmp_path / "mshome"))
    for name in (ENV_MODEL_DIR, "MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN"):
        monkeypatch.delenv(name, raising=False)
    return cache


@pytest.fixture
def hub(released: Path, env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeModelScopeHub]:
    with FakeModelScopeHub({IIC: released, DAMO: released}) as server:
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", server.url)
        yield server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed when the block ends: connections are refused


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _same_files(got: Path, want: Path) -> None:
    files = sorted(p.relative_to(want).as_posix() for p in want.rglob("*") if p.is_file())
    files.remove("resource.zip")
    for rel in files:
        assert _sha(got / rel) == _sha(want / rel), rel
    assert not list(got.rglob("*.incomplete"))


def test_default_downloads_released_voice_then_reuses_cache(
    hub: FakeModelScopeHub, released: Path, env: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    directory = load_model(None)
    assert directory.source == "modelscope-download" and directory.model_id == IIC
    assert directory.random_weights is False
    assert list(directory.voices) == ["zhitian_emo", "zhiyan_emo"]
    assert directory.path == env / "models" / f"{IIC.replace('/', '--')}" / "snapshots" / "master"
    _same_files(directory.path, released)
    assert directory.provenance() == {
        "source": "modelscope-download",
        "model_id": IIC,
        "random_weights": False,
        "path": str(directory.path),
        "detail": f"{IIC} downloaded from {hub.url}",
    }
    before = len(hub.requests)
    assert resolve_model(None).provenance() == {
        **directory.provenance(),
        "source": "modelscope-cache",
        "detail": f"{IIC} from the ModelScope cache {env}",
    }
    downloaded = {r.file_path for r in hub.file_downloads()}
    assert CKPT in downloaded and "configuration.json" in downloaded
    assert "resource.zip" not in downloaded  # ttsfrd resources: never read, never fetched
    ckpt_requests = [
        r.path for r in hub.requests if r.file_path == CKPT
    ]  # the client follows the CDN redirect
    assert ckpt_requests == [f"/api/v1/models/{IIC}/repo", f"/cdn/{IIC}/-/{CKPT}"]
    err = capfd.readouterr().err
    assert f"downloading {IIC} from {hub.url}" in err and "resumes where it stopped" in err
    assert BANNER not in err

    again = load_model(None)
    assert (again.source, again.model_id, again.path) == ("modelscope-cache", IIC, directory.path)
    assert len(hub.requests) == before  # no listing, no probe, no file: the cache answers alone


def test_cache_serves_offline(hub: FakeModelScopeHub, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = resolve_model(None)
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    again = resolve_model(None)
    assert again.source == "modelscope-cache" and again.path == first.path and not again.random_weights


@pytest.mark.parametrize("model_id", [IIC, DAMO])
def test_explicit_ids_download_and_alias_cache(
    hub: FakeModelScopeHub, env: Path, model_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    got = resolve_model(model_id)
    assert got.source == "modelscope-download" and got.model_id == model_id
    assert all(model_id in r.path for r in hub.file_downloads())
    other = DAMO if model_id == IIC else IIC
    before = len(hub.requests)
    monkeypatch.setenv(ENV_MODEL_DIR, other)  # the other name of the same model: served from the cache
    alias = resolve_model(None)
    assert (alias.source, alias.model_id, alias.path) == ("modelscope-cache", model_id, got.path)
    assert len(hub.requests) == before


def test_old_hub_with_only_the_damo_name(released: Path, env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with FakeModelScopeHub({DAMO: released}) as server:
        monkeypatch.setenv("MODELSCOPE_DOMAIN", server.url)  # the client's older endpoint setting
        got = resolve_model(None)
    assert got.source == "modelscope-download" and got.model_id == DAMO
    assert [r.path for r in server.requests[:2]] == [f"/api/v1/models/{IIC}", f"/api/v1/models/{DAMO}"]


def test_dropped_connection_resumes_with_range(hub: FakeModelScopeHub, released: Path) -> None:
    size = (released / CKPT).stat().st_size
    hub.drop(CKPT, after=100_000)
    got = resolve_model(None)
    assert hub.dropped.is_set()
    assert [r.range for r in hub.file_downloads(CKPT)] == [None, "bytes=100000-"]
    assert (got.path / CKPT).stat().st_size == size
    _same_files(got.path, released)


def test_interrupted_run_then_rerun_resumes(hub: FakeModelScopeHub, released: Path, env: Path) -> None:
    """A run that dies mid-file (client retries disabled) fails naming the file; the next run resumes it."""
    hub.drop(CKPT, after=100_000)
    proc = subprocess.run(
        [sys.executable, "-m", "engine.modeldir"],
        cwd=REPO_ROOT,
        env={**os.environ, "MODELSCOPE_DOWNLOAD_MAX_RETRIES": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"downloading model '{IIC}' from ModelScope ({hub.url}) failed" in proc.stderr
    assert f"  {CKPT}: " in proc.stderr and "run again" in proc.stderr
    partial = list(env.rglob("checkpoint_0.pth.incomplete"))
    assert [p.stat().st_size for p in partial] == [100_000]
    fetched_once = {r.file_path for r in hub.file_downloads()} - {CKPT}

    got = resolve_model(None)
    assert got.source == "modelscope-download"
    assert [r.range for r in hub.file_downloads(CKPT)] == [None, "bytes=100000-"]
    for rel in fetched_once:  # files completed by the first run are not fetched again
        assert len(hub.file_downloads(rel)) == 1, rel
    _same_files(got.path, released)


def test_partial_cache_is_completed_not_served(hub: FakeModelScopeHub, released: Path) -> None:
    first = resolve_model(None)
    (first.path / CKPT).unlink()  # e.g. a run killed before this file arrived
    again = resolve_model(None)
    assert again.source == "modelscope-download" and again.path == first.path
    assert len(hub.file_downloads(CKPT)) == 2 and len(hub.file_downloads("configuration.json")) == 1
    _same_files(again.path, released)


def test_corrupt_file_is_a_clear_error_naming_it(hub: FakeModelScopeHub, released: Path) -> None:
    hub.corrupt(CKPT)
    with pytest.raises(ModelDirError) as info:
        resolve_model(None)
    message = str(info.value)
    assert f"downloading model '{IIC}' from ModelScope ({hub.url}) failed" in message
    assert f"  {CKPT}: Hash mismatch" in message and "sha256 the hub lists" in message
    assert "run again to fetch only the failed ones" in message
    assert not list((Path(os.environ["MODELSCOPE_CACHE"])).rglob("checkpoint_0.pth.incomplete"))
    hub.faults.clear()
    got = resolve_model(None)  # the hub is fixed: only the rejected file is fetched again
    assert len(hub.file_downloads("configuration.json")) == 1
    _same_files(got.path, released)


def test_offline_default_serves_random_voice_with_banner(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    start = time.monotonic()
    directory = load_model(None, random_dir=tmp_path / "random", random_size="tiny")
    assert time.monotonic() - start < 30
    assert directory.source == "generated-random" and directory.random_weights is True
    assert directory.path == tmp_path / "random" and directory.model_id is None
    assert "ModelScope is unreachable" in directory.source_detail and "127.0.0.1" in directory.source_detail
    err = capfd.readouterr().err
    assert BANNER in err and "every request returns NOISE" in err and directory.source_detail in err
    assert DEFAULT_MODEL_ID in err and ENV_MODEL_DIR in err
    mtime = (directory.path / "configuration.json").stat().st_mtime_ns
    again = resolve_model(None, random_dir=tmp_path / "random", random_size="tiny")
    assert (directory.path / "configuration.json").stat().st_mtime_ns == mtime  # reused, not regenerated
    assert again.random_weights and BANNER in capfd.readouterr().err


def test_explicit_id_offline_is_an_error_not_noise(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(
        ModelDirError, match=rf"cannot download model '{DAMO}': .*unreachable.*{ENV_MODEL_DIR}="
    ):
        resolve_model(DAMO)


def test_hub_without_the_model_is_an_error(
    env: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeModelScopeHub({"someone/else": tiny_model_dir}) as server:
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", server.url)
        with pytest.raises(ModelDirError, match=rf"ModelScope \({server.url}\) has no model {IIC} or {DAMO}"):
            resolve_model(None)
        assert not server.file_downloads()


def test_random_weights_follow_the_files(
    hub: FakeModelScopeHub, tiny_model_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A generated directory is flagged wherever it comes from: a path, or a hub that serves one."""
    local = load_model(str(tiny_model_dir))
    assert (local.source, local.random_weights) == ("path", True)
    assert BANNER in capfd.readouterr().err
    hub.repos["someone/random"] = tiny_model_dir
    served = load_model("someone/random")
    assert (served.source, served.random_weights) == ("modelscope-download", True)
    assert "holds generated random weights" in served.source_detail
    assert BANNER in capfd.readouterr().err


def test_cli_prints_provenance(hub: FakeModelScopeHub) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "engine.modeldir", "--model-dir", DAMO],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["source"] == "modelscope-download" and out["model_id"] == DAMO
    assert out["random_weights"] is False and out["voices"] == ["zhitian_emo", "zhiyan_emo"]


def test_progress_lines_for_big_files(
    hub: FakeModelScopeHub, released: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    big = released / "extras" / "big.bin"
    big.parent.mkdir()
    big.write_bytes(os.urandom(9_000_000))
    resolve_model(None)
    err = capfd.readouterr().err  # the client's own tqdm bars share the stream: keep our lines only
    lines = [
        ln.split("[tts-model] ", 1)[1] for ln in err.splitlines() if "[tts-model]   extras/big.bin" in ln
    ]
    assert lines[-1].startswith("  extras/big.bin: 9.0 MB in ")
    percents = [int(ln.split(": ")[1].split("%")[0]) for ln in lines[:-1]]
    assert len(percents) >= 5 and percents == sorted(percents) and all(0 < p < 100 for p in percents)
    assert "[tts-model]   voices/voices.json" not in err  # small files complete silently


def test_engine_cli_synthesizes_with_the_downloaded_voice(hub: FakeModelScopeHub, tmp_path: Path) -> None:
    """``python -m engine synth`` with no model given downloads the released voice and speaks with it."""
    out = tmp_path / "out.wav"
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "synth", "--text", "你好。", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"downloading {IIC} from {hub.url}" in proc.stderr and BANNER not in proc.stderr
    assert out.read_bytes()[:4] == b"RIFF" and out.stat().st_size > 1000
    assert {r.file_path for r in hub.file_downloads()} >= {CKPT, "configuration.json"}


def test_silent_hub_counts_as_unreachable(env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub that accepts the connection and never answers is given up on after the probe timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # connections complete in the backlog; nothing is ever read or written
        monkeypatch.setenv("MODELSCOPE_ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
        start = time.monotonic()
        got = resolve_model(None, timeout=0.5, random_dir=tmp_path / "random", random_size="tiny")
        elapsed = time.monotonic() - start
    assert got.source == "generated-random" and got.random_weights
    assert "unreachable" in got.detail and "timed out" in got.detail
    assert elapsed < 15  # probe bound ~0.5 s; the rest is generating the tiny voice
