"""The doctor on this environment and on deliberately broken ones: each problem named, with its remedy."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from compat import doctor
from compat.checks import audio, rules, runtime
from compat.doctor import DoctorOptions, run

ROOT = Path(__file__).resolve().parent.parent


def one(name: str, options: DoctorOptions | None = None) -> doctor.CheckResult:
    report = run(options or DoctorOptions(), only=[name])
    assert len(report.results) == 1, report.results
    return report.results[0]


def fake_module(name: str, version: str) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__version__ = version  # type: ignore[attr-defined]
    return module


# --- the real environment ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "python",
        "numpy",
        "scipy",
        "soundfile",
        "abi-scipy-numpy",
        "abi-soundfile",
        "abi-torch-numpy",
        "abi-soxr",
    ],
)
def test_healthy_environment_passes(name: str) -> None:
    result = one(name)
    assert result.status == "pass", result
    assert result.remedy == ""


def test_rules_pass_on_this_environment() -> None:
    report = run(only=["rule-numpy2-abi", "rule-numpy-aliases", "rule-cuda-on-cpu", "rule-legacy-tts"])
    assert report.ok, report.to_text()


def test_soundfile_reports_libsndfile_and_formats() -> None:
    result = one("soundfile")
    assert "libsndfile 1." in result.summary
    assert {"wav", "flac", "mulaw", "alaw"} <= set(result.details["writable"])


def test_unknown_check_name_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown check"):
        run(only=["no-such-check"])


# --- broken environments ----------------------------------------------------------------------------------


def test_numpy2_with_old_scipy_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "scipy", fake_module("scipy", "1.11.4"))
    result = one("rule-numpy2-abi")
    assert result.status == "fail"
    assert "scipy 1.11.4" in result.summary and "needs >=1.13.0" in result.summary
    assert "scipy>=1.13.0" in result.remedy


def test_numpy1_is_not_flagged_for_old_scipy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numpy", fake_module("numpy", "1.26.4"))
    monkeypatch.setitem(sys.modules, "scipy", fake_module("scipy", "1.11.4"))
    assert one("rule-numpy2-abi").status == "pass"


def test_pydantic_1_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    import fastapi  # noqa: F401  (real fastapi loaded before the fake pydantic goes in)

    monkeypatch.setitem(sys.modules, "pydantic", fake_module("pydantic", "1.10.13"))
    result = one("fastapi-pydantic")
    assert result.status == "fail"
    assert "pydantic 1.10.13" in result.summary and "pydantic>=2.7,<3" in result.remedy


def test_version_outside_requirements_fails(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("numpy>=1.26,<2\nnot-a-real-package-xyz>=1\n")
    options = DoctorOptions(project_root=tmp_path)
    numpy_result = one("numpy", options)
    assert numpy_result.status == "fail" and "outside requirements.txt" in numpy_result.summary
    assert "numpy<2" in numpy_result.remedy
    req = one("requirements", options)
    assert req.status == "fail"
    assert "not-a-real-package-xyz missing" in req.summary
    assert "does not match <2,>=1.26" in req.summary or "does not match" in req.summary
    assert "requirements.lock" in req.remedy


def test_soundfile_without_mp3_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    import soundfile as sf

    real = sf.available_formats
    monkeypatch.setattr(sf, "available_formats", lambda: {k: v for k, v in real().items() if k != "MP3"})
    result = one("soundfile")
    assert result.status == "warn"
    assert "cannot write mp3" in result.summary
    assert result.details["why_not"]["mp3"] == "format MP3 not available"
    assert "libsndfile" in result.remedy


def test_soundfile_without_flac_or_failing_opus(monkeypatch: pytest.MonkeyPatch) -> None:
    import soundfile as sf

    real_formats, real_write = sf.available_formats, sf.write

    def write(file, data, rate, **kw):  # type: ignore[no-untyped-def]
        if kw.get("subtype") == "OPUS":
            raise RuntimeError("Error opening <_io.BytesIO>: Unsupported encoding")
        return real_write(file, data, rate, **kw)

    monkeypatch.setattr(
        sf, "available_formats", lambda: {k: v for k, v in real_formats().items() if k != "FLAC"}
    )
    monkeypatch.setattr(sf, "write", write)
    result = one("soundfile")
    assert result.status == "fail"
    assert "cannot write flac" in result.summary
    assert "Unsupported encoding" in result.details["why_not"]["ogg-opus"]


def test_torch_thread_oversubscription_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setattr(runtime, "usable_cpus", lambda: 1.0)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    result = one("torch")
    assert result.status == "warn" and "oversubscription" in result.summary
    assert "OMP_NUM_THREADS" in result.remedy


def test_old_python_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "version_info", types.SimpleNamespace(major=3, minor=10, micro=14))
    result = one("python")
    assert result.status == "fail" and "3.10.14" in result.summary and "3.11" in result.remedy


def _fake_dist(site: Path, name: str, version: str) -> None:
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")


def test_cuda_packages_on_cpu_host_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if rules.gpu_present():
        pytest.skip("this host has a GPU")
    _fake_dist(tmp_path, "nvidia-cublas-cu12", "12.4.5.8")
    _fake_dist(tmp_path, "nvidia-cudnn-cu12", "9.1.0.70")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = one("rule-cuda-on-cpu")
    assert result.status == "fail"
    assert "nvidia-cublas-cu12" in result.summary and "no GPU" in result.summary
    assert "torch==2.13.0+cpu" in result.remedy


def test_legacy_kantts_install_is_named_with_its_np_float(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "kantts"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "pqmf.py").write_text(
        "import numpy as np\n\n\ndef taps(n):\n    return np.zeros(n, dtype=np.float)\n"
    )
    _fake_dist(tmp_path, "kantts", "0.1.0")
    monkeypatch.syspath_prepend(str(tmp_path))

    legacy = one("rule-legacy-tts")
    assert legacy.status == "fail"
    assert "kantts 0.1.0" in legacy.summary and "Python >=3.11" in legacy.summary
    assert "pip uninstall -y kantts" in legacy.remedy

    aliases = one("rule-numpy-aliases")
    assert aliases.status == "fail"
    assert f"{pkg / 'pqmf.py'}:5 np.float" in aliases.summary
    assert "numpy_scalar_aliases" in aliases.remedy

    from compat import shims

    with shims.apply("numpy_scalar_aliases"):
        assert one("rule-numpy-aliases").status == "warn"  # shimmed: still reported, no longer fatal


def test_scan_path_with_removed_aliases(tmp_path: Path) -> None:
    code = tmp_path / "legacy_frontend.py"
    code.write_text("import numpy\nX = numpy.NaN\nY = 'np.float in a string is fine'\nZ = numpy.float_(1)\n")
    result = one("rule-numpy-aliases", DoctorOptions(scan_paths=[tmp_path]))
    assert result.status == "fail"
    assert result.details["hits"] == [f"{code}:2 numpy.NaN", f"{code}:4 numpy.float_"]


def test_text_dictionary_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import pypinyin

    monkeypatch.setattr(
        pypinyin, "lazy_pinyin", lambda text, style=None: ["zhong4", "qing4", "yin2", "xing2"]
    )
    result = one("text-dicts")
    assert result.status == "fail" and "phrase dictionary" in result.summary
    assert "pypinyin" in result.remedy


def test_crashing_check_becomes_a_named_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(options: DoctorOptions) -> doctor.CheckResult:
        raise ImportError("numpy.ndarray size changed, may indicate binary incompatibility")

    import compat.checks

    monkeypatch.setitem(compat.checks.CHECKS, "scipy", boom)
    result = one("scipy")
    assert result.status == "fail"
    assert "check crashed: ImportError: numpy.ndarray size changed" in result.summary
    assert "make install" in result.remedy


def test_report_rendering_and_exit_semantics() -> None:
    report = doctor.Report(
        [doctor.ok("a", "fine"), doctor.fail("b", "broken thing", "do the fix"), doctor.skip("c", "n/a")], 0.5
    )
    assert not report.ok
    text = report.to_text()
    assert "FAIL  b  broken thing" in text and "remedy: do the fix" in text and "doctor FAILED" in text
    payload = json.loads(report.to_json())
    assert payload["ok"] is False and payload["counts"] == {"pass": 1, "warn": 0, "fail": 1, "skip": 1}
    assert payload["checks"][1]["remedy"] == "do the fix"


# --- model directory --------------------------------------------------------------------------------------


def test_model_dir_skipped_without_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TTS_MODEL_DIR", raising=False)
    assert one("model-dir").status == "skip"


def test_vocab_problems_name_field_and_shapes() -> None:
    import torch

    state = {key: torch.zeros(5, 2) for key in ("text_encoder.sy_emb.weight", "spk_tokenizer.weight")}
    problems = audio_free_vocab_problems(state)
    assert "v: vocab 'sy' has 4 symbols but text_encoder.sy_emb.weight has 5 rows" in problems
    assert "v: am checkpoint has no emo_tokenizer.weight" in problems
    assert not any("speaker" in p for p in problems)


def audio_free_vocab_problems(state: dict) -> list[str]:
    from compat.checks.model import vocab_problems

    sizes = {"sy": 4, "tone": 5, "syllable_flag": 5, "word_segment": 5, "emotion": 5, "speaker": 5}
    return vocab_problems("v", sizes, state)


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_model_dir_healthy_and_checksums(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = _copy(tiny_model_dir, tmp_path / "m")
    report = run(DoctorOptions(model_dir=model), only=["model-dir"])
    assert report.ok, report.to_text()
    assert report.by_name("model-vocab").status == "pass"
    from compat.checks.model import write_manifest

    write_manifest(model)
    assert run(DoctorOptions(model_dir=model), only=["model-dir"]).by_name("model-checksums").status == "pass"
    ckpt = next(model.glob("voices/*/voc/ckpt/checkpoint_0.pth"))
    data = bytearray(ckpt.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one corrupted byte
    ckpt.write_bytes(bytes(data))
    sums = run(DoctorOptions(model_dir=model), only=["model-dir"]).by_name("model-checksums")
    assert sums.status == "fail" and "checksum differs" in sums.summary and "re-download" in sums.remedy


def test_model_dir_wrong_vocab_size_is_named(tiny_model_dir: Path, tmp_path: Path) -> None:
    model = _copy(tiny_model_dir, tmp_path / "m")
    config = next(model.glob("voices/*/am/config.yaml"))
    voice = config.parent.parent.name
    text = config.read_text()
    assert "speaker_list: F7,F74,FBYN,FRXL,M7,xiaoyu" in text
    config.write_text(
        text.replace("speaker_list: F7,F74,FBYN,FRXL,M7,xiaoyu", "speaker_list: F7,F74,FBYN,FRXL,M7")
    )
    report = run(DoctorOptions(model_dir=model), only=["model-dir"])
    vocab = report.by_name("model-vocab")
    assert vocab.status == "fail" and not report.ok
    assert f"{voice}: vocab 'speaker' has 8 symbols but spk_tokenizer.weight has 9 rows" in vocab.summary
    assert "speaker_list" in vocab.remedy


def test_model_dir_legacy_numpy_checkpoint_points_at_the_shim(tiny_model_dir: Path, tmp_path: Path) -> None:
    import torch

    from tests.test_compat_shims import to_numpy1_pickle

    model = _copy(tiny_model_dir, tmp_path / "m")
    ckpt = next(model.glob("voices/*/am/ckpt/checkpoint_0.pth"))
    voice = ckpt.parents[2].name
    state = torch.load(ckpt, weights_only=True)
    to_numpy1_pickle({**state, "steps": np.int64(120000)}, ckpt)
    vocab = run(DoctorOptions(model_dir=model), only=["model-dir"]).by_name("model-vocab")
    assert vocab.status == "fail"
    assert vocab.details["legacy_voices"] == [voice] and "refusing" in vocab.summary
    assert "compat.apply('torch_load_legacy_numpy')" in vocab.remedy


def test_model_dir_bad_layout_is_named(tmp_path: Path) -> None:
    pytest.importorskip("engine.modeldir")
    (tmp_path / "configuration.json").write_text('{"model": {"type": "sambert-hifigan"}}')
    result = one("model-dir", DoctorOptions(model_dir=tmp_path))
    assert result.status == "fail" and "voices.json" in result.summary
    assert "voices/voices.json" in result.remedy


# --- command line -----------------------------------------------------------------------------------------


def test_cli_json_and_exit_codes(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "compat", "doctor", "--json", "--only", "python,rule-numpy-aliases"]
    good = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert good.returncode == 0, good.stdout + good.stderr
    assert json.loads(good.stdout)["ok"] is True
    (tmp_path / "old.py").write_text("import numpy as np\nnp.int(3)\n")
    bad = subprocess.run(
        [*cmd, "--scan", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert bad.returncode == 1
    failed = [c for c in json.loads(bad.stdout)["checks"] if c["status"] == "fail"]
    assert [c["name"] for c in failed] == ["rule-numpy-aliases"] and "np.int" in failed[0]["summary"]
    usage = subprocess.run([*cmd[:4], "--only", "nope"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert usage.returncode == 2 and "unknown check" in usage.stderr


def test_audio_targets_cover_the_service_formats() -> None:
    assert {t.label for t in audio.TARGETS} == {
        "wav",
        "flac",
        "mulaw",
        "alaw",
        "ogg-vorbis",
        "ogg-opus",
        "mp3",
    }
