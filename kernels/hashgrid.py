"""Multiresolution hash-grid encoding as Triton kernels (forward, and backward to the
parameters and the inputs), computing exactly the function of the torch reference
:func:`latentscape.kernels.reference.hashgrid.hashgrid_encode` (tiny-cuda-nn semantics).

Launch grid: ``(cdiv(N, BLOCK), n_levels)``; one program encodes ``BLOCK`` points at one
level. Per corner the index is computed as the reference does it: dense prefix levels
``x + y*res + z*res^2`` wrapped once at the level size, hashed levels the CoherentPrime
hash in uint32 arithmetic masked to the (power of two) table size. Parameters may be
float32 or float16; interpolation always accumulates in float32 and the output is
float32. The parameter gradient is accumulated with float32 atomic adds into a float32
buffer (cast to the parameters' dtype at the end); the input gradient is written per
level (``[L, N, 3]``) and summed in torch, so it is deterministic.

Bit-exactness: ``pos = scale * x + 0.5`` is two roundings in the reference (torch does
not fuse), so the kernels are compiled with ``enable_fp_fusion=False``; with it the
cell and fraction of every point match the reference bit for bit on the GPU too.

``TRITON_INTERPRET=1`` must be set before this module is imported to run the kernels on
the CPU (the tests' ``conftest.py`` does it). The per-point cell and the corner index
are the shared ``@triton.jit`` helpers of :mod:`latentscape.kernels._common`, used by
both kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from latentscape.kernels._common import block_size, check_encoding_inputs, jit_helpers
from latentscape.kernels.layout import GridLayout

__all__ = ["hashgrid_encode", "hashgrid_fwd", "hashgrid_bwd", "HashGridFunction"]

# Points per program. 128 keeps the 8 corner gathers of a level in flight without
# spilling for F <= 4; not tuned on a GPU yet (tools/benchmarks/gpu.py measures it).
_BLOCK = 128
# Under the CPU interpreter each program costs Python overhead per op, so fewer,
# larger programs are much faster (tests only).
_BLOCK_INTERPRET = 1024


def _block() -> int:
    return block_size(_BLOCK, _BLOCK_INTERPRET)


_cell = jit_helpers()["grid_cell"]
_corner = jit_helpers()["grid_corner"]


@triton.jit
def _hashgrid_fwd_kernel(x_ptr, p_ptr, out_ptr, scale_ptr, res_ptr, size_ptr, offset_ptr, N,
                         N_DENSE: tl.constexpr, L: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    level = tl.program_id(1)
    rows = pid * BLOCK + tl.arange(0, BLOCK)
    mask = rows < N
    rows64 = rows.to(tl.int64)
    feats = tl.arange(0, F)
    scale = tl.load(scale_ptr + level)
    res = tl.load(res_ptr + level)
    size = tl.load(size_ptr + level)
    offset = tl.load(offset_ptr + level).to(tl.int64)
    cx, cy, cz, tx, ty, tz = _cell(x_ptr, rows64, mask, scale)
    acc = tl.zeros((BLOCK, F), dtype=tl.float32)
    m2 = mask[:, None]
    for c in tl.static_range(8):
        bx = c & 1
        by = (c >> 1) & 1
        bz = (c >> 2) & 1
        if level < N_DENSE:
            idx = _corner(cx, cy, cz, bx, by, bz, res, size, True)
        else:
            idx = _corner(cx, cy, cz, bx, by, bz, res, size, False)
        wx = tx if bx else 1.0 - tx
        wy = ty if by else 1.0 - ty
        wz = tz if bz else 1.0 - tz
        w = (wz * wy) * wx
        ptrs = p_ptr + ((offset + idx.to(tl.int64)) * F)[:, None] + feats[None, :]
        v = tl.load(ptrs, mask=m2, other=0.0).to(tl.float32)
        acc += w[:, None] * v
    out_ptrs = out_ptr + (rows64 * (L * F) + level * F)[:, None] + feats[None, :]
    tl.store(out_ptrs, acc, mask=m2)


@triton.jit
def _hashgrid_bwd_kernel(x_ptr, p_ptr, gout_ptr, gp_ptr, gx_ptr, scale_ptr, res_ptr, size_ptr, offset_ptr, N,
                         N_DENSE: tl.constexpr, L: tl.constexpr, F: tl.constexpr, BLOCK: tl.constexpr,
                         NEED_PARAMS: tl.constexpr, NEED_X: tl.constexpr):
    pid = tl.program_id(0)
    level = tl.program_id(1)
    rows = pid * BLOCK + tl.arange(0, BLOCK)
    mask = rows < N
    rows64 = rows.to(tl.int64)
    feats = tl.arange(0, F)
    scale = tl.load(scale_ptr + level)
    res = tl.load(res_ptr + level)
    size = tl.load(size_ptr + level)
    offset = tl.load(offset_ptr + level).to(tl.int64)
    cx, cy, cz, tx, ty, tz = _cell(x_ptr, rows64, mask, scale)
    m2 = mask[:, None]
    g = tl.load(gout_ptr + (rows64 * (L * F) + level * F)[:, None] + feats[None, :], mask=m2, other=0.0).to(tl.float32)
    gxa = tl.zeros((BLOCK,), dtype=tl.float32)
    gya = tl.zeros((BLOCK,), dtype=tl.float32)
    gza = tl.zeros((BLOCK,), dtype=tl.float32)
    for c in tl.static_range(8):
        bx = c & 1
        by = (c >> 1) & 1
        bz = (c >> 2) & 1
        if level < N_DENSE:
            idx = _corner(cx, cy, cz, bx, by, bz, res, size, True)
        else:
            idx = _corner(cx, cy, cz, bx, by, bz, res, size, False)
        wx = tx if bx else 1.0 - tx
        wy = ty if by else 1.0 - ty
        wz = tz if bz else 1.0 - tz
        ptrs = ((offset + idx.to(tl.int64)) * F)[:, None] + feats[None, :]
        if NEED_PARAMS:
            w = (wz * wy) * wx
            tl.atomic_add(gp_ptr + ptrs, w[:, None] * g, mask=m2)
        if NEED_X:
            # d(out)/d(frac_k) = sum_f g_f * v_f * (+-1) * (product of the other two weights)
            gv = tl.sum(g * tl.load(p_ptr + ptrs, mask=m2, other=0.0).to(tl.float32), axis=1)
            sx = 1.0 if bx else -1.0
            sy = 1.0 if by else -1.0
            sz = 1.0 if bz else -1.0
            gxa += gv * (wy * wz) * sx
            gya += gv * (wx * wz) * sy
            gza += gv * (wx * wy) * sz
    if NEED_X:
        base = gx_ptr + (level.to(tl.int64) * N + rows64) * 3
        tl.store(base + 0, gxa * scale, mask=mask)
        tl.store(base + 1, gya * scale, mask=mask)
        tl.store(base + 2, gza * scale, mask=mask)


_TABLES: dict[tuple[GridLayout, str], tuple[torch.Tensor, ...]] = {}


def _tables(layout: GridLayout, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(scale f32, res i32, size i32, offset i64) per level on ``device``, cached."""
    key = (layout, str(device))
    if key not in _TABLES:
        _TABLES[key] = (
            torch.tensor(layout.scales, dtype=torch.float32, device=device),
            torch.tensor(layout.resolutions, dtype=torch.int32, device=device),
            torch.tensor(layout.level_sizes, dtype=torch.int32, device=device),
            torch.tensor(layout.offsets[:-1], dtype=torch.int64, device=device),
        )
    return _TABLES[key]


def _check_layout(layout: GridLayout) -> None:
    # The hashed levels' mask and the dense levels' single wrap rely on these.
    for res, size, dense in zip(layout.resolutions, layout.level_sizes, layout.dense):
        if not dense and size & (size - 1):
            raise ValueError(f"hashed level of {size} entries is not a power of two")
        if dense and res**3 + res**2 + res >= 2 * size + (1 << 31):
            raise ValueError("dense level too large for 32-bit index arithmetic")


def hashgrid_fwd(x: torch.Tensor, params: torch.Tensor, layout: GridLayout) -> torch.Tensor:
    """Launch the forward kernel. x [N, 3] float32 contiguous, params [n_params] -> [N, L*F] float32."""
    n = x.shape[0]
    out = torch.empty(n, layout.n_output_dims, dtype=torch.float32, device=x.device)
    if n == 0:
        return out
    scale, res, size, offset = _tables(layout, x.device)
    block = _block()
    grid = (triton.cdiv(n, block), layout.n_levels)
    _hashgrid_fwd_kernel[grid](x, params, out, scale, res, size, offset, n,
                               N_DENSE=sum(layout.dense), L=layout.n_levels, F=layout.n_features_per_level,
                               BLOCK=block, enable_fp_fusion=False)
    return out


def hashgrid_bwd(grad_out: torch.Tensor, x: torch.Tensor, params: torch.Tensor, layout: GridLayout,
                 need_params: bool = True, need_x: bool = False) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Launch the backward kernel: (grad_params like params or None, grad_x [N, 3] float32 or None)."""
    n = x.shape[0]
    grad_params = torch.zeros(layout.n_params, dtype=torch.float32, device=x.device) if need_params else None
    grad_lx = torch.empty(layout.n_levels, n, 3, dtype=torch.float32, device=x.device) if need_x else None
    if n > 0 and (need_params or need_x):
        scale, res, size, offset = _tables(layout, x.device)
        block = _block()
        grid = (triton.cdiv(n, block), layout.n_levels)
        dummy = grad_out  # a valid pointer for the output the kernel does not touch
        _hashgrid_bwd_kernel[grid](x, params, grad_out, grad_params if need_params else dummy,
                                   grad_lx if need_x else dummy, scale, res, size, offset, n,
                                   N_DENSE=sum(layout.dense), L=layout.n_levels, F=layout.n_features_per_level,
                                   BLOCK=block, NEED_PARAMS=need_params, NEED_X=need_x, enable_fp_fusion=False)
    if grad_params is not None:
        grad_params = grad_params.to(params.dtype)
    grad_x = grad_lx.sum(0) if grad_lx is not None else None
    return grad_params, grad_x


class HashGridFunction(torch.autograd.Function):
    """Hash-grid encoding with gradients to the parameter buffer and the positions."""

    @staticmethod
    def forward(ctx, x, params, layout):
        x32 = x.float().contiguous()
        p = params.contiguous()
        ctx.save_for_backward(x32, p)
        ctx.layout = layout
        ctx.x_dtype = x.dtype
        return hashgrid_fwd(x32, p, layout)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        x32, p = ctx.saved_tensors
        need_x, need_params = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        gp, gx = hashgrid_bwd(grad_out.float().contiguous(), x32, p, ctx.layout, need_params, need_x)
        if gx is not None:
            gx = gx.to(ctx.x_dtype)
        return gx, gp, None


def hashgrid_encode(x: torch.Tensor, params: torch.Tensor, layout: GridLayout) -> torch.Tensor:
    """Encode points with the hash grid (Triton), same contract as the reference.

    x:      [N, 3] float positions, expected in [0, 1]
    params: [n_params] flat parameter buffer (float32 or float16), same device as x
    returns [N, n_levels * F] float32
    Differentiable w.r.t. ``params`` and ``x`` (first order).
    """
    check_encoding_inputs(x, params, layout)
    _check_layout(layout)
    return HashGridFunction.apply(x, params, layout)
