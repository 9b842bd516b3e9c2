"""ABI smoke tests: calls that cross compiled libraries, compared against plain numpy results.

A binary built against another numpy ABI fails here ("numpy.ndarray size changed", "module compiled
against API version ...", wrong values), not deep inside a request.
"""

from __future__ import annotations

import io

from compat.doctor import CheckResult, DoctorOptions, fail, ok

ABI_REMEDY = (
    "a compiled package was built for another numpy ABI: reinstall from the lock (make install) or "
    "pip install --force-reinstall --no-cache-dir numpy scipy soundfile soxr torch==2.13.0"
)


def check_scipy_numpy(options: DoctorOptions) -> CheckResult:
    import numpy as np
    import scipy.signal
    import scipy.special

    x = np.linspace(-3.0, 3.0, 257, dtype=np.float64)
    lse = scipy.special.logsumexp(x)
    if not np.isclose(lse, np.log(np.exp(x).sum())):
        return fail("abi-scipy-numpy", f"scipy.special.logsumexp wrong: {lse}", ABI_REMEDY)
    if not np.allclose(scipy.special.expit(x), 1.0 / (1.0 + np.exp(-x))):
        return fail("abi-scipy-numpy", "scipy.special.expit disagrees with numpy", ABI_REMEDY)
    sig = np.sin(np.arange(1600, dtype=np.float32) * 0.05).astype(np.float32)
    b, a = scipy.signal.butter(4, 0.2)
    y = scipy.signal.lfilter(b, a, sig)
    if y.shape != sig.shape or not np.all(np.isfinite(y)):
        return fail("abi-scipy-numpy", "scipy.signal.lfilter returned a bad array", ABI_REMEDY)
    down = scipy.signal.resample_poly(sig, 1, 2)
    if down.shape != (800,):
        return fail("abi-scipy-numpy", f"scipy.signal.resample_poly shape {down.shape} != (800,)", ABI_REMEDY)
    win = scipy.signal.get_window("hann", 1024)
    if not np.isclose(win.max(), 1.0, atol=1e-5):
        return fail("abi-scipy-numpy", "scipy.signal.get_window('hann') is wrong", ABI_REMEDY)
    return ok(
        "abi-scipy-numpy", "scipy.special (logsumexp, expit) and scipy.signal (lfilter, resample_poly) ok"
    )


def check_soundfile_roundtrip(options: DoctorOptions) -> CheckResult:
    import numpy as np
    import soundfile as sf

    pcm = (np.sin(np.arange(4000) * 0.03) * 0.5).astype(np.float32)
    buf = io.BytesIO()
    sf.write(buf, pcm, 16000, format="WAV", subtype="PCM_16")
    buf.seek(0)
    back, rate = sf.read(buf, dtype="float32")
    if rate != 16000 or back.shape != pcm.shape or np.max(np.abs(back - pcm)) > 1.0 / 32767:
        return fail("abi-soundfile", "in-memory WAV round trip changed the audio", ABI_REMEDY)
    return ok("abi-soundfile", "in-memory WAV PCM_16 round trip exact to 1 LSB")


def check_torch_numpy(options: DoctorOptions) -> CheckResult:
    import numpy as np
    import torch

    arr = np.arange(16, dtype=np.float32)
    t = torch.from_numpy(arr)
    arr[3] = -1.0
    if float(t[3]) != -1.0:
        return fail("abi-torch-numpy", "torch.from_numpy copied instead of sharing memory", ABI_REMEDY)
    back = (t * 2).numpy()
    if not np.shares_memory(t.numpy(), arr) or back.dtype != np.float32 or back[3] != -2.0:
        return fail("abi-torch-numpy", "Tensor.numpy() is not a zero-copy float32 view", ABI_REMEDY)
    conv = torch.nn.functional.conv1d(t.view(1, 1, -1), torch.ones(1, 1, 3)).numpy()
    if not np.allclose(conv[0, 0], np.convolve(arr, np.ones(3), mode="valid")):
        return fail("abi-torch-numpy", "torch conv1d disagrees with numpy.convolve", ABI_REMEDY)
    return ok("abi-torch-numpy", "torch.from_numpy/Tensor.numpy zero-copy, conv1d matches numpy")


def check_soxr(options: DoctorOptions) -> CheckResult:
    import numpy as np
    import soxr

    sig = np.sin(np.arange(16000, dtype=np.float32) * 2 * np.pi * 440 / 16000).astype(np.float32)
    out = soxr.resample(sig, 16000, 8000)
    if out.dtype != np.float32 or abs(len(out) - 8000) > 2 or not np.all(np.isfinite(out)):
        return fail("abi-soxr", f"soxr.resample 16k->8k gave {out.dtype}[{len(out)}]", ABI_REMEDY)
    return ok("abi-soxr", f"soxr {getattr(soxr, '__version__', '?')} resamples float32 numpy arrays")
