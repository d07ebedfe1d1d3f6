"""Real spherical harmonics up to degree 4 (16 coefficients) of unit directions.

The basis and its order are the standard real SH used by tiny-cuda-nn's
``SphericalHarmonics`` encoding, so a colour MLP trained here reads the same inputs
there (tiny-cuda-nn maps its [0, 1] inputs to [-1, 1] first; we take unit vectors).

The torch twin of the Triton kernel :func:`latentscape.kernels.sh.sh_encode`
(``_sh_fwd_kernel``); ``tests/test_kernels_sh.py`` checks that the two agree.
"""

from __future__ import annotations

import torch


def sh_encode(d: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """d: [N, 3] unit directions -> [N, degree**2]."""
    if degree < 1 or degree > 4:
        raise ValueError("degree must be in 1..4")
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.94617469575755997 * zz - 0.31539156525251999,
            -1.0925484305920792 * x * z,
            0.54627421529603959 * (xx - yy),
        ]
    if degree > 3:
        out += [
            0.59004358992664352 * y * (-3.0 * xx + yy),
            2.8906114426405538 * x * y * z,
            0.45704579946446572 * y * (1.0 - 5.0 * zz),
            0.3731763325901154 * z * (5.0 * zz - 3.0),
            0.45704579946446572 * x * (1.0 - 5.0 * zz),
            1.4453057213202769 * z * (xx - yy),
            0.59004358992664352 * x * (-xx + 3.0 * yy),
        ]
    return torch.stack(out, -1)
