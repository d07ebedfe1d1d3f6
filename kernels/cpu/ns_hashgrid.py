"""nerfstudio's torch hash encoding on the CPU (numba), forward only (imported scenes render, never train).

Mirrors ``latentscape.field.nerfacto.TorchHashEncoding`` (nerfstudio 1.1.5's
``HashEncoding(implementation="torch")``): level scale ``S_l`` (given, float32), ``u = x * S_l``,
corners at ``floor(u)`` / ``ceil(u)``, every level hashed ``(cx ^ cy*2654435761 ^ cz*805459861)
mod T`` (T a power of two, so the mod is a mask), table rows ``l*T + h``; the same trilinear
blend, in the same order (x, then y, then z, corner pairs as nerfstudio's f_0 .. f_7), in float32.
Each point's corners are computed in registers, one level at a time for all points (the level's
table stays in cache), instead of materialising [N, L, 8, F] tensors; outputs agree with the torch version to float32 rounding.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

_ONE = np.float32(1.0)
_P1 = np.int64(2654435761)
_P2 = np.int64(805459861)


@njit(parallel=True, cache=True, nogil=True)
def _fwd(x, table, scal, tsize, out):
    n = x.shape[0]
    n_levels = scal.shape[0]
    nf = table.shape[1]
    mask = np.int64(tsize - 1)
    # level by level (a level's table, 4 MB at nerfacto's T = 2^19, stays in cache while every
    # point reads it), parallel over points within a level: same arithmetic, same bits
    for lv in range(n_levels):
        for i in prange(n):
            s = scal[lv]
            px = x[i, 0] * s
            py = x[i, 1] * s
            pz = x[i, 2] * s
            fx = np.floor(px)
            fy = np.floor(py)
            fz = np.floor(pz)
            ox = px - fx
            oy = py - fy
            oz = pz - fz
            xf = np.int64(fx) & mask
            xc = np.int64(np.ceil(px)) & mask
            yf = (np.int64(fy) * _P1) & mask
            yc = (np.int64(np.ceil(py)) * _P1) & mask
            zf = (np.int64(fz) * _P2) & mask
            zc = (np.int64(np.ceil(pz)) * _P2) & mask
            base = np.int64(lv) * tsize
            i0 = (xc ^ yc ^ zc) + base
            i1 = (xc ^ yf ^ zc) + base
            i2 = (xf ^ yf ^ zc) + base
            i3 = (xf ^ yc ^ zc) + base
            i4 = (xc ^ yc ^ zf) + base
            i5 = (xc ^ yf ^ zf) + base
            i6 = (xf ^ yf ^ zf) + base
            i7 = (xf ^ yc ^ zf) + base
            mx = _ONE - ox
            my = _ONE - oy
            mz = _ONE - oz
            for k in range(nf):
                f03 = table[i0, k] * ox + table[i3, k] * mx
                f12 = table[i1, k] * ox + table[i2, k] * mx
                f56 = table[i5, k] * ox + table[i6, k] * mx
                f47 = table[i4, k] * ox + table[i7, k] * mx
                f0312 = f03 * oy + f12 * my
                f4756 = f47 * oy + f56 * my
                out[i, lv * nf + k] = f0312 * oz + f4756 * mz


def ns_hash_encode(x: torch.Tensor, table: torch.Tensor, scalings: torch.Tensor, table_size: int) -> torch.Tensor:
    """x: [N, 3] float32 in [0, 1]; table: [L*T, F]; scalings: [L] float32 -> [N, L*F] (no gradient)."""
    xn = x.detach().contiguous().to(torch.float32).numpy()
    tn = table.detach().contiguous().to(torch.float32).numpy()
    sn = scalings.detach().contiguous().to(torch.float32).numpy()
    out = np.empty((xn.shape[0], sn.shape[0] * tn.shape[1]), dtype=np.float32)
    if xn.shape[0]:
        _fwd(xn, tn, sn, np.int64(table_size), out)
    return torch.from_numpy(out)
