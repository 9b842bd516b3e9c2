"""The reduced-precision quality gate (benchmarks/quality_gate.py): it can fail, and bf16 passes it on real
weights and real speech (slow)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from benchmarks import quality_gate as gate


def _speech(name: str = "Front_Center") -> np.ndarray:
    try:
        return gate.load_clip(name, 22050)
    except gate.GateError as e:
        pytest.skip(str(e))


def test_gate_lsd_is_zero_for_identical_audio() -> None:
    wav = _speech()
    assert gate.gate_lsd(wav, wav.copy()) == 0.0


@pytest.mark.parametrize(
    "degrade",
    [
        lambda w: w.astype(np.float16).astype(np.float32),  # fp16-quantised output
        lambda w: w + 10 ** (-90 / 20) * np.random.default_rng(0).standard_normal(len(w)).astype(np.float32),
    ],
    ids=["fp16-quantised", "noise-90dBFS"],
)
def test_gate_lsd_rejects_a_degraded_signal(degrade) -> None:
    wav = _speech()
    lsd = gate.gate_lsd(wav, degrade(wav))
    assert not gate.lsd_passes(lsd), f"LSD {lsd:.3f} dB passed the {gate.MAX_LSD_DB} dB gate"


def test_clip_result_fails_on_dnsmos_delta() -> None:
    assert gate.ClipResult("x", 0.1, 3.00, 3.01).passed
    assert not gate.ClipResult("x", 0.1, 3.00, 3.03).passed
    assert not gate.ClipResult("x", 0.25, 3.00, 3.00).passed


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_bf16_passes_the_real_weights_gate() -> None:
    if importlib.util.find_spec("speechmos") is None:
        pytest.skip("speechmos (requirements-dev.txt) not installed")
    try:
        results = gate.run_gate(["Front_Center", "Rear_Right"], "bf16")
    except gate.GateError as e:
        pytest.skip(str(e))
    assert len(results) == 2
    for r in results:
        assert r.passed, r
