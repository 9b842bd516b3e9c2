"""Model-directory loader for the ModelScope Sambert-HifiGan layout (spec §1).

    <dir>/configuration.json
    <dir>/voices/voices.json                {"voices": [...]}, first = default
    <dir>/voices/<voice>/am/config.yaml     KAN-TTS SAMBERT config (+ linguistic_unit, audio_config)
    <dir>/voices/<voice>/am/ckpt/checkpoint_<N>.pth   (highest N wins)
    <dir>/voices/<voice>/voc/config.yaml, voc/ckpt/checkpoint_<N>.pth
    <dir>/voices/<voice>/dict/              optional linguistic dictionaries

Checkpoints are read with ``torch.load(weights_only=True)``; anything needing unsafe unpickling is refused.
Importing this module never imports torch: the ingress and the text frontend, which run no model, use it for
the voices, vocabularies and provenance (``tests/test_torch_free.py``). Only the checkpoint readers
(:func:`load_checkpoint`, ``VoiceSpec.load_am_state``/``load_voc_state``) import torch, when called.

Which directory to serve (:func:`resolve_model`, first match wins):

1. ``--model-dir`` / ``$TTS_MODEL_DIR``: a local directory, or a ModelScope model id (cache, else download).
2. The released voice (``iic/`` or ``damo/speech_sambert-hifigan_tts_zh-cn_16k``) in the ModelScope cache.
3. The released voice downloaded with the ``modelscope`` client's ``snapshot_download`` (resumable).
4. Only when ModelScope is unreachable: a generated full-size voice with RANDOM weights (audio is noise),
   announced by a console banner and by ``ModelDirectory.random_weights``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import quote

import yaml

from engine.symbols import LinguisticVocab, SymbolError

if TYPE_CHECKING:
    import torch

ENV_MODEL_DIR = "TTS_MODEL_DIR"
RELEASED_MODEL_NAME = "speech_sambert-hifigan_tts_zh-cn_16k"
# ModelScope moved the damo/ models to iic/; both names are accepted, each one's cache satisfies the other.
RELEASED_MODEL_IDS = (f"iic/{RELEASED_MODEL_NAME}", f"damo/{RELEASED_MODEL_NAME}")
DEFAULT_MODEL_ID = RELEASED_MODEL_IDS[0]
HOW_TO_POINT = (
    f"point at a local model directory with the environment variable {ENV_MODEL_DIR}=/path/to/model "
    "or the CLI flag --model-dir /path/to/model (either also takes a ModelScope id such as "
    f"{DEFAULT_MODEL_ID}; a random one for testing: python -m engine.testing.make_model_dir OUT --size full)"
)
# Where a model came from (``ModelDirectory.source`` / ``ResolvedModel.source``).
SOURCE_PATH = "path"
SOURCE_CACHE = "modelscope-cache"
SOURCE_DOWNLOAD = "modelscope-download"
SOURCE_RANDOM = "generated-random"
SOURCES = (SOURCE_PATH, SOURCE_CACHE, SOURCE_DOWNLOAD, SOURCE_RANDOM)
# modelscope_hub's DEFAULT_ENDPOINT and DEFAULT_INTL_ENDPOINT, tried in the client's order.
MODELSCOPE_ENDPOINTS = ("https://modelscope.cn", "https://www.modelscope.ai")
# resource.zip holds ttsfrd's frontend resources; this engine has its own frontend and never reads it.
DOWNLOAD_IGNORE = ["resource.zip"]
GENERATED_DIR = Path(__file__).resolve().parent.parent / "models" / "_generated"  # git-ignored (/models/)
VOCODER_PRECISIONS = ("fp32", "bf16")  # the vocoder's arithmetic: faithful, or opt-in and quality-gated

log = logging.getLogger("tts.model")


def check_vocoder_precision(precision: str) -> str:
    """``precision`` when it is one of :data:`VOCODER_PRECISIONS`, else a ValueError saying which are."""
    if precision not in VOCODER_PRECISIONS:
        raise ValueError(f"vocoder_precision must be 'fp32' or 'bf16', got {precision!r}")
    return precision


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
    """A loaded model directory: its voices (insertion order; the first is the default), and its origin.

    ``source`` is one of :data:`SOURCES`; ``model_id`` the ModelScope id when from the hub or its cache;
    ``source_detail`` one sentence saying why this directory was chosen.
    """

    path: Path
    configuration: dict[str, Any]
    voices: dict[str, VoiceSpec]
    source: str = SOURCE_PATH
    model_id: str | None = None
    source_detail: str = ""
    _version: str | None = field(default=None, repr=False)

    @property
    def random_weights(self) -> bool:
        """True for a voice generated by ``engine.testing.make_model_dir``: untrained, its audio is noise."""
        return is_random_weights(self.configuration)

    def provenance(self) -> dict[str, Any]:
        """``{source, model_id, random_weights, path, detail}``: what to show a user about this model."""
        return _provenance(self.source, self.model_id, self.random_weights, self.path, self.source_detail)

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

    def audio_version(self, vocoder_precision: str = "fp32") -> str:
        """What produces the audio: :attr:`version`, plus the vocoder arithmetic when it is not the faithful
        fp32 (``…+bf16``). Cache keys, ``/ready`` and ``Synthesizer.model_version`` report it."""
        return self.version + ("" if vocoder_precision == "fp32" else f"+{vocoder_precision}")


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
    import torch  # here, not at module level: see the module docstring

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
    import torch

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


# ------------------------------------------------------------------------------------------------------------
# Resolution: which directory to serve (path → ModelScope cache → download → random voice only when offline)
# ------------------------------------------------------------------------------------------------------------


class HubUnreachableError(ModelDirError):
    """No ModelScope endpoint answered (DNS, connection, timeout, proxy or server error)."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model directory chosen by :func:`resolve_model`, before loading."""

    path: Path
    source: str  # one of SOURCES
    model_id: str | None = None
    detail: str = ""

    @property
    def random_weights(self) -> bool:
        return is_random_model_dir(self.path)

    def provenance(self) -> dict[str, Any]:
        """``{source, model_id, random_weights, path, detail}``, as :meth:`ModelDirectory.provenance`."""
        return _provenance(self.source, self.model_id, self.random_weights, self.path, self.detail)


def _provenance(source: str, model_id: str | None, random: bool, path: Path, detail: str) -> dict[str, Any]:
    return {
        "source": source,
        "model_id": model_id,
        "random_weights": random,
        "path": str(path),
        "detail": detail,
    }


def is_random_weights(configuration: Mapping[str, Any]) -> bool:
    """Whether a ``configuration.json`` marks generated random weights (``generated.random_weights``)."""
    generated = configuration.get("generated")
    return isinstance(generated, Mapping) and generated.get("random_weights") is True


def is_random_model_dir(path: str | os.PathLike[str]) -> bool:
    try:
        card = json.loads((Path(path) / "configuration.json").read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(card, dict) and is_random_weights(card)


def looks_like_model_id(text: str) -> bool:
    """``owner/name`` that is not a local path (``./x``, ``/x``, ``~/x`` or an existing file)."""
    owner, _, name = text.partition("/")
    return (
        bool(owner and name)
        and "/" not in name
        and not text.startswith((".", "/", "~"))
        and not Path(text).expanduser().exists()
    )


def model_id_aliases(model_id: str) -> tuple[str, ...]:
    """The ids naming the same model: both released names for either of them, else just the id."""
    if model_id in RELEASED_MODEL_IDS:
        return (model_id, *(m for m in RELEASED_MODEL_IDS if m != model_id))
    return (model_id,)


def modelscope_cache_root() -> Path:
    """``$MODELSCOPE_CACHE`` or ``~/.cache/modelscope``, as the modelscope client chooses it."""
    return Path(os.environ.get("MODELSCOPE_CACHE") or Path.home() / ".cache" / "modelscope").expanduser()


def modelscope_endpoints() -> tuple[str, ...]:
    """The hub endpoints to try, as the modelscope client picks them.

    ``$MODELSCOPE_ENDPOINT``, else the deprecated ``$MODELSCOPE_DOMAIN`` (``https://`` added when there is no
    scheme), else the client's defaults (modelscope.cn, then modelscope.ai).
    """
    explicit = (os.environ.get("MODELSCOPE_ENDPOINT") or os.environ.get("MODELSCOPE_DOMAIN") or "").strip()
    if not explicit:
        return MODELSCOPE_ENDPOINTS
    if not explicit.lower().startswith(("http://", "https://")):
        explicit = f"https://{explicit}"
    return (explicit.rstrip("/"),)


def cache_candidates(model_id: str, cache_root: Path) -> list[Path]:
    """Every place a modelscope client (old or new) may have stored ``model_id``, in the order they are tried.

    modelscope_hub: ``models/<owner>--<name>/snapshots/<revision>`` and the pre-1.38 layouts it reuses
    (``[hub/]models/<owner>/<name with . → ___>``); older SDKs: ``hub/<owner>/<name>``, ``<owner>/<name>``.
    """
    owner, _, name = model_id.partition("/")
    safe = name.replace(".", "___")
    snapshots = cache_root / "models" / f"{owner}--{name}" / "snapshots"
    out = [snapshots / "master", snapshots / "main"]
    if snapshots.is_dir():
        out += sorted(p for p in snapshots.iterdir() if p.is_dir() and p not in out)
    out += [
        cache_root / "models" / owner / safe,
        cache_root / "hub" / "models" / owner / safe,
        cache_root / "models" / owner / name,
        cache_root / "hub" / owner / name,
        cache_root / owner / name,
    ]
    return list(dict.fromkeys(out))


def find_cached_model(model_ids: Sequence[str], cache_root: Path | None = None) -> tuple[str, Path] | None:
    """The first complete cached copy of any of ``model_ids`` (a partial download does not count)."""
    root = cache_root or modelscope_cache_root()
    for model_id in model_ids:
        for candidate in cache_candidates(model_id, root):
            if not (candidate / "configuration.json").is_file():
                continue
            try:
                load_model_dir(candidate)
            except ModelDirError as exc:
                log.info("ignoring incomplete cached copy %s: %s", candidate, exc)
                continue
            return model_id, candidate
    return None


def _probe_hub(endpoint: str, model_ids: Sequence[str], timeout: float) -> str | None:
    """The first of ``model_ids`` the hub knows (None: it answered 404 for all); unreachable → raises."""
    for model_id in model_ids:
        url = f"{endpoint}/api/v1/models/{quote(model_id)}"
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                body = resp.read(1 << 20)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                continue
            raise HubUnreachableError(f"{endpoint} answered HTTP {exc.code}") from None
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused, DNS, bad proxy
            reason = getattr(exc, "reason", exc)
            raise HubUnreachableError(f"{endpoint} is unreachable ({reason})") from None
        try:
            card = json.loads(body)
        except ValueError:
            raise HubUnreachableError(f"{endpoint} did not answer like a ModelScope hub (not JSON)") from None
        if isinstance(card, dict) and card.get("Success") is False:
            continue
        return model_id
    return None


def _bounded(probe: Callable[[], str | None], seconds: float, endpoint: str) -> str | None:
    """``probe()`` with a wall-clock bound: socket timeouts do not cover DNS lookups, which can hang."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["found"] = probe()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=run, name="modelscope-probe", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise HubUnreachableError(f"{endpoint} did not answer within {seconds:.0f} s")
    if "error" in box:
        raise box["error"]
    return box.get("found")


def _pick_endpoint(model_ids: Sequence[str], timeout: float) -> tuple[str, str]:
    """(endpoint, model id) of the first reachable hub that has one of ``model_ids``."""
    problems = []
    for endpoint in modelscope_endpoints():
        try:
            found = _bounded(lambda e=endpoint: _probe_hub(e, model_ids, timeout), 2 * timeout + 1, endpoint)
        except HubUnreachableError as exc:
            problems.append(str(exc))
            continue
        if found is None:
            raise ModelDirError(
                f"ModelScope ({endpoint}) has no model {' or '.join(model_ids)}; {HOW_TO_POINT}"
            )
        return endpoint, found
    raise HubUnreachableError("; ".join(problems))


class ConsoleProgress:
    """modelscope ``ProgressCallback`` protocol (``(filename, size)``, ``update``, ``end``): lines on stderr.

    Lines, not a redrawn bar, so progress stays readable in logs (Ray, containers); big files: every 10 %.
    """

    STEP_BYTES = 8 << 20  # files above this report at 10 % steps
    QUIET_BELOW = 1 << 20  # smaller files complete silently (the client counts files)

    def __init__(self, filename: str, file_size: int) -> None:
        self.filename, self.size, self.done = filename, int(file_size or 0), 0
        self.next_pct, self.start = 10, time.monotonic()

    def update(self, size: int) -> None:
        self.done += size
        if (
            self.size >= self.STEP_BYTES
            and self.done * 100 >= self.next_pct * self.size
            and self.done < self.size
        ):
            _console(f"  {self.filename}: {self.done * 100 // self.size}% of {self.size / 1e6:.1f} MB")
            self.next_pct = self.done * 100 // self.size // 10 * 10 + 10

    def end(self) -> None:
        seconds = time.monotonic() - self.start
        if self.size and self.done < self.size:
            _console(f"  {self.filename}: stopped at {self.done / 1e6:.1f} of {self.size / 1e6:.1f} MB")
        elif self.size >= self.QUIET_BELOW:
            _console(f"  {self.filename}: {self.done / 1e6:.1f} MB in {seconds:.1f} s")


def _console(message: str, stream: TextIO | None = None) -> None:
    print(f"[tts-model] {message}", file=stream or sys.stderr, flush=True)


def _download_failure(model_id: str, endpoint: str, exc: BaseException) -> str:
    failed = getattr(exc, "failed_files", None)
    lines = [f"downloading model {model_id!r} from ModelScope ({endpoint}) failed"]
    if isinstance(failed, Mapping) and failed:
        for path, err in failed.items():
            kind = type(err).__name__
            note = ""
            if kind == "FileIntegrityError":
                note = " (the bytes received do not match the sha256 the hub lists for this file)"
            elif kind == "FileSizeMismatchError":
                note = " (the hub sent a different size than it lists for this file)"
            lines.append(f"  {path}: {getattr(err, 'message', None) or err}{note}")
        lines.append(
            "files that arrived intact are kept and a partly received file resumes where it stopped: "
            "run again to fetch only the failed ones"
        )
    else:
        lines.append(f"  {type(exc).__name__}: {exc}")
        lines.append("an interrupted download resumes where it stopped: run again")
    lines.append(HOW_TO_POINT)
    return "\n".join(lines)


def download_model(model_id: str, endpoint: str, cache_root: Path | None = None) -> Path:
    """``modelscope.hub.snapshot_download`` of ``model_id`` into the ModelScope cache, progress on stderr.

    The endpoint and cache are passed explicitly: the client reads its environment only once per process.
    """
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError as exc:
        raise ModelDirError(
            f"cannot download model {model_id!r}: modelscope is not installed ({exc}); {HOW_TO_POINT}"
        ) from None
    root = cache_root or modelscope_cache_root()
    _console(
        f"downloading {model_id} from {endpoint} into {root} (once; cached afterwards). "
        "Interrupted? Run again: the download resumes where it stopped."
    )
    start = time.monotonic()
    try:
        path = Path(
            snapshot_download(
                model_id,
                cache_dir=str(root),
                endpoint=endpoint,
                ignore_patterns=list(DOWNLOAD_IGNORE),
                progress_callbacks=[ConsoleProgress],
            )
        )
    except Exception as exc:
        raise ModelDirError(_download_failure(model_id, endpoint, exc)) from None
    _console(f"downloaded {model_id} to {path} in {time.monotonic() - start:.1f} s")
    return path


def ensure_random_model_dir(target: str | os.PathLike[str] | None = None, size: str = "full") -> Path:
    """A generated random-weights voice at ``target`` (default ``models/_generated/<size>``), reused."""
    path = Path(target) if target is not None else GENERATED_DIR / size
    card_path = path / "configuration.json"
    if card_path.is_file():
        try:
            card = json.loads(card_path.read_text("utf-8"))
        except (OSError, ValueError):
            card = {}
        if is_random_weights(card) and card["generated"].get("size") == size:
            return path
    from engine.testing.make_model_dir import write_model_dir

    _console(f"generating a {size} voice with RANDOM weights in {path} ...")
    write_model_dir(path, size, force=True)
    (path / ".complete").write_text("generated random weights\n")  # serve_app.graph's older reuse marker
    return path


def benchmark_model_dir(choice: str | None, size: str = "full") -> str:
    """Benchmarks: the given model (path or id), else the generated random voice — never a download, so runs
    on any machine measure the same architecture (cost, not quality)."""
    if choice:
        return str(resolve_model_dir(choice))
    return str(ensure_random_model_dir(None, size))


RANDOM_BANNER = """
################################################################################
#  RANDOM WEIGHTS - this voice is untrained: every request returns NOISE.
#  Model: {path}
#  Why:   {detail}
#  Real speech: let the released voice download from ModelScope ({model_id}),
#  or set TTS_MODEL_DIR / --model-dir to a model directory or a ModelScope id.
################################################################################
"""


def random_weights_banner(resolved: ResolvedModel) -> str:
    return RANDOM_BANNER.format(path=resolved.path, detail=resolved.detail, model_id=DEFAULT_MODEL_ID)


def _from_modelscope(model_ids: Sequence[str], timeout: float) -> ResolvedModel:
    root = modelscope_cache_root()
    cached = find_cached_model(model_ids, root)
    if cached is not None:
        model_id, path = cached
        return ResolvedModel(path, SOURCE_CACHE, model_id, f"{model_id} from the ModelScope cache {root}")
    endpoint, model_id = _pick_endpoint(model_ids, timeout)
    path = download_model(model_id, endpoint, root)
    return ResolvedModel(path, SOURCE_DOWNLOAD, model_id, f"{model_id} downloaded from {endpoint}")


def resolve_model(
    choice: str | os.PathLike[str] | None = None,
    *,
    timeout: float = 5.0,
    random_dir: str | os.PathLike[str] | None = None,
    random_size: str = "full",
    announce: bool = True,
) -> ResolvedModel:
    """Choose the model directory: ``choice`` or ``$TTS_MODEL_DIR`` (a path or a ModelScope id), else the
    released voice from the ModelScope cache, else downloaded, else — only when the hub is unreachable — a
    generated random voice (``random_dir``, ``random_size``).

    An explicit choice is never replaced by random weights: an unreachable hub is then an error. Each hub
    probe gives up after ``timeout`` seconds. ``announce`` prints the random-weights banner on stderr.
    """
    text = os.fspath(choice) if choice not in (None, "") else (os.environ.get(ENV_MODEL_DIR) or "")
    if text:
        local = Path(text).expanduser()
        if local.is_dir():
            resolved = ResolvedModel(local, SOURCE_PATH, None, f"model directory {local}")
        elif local.exists():
            raise ModelDirError(f"{local} is not a directory: expected a model directory; {HOW_TO_POINT}")
        elif not looks_like_model_id(text):
            raise ModelDirError(f"model directory {local} does not exist; {HOW_TO_POINT}")
        else:
            try:
                resolved = _from_modelscope(model_id_aliases(text), timeout)
            except HubUnreachableError as exc:
                raise ModelDirError(
                    f"cannot download model {text!r}: {exc} (offline?); {HOW_TO_POINT}"
                ) from None
    else:
        try:
            resolved = _from_modelscope(RELEASED_MODEL_IDS, timeout)
        except HubUnreachableError as exc:
            detail = f"no model given, none cached, and ModelScope is unreachable: {exc}"
            resolved = ResolvedModel(
                ensure_random_model_dir(random_dir, random_size), SOURCE_RANDOM, None, detail
            )
    if resolved.random_weights:
        if resolved.source != SOURCE_RANDOM:
            resolved = dataclasses.replace(
                resolved, detail=f"{resolved.detail} holds generated random weights"
            )
        log.warning("serving RANDOM weights from %s: %s", resolved.path, resolved.detail)
        if announce:
            print(random_weights_banner(resolved), file=sys.stderr, flush=True)
    else:
        log.info("model: %s (%s)", resolved.path, resolved.detail)
    return resolved


def resolve_model_dir(path_or_model_id: str | os.PathLike[str] | None = None, timeout: float = 5.0) -> Path:
    """The directory :func:`resolve_model` chooses (kept for callers that need only the path)."""
    return resolve_model(path_or_model_id, timeout=timeout).path


def load_model(choice: str | os.PathLike[str] | None = None, **kwargs: Any) -> ModelDirectory:
    """:func:`resolve_model` + :func:`load_model_dir`, with ``source``/``model_id``/``source_detail`` set."""
    resolved = resolve_model(choice, **kwargs)
    directory = load_model_dir(resolved.path)
    return dataclasses.replace(
        directory, source=resolved.source, model_id=resolved.model_id, source_detail=resolved.detail
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.modeldir [--model-dir X]``: resolve (download if needed), print the provenance."""
    parser = argparse.ArgumentParser(prog="python -m engine.modeldir", description=main.__doc__)
    parser.add_argument(
        "--model-dir", default=None, help=f"path or ModelScope id (default: ${ENV_MODEL_DIR})"
    )
    parser.add_argument("--random-size", choices=("tiny", "full"), default="full")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per hub probe")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        directory = load_model(args.model_dir, timeout=args.timeout, random_size=args.random_size)
    except ModelDirError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({**directory.provenance(), "voices": list(directory.voices)}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
