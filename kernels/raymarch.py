"""Ray marching through the occupancy grid and front-to-back compositing as Triton
kernels, with the contracts of :mod:`latentscape.kernels.reference.raymarch`.

* :func:`march_segment`: one program per ``BLOCK`` (ray, step) pairs (flattened
  ``[N, S]``); each proposes ``t = t_start + (s + 0.5) * dt`` and reads the cascaded
  occupancy bitfield at the sample (the finest level containing it). The level is found
  by comparing the point's extent with powers of two (exactly ``ceil(log2(extent))``
  without a transcendental), and the kernel is compiled without FMA contraction so the
  sample points round as torch's do.
* :func:`composite_segment`: one program per ``BLOCK`` rays, a loop over the segment's
  samples carrying the transmittance; its backward (two passes over the samples:
  the total weighted colour, then the per-sample gradients) gives the gradients
  w.r.t. ``sigma``, ``rgb`` and the incoming transmittance, which training needs
  because the transmittance carries earlier segments' densities.

Gradient of the composite, with ``T_k`` the transmittance after sample ``k``,
``w_i`` the sample weights, ``v_i = gC . c_i + gD t_i + gO`` and ``R_k = sum_{i>k} w_i v_i``:
``dL/dsigma_k = dt (T_k v_k - R_k - gT T_out)``, ``dL/dc_k = w_k gC`` and
``dL/dT_in = (sum_i w_i v_i + gT T_out) / T_in`` (computed without the division).

``TRITON_INTERPRET=1`` must be set before this module is imported to run the kernels on
the CPU (the tests' ``conftest.py`` does it).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

__all__ = ["march_segment", "composite_segment", "CompositeFunction"]

# Elements (march) and rays (composite) per program; not tuned on a GPU yet
# (tools/bench_gpu.py times both against torch and their memory floor).
_BLOCK_MARCH = 256
_BLOCK_COMPOSITE = 128


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _march_kernel(o_ptr, d_ptr, ts_ptr, tf_ptr, aabb_ptr, bits_ptr, t_ptr, valid_ptr, total, dt,
                  S, R, LEVELS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    ray = offs // S
    step = (offs % S).to(tl.float32)
    t = tl.load(ts_ptr + ray, mask=mask, other=0.0) + (step + 0.5) * dt
    inside = t < tl.load(tf_ptr + ray, mask=mask, other=0.0)
    lo_x = tl.load(aabb_ptr + 0)
    lo_y = tl.load(aabb_ptr + 1)
    lo_z = tl.load(aabb_ptr + 2)
    hi_x = tl.load(aabb_ptr + 3)
    hi_y = tl.load(aabb_ptr + 4)
    hi_z = tl.load(aabb_ptr + 5)
    rx = (tl.load(o_ptr + ray * 3 + 0, mask=mask, other=0.0) + t * tl.load(d_ptr + ray * 3 + 0, mask=mask, other=0.0)
          - (lo_x + hi_x) * 0.5) / ((hi_x - lo_x) * 0.5)
    ry = (tl.load(o_ptr + ray * 3 + 1, mask=mask, other=0.0) + t * tl.load(d_ptr + ray * 3 + 1, mask=mask, other=0.0)
          - (lo_y + hi_y) * 0.5) / ((hi_y - lo_y) * 0.5)
    rz = (tl.load(o_ptr + ray * 3 + 2, mask=mask, other=0.0) + t * tl.load(d_ptr + ray * 3 + 2, mask=mask, other=0.0)
          - (lo_z + hi_z) * 0.5) / ((hi_z - lo_z) * 0.5)
    extent = tl.maximum(tl.maximum(tl.abs(rx), tl.abs(ry)), tl.abs(rz))
    # level = ceil(log2(extent)) clamped at 0: the number of powers 2^k (k >= 0) below it.
    level = tl.zeros((BLOCK,), dtype=tl.int32)
    scale = tl.full((BLOCK,), 1.0, dtype=tl.float32)
    bound = 1.0
    for _k in tl.static_range(LEVELS):
        above = extent > bound
        level += above.to(tl.int32)
        scale = tl.where(above, scale * 0.5, scale)
        bound = bound * 2.0
    in_grid = level < LEVELS
    level = tl.minimum(level, LEVELS - 1)
    cx = tl.minimum(tl.maximum(((rx * scale + 1.0) * 0.5 * R).to(tl.int32), 0), R - 1)
    cy = tl.minimum(tl.maximum(((ry * scale + 1.0) * 0.5 * R).to(tl.int32), 0), R - 1)
    cz = tl.minimum(tl.maximum(((rz * scale + 1.0) * 0.5 * R).to(tl.int32), 0), R - 1)
    cell = ((level.to(tl.int64) * R + cx) * R + cy) * R + cz
    occ = tl.load(bits_ptr + cell, mask=mask & in_grid, other=0)
    valid = inside & in_grid & (occ != 0)
    tl.store(t_ptr + offs, t, mask=mask)
    tl.store(valid_ptr + offs, valid.to(tl.uint8), mask=mask)


@triton.jit
def _composite_fwd_kernel(sigma_ptr, rgb_ptr, t_ptr, tin_ptr, out_rgb_ptr, depth_ptr, op_ptr, tout_ptr,
                          N, S, dt, BLOCK: tl.constexpr):
    rays = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = rays < N
    t0 = tl.load(tin_ptr + rays, mask=mask, other=0.0)
    e = tl.full((BLOCK,), 1.0, dtype=tl.float32)
    cr = tl.zeros((BLOCK,), dtype=tl.float32)
    cg = tl.zeros((BLOCK,), dtype=tl.float32)
    cb = tl.zeros((BLOCK,), dtype=tl.float32)
    dep = tl.zeros((BLOCK,), dtype=tl.float32)
    op = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(S):
        i = rays * S + s
        sig = tl.load(sigma_ptr + i, mask=mask, other=0.0).to(tl.float32)
        a = 1.0 - tl.exp(-sig * dt)
        w = (t0 * e) * a
        cr += w * tl.load(rgb_ptr + i * 3 + 0, mask=mask, other=0.0).to(tl.float32)
        cg += w * tl.load(rgb_ptr + i * 3 + 1, mask=mask, other=0.0).to(tl.float32)
        cb += w * tl.load(rgb_ptr + i * 3 + 2, mask=mask, other=0.0).to(tl.float32)
        dep += w * tl.load(t_ptr + i, mask=mask, other=0.0)
        op += w
        e = e * (1.0 - a)
    tl.store(out_rgb_ptr + rays * 3 + 0, cr, mask=mask)
    tl.store(out_rgb_ptr + rays * 3 + 1, cg, mask=mask)
    tl.store(out_rgb_ptr + rays * 3 + 2, cb, mask=mask)
    tl.store(depth_ptr + rays, dep, mask=mask)
    tl.store(op_ptr + rays, op, mask=mask)
    tl.store(tout_ptr + rays, t0 * e, mask=mask)


@triton.jit
def _composite_bwd_kernel(sigma_ptr, rgb_ptr, t_ptr, tin_ptr, g_rgb_ptr, g_depth_ptr, g_op_ptr, g_tout_ptr,
                          g_sigma_ptr, g_col_ptr, g_tin_ptr, N, S, dt, BLOCK: tl.constexpr):
    rays = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = rays < N
    t0 = tl.load(tin_ptr + rays, mask=mask, other=0.0)
    gr = tl.load(g_rgb_ptr + rays * 3 + 0, mask=mask, other=0.0)
    gg = tl.load(g_rgb_ptr + rays * 3 + 1, mask=mask, other=0.0)
    gb = tl.load(g_rgb_ptr + rays * 3 + 2, mask=mask, other=0.0)
    gd = tl.load(g_depth_ptr + rays, mask=mask, other=0.0)
    go = tl.load(g_op_ptr + rays, mask=mask, other=0.0)
    gt = tl.load(g_tout_ptr + rays, mask=mask, other=0.0)
    # Pass 1: sum_i E_i a_i v_i (E without T_in) and E_S.
    e = tl.full((BLOCK,), 1.0, dtype=tl.float32)
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(S):
        i = rays * S + s
        a = 1.0 - tl.exp(-tl.load(sigma_ptr + i, mask=mask, other=0.0).to(tl.float32) * dt)
        v = (gr * tl.load(rgb_ptr + i * 3 + 0, mask=mask, other=0.0).to(tl.float32)
             + gg * tl.load(rgb_ptr + i * 3 + 1, mask=mask, other=0.0).to(tl.float32)
             + gb * tl.load(rgb_ptr + i * 3 + 2, mask=mask, other=0.0).to(tl.float32)
             + gd * tl.load(t_ptr + i, mask=mask, other=0.0) + go)
        total += (e * a) * v
        e = e * (1.0 - a)
    e_end = e
    tl.store(g_tin_ptr + rays, total + gt * e_end, mask=mask)
    # Pass 2: dsigma_k = dt * T_in * (E_{k+1} v_k - (total - prefix_k) - gT E_S); dc_k = w_k gC.
    e = tl.full((BLOCK,), 1.0, dtype=tl.float32)
    prefix = tl.zeros((BLOCK,), dtype=tl.float32)
    for s in range(S):
        i = rays * S + s
        a = 1.0 - tl.exp(-tl.load(sigma_ptr + i, mask=mask, other=0.0).to(tl.float32) * dt)
        v = (gr * tl.load(rgb_ptr + i * 3 + 0, mask=mask, other=0.0).to(tl.float32)
             + gg * tl.load(rgb_ptr + i * 3 + 1, mask=mask, other=0.0).to(tl.float32)
             + gb * tl.load(rgb_ptr + i * 3 + 2, mask=mask, other=0.0).to(tl.float32)
             + gd * tl.load(t_ptr + i, mask=mask, other=0.0) + go)
        ea = e * a
        prefix += ea * v
        e = e * (1.0 - a)
        tl.store(g_sigma_ptr + i, dt * t0 * (e * v - (total - prefix) - gt * e_end), mask=mask)
        w = t0 * ea
        tl.store(g_col_ptr + i * 3 + 0, w * gr, mask=mask)
        tl.store(g_col_ptr + i * 3 + 1, w * gg, mask=mask)
        tl.store(g_col_ptr + i * 3 + 2, w * gb, mask=mask)


def march_segment(o, d, t_start, tfar, dt: float, n_steps: int, bitfield, aabb):
    """The next ``n_steps`` samples of each ray from ``t_start`` at spacing ``dt``.

    o, d: [N, 3] float32; t_start, tfar: [N]; bitfield: [levels, R, R, R] bool; aabb: [6].
    Returns (t [N, S] sample distances (midpoints), valid [N, S] bool: inside the box
    and in an occupied cell). Not differentiable (as the reference: t is a schedule).
    """
    n = o.shape[0]
    if o.ndim != 2 or o.shape[1] != 3 or d.shape != o.shape:
        raise ValueError(f"o and d must be [N, 3], got {tuple(o.shape)} and {tuple(d.shape)}")
    if t_start.shape != (n,) or tfar.shape != (n,):
        raise ValueError(f"t_start and tfar must be [{n}], got {tuple(t_start.shape)} and {tuple(tfar.shape)}")
    if bitfield.ndim != 4 or len(set(bitfield.shape[1:])) != 1:
        raise ValueError(f"bitfield must be [levels, R, R, R], got {tuple(bitfield.shape)}")
    if aabb.shape != (6,):
        raise ValueError(f"aabb must be [6], got {tuple(aabb.shape)}")
    if n_steps < 1:
        raise ValueError("n_steps must be >= 1")
    for name, tensor in (("d", d), ("t_start", t_start), ("tfar", tfar), ("bitfield", bitfield), ("aabb", aabb)):
        if tensor.device != o.device:
            raise ValueError(f"{name} is on {tensor.device} but o on {o.device}")
    t = torch.empty(n, n_steps, dtype=torch.float32, device=o.device)
    valid = torch.empty(n, n_steps, dtype=torch.uint8, device=o.device)
    total = n * n_steps
    if total:
        block = 2048 if _interpret() else _BLOCK_MARCH
        bits = bitfield.contiguous().view(torch.uint8) if bitfield.dtype == torch.bool else (bitfield != 0).to(torch.uint8)
        _march_kernel[(triton.cdiv(total, block),)](
            o.float().contiguous(), d.float().contiguous(), t_start.float().contiguous(), tfar.float().contiguous(),
            aabb.float().contiguous(), bits, t, valid, total, float(dt), n_steps, bitfield.shape[1],
            LEVELS=bitfield.shape[0], BLOCK=block, enable_fp_fusion=False)
    return t, valid.view(torch.bool)


class CompositeFunction(torch.autograd.Function):
    """Front-to-back compositing with gradients to sigma, rgb and the incoming transmittance."""

    @staticmethod
    def forward(ctx, sigma, rgb, t, dt, transmittance):
        n, s = sigma.shape
        sigma, rgb = sigma.float().contiguous(), rgb.float().contiguous()
        t, transmittance = t.float().contiguous(), transmittance.float().contiguous()
        dev = sigma.device
        out_rgb = torch.empty(n, 3, device=dev)
        depth, opacity, t_out = torch.empty(n, device=dev), torch.empty(n, device=dev), torch.empty(n, device=dev)
        if n:
            block = 1024 if _interpret() else _BLOCK_COMPOSITE
            _composite_fwd_kernel[(triton.cdiv(n, block),)](sigma, rgb, t, transmittance, out_rgb, depth, opacity,
                                                            t_out, n, s, float(dt), BLOCK=block)
        ctx.save_for_backward(sigma, rgb, t, transmittance)
        ctx.dt = float(dt)
        return out_rgb, depth, opacity, t_out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_rgb, g_depth, g_op, g_tout):
        sigma, rgb, t, transmittance = ctx.saved_tensors
        n, s = sigma.shape
        dev = sigma.device

        def grad_or_zeros(g, shape):
            return torch.zeros(shape, device=dev) if g is None else g.float().contiguous()

        g_rgb, g_depth = grad_or_zeros(g_rgb, (n, 3)), grad_or_zeros(g_depth, (n,))
        g_op, g_tout = grad_or_zeros(g_op, (n,)), grad_or_zeros(g_tout, (n,))
        g_sigma, g_col, g_tin = torch.empty_like(sigma), torch.empty_like(rgb), torch.empty_like(transmittance)
        if n:
            block = 1024 if _interpret() else _BLOCK_COMPOSITE
            _composite_bwd_kernel[(triton.cdiv(n, block),)](sigma, rgb, t, transmittance, g_rgb, g_depth, g_op, g_tout,
                                                            g_sigma, g_col, g_tin, n, s, ctx.dt, BLOCK=block)
        return g_sigma, g_col, None, None, g_tin


def composite_segment(sigma, rgb, t, dt: float, transmittance):
    """Front-to-back compositing of one segment of samples per ray.

    sigma: [N, S] densities (0 where there is no sample), rgb: [N, S, 3], t: [N, S]
    distances, transmittance: [N] at the segment's start.
    Returns (rgb [N, 3], depth [N], opacity [N], transmittance_out [N]) of this segment,
    float32; differentiable w.r.t. sigma, rgb and transmittance.
    """
    if sigma.ndim != 2:
        raise ValueError(f"sigma must be [N, S], got {tuple(sigma.shape)}")
    n, s = sigma.shape
    if rgb.shape != (n, s, 3) or t.shape != (n, s) or transmittance.shape != (n,):
        raise ValueError(f"expected rgb [{n}, {s}, 3], t [{n}, {s}], transmittance [{n}]; got "
                         f"{tuple(rgb.shape)}, {tuple(t.shape)}, {tuple(transmittance.shape)}")
    for name, tensor in (("rgb", rgb), ("t", t), ("transmittance", transmittance)):
        if tensor.device != sigma.device:
            raise ValueError(f"{name} is on {tensor.device} but sigma on {sigma.device}")
    return CompositeFunction.apply(sigma, rgb, t, dt, transmittance)
