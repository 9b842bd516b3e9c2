"""Model directory: layout and voices (via engine.modeldir), vocab sizes vs checkpoint shapes, checksums."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from compat.doctor import CheckResult, DoctorOptions, fail, ok, skip

MANIFEST = "checksums.sha256"
# LinguisticVocab field -> KanTtsSAMBERT embedding whose first dimension is that vocabulary's size.
EMBEDDINGS: dict[str, str] = {
    "sy": "text_encoder.sy_emb.weight",
    "tone": "text_encoder.tone_emb.weight",
    "syllable_flag": "text_encoder.syllable_flag_emb.weight",
    "word_segment": "text_encoder.ws_emb.weight",
    "emotion": "emo_tokenizer.weight",
    "speaker": "spk_tokenizer.weight",
}
LAYOUT_REMEDY = (
    "point --model-dir/TTS_MODEL_DIR at a Sambert-HifiGan directory (voices/voices.json, "
    "voices/<voice>/{am,voc}/{config.yaml,ckpt/checkpoint_*.pth}); see docs/architecture.md"
)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(model_dir: Path) -> Path:
    """Write ``checksums.sha256`` (``sha256sum`` format) for every file under ``model_dir``."""
    lines = [
        f"{sha256_file(p)}  {p.relative_to(model_dir).as_posix()}"
        for p in sorted(model_dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    ]
    out = model_dir / MANIFEST
    out.write_text("\n".join(lines) + "\n", "utf-8")
    return out


def verify_manifest(model_dir: Path) -> list[str]:
    """Problems with the files ``checksums.sha256`` lists (missing or different); empty when all match."""
    problems = []
    for n, line in enumerate((model_dir / MANIFEST).read_text("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, _, rel = line.partition("  ")
        if len(digest) != 64 or not rel:
            problems.append(f"{MANIFEST}:{n} is not '<sha256>  <path>'")
            continue
        path = model_dir / rel.lstrip("*")
        if not path.is_file():
            problems.append(f"{rel} missing")
        elif sha256_file(path) != digest.lower():
            problems.append(f"{rel} checksum differs from {MANIFEST}")
    return problems


def vocab_problems(voice: str, sizes: Mapping[str, int], state: Mapping[str, Any]) -> list[str]:
    """Mismatches between the voice's vocabulary sizes and the AM checkpoint's embedding rows."""
    problems = []
    for field_name, key in EMBEDDINGS.items():
        if key not in state:
            problems.append(f"{voice}: am checkpoint has no {key}")
            continue
        rows = int(state[key].shape[0])
        if sizes.get(field_name) != rows:
            problems.append(
                f"{voice}: vocab '{field_name}' has {sizes.get(field_name)} symbols but {key} has {rows} rows"
            )
    return problems


def vocoder_problems(voice: str, voc_config: Mapping[str, Any], state: Mapping[str, Any]) -> list[str]:
    """Config/checkpoint disagreements that would otherwise surface as a load_state_dict error."""
    params = ((voc_config.get("Model") or {}).get("Generator") or {}).get("params") or {}
    kernels: Iterable[int] = params.get("upsample_kernal_sizes") or []
    problems = []
    for i, k in enumerate(kernels):
        weight = state.get(f"transpose_upsamples.{i}.1.deconv.weight_v")
        if weight is None:
            weight = state.get(f"transpose_upsamples.{i}.1.deconv.weight")
        if weight is not None and int(weight.shape[-1]) != int(k):
            problems.append(
                f"{voice}: voc/config.yaml upsample_kernal_sizes[{i}]={k} but the checkpoint's kernel is "
                f"{int(weight.shape[-1])} (causal vs non-causal config?)"
            )
    if not state:
        problems.append(f"{voice}: vocoder checkpoint has no generator weights")
    return problems


def _loads_with_legacy_shim(voice: Any) -> bool:
    """Whether the voice's checkpoints load once the minimal numpy allowlist shim is applied."""
    from compat.shims import shimmed

    try:
        with shimmed("torch_load_legacy_numpy"):
            voice.load_am_state()
            voice.load_voc_state()
    except Exception:
        return False
    return True


def check_model_dir(options: DoctorOptions) -> list[CheckResult]:
    if options.model_dir is None:
        return [skip("model-dir", "no model directory given (--model-dir DIR or TTS_MODEL_DIR)")]
    root = Path(options.model_dir)
    try:
        from engine.modeldir import ModelDirError, load_model_dir
    except ImportError as exc:
        return [fail("model-dir", f"engine.modeldir unavailable: {exc}", "run from the project root / image")]
    try:
        directory = load_model_dir(root)
    except ModelDirError as exc:
        return [fail("model-dir", f"{root}: {exc}", LAYOUT_REMEDY)]
    voices = list(directory.voices)
    results = [
        ok("model-dir", f"{root}: {len(voices)} voice(s) {voices}, default {voices[0]}", voices=voices)
    ]

    problems: list[str] = []
    legacy: list[str] = []
    for name, voice in directory.voices.items():
        try:
            problems.extend(vocab_problems(name, voice.vocab.sizes(), voice.load_am_state()))
            problems.extend(vocoder_problems(name, voice.voc_config, voice.load_voc_state()))
        except ModelDirError as exc:  # unreadable checkpoint: name the file, keep checking other voices
            problems.append(f"{name}: {exc}")
            if _loads_with_legacy_shim(voice):
                legacy.append(name)
    if legacy:
        results.append(
            fail(
                "model-vocab",
                f"voice(s) {legacy}: checkpoints pickle numpy arrays/scalars (NumPy 1.x / KAN-TTS era), "
                "refused under weights_only=True; " + "; ".join(problems),
                "call compat.apply('torch_load_legacy_numpy') before loading, or re-save the checkpoints "
                "with tensors and plain Python values only",
                problems=problems,
                legacy_voices=legacy,
            )
        )
    elif problems:
        results.append(
            fail(
                "model-vocab",
                "; ".join(problems),
                "the voice's am/config.yaml linguistic_unit (speaker_list, has_mask) or dict/ does not match "
                "its checkpoints: use the config shipped with that checkpoint",
                problems=problems,
            )
        )
    else:
        results.append(
            ok("model-vocab", "vocab sizes match AM embeddings; vocoder config matches its checkpoint")
        )
    results.append(_checksums(root, directory))
    return results


def _checksums(root: Path, directory: Any) -> CheckResult:
    if (root / MANIFEST).is_file():
        problems = verify_manifest(root)
        if problems:
            return fail(
                "model-checksums",
                "; ".join(problems[:5]),
                "the model files were modified or truncated: re-download or re-copy the model directory",
                problems=problems,
            )
        return ok(
            "model-checksums", f"all files match {MANIFEST}", version=str(getattr(directory, "version", ""))
        )
    return ok(
        "model-checksums",
        f"no {MANIFEST} to verify against (create one: python -m compat checksums {root}); "
        f"fingerprint {directory.version[:16]}",
        version=directory.version,
    )
