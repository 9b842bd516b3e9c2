"""Model-directory loader for the ModelScope Sambert-HifiGan layout (spec §1).

    <dir>/configuration.json
    <dir>/voices/voices.json                {"voices": [...]}, first = default
    <dir>/voices/<voice>/am/config.yaml     KAN-TTS SAMBERT config (+ linguistic_unit, audio_config)
    <dir>/voices/<voice>/am/ckpt/checkpoint_<N>.pth   (highest N wins)
    <dir>/voices/<voice>/voc/config.yaml, voc/ckpt/checkpoint_<N>.pth
    <dir>/voices/<voice>/dict/              optional linguistic dictionaries

Checkpoints are read with ``torch.load(weights_only=True)``; anything needing unsafe unpickling is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
import yaml

from engine.symbols import LinguisticVocab, SymbolError

ENV_MODEL_DIR = "TTS_MODEL_DIR"
DEFAULT_MODEL_ID = "damo/speech_sambert-hifigan_tts_zh-cn_16k"
HOW_TO_POINT = (
    f"point at a local model directory with the environment variable {ENV_MODEL_DIR}=/path/to/model "
    "or the CLI flag --model-dir /path/to/model (a random one for testing: "
    "python -m engine.testing.make_model_dir OUT --size full)"
)


class ModelDirError(RuntimeError):
    """The model directory (or a file in it) is missing, unreadable or not what the engine expects."""


@dataclass(frozen=True)
class VoiceSpec:
    """One voice of a model directory, with parsed configs and the chosen checkpoints."""

    name: str
    path: Path
    am_config: dict[str, Any]
    voc_config: dict[str, Any]
    am_checkpoint: Path
    voc_checkpoint: Path
    vocab: LinguisticVocab
    dict_dir: Path | None = None

    def am_params(self) -> dict[str, Any]:
        """``Model.KanTtsSAMBERT.params`` + vocabulary sizes, merged as modelscope's ``Voice`` does."""
        try:
            params = dict(self.am_config["Model"]["KanTtsSAMBERT"]["params"])
        except (KeyError, TypeError):
            raise ModelDirError(
                f"{self.path / 'am' / 'config.yaml'}: expected a mapping Model.KanTtsSAMBERT.params"
            ) from None
        params.update(self.vocab.sizes())
        return params

    def voc_params(self) -> dict[str, Any]:
        """``Model.Generator.params`` of ``voc/config.yaml``."""
        try:
            return dict(self.voc_config["Model"]["Generator"]["params"])
        except (KeyError, TypeError):
            raise ModelDirError(
                f"{self.path / 'voc' / 'config.yaml'}: expected a mapping Model.Generator.params"
            ) from None

    def load_am_state(self) -> dict[str, torch.Tensor]:
        """The AM weights, ``checkpoint['model']``."""
        return _tensor_dict(load_checkpoint(self.am_checkpoint), ("model",), self.am_checkpoint)

    def load_voc_state(self) -> dict[str, torch.Tensor]:
        """The vocoder generator weights, ``checkpoint['model']['generator']``."""
        return _tensor_dict(load_checkpoint(self.voc_checkpoint), ("model", "generator"), self.voc_checkpoint)


@dataclass
class ModelDirectory:
    """A loaded model directory: its voices (insertion order; the first is the default)."""

    path: Path
    configuration: dict[str, Any]
    voices: dict[str, VoiceSpec]
    _version: str | None = field(default=None, repr=False)

    @property
    def default_voice(self) -> VoiceSpec:
        return next(iter(self.voices.values()))

    def voice(self, name: str | None = None) -> VoiceSpec:
        if name is None:
            return self.default_voice
        try:
            return self.voices[name]
        except KeyError:
            raise ModelDirError(f"unknown voice {name!r}; this model has {', '.join(self.voices)}") from None

    @property
    def version(self) -> str:
        """sha256 fingerprint of all configs and checkpoint bytes (cached per file size + mtime)."""
        if self._version is None:
            digest = hashlib.sha256()
            files = [self.path / "configuration.json", self.path / "voices" / "voices.json"]
            for v in self.voices.values():
                files += [v.path / "am" / "config.yaml", v.path / "voc" / "config.yaml"]
                files += [v.am_checkpoint, v.voc_checkpoint]
            for f in files:
                digest.update(str(f.relative_to(self.path)).encode())
                digest.update(bytes.fromhex(_file_sha256(f)))
            self._version = digest.hexdigest()
        return self._version


_HASH_CACHE: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def _file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        if key in _HASH_CACHE:
            return _HASH_CACHE[key]
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    with _HASH_LOCK:
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ModelDirError(f"missing {path}: expected {what}")
    return path


def _read_mapping(path: Path, what: str, parse: Callable[[str], Any], kind: str) -> dict[str, Any]:
    """Parse a JSON/YAML file that must hold a mapping; every failure names the file and the expectation."""
    _require_file(path, what)
    try:
        data = parse(path.read_text("utf-8"))
    except (
        OSError,
        UnicodeDecodeError,
        ValueError,
        yaml.YAMLError,
    ) as exc:  # JSONDecodeError is a ValueError
        raise ModelDirError(f"cannot parse {path}: expected {what} ({exc})") from None
    if not isinstance(data, dict):
        raise ModelDirError(f"{path}: expected {what} (a {kind} mapping, got {type(data).__name__})")
    return data


def _read_json(path: Path, what: str) -> dict[str, Any]:
    return _read_mapping(path, what, json.loads, "JSON")


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    return _read_mapping(path, what, yaml.safe_load, "YAML")


def scan_checkpoint(ckpt_dir: Path) -> Path:
    """The highest-index ``checkpoint_<N>.pth`` (modelscope's rule: names longer than 15 characters)."""
    if not ckpt_dir.is_dir():
        raise ModelDirError(f"missing {ckpt_dir}: expected a directory holding checkpoint_<N>.pth")
    best: tuple[int, Path] | None = None
    for f in ckpt_dir.iterdir():
        name = f.name
        if not (name.startswith("checkpoint") and name.endswith(".pth") and len(name) > 15):
            continue
        try:
            index = int(name.split(".")[0].split("_")[-1])
        except ValueError:
            continue
        if best is None or index > best[0]:
            best = (index, f)
    if best is None:
        raise ModelDirError(f"no checkpoint_<N>.pth in {ckpt_dir}: expected at least checkpoint_0.pth")
    return best[1]


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` on CPU; unsafe or corrupt files raise :class:`ModelDirError`."""
    path = Path(path)
    _require_file(path, "a PyTorch checkpoint (.pth)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text or "WeightsUnpickler" in text:
            raise ModelDirError(
                f"refusing {path}: loading it needs unsafe unpickling (arbitrary Python objects); only "
                "checkpoints of tensors and plain containers are accepted"
            ) from None
        raise ModelDirError(
            f"cannot read {path}: expected a PyTorch checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(obj, dict):
        raise ModelDirError(f"{path}: expected a checkpoint dict, got {type(obj).__name__}")
    return obj


def _tensor_dict(ckpt: Mapping[str, Any], keys: tuple[str, ...], path: Path) -> dict[str, torch.Tensor]:
    node: Any = ckpt
    for i, key in enumerate(keys):
        if not isinstance(node, Mapping) or key not in node:
            where = "".join(f"[{k!r}]" for k in keys[: i + 1])
            raise ModelDirError(f"{path}: expected checkpoint{where} (a state dict), not found")
        node = node[key]
    bad = [k for k, v in node.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ModelDirError(f"{path}: state dict entries {bad[:3]} are not tensors")
    return dict(node)


def load_voice(root: Path, name: str, ignore_mask: bool = False) -> VoiceSpec:
    vdir = root / "voices" / name
    if not vdir.is_dir():
        raise ModelDirError(f"missing {vdir}: voices.json lists voice {name!r} but its directory is absent")
    am_cfg = _read_yaml(
        vdir / "am" / "config.yaml", "the KAN-TTS SAMBERT config (Model.KanTtsSAMBERT.params)"
    )
    voc_cfg = _read_yaml(vdir / "voc" / "config.yaml", "the KAN-TTS HiFi-GAN config (Model.Generator.params)")
    dict_dir = vdir / "dict" if (vdir / "dict").is_dir() else None
    unit = am_cfg.get("linguistic_unit")
    if not isinstance(unit, dict):
        raise ModelDirError(f"{vdir / 'am' / 'config.yaml'}: expected a 'linguistic_unit' mapping")
    if ignore_mask and "has_mask" not in unit:
        am_cfg = {**am_cfg, "linguistic_unit": {**unit, "has_mask": False}}
    try:
        vocab = LinguisticVocab.from_am_config(am_cfg, dict_dir)
    except SymbolError as exc:
        raise ModelDirError(f"{vdir / 'am' / 'config.yaml'}: {exc}") from None
    spec = VoiceSpec(
        name=name,
        path=vdir,
        am_config=am_cfg,
        voc_config=voc_cfg,
        am_checkpoint=scan_checkpoint(vdir / "am" / "ckpt"),
        voc_checkpoint=scan_checkpoint(vdir / "voc" / "ckpt"),
        vocab=vocab,
        dict_dir=dict_dir,
    )
    spec.am_params()
    spec.voc_params()
    return spec


def load_model_dir(path: str | os.PathLike[str]) -> ModelDirectory:
    """Parse a ModelScope-layout directory; every problem raises :class:`ModelDirError` naming the file."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise ModelDirError(f"model directory {root} does not exist; {HOW_TO_POINT}")
    configuration = _read_json(root / "configuration.json", 'the model card ({"model": {"type": ...}})')
    listing = _read_json(root / "voices" / "voices.json", 'a voice list {"voices": ["zhitian_emo", ...]}')
    names = listing.get("voices")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ModelDirError(f"{root / 'voices' / 'voices.json'}: expected a non-empty 'voices' list of names")
    model_card = configuration.get("model") if isinstance(configuration.get("model"), dict) else {}
    am_card = model_card.get("am") if isinstance(model_card.get("am"), dict) else {}
    unit_card = am_card.get("linguistic_unit") if isinstance(am_card.get("linguistic_unit"), dict) else {}
    ignore_mask = unit_card.get("has_mask") is False
    voices = {name: load_voice(root, name, ignore_mask) for name in dict.fromkeys(names)}
    return ModelDirectory(path=root, configuration=configuration, voices=voices)


def _modelscope_cache_dir(model_id: str) -> Path:
    base = Path(os.environ.get("MODELSCOPE_CACHE", Path.home() / ".cache" / "modelscope")).expanduser()
    for candidate in (base / "hub" / model_id, base / "hub" / "models" / model_id, base / model_id):
        if (candidate / "configuration.json").is_file():
            return candidate
    return base / "hub" / model_id


def _modelscope_endpoint() -> tuple[str, int]:
    domain = os.environ.get("MODELSCOPE_DOMAIN") or "www.modelscope.cn"
    url = urlsplit(domain if "://" in domain else f"https://{domain}")
    port = url.port or (80 if url.scheme == "http" else 443)
    return url.hostname or "www.modelscope.cn", port


def _reachable(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_model_dir(path_or_model_id: str | os.PathLike[str] | None = None, timeout: float = 3.0) -> Path:
    """A local directory for ``path_or_model_id`` (or ``$TTS_MODEL_DIR``, or the default model id).

    A ModelScope model id is taken from the local ModelScope cache or fetched with ``snapshot_download``.
    Offline, this fails within ``timeout`` seconds with a message saying how to point at a local directory.
    """
    target = path_or_model_id if path_or_model_id not in (None, "") else os.environ.get(ENV_MODEL_DIR)
    if target in (None, ""):
        target = DEFAULT_MODEL_ID
    text = os.fspath(target)
    local = Path(text).expanduser()
    if local.is_dir():
        return local
    looks_like_id = text.count("/") == 1 and not text.startswith((".", "/", "~")) and not local.exists()
    if not looks_like_id:
        raise ModelDirError(f"model directory {local} does not exist; {HOW_TO_POINT}")
    cached = _modelscope_cache_dir(text)
    if (cached / "configuration.json").is_file():
        return cached
    host, port = _modelscope_endpoint()
    if not _reachable(host, port, timeout):
        raise ModelDirError(
            f"cannot download model {text!r}: ModelScope ({host}:{port}) is unreachable (offline?); "
            f"{HOW_TO_POINT}"
        )
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError as exc:
        raise ModelDirError(
            f"cannot download model {text!r}: modelscope is not installed ({exc}); {HOW_TO_POINT}"
        ) from None
    try:
        return Path(snapshot_download(text))
    except Exception as exc:
        raise ModelDirError(
            f"downloading model {text!r} from ModelScope failed ({exc}); {HOW_TO_POINT}"
        ) from None
