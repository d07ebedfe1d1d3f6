"""Filtered leaky ReLU with a Triton kernel for the pointwise part.

What is fused: the Triton kernel computes ``clamp(lrelu(u + b[c] * U[h, w]) * gain)``
on the upsampled, FIR-filtered tensor ``u`` and its backward. The up/down
resampling FIRs run as torch (depthwise) convolutions from the reference
(:func:`latentscape.kernels.reference.filtered_lrelu.upfirdn2d_ref`); a full
fusion of both FIRs into one kernel (as the official CUDA op does) is future work.

Why the bias fits in the pointwise kernel although the reference adds it *before*
upsampling: resampling is linear, so ``upfir(x + b) = upfir(x) + b * upfir(1)``.
``U = upfir(ones(H, W))`` is one ``[H', W']`` plane shared by all channels (it is 1
in the interior and differs near the zero-padded borders), so the result is exact
up to float rounding and the bias gradient is ``sum(dz * U)``.

Backends (``impl``): ``"torch"`` is the reference, ``"triton"`` the kernel (CUDA
tensors, or CPU tensors under ``TRITON_INTERPRET=1``), ``"auto"`` picks triton for
CUDA tensors when Triton imports, else torch. An explicitly requested triton that
cannot load raises :class:`latentscape.errors.BackendError`.
"""

from __future__ import annotations

import math
import os

import torch

from latentscape.kernels._common import interpret
from latentscape.kernels.reference.filtered_lrelu import filtered_lrelu_ref, upfirdn2d_ref

__all__ = ["filtered_lrelu", "filtered_lrelu_triton", "bias_lrelu_fwd", "bias_lrelu_bwd", "triton_available"]

# 1024 elements per program: a plain elementwise kernel, memory bound; no tuning done
# on a GPU yet (no measurement exists, so none is claimed).
_BLOCK = 1024
_KERNELS: dict[bool, tuple] = {}


def _kernels():
    """Define the kernels on first use (so ``TRITON_INTERPRET`` may be set late), cached per mode."""
    mode = interpret()
    if mode in _KERNELS:
        return _KERNELS[mode]
    import triton
    import triton.language as tl

    @triton.jit
    def _filtered_lrelu_fwd_kernel(u_ptr, b_ptr, U_ptr, y_ptr, numel, C, HW, gain, slope, clamp,
                                   HAS_BIAS: tl.constexpr, HAS_CLAMP: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < numel
        v = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            c = (offs // HW) % C
            hw = offs % HW
            v += tl.load(b_ptr + c, mask=mask, other=0.0).to(tl.float32) * tl.load(U_ptr + hw, mask=mask, other=0.0)
        v = tl.where(v > 0, v, v * slope) * gain
        if HAS_CLAMP:
            v = tl.minimum(tl.maximum(v, -clamp), clamp)
        tl.store(y_ptr + offs, v.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _filtered_lrelu_bwd_kernel(y_ptr, dy_ptr, dz_ptr, numel, gain, slope, clamp,
                                   HAS_CLAMP: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < numel
        y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        # sign(y) == sign(pre-activation) because gain > 0; a clamped output passes no gradient.
        g = g * tl.where(y > 0, gain, gain * slope)
        if HAS_CLAMP:
            g = tl.where(tl.abs(y) < clamp, g, 0.0)
        tl.store(dz_ptr + offs, g.to(dz_ptr.dtype.element_ty), mask=mask)

    _KERNELS[mode] = (_filtered_lrelu_fwd_kernel, _filtered_lrelu_bwd_kernel)
    return _KERNELS[mode]


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def bias_lrelu_fwd(u: torch.Tensor, b: torch.Tensor | None, U: torch.Tensor | None, gain: float,
                   slope: float, clamp: float | None) -> torch.Tensor:
    """``clamp(lrelu(u + b[c] * U) * gain)``; u ``[N, C, H, W]``, b ``[C]``, U ``[H, W]``."""
    fwd, _ = _kernels()
    u = u.contiguous()
    y = torch.empty_like(u)
    n, c, h, w = u.shape
    has_bias = b is not None
    bb = b.contiguous() if has_bias else u
    UU = U.to(torch.float32).contiguous() if has_bias else u
    grid = (triton_cdiv(u.numel(), _BLOCK),)
    fwd[grid](u, bb, UU, y, u.numel(), c, h * w, float(gain), float(slope),
              float(clamp) if clamp is not None else 0.0,
              HAS_BIAS=has_bias, HAS_CLAMP=clamp is not None, BLOCK=_BLOCK)
    return y


def bias_lrelu_bwd(y: torch.Tensor, dy: torch.Tensor, gain: float, slope: float,
                   clamp: float | None) -> torch.Tensor:
    """Gradient w.r.t. the pre-activation, from the saved output ``y``."""
    _, bwd = _kernels()
    dy = dy.contiguous()
    dz = torch.empty_like(y)
    bwd[(triton_cdiv(y.numel(), _BLOCK),)](y, dy, dz, y.numel(), float(gain), float(slope),
                                           float(clamp) if clamp is not None else 0.0,
                                           HAS_CLAMP=clamp is not None, BLOCK=_BLOCK)
    return dz


def triton_cdiv(a: int, b: int) -> int:
    return (a + b - 1) // b


class _BiasLReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, b, U, gain, slope, clamp):
        y = bias_lrelu_fwd(u, b, U, gain, slope, clamp)
        ctx.save_for_backward(y, U if b is not None else None)
        ctx.params = (gain, slope, clamp, b is not None)
        return y

    @staticmethod
    def backward(ctx, dy):
        y, U = ctx.saved_tensors
        gain, slope, clamp, has_bias = ctx.params
        dz = bias_lrelu_bwd(y, dy, gain, slope, clamp)
        db = (dz * U.to(dz.dtype)).sum(dim=(0, 2, 3)) if has_bias and ctx.needs_input_grad[1] else None
        return dz, db, None, None, None, None


def filtered_lrelu_triton(
    x: torch.Tensor,  # [N, C, H, W]
    fu: torch.Tensor | None = None,
    fd: torch.Tensor | None = None,
    b: torch.Tensor | None = None,  # [C]
    up: int = 1,
    down: int = 1,
    padding=0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
) -> torch.Tensor:
    """Same contract as :func:`filtered_lrelu_ref`; the pointwise part runs in Triton."""
    u = upfirdn2d_ref(x, fu, up=up, padding=padding, gain=up**2)
    U = None
    if b is not None:
        ones = torch.ones(1, 1, *x.shape[2:], dtype=torch.float32, device=x.device)
        U = upfirdn2d_ref(ones, fu, up=up, padding=padding, gain=up**2)[0, 0]
    y = _BiasLReLU.apply(u, b, U, float(gain), float(slope), None if clamp is None else float(clamp))
    return upfirdn2d_ref(y, fd, down=down)


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None = None,
    fd: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding=0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
    impl: str | None = None,
) -> torch.Tensor:
    """Filtered leaky ReLU; ``impl`` (or ``LATENTSCAPE_FILTERED_LRELU``) = auto | torch | triton."""
    impl = impl or os.environ.get("LATENTSCAPE_FILTERED_LRELU", "auto")
    if impl == "auto":
        use_triton = x.is_cuda and triton_available()
    elif impl == "triton":
        if not triton_available():
            from latentscape.errors import BackendError

            raise BackendError("filtered_lrelu: impl='triton' requested but triton does not import",
                               hint="pip install 'latentscape[triton]' or use impl='torch'")
        use_triton = True
    elif impl == "torch":
        use_triton = False
    else:
        raise ValueError(f"impl must be auto, torch or triton, got {impl!r}")
    fn = filtered_lrelu_triton if use_triton else filtered_lrelu_ref
    return fn(x, fu, fd, b, up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp)
