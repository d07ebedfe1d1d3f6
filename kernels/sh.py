"""Real spherical-harmonics encoding of unit directions as a Triton kernel, computing
exactly the function of the torch reference :func:`latentscape.kernels.reference.sh.sh_encode`
(tiny-cuda-nn's ``SphericalHarmonics`` basis and order, degree 1..4 -> degree**2 values).

Launch grid: ``(cdiv(N, BLOCK),)``; one program encodes ``BLOCK`` directions, the
``DEGREE**2`` outputs of a direction written next to each other. Input float32 or
float16 (computed in float32); output float32. The products are written in the
reference's order with fp fusion off, so the results match it to float32 rounding.

Backward: the gradient to the directions is the reference's, by autograd (view
directions are inputs, rarely optimised; no kernel is warranted until a profile
says so).

``TRITON_INTERPRET=1`` must be set before this module is imported to run the kernel on
the CPU (the tests' ``conftest.py`` does it).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from latentscape.kernels._common import block_size, check_floating, check_points
from latentscape.kernels.reference.sh import sh_encode as sh_reference

__all__ = ["sh_encode", "sh_fwd", "SHFunction"]

# Directions per program: a memory-bound elementwise kernel (12 bytes in, 64 out per
# direction at degree 4); not tuned on a GPU yet (no measurement, none claimed).
_BLOCK = 256
_BLOCK_INTERPRET = 4096


@triton.jit
def _sh_fwd_kernel(d_ptr, out_ptr, N, DEGREE: tl.constexpr, BLOCK: tl.constexpr):
    rows = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = rows < N
    rows64 = rows.to(tl.int64)
    x = tl.load(d_ptr + rows64 * 3 + 0, mask=mask, other=0.0).to(tl.float32)
    y = tl.load(d_ptr + rows64 * 3 + 1, mask=mask, other=0.0).to(tl.float32)
    z = tl.load(d_ptr + rows64 * 3 + 2, mask=mask, other=0.0).to(tl.float32)
    o = out_ptr + rows64 * (DEGREE * DEGREE)
    tl.store(o + 0, tl.zeros_like(x) + 0.28209479177387814, mask=mask)
    if DEGREE > 1:
        tl.store(o + 1, -0.48860251190291987 * y, mask=mask)
        tl.store(o + 2, 0.48860251190291987 * z, mask=mask)
        tl.store(o + 3, -0.48860251190291987 * x, mask=mask)
    if DEGREE > 2:
        xx = x * x
        yy = y * y
        zz = z * z
        tl.store(o + 4, 1.0925484305920792 * x * y, mask=mask)
        tl.store(o + 5, -1.0925484305920792 * y * z, mask=mask)
        tl.store(o + 6, 0.94617469575755997 * zz - 0.31539156525251999, mask=mask)
        tl.store(o + 7, -1.0925484305920792 * x * z, mask=mask)
        tl.store(o + 8, 0.54627421529603959 * (xx - yy), mask=mask)
    if DEGREE > 3:
        xx = x * x
        yy = y * y
        zz = z * z
        tl.store(o + 9, 0.59004358992664352 * y * (-3.0 * xx + yy), mask=mask)
        tl.store(o + 10, 2.8906114426405538 * x * y * z, mask=mask)
        tl.store(o + 11, 0.45704579946446572 * y * (1.0 - 5.0 * zz), mask=mask)
        tl.store(o + 12, 0.3731763325901154 * z * (5.0 * zz - 3.0), mask=mask)
        tl.store(o + 13, 0.45704579946446572 * x * (1.0 - 5.0 * zz), mask=mask)
        tl.store(o + 14, 1.4453057213202769 * z * (xx - yy), mask=mask)
        tl.store(o + 15, 0.59004358992664352 * x * (-xx + 3.0 * yy), mask=mask)


def sh_fwd(d: torch.Tensor, degree: int) -> torch.Tensor:
    """Launch the kernel. d [N, 3] float contiguous -> [N, degree**2] float32."""
    n = d.shape[0]
    out = torch.empty(n, degree * degree, dtype=torch.float32, device=d.device)
    if n == 0:
        return out
    block = block_size(_BLOCK, _BLOCK_INTERPRET)
    _sh_fwd_kernel[(triton.cdiv(n, block),)](d, out, n, DEGREE=degree, BLOCK=block, enable_fp_fusion=False)
    return out


class SHFunction(torch.autograd.Function):
    """SH encoding: the kernel forward, the reference's gradient to the directions."""

    @staticmethod
    def forward(ctx, d, degree):
        ctx.save_for_backward(d)
        ctx.degree = degree
        return sh_fwd(d.contiguous(), degree)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        (d,) = ctx.saved_tensors
        with torch.enable_grad():
            dd = d.detach().float().requires_grad_(True)
            (gd,) = torch.autograd.grad(sh_reference(dd, ctx.degree), dd, grad_out)
        return gd.to(d.dtype), None


def sh_encode(d: torch.Tensor, degree: int = 4) -> torch.Tensor:
    """Encode unit directions (Triton); same contract as the reference.

    d:       [N, 3] float32 or float16 unit directions (CUDA, or CPU under the interpreter)
    degree:  1..4
    returns  [N, degree**2] float32; differentiable w.r.t. ``d``.
    """
    if not isinstance(degree, int) or isinstance(degree, bool) or not 1 <= degree <= 4:
        raise ValueError("degree must be in 1..4")
    check_points("d", d)
    check_floating("d", d)
    return SHFunction.apply(d, degree)
