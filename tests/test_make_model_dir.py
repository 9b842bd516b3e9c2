"""The random model-directory generator: layout, released dimensions, determinism, atomic writes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from engine.modeldir import load_model_dir
from engine.testing import make_model_dir as gen
from tests.test_sambert_model import parse_dump

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parent.parent


def digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_cli_subprocess_writes_tiny_dir(tmp_path: Path) -> None:
    out = tmp_path / "m"
    cmd = [
        sys.executable,
        "-m",
        "engine.testing.make_model_dir",
        str(out),
        "--size",
        "tiny",
        "--voices",
        "a",
        "b",
    ]
    done = subprocess.run([*cmd, "--seed", "3"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    md = load_model_dir(out)
    assert list(md.voices) == ["a", "b"]
    unit = md.default_voice.am_config["linguistic_unit"]
    assert unit["speaker_list"] == "F7,F74,FBYN,FRXL,M7,xiaoyu"
    assert md.default_voice.am_config["audio_config"]["sampling_rate"] == 16000
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_main_in_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m"
    assert gen.main([str(out), "--size", "tiny", "--voices", "x", "--non-causal"]) == 0
    voice = load_model_dir(out).default_voice
    assert voice.name == "x" and voice.voc_params()["causal"] is False
    assert gen.main([str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert gen.main([str(tmp_path / "n"), "--voices", "x", "x"]) == 2


def test_deterministic_per_seed(tmp_path: Path) -> None:
    a = digest(gen.write_model_dir(tmp_path / "a", "tiny", ["v"], seed=7))
    b = digest(gen.write_model_dir(tmp_path / "b", "tiny", ["v"], seed=7))
    c = digest(gen.write_model_dir(tmp_path / "c", "tiny", ["v"], seed=8))
    assert a == b
    assert a["voices/v/am/ckpt/checkpoint_0.pth"] != c["voices/v/am/ckpt/checkpoint_0.pth"]


def test_crash_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(gen, "random_voc_state", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        gen.write_model_dir(tmp_path / "out", "tiny")
    assert list(tmp_path.iterdir()) == []


def test_non_causal_vocoder_config() -> None:
    params = gen.voc_config("full", causal=False)["Model"]["Generator"]["params"]
    assert params["causal"] is False and params["upsample_kernal_sizes"] == [20, 11, 4, 4]


def test_full_size_has_released_dimensions(tmp_path: Path) -> None:
    out = gen.write_model_dir(tmp_path / "full", "full")
    voice = load_model_dir(out).default_voice
    assert list(load_model_dir(out).voices) == ["zhitian_emo"]
    am = {k: list(v.shape) for k, v in voice.load_am_state().items()}
    assert am == parse_dump(DATA / "sambert_state_dict.txt")
    voc = {k: list(v.shape) for k, v in voice.load_voc_state().items()}
    assert voc == parse_dump(DATA / "hifigan_state_dict.txt")
    params = yaml.safe_load((voice.path / "voc" / "config.yaml").read_text())["Model"]["Generator"]["params"]
    assert params == gen.FULL_VOC_PARAMS
    ckpt = torch.load(voice.am_checkpoint, weights_only=True)
    assert set(ckpt) == {"model", "steps"}
