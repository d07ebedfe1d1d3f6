"""Spherical harmonics of ray directions for packed samples, on the CPU (numba).

Mirrors ``latentscape.kernels.reference.sh.sh_encode`` applied to ``d[ray]``: each ray's
basis is computed once and written to all of its samples, in one pass with no
temporaries (the reference makes ~30 [N] tensors, which dominated CPU frames).
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

_C = np.array([0.28209479177387814, 0.48860251190291987, 1.0925484305920792, 0.94617469575755997,
               0.31539156525251999, 0.54627421529603959, 0.59004358992664352, 2.8906114426405538,
               0.45704579946446572, 0.3731763325901154, 1.4453057213202769], dtype=np.float32)


@njit(parallel=True, cache=True, nogil=True)
def _sh_packed(d, offsets, degree, c, out):
    vals = np.empty((offsets.shape[0] - 1, 16), np.float32)
    for r in prange(offsets.shape[0] - 1):
        if offsets[r + 1] == offsets[r]:
            continue
        x, y, z = d[r, 0], d[r, 1], d[r, 2]
        v = vals[r]
        v[0] = c[0]
        if degree > 1:
            v[1] = -c[1] * y
            v[2] = c[1] * z
            v[3] = -c[1] * x
        if degree > 2:
            xx, yy, zz = x * x, y * y, z * z
            v[4] = c[2] * x * y
            v[5] = -c[2] * y * z
            v[6] = c[3] * zz - c[4]
            v[7] = -c[2] * x * z
            v[8] = c[5] * (xx - yy)
            if degree > 3:
                v[9] = c[6] * y * (np.float32(-3.0) * xx + yy)
                v[10] = c[7] * x * y * z
                v[11] = c[8] * y * (np.float32(1.0) - np.float32(5.0) * zz)
                v[12] = c[9] * z * (np.float32(5.0) * zz - np.float32(3.0))
                v[13] = c[8] * x * (np.float32(1.0) - np.float32(5.0) * zz)
                v[14] = c[10] * z * (xx - yy)
                v[15] = c[6] * x * (-xx + np.float32(3.0) * yy)
        n = degree * degree
        for i in range(offsets[r], offsets[r + 1]):
            for k in range(n):
                out[i, k] = v[k]


def sh_packed(d: torch.Tensor, offsets: torch.Tensor, degree: int = 4, n_samples: int | None = None) -> torch.Tensor:
    """d: [R, 3] unit ray directions, offsets: [R+1] -> [S, degree**2] per packed sample.

    ``n_samples``: S when the caller knows it (the GPU twin needs it to avoid a sync)."""
    if degree < 1 or degree > 4:
        raise ValueError("degree must be in 1..4")
    d = d.detach().float().contiguous()
    out = torch.empty(int(offsets[-1]), degree * degree)
    if out.shape[0]:
        _sh_packed(d.numpy(), offsets.contiguous().numpy(), degree, _C, out.numpy())
    return out
