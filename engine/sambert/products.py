"""Which BLAS runs the decoder's small matrix products.

A decoder step multiplies 1-4 rows by ~17.6 MB of weights in 51 products, so it is bound by how fast a
kernel streams one weight matrix past a few rows. torch's ``addmm`` runs MKL. On AMD CPUs MKL takes its
generic path: on a 2-core Zen 4 (2026-12-04, 48 weights of 128 x 1024 taking turns, 1 thread) its
small-row GEMM took 40-88 µs per product for 1 row and 49-127 µs for 2, while numpy's OpenBLAS
matrix-vector product took 21.6 µs for 1 row, 38 µs for 2 rows as two products and 64 µs for 4 (MKL:
94-130 µs). With these, decoder steps over 1-3 rows ran 14-25 % faster and the acoustic model of a 2-unit,
1510-frame line 19-21 % faster on 1 and 2 threads (docs/performance.md; measured end to end: the step's own
51 products alone were not faster at 1 row). On Intel CPUs MKL's small-row path was measured fast and stays.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from compat.blas import blas_build

log = logging.getLogger("tts.acoustic")

ROWWISE_ROWS = 4
"""Steps over at most this many rows use :func:`rowwise_addmm` where :func:`rowwise_products` holds."""


def rowwise_addmm(bias: Tensor, x: Tensor, mat: Tensor, out: Tensor | None = None) -> Tensor:
    """``torch.addmm(bias, x, mat, out=out)`` as one numpy (BLAS) matrix-vector product per row of ``x``.

    ``mat`` is a contiguous ``[in, out]`` float32 matrix; ``bias`` broadcasts to ``[rows, out]``. Equal to
    ``addmm`` up to float summation order (~1e-7 relative).
    """
    xn, mn = x.numpy(), mat.numpy()
    if out is None:
        rn = np.matmul(xn, mn) if xn.shape[0] == 1 else np.empty((xn.shape[0], mn.shape[1]), np.float32)
        res = torch.from_numpy(rn)
    else:
        res, rn = out, out.numpy()
        if xn.shape[0] == 1:
            np.matmul(xn, mn, out=rn)
    if xn.shape[0] != 1:
        for i in range(xn.shape[0]):
            np.matmul(xn[i], mn, out=rn[i])
    rn += bias.numpy()
    return res


def _cpu_vendor() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("vendor_id"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def _numpy_blas() -> str:
    return blas_build(np)


@functools.lru_cache(1)
def rowwise_products() -> bool:
    """Whether small decoder steps use numpy's OpenBLAS instead of torch's MKL: on an AMD CPU, with torch
    on MKL and numpy on OpenBLAS. When they do, every OpenBLAS in this process is limited to one thread
    (once): each product takes ~20 µs, too short for threads, and idle OpenBLAS threads spin."""
    if _cpu_vendor() != "AuthenticAMD" or not torch.backends.mkl.is_available():
        return False
    if "openblas" not in _numpy_blas().lower():
        return False
    from threadpoolctl import ThreadpoolController

    ThreadpoolController().select(internal_api="openblas").limit(limits=1)
    log.info("decoder steps over <= %d rows run numpy's OpenBLAS matrix-vector products", ROWWISE_ROWS)
    return True
