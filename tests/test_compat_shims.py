"""Each shim: the legacy snippet fails without it (checked in a fresh subprocess), works with it, and the
undo restores the original failure. Also: importing compat applies nothing."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import compat
from compat import shims

ROOT = Path(__file__).resolve().parent.parent


def to_numpy1_pickle(obj: object, path: Path) -> Path:
    """``torch.save`` ``obj`` as NumPy 1.x would have pickled its numpy objects.

    NumPy 2 pickles arrays as ``numpy._core.multiarray._reconstruct``; NumPy 1.x wrote
    ``numpy.core.multiarray``. The pickle is rewritten to the 1.x names (protocol 2 GLOBAL opcodes are
    newline-terminated text, so the rename is exact) and the zip is rebuilt.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data.pkl"):
                assert b"numpy._core.multiarray\n" in data
                data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
            dst.writestr(info.filename, data)
    return path


def legacy_checkpoint(path: Path) -> Path:
    """A KAN-TTS-era AM checkpoint written under NumPy 1.x: tensors plus numpy arrays/scalars/dtypes."""
    obj = {
        "model": {"text_encoder.sy_emb.weight": torch.randn(147, 8)},
        "optimizer": {"state": {}, "param_groups": [{"lr": np.float64(1e-3), "betas": (0.9, 0.98)}]},
        "scheduler": {"last_epoch": np.int64(120000)},
        "steps": np.int64(120000),
        "mvn": np.array([[0.5, 0.25], [1.0, 1.5]], dtype=np.float32),
        "dtype": np.dtype("float32"),
    }
    return to_numpy1_pickle(obj, path)


# Legacy code as found in KAN-TTS / ModelScope-era TTS sources, one snippet per shim.
SNIPPETS: dict[str, str] = {
    "scipy_misc_logsumexp": "from scipy.misc import logsumexp\nRESULT = float(logsumexp([0.0, 0.0]))",
    "scipy_signal_kaiser": "from scipy.signal import kaiser\nRESULT = kaiser(62, 9.0).shape[0]",
    "numpy_scalar_aliases": (
        "import numpy as np\n"
        "x = np.zeros(3, dtype=np.float) + np.int(1)\n"
        "RESULT = [x.dtype.name, bool(np.isnan(np.NaN)), np.float_(2).dtype.name]"
    ),
    "torch_load_legacy_numpy": (
        "import torch\nckpt = torch.load(CKPT, weights_only=True)\n"
        "RESULT = [int(ckpt['steps']), ckpt['mvn'].tolist(), str(ckpt['dtype'])]"
    ),
    "ttsfrd_stub": "import ttsfrd\nRESULT = ttsfrd.__name__",
}
EXPECTED: dict[str, object] = {
    "scipy_misc_logsumexp": pytest.approx(float(np.log(2.0))),
    "scipy_signal_kaiser": 62,
    "numpy_scalar_aliases": ["float64", True, "float64"],
    "torch_load_legacy_numpy": [120000, [[0.5, 0.25], [1.0, 1.5]], "float32"],
    "ttsfrd_stub": "ttsfrd",
}
FAILURE: dict[str, str] = {
    "scipy_misc_logsumexp": "ImportError: cannot import name 'logsumexp'",
    "scipy_signal_kaiser": "ImportError: cannot import name 'kaiser'",
    "numpy_scalar_aliases": "AttributeError: module 'numpy' has no attribute 'float'",
    "torch_load_legacy_numpy": "numpy.core.multiarray",
    "ttsfrd_stub": "ModuleNotFoundError: No module named 'ttsfrd'",
}

RUNNER = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    snippets, ckpt = json.loads(sys.argv[1]), sys.argv[2]
    import compat  # importing compat must not shim anything
    out = {}
    for name, code in snippets.items():
        scope = {"CKPT": ckpt}
        try:
            exec(code, scope)
            out[name] = "OK " + repr(scope.get("RESULT"))
        except Exception as exc:
            out[name] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return legacy_checkpoint(tmp_path_factory.mktemp("shims") / "checkpoint_0.pth")


@pytest.fixture(scope="module")
def without_shims(ckpt: Path) -> dict[str, str]:
    """Outcome of every legacy snippet in a fresh interpreter that imported compat but applied nothing."""
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(SNIPPETS), str(ckpt)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_snippet(name: str, ckpt: Path) -> object:
    scope: dict[str, object] = {"CKPT": str(ckpt)}
    exec(SNIPPETS[name], scope)
    return scope["RESULT"]


def test_every_shim_has_a_test() -> None:
    assert set(SNIPPETS) == set(shims.SHIMS) == set(compat.available())


@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_shim_fixes_legacy_code_and_reverts(name: str, ckpt: Path, without_shims: dict[str, str]) -> None:
    assert FAILURE[name] in without_shims[name], without_shims[name]  # fails without the shim
    assert name not in compat.active()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy.misc / numpy alias deprecation warnings
        with compat.apply(name) as handle:
            assert handle.names == [name] and name in compat.active()
            assert run_snippet(name, ckpt) == EXPECTED[name]  # works with it
        assert name not in compat.active()
        with pytest.raises(Exception) as err:  # and fails again after the undo
            run_snippet(name, ckpt)
    assert FAILURE[name].split(": ", 1)[-1] in f"{type(err.value).__name__}: {err.value}"


def test_apply_all_and_revert_restore_the_exact_prior_state() -> None:
    import scipy.signal

    safe_before = list(torch.serialization.get_safe_globals())
    np_before = set(vars(np))
    signal_before = set(vars(scipy.signal))
    handle = compat.apply_all()
    try:
        assert sorted(compat.active()) == sorted(shims.SHIMS)
        assert vars(np)["float"] is float and vars(scipy.signal)["hann"] is scipy.signal.windows.hann
        assert len(torch.serialization.get_safe_globals()) > len(safe_before)
        assert compat.apply("numpy_scalar_aliases").names == []  # already active: nothing new to undo
    finally:
        handle.revert()
    assert compat.active() == []
    assert set(vars(np)) == np_before and set(vars(scipy.signal)) == signal_before
    after = torch.serialization.get_safe_globals()  # same members; torch does not keep their order
    assert len(after) == len(safe_before) and set(after) == set(safe_before)
    assert "ttsfrd" not in sys.modules


def test_shims_never_replace_working_attributes() -> None:
    with compat.apply("numpy_scalar_aliases"):
        assert np.bool is np.bool_  # NumPy 2's own np.bool is kept, not replaced by builtins.bool
        assert np.long is not int


def test_legacy_allowlist_is_minimal() -> None:
    names = {
        getattr(e[0] if isinstance(e, tuple) else e, "__name__", "") for e in shims.legacy_numpy_globals()
    }
    assert names <= {"ndarray", "dtype", "_reconstruct", "scalar"} | {n for n in names if n.endswith("DType")}
    with compat.shimmed("torch_load_legacy_numpy"), pytest.raises(Exception, match="Unsupported global"):
        buf = io.BytesIO()
        torch.save({"fn": print}, buf)  # arbitrary callables stay refused
        buf.seek(0)
        torch.load(buf, weights_only=True)


def test_ttsfrd_stub_explains_itself_on_use() -> None:
    with compat.shimmed("ttsfrd_stub"):
        import ttsfrd

        with pytest.raises(compat.ShimError, match=r"engine\.frontend"):
            ttsfrd.TtsFrontendEngine()


def test_unknown_shim_is_rejected_with_the_list() -> None:
    with pytest.raises(compat.ShimError, match=r"available: .*numpy_scalar_aliases"):
        compat.apply("numpy_float")


def test_cli_lists_shims() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "compat", "shims"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert proc.returncode == 0
    assert all(name in proc.stdout for name in shims.SHIMS)
