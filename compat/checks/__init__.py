"""The doctor's checks, in the order they run (cheap and foundational first)."""

from __future__ import annotations

from compat.checks import abi, audio, model, rules, runtime, text
from compat.doctor import CheckFn

CHECKS: dict[str, CheckFn] = {
    "python": runtime.check_python,
    "requirements": runtime.check_requirements,
    "numpy": runtime.check_numpy,
    "scipy": runtime.check_scipy,
    "torch": runtime.check_torch,
    "ray": runtime.check_ray,
    "fastapi-pydantic": runtime.check_fastapi_pydantic,
    "soundfile": audio.check_soundfile,
    "abi-scipy-numpy": abi.check_scipy_numpy,
    "abi-soundfile": abi.check_soundfile_roundtrip,
    "abi-torch-numpy": abi.check_torch_numpy,
    "abi-soxr": abi.check_soxr,
    "rule-numpy2-abi": rules.check_numpy2_abi,
    "rule-numpy-aliases": rules.check_numpy_aliases,
    "rule-cuda-on-cpu": rules.check_cuda_on_cpu,
    "rule-legacy-tts": rules.check_legacy_tts_packages,
    "text-dicts": text.check_text_dicts,
    "model-dir": model.check_model_dir,
}
