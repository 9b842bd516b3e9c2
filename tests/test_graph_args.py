"""build_app argument validation (fails before any replica or model directory is touched)."""

from __future__ import annotations

import pytest

from serve_app.graph import build_app


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"vocoder_precision": "fp16"}, "vocoder_precision must be 'fp32' or 'bf16'"),
        ({"vocoder_precison": "bf16"}, "unknown build_app args"),
    ],
)
def test_bad_build_args_are_named(args: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_app(args)
