"""Model-directory loader: layout, checkpoint scan, unsafe/corrupt files refused, fingerprint, resolution."""

from __future__ import annotations

import json
import pickle
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
import yaml

from engine.modeldir import (
    ENV_MODEL_DIR,
    ModelDirError,
    find_cached_model,
    load_checkpoint,
    load_model_dir,
    looks_like_model_id,
    resolve_model_dir,
    scan_checkpoint,
)
from engine.sambert import AcousticModel, WeightsError


@pytest.fixture
def model_dir(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's tiny model directory that a test may damage."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))


def test_loads_voices_in_order(model_dir: Path) -> None:
    md = load_model_dir(model_dir)
    assert list(md.voices) == ["zhitian_emo", "zhiyan_emo"]
    voice = md.default_voice
    assert voice.name == "zhitian_emo" and md.voice() is voice
    assert voice.am_checkpoint.name == "checkpoint_0.pth"
    assert voice.vocab.sizes() == {
        "sy": 147,
        "tone": 10,
        "syllable_flag": 8,
        "word_segment": 8,
        "emotion": 36,
        "speaker": 9,
    }
    assert voice.am_params()["speaker"] == 9
    assert voice.voc_params()["upsample_scales"] == [10, 5, 2, 2]
    assert voice.dict_dir is None
    assert set(voice.load_am_state()) >= {"spk_tokenizer.weight", "mel_postnet.fc.bias"}
    assert any(k.endswith("weight_g") for k in voice.load_voc_state())
    with pytest.raises(ModelDirError, match=r"unknown voice 'nobody'.*zhitian_emo, zhiyan_emo"):
        md.voice("nobody")


def test_voices_json_order_sets_default(model_dir: Path) -> None:
    (model_dir / "voices" / "voices.json").write_text(json.dumps({"voices": ["zhiyan_emo", "zhitian_emo"]}))
    assert load_model_dir(model_dir).default_voice.name == "zhiyan_emo"


def test_dict_dir_detected(model_dir: Path) -> None:
    (model_dir / "voices" / "zhitian_emo" / "dict" / "PinYin").mkdir(parents=True)
    assert load_model_dir(model_dir).default_voice.dict_dir == model_dir / "voices" / "zhitian_emo" / "dict"


def test_highest_checkpoint_index_wins(model_dir: Path) -> None:
    ckpt = model_dir / "voices" / "zhitian_emo" / "am" / "ckpt"
    for name in (
        "checkpoint_2.pth",
        "checkpoint_10.pth",
        "checkpoint_9.pth",
        "ckpt_99.pth",
        "checkpoint_x.pth",
    ):
        shutil.copy(ckpt / "checkpoint_0.pth", ckpt / name)
    assert scan_checkpoint(ckpt).name == "checkpoint_10.pth"
    assert load_model_dir(model_dir).default_voice.am_checkpoint.name == "checkpoint_10.pth"


@pytest.mark.parametrize(
    ("relative", "match"),
    [
        ("configuration.json", "configuration.json: expected the model card"),
        ("voices/voices.json", "voices.json: expected a voice list"),
        ("voices/zhiyan_emo/am/config.yaml", "am/config.yaml: expected the KAN-TTS SAMBERT config"),
        ("voices/zhitian_emo/voc/config.yaml", "voc/config.yaml: expected the KAN-TTS HiFi-GAN config"),
        ("voices/zhitian_emo/am/ckpt/checkpoint_0.pth", "no checkpoint_<N>.pth in .*am/ckpt"),
        ("voices/zhiyan_emo", "voices.json lists voice 'zhiyan_emo' but its directory is absent"),
    ],
)
def test_missing_files_are_named(model_dir: Path, relative: str, match: str) -> None:
    target = model_dir / relative
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(ModelDirError, match=match):
        load_model_dir(model_dir)


def test_malformed_configs(model_dir: Path) -> None:
    (model_dir / "voices" / "voices.json").write_text("{not json")
    with pytest.raises(ModelDirError, match=r"cannot parse .*voices.json"):
        load_model_dir(model_dir)
    (model_dir / "voices" / "voices.json").write_text(json.dumps({"voices": []}))
    with pytest.raises(ModelDirError, match="non-empty 'voices' list"):
        load_model_dir(model_dir)
    (model_dir / "voices" / "voices.json").write_text(json.dumps({"voices": ["zhitian_emo"]}))
    am_cfg = model_dir / "voices" / "zhitian_emo" / "am" / "config.yaml"
    cfg = yaml.safe_load(am_cfg.read_text())
    del cfg["Model"]
    am_cfg.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ModelDirError, match=r"am/config.yaml: expected a mapping Model.KanTtsSAMBERT.params"):
        load_model_dir(model_dir)


def test_corrupt_checkpoint(model_dir: Path) -> None:
    ckpt = model_dir / "voices" / "zhitian_emo" / "am" / "ckpt" / "checkpoint_0.pth"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    voice = load_model_dir(model_dir).default_voice
    with pytest.raises(ModelDirError, match=r"cannot read .*checkpoint_0.pth: expected a PyTorch checkpoint"):
        voice.load_am_state()


class Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def test_unsafe_pickle_refused(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint_0.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": Evil()}, path)
    with pytest.raises(ModelDirError, match=r"refusing .*unsafe unpickling"):
        load_checkpoint(path)
    path.write_bytes(pickle.dumps({"x": Evil()}, protocol=2))
    with pytest.raises(ModelDirError, match=str(path.name)):
        load_checkpoint(path)


def test_checkpoint_layout_errors(model_dir: Path) -> None:
    voice = load_model_dir(model_dir).default_voice
    torch.save({"state_dict": {}}, voice.am_checkpoint)
    with pytest.raises(ModelDirError, match=r"expected checkpoint\['model'\]"):
        voice.load_am_state()
    torch.save({"model": {"discriminator": {}}}, voice.voc_checkpoint)
    with pytest.raises(ModelDirError, match=r"expected checkpoint\['model'\]\['generator'\]"):
        voice.load_voc_state()


def test_wrong_vocab_size_is_explained(model_dir: Path) -> None:
    am_cfg = model_dir / "voices" / "zhitian_emo" / "am" / "config.yaml"
    cfg = yaml.safe_load(am_cfg.read_text())
    cfg["linguistic_unit"]["speaker_list"] = "F7"
    am_cfg.write_text(yaml.safe_dump(cfg))
    voice = load_model_dir(model_dir).default_voice
    assert voice.vocab.sizes()["speaker"] == 4
    with pytest.raises(WeightsError, match=r"spk_tokenizer.weight has 9 rows .* speaker vocabulary of 4"):
        AcousticModel.from_voice(voice)


def test_has_mask_false_in_model_card_drops_mask(model_dir: Path) -> None:
    card = json.loads((model_dir / "configuration.json").read_text())
    card["model"]["am"]["linguistic_unit"]["has_mask"] = False
    (model_dir / "configuration.json").write_text(json.dumps(card))
    assert load_model_dir(model_dir).default_voice.vocab.sizes()["sy"] == 146


def test_version_fingerprint(model_dir: Path, tiny_model_dir: Path) -> None:
    a = load_model_dir(model_dir).version
    assert len(a) == 64 and a == load_model_dir(tiny_model_dir).version
    ckpt = model_dir / "voices" / "zhiyan_emo" / "voc" / "ckpt" / "checkpoint_0.pth"
    state = torch.load(ckpt, weights_only=True)
    state["steps"] = 1
    torch.save(state, ckpt)
    assert load_model_dir(model_dir).version != a


def test_resolve_local_and_env(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_model_dir(model_dir) == model_dir
    monkeypatch.setenv(ENV_MODEL_DIR, str(model_dir))
    assert resolve_model_dir(None) == model_dir
    with pytest.raises(ModelDirError, match=f"does not exist; .*{ENV_MODEL_DIR}.*--model-dir"):
        resolve_model_dir(str(model_dir / "nope"))


@pytest.mark.parametrize(
    "layout",
    [
        "models/damo--some_model/snapshots/master",  # modelscope_hub (modelscope >= 1.38)
        "models/damo/some_model",  # modelscope 1.x with MODELSCOPE_CACHE set
        "hub/models/damo/some_model",  # modelscope 1.x default cache
        "hub/damo/some_model",  # older SDKs
        "damo/some_model",
    ],
)
def test_resolve_uses_modelscope_cache(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    cache = tmp_path / "mscache"
    shutil.copytree(model_dir, cache / layout)
    monkeypatch.setenv("MODELSCOPE_CACHE", str(cache))
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", "http://127.0.0.1:9")  # never asked: the cache answers
    assert resolve_model_dir("damo/some_model") == cache / layout


def test_incomplete_cached_copy_is_skipped(model_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "mscache"
    partial = Path(shutil.copytree(model_dir, cache / "models" / "damo--m" / "snapshots" / "master"))
    (partial / "voices" / "zhiyan_emo" / "voc" / "ckpt" / "checkpoint_0.pth").unlink()
    shutil.copytree(model_dir, cache / "hub" / "damo" / "m")
    assert find_cached_model(["damo/m"], cache) == ("damo/m", cache / "hub" / "damo" / "m")
    shutil.rmtree(cache / "hub")
    assert find_cached_model(["damo/m"], cache) is None


def test_offline_model_id_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connections are refused
    monkeypatch.setenv("MODELSCOPE_DOMAIN", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv(ENV_MODEL_DIR, raising=False)
    start = time.monotonic()
    with pytest.raises(ModelDirError, match=rf"unreachable.*{ENV_MODEL_DIR}=.*--model-dir"):
        resolve_model_dir("damo/speech_sambert-hifigan_tts_zh-cn_16k")
    monkeypatch.setenv(ENV_MODEL_DIR, "iic/speech_sambert-hifigan_tts_zh-cn_16k")  # an explicit id, via env
    with pytest.raises(ModelDirError, match="unreachable"):
        resolve_model_dir(None)
    assert time.monotonic() - start < 10


@pytest.mark.parametrize(
    ("text", "is_id"),
    [
        ("iic/speech_sambert-hifigan_tts_zh-cn_16k", True),
        ("owner/name", True),
        ("./owner/name", False),
        ("/abs/path", False),
        ("~/models/x", False),
        ("a/b/c", False),
        ("plain", False),
        ("/x", False),
    ],
)
def test_model_id_vs_path(text: str, is_id: bool) -> None:
    assert looks_like_model_id(text) is is_id


def test_missing_path_is_not_mistaken_for_an_id(tmp_path: Path) -> None:
    with pytest.raises(ModelDirError, match=r"model directory .*/a/b/c does not exist; .*TTS_MODEL_DIR"):
        resolve_model_dir(str(tmp_path / "a" / "b" / "c"))
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelDirError, match=r"file is not a directory: expected a model directory"):
        resolve_model_dir(str(tmp_path / "file"))
