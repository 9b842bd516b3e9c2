"""The README's engine example (the Python block under "## Engine"), run as written on the tiny model."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _engine_example() -> str:
    section = README.read_text("utf-8").split("## Engine (", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "the README's engine section lost its Python example"
    return match.group(1)


@pytest.fixture(scope="module")
def example(tiny_model_dir: Path) -> dict[str, Any]:
    ns: dict[str, Any] = {"path": tiny_model_dir}
    exec(compile(_engine_example(), "README.md (engine example)", "exec"), ns)
    return ns


def test_the_low_level_example_synthesises_and_streams_the_same_mel(example: dict[str, Any]) -> None:
    am, out, audio, units = example["am"], example["out"], example["audio"], example["units"]
    from engine.sambert import AcousticInput

    assert audio.dtype == np.float32 and audio.size == out.mel.shape[0] * 200
    assert int(np.asarray(out.durations).sum()) == out.mel.shape[0]
    plain = am.synthesize([AcousticInput(units[0].ids)])[0]
    chunks = list(am.stream(AcousticInput(units[0].ids), chunk_frames=24))
    np.testing.assert_allclose(np.concatenate(chunks), plain.mel, atol=1e-4)
    normal_speed = am.synthesize([AcousticInput(units[0].ids, pitch_shift=0.3, emotion="happy")])[0]
    assert out.mel.shape[0] < normal_speed.mel.shape[0]  # speed=1.2 in the example: fewer frames


def test_the_synthesizer_example_applies_its_controls_and_streams_the_same_audio(
    example: dict[str, Any],
) -> None:
    synth, res = example["synth"], example["res"]
    text = "您好，请问有什么可以帮您？好的。"
    assert res.sample_rate == 16000 and res.audio.dtype == np.float32
    assert [t for t, _, _ in res.timestamps] == list("您好请问有什么可以帮您好的")
    assert all(0 <= s < e <= res.duration_s for _, s, e in res.timestamps)
    same_but_speed = synth.synthesize(text, emotion="happy")
    assert res.duration_s < same_but_speed.duration_s  # speed=1.2
    assert [u.emotion for u in res.units] == ["happy", "happy"]
    single = "您好，请问有什么可以帮您？"
    pieces = list(synth.stream(single))
    assert len(pieces) > 1
    whole = synth.synthesize(single).audio
    streamed = np.concatenate(pieces)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-4)
