"""Packed ray marching and compositing as Triton kernels: the GPU frame's hot loop.

Same contracts as :mod:`latentscape.kernels.reference.packed` (and the numba kernels of
``kernels/cpu/raymarch.py``), so the renderer's packed rounds run unchanged on CUDA:

* :func:`march_next`: one lane per ray (instant-ngp's tracer). Each lane walks its
  lattice ``t_start + (k + 0.5) * dt`` and jumps over the lattice points certainly
  inside an empty occupancy cell (all but the last before the cell's exit, so float
  rounding at a boundary cannot skip a sample), reading the finest cascade level that
  contains the point. Two launches: count, then fill at the prefix-sum offsets; the
  only host synchronisation is reading the total to allocate the samples.
* :func:`composite_packed`: one lane per ray, a loop over the ray's samples carrying
  the transmittance; the backward is the closed form of d(weights)/d(sigma) in two
  passes (the total weighted colour, then a running prefix), as in the numba kernel.
* :func:`sample_points` / :func:`sh_packed`: each sample's ray index from
  ``repeat_interleave`` with a known output size (no synchronisation), then the field's
  normalisation / the SH encoding (:mod:`latentscape.kernels.sh` on CUDA).

Kernels are compiled without FMA contraction so the points round as torch's do: under
``TRITON_INTERPRET=1`` the samples are bit-identical to the reference (the parity
tests check it at irregular sizes); this module is imported by the ``triton`` backend.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from latentscape.kernels._common import block_size

__all__ = ["march_next", "composite_packed", "sample_points", "sh_packed"]

# Rays per program. Not tuned on a GPU yet (no device was lent when this was written).
_BLOCK_MARCH = 128
_BLOCK_COMPOSITE = 128
_BIG = tl.constexpr(1.0e30)  # 'no exit on this axis' (kernels read globals only as constexpr)


@triton.jit
def _axis_exit(p, dv, cidx, lim, center, half, R):
    """Distance from p along one axis to where the ray leaves cell ``cidx`` of its level."""
    size = 2.0 * half * lim / R
    lo = center - half * lim + cidx.to(tl.float32) * size
    safe = tl.where(dv == 0.0, 1.0, dv)
    ex = tl.where(dv > 0.0, (lo + size - p) / safe, (lo - p) / safe)
    return tl.where(dv == 0.0, _BIG, ex)


@triton.jit
def _slab(p, dv, center, half, lim, t0, t1, miss):
    """One axis of a ray/box entry test (box ``center +- half * lim``)."""
    lo = center - half * lim
    hi = center + half * lim
    flat = dv == 0.0
    safe = tl.where(flat, 1.0, dv)
    a = (lo - p) / safe
    b = (hi - p) / safe
    t0 = tl.where(flat, t0, tl.maximum(t0, tl.minimum(a, b)))
    t1 = tl.where(flat, t1, tl.minimum(t1, tl.maximum(a, b)))
    miss = miss | (flat & ((p < lo) | (p > hi)))
    return t0, t1, miss


@triton.jit
def _march_kernel(o_ptr, d_ptr, ts_ptr, tf_ptr, aabb_ptr, bits_ptr, off_ptr, count_ptr, tout_ptr, tnext_ptr,
                  N, dt, R, max_samples, LEVELS: tl.constexpr, FILL: tl.constexpr, BLOCK: tl.constexpr):
    rays = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = rays < N
    # The box from device memory (reading it on the host would be a sync per round).
    lo_x = tl.load(aabb_ptr + 0)
    lo_y = tl.load(aabb_ptr + 1)
    lo_z = tl.load(aabb_ptr + 2)
    hi_x = tl.load(aabb_ptr + 3)
    hi_y = tl.load(aabb_ptr + 4)
    hi_z = tl.load(aabb_ptr + 5)
    cx0 = (lo_x + hi_x) * 0.5
    cy0 = (lo_y + hi_y) * 0.5
    cz0 = (lo_z + hi_z) * 0.5
    hx = (hi_x - lo_x) * 0.5
    hy = (hi_y - lo_y) * 0.5
    hz = (hi_z - lo_z) * 0.5
    ox = tl.load(o_ptr + rays * 3 + 0, mask=mask, other=0.0)
    oy = tl.load(o_ptr + rays * 3 + 1, mask=mask, other=0.0)
    oz = tl.load(o_ptr + rays * 3 + 2, mask=mask, other=0.0)
    dx = tl.load(d_ptr + rays * 3 + 0, mask=mask, other=0.0)
    dy = tl.load(d_ptr + rays * 3 + 1, mask=mask, other=0.0)
    dz = tl.load(d_ptr + rays * 3 + 2, mask=mask, other=0.0)
    ts = tl.load(ts_ptr + rays, mask=mask, other=0.0)
    tf = tl.load(tf_ptr + rays, mask=mask, other=0.0)
    if FILL:
        pos = tl.load(off_ptr + rays, mask=mask, other=0)
    else:
        pos = tl.zeros((BLOCK,), dtype=tl.int64)
    kept = tl.zeros((BLOCK,), dtype=tl.int32)
    k = tl.zeros((BLOCK,), dtype=tl.int32)
    room = (tl.zeros((BLOCK,), dtype=tl.int32) + max_samples) > 0  # a block, not a scalar: stays int1
    full = mask & (room == 0)
    active = mask & room
    n_active = tl.sum(active.to(tl.int32), axis=0)
    while n_active > 0:
        t = ts + (k.to(tl.float32) + 0.5) * dt
        live = active & (t < tf)
        k = k + live.to(tl.int32)
        px = ox + t * dx
        py = oy + t * dy
        pz = oz + t * dz
        rx = (px - cx0) / hx
        ry = (py - cy0) / hy
        rz = (pz - cz0) / hz
        ext = tl.maximum(tl.maximum(tl.abs(rx), tl.abs(ry)), tl.abs(rz))
        level = tl.zeros((BLOCK,), dtype=tl.int32)
        lim = tl.full((BLOCK,), 1.0, dtype=tl.float32)
        for _l in tl.static_range(LEVELS):
            above = ext > lim
            level += above.to(tl.int32)
            lim = tl.where(above, lim * 2.0, lim)
        in_grid = (level < LEVELS) & (ext <= lim)
        sc = 1.0 / lim
        # Clamped before the cast (a point far outside the cascades must not overflow int32);
        # inside the grid this is the reference's truncate-then-clamp.
        rf = R * 1.0
        cx = tl.minimum(tl.maximum((rx * sc + 1.0) * 0.5 * R, 0.0), rf - 1.0).to(tl.int32)
        cy = tl.minimum(tl.maximum((ry * sc + 1.0) * 0.5 * R, 0.0), rf - 1.0).to(tl.int32)
        cz = tl.minimum(tl.maximum((rz * sc + 1.0) * 0.5 * R, 0.0), rf - 1.0).to(tl.int32)
        lvl = tl.minimum(level, LEVELS - 1)
        cell = ((lvl.to(tl.int64) * R + cx) * R + cy) * R + cz
        occ = tl.load(bits_ptr + cell, mask=live & in_grid, other=0) != 0
        take = live & in_grid & occ
        if FILL:
            tl.store(tout_ptr + pos + kept, t, mask=take)
        kept = kept + take.to(tl.int32)
        now_full = take & (kept >= max_samples)
        full = full | now_full
        # Empty cell of a level inside the grid: jump over the lattice points surely inside it.
        empty = live & in_grid & (occ == 0)
        ex = tl.minimum(tl.minimum(_axis_exit(px, dx, cx, lim, cx0, hx, R), _axis_exit(py, dy, cy, lim, cy0, hy, R)),
                        _axis_exit(pz, dz, cz, lim, cz0, hz, R))
        # A coarse cell can hold part of the finer cascade, which is read instead.
        t0 = tl.zeros((BLOCK,), dtype=tl.float32)
        t1 = tl.full((BLOCK,), _BIG, dtype=tl.float32)
        miss = tl.zeros((BLOCK,), dtype=tl.int1)
        half_lim = lim * 0.5
        t0, t1, miss = _slab(px, dx, cx0, hx, half_lim, t0, t1, miss)
        t0, t1, miss = _slab(py, dy, cy0, hy, half_lim, t0, t1, miss)
        t0, t1, miss = _slab(pz, dz, cz0, hz, half_lim, t0, t1, miss)
        entry = tl.where(miss | (t0 > t1), _BIG, t0)
        ex = tl.where(level > 0, tl.minimum(ex, entry), ex)
        # (only live lanes' values are used; the others are zeroed so no NaN meets the cast)
        skip = tl.minimum(tl.where(empty, (ex - dt) / dt, 0.0), 1.0e9).to(tl.int32)
        left = tl.minimum(tl.where(live, (tf - t) / dt, 0.0), 1.0e9).to(tl.int32)
        jump = tl.minimum(skip, tl.maximum(left - 1, 0))
        k = k + tl.where(empty & (skip > 0), jump, 0)
        active = live & (now_full == 0)
        n_active = tl.sum(active.to(tl.int32), axis=0)
    if FILL:
        tn = ts + k.to(tl.float32) * dt
        tn = tl.where((full == 0) & (tn < tf), tf, tn)
        tl.store(tnext_ptr + rays, tn, mask=mask)
    else:
        tl.store(count_ptr + rays, kept.to(tl.int64), mask=mask)


def march_next(o: torch.Tensor, d: torch.Tensor, t_start: torch.Tensor, tfar: torch.Tensor, dt: float,
               bitfield: torch.Tensor, aabb: torch.Tensor, max_samples: int):
    """Same contract as ``kernels.reference.packed.march_next``.

    Returns (offsets [R+1] int64, t [S] float32, t_next [R]). One host synchronisation
    (the total sample count, to allocate ``t``)."""
    n = o.shape[0]
    if o.ndim != 2 or o.shape[1] != 3 or d.shape != o.shape:
        raise ValueError(f"o and d must be [N, 3], got {tuple(o.shape)} and {tuple(d.shape)}")
    if t_start.shape != (n,) or tfar.shape != (n,):
        raise ValueError(f"t_start and tfar must be [{n}], got {tuple(t_start.shape)} and {tuple(tfar.shape)}")
    if bitfield.ndim != 4 or len(set(bitfield.shape[1:])) != 1:
        raise ValueError(f"bitfield must be [levels, R, R, R], got {tuple(bitfield.shape)}")
    dev = o.device
    o = o.detach().float().contiguous()
    d = d.detach().float().contiguous()
    ts = t_start.detach().float().contiguous()
    tf = tfar.detach().float().contiguous()
    bits = bitfield.contiguous().view(torch.uint8) if bitfield.dtype == torch.bool else (bitfield != 0).to(torch.uint8)
    box = aabb.detach().float().contiguous()
    offsets = torch.zeros(n + 1, dtype=torch.int64, device=dev)
    t_next = torch.empty(n, dtype=torch.float32, device=dev)
    if n == 0:
        return offsets, torch.empty(0, device=dev), t_next
    block = block_size(_BLOCK_MARCH, 4096)
    grid = (triton.cdiv(n, block),)
    args = (n, float(dt), bitfield.shape[1], int(min(max_samples, 2**31 - 1)))
    counts = torch.empty(n, dtype=torch.int64, device=dev)
    _march_kernel[grid](o, d, ts, tf, box, bits, offsets, counts, t_next, t_next, *args,
                        LEVELS=bitfield.shape[0], FILL=False, BLOCK=block, enable_fp_fusion=False)
    torch.cumsum(counts, 0, out=offsets[1:])
    t = torch.empty(int(offsets[-1]), dtype=torch.float32, device=dev)  # the round's one sync
    _march_kernel[grid](o, d, ts, tf, box, bits, offsets, counts, t, t_next, *args,
                        LEVELS=bitfield.shape[0], FILL=True, BLOCK=block, enable_fp_fusion=False)
    return offsets, t, t_next


@triton.jit
def _composite_fwd_kernel(sigma_ptr, rgb_ptr, t_ptr, off_ptr, tin_ptr, out_rgb_ptr, depth_ptr, op_ptr, tout_ptr,
                          N, max_count, dt, BLOCK: tl.constexpr):
    rays = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = rays < N
    start = tl.load(off_ptr + rays, mask=mask, other=0)
    count = tl.load(off_ptr + rays + 1, mask=mask, other=0) - start
    T = tl.load(tin_ptr + rays, mask=mask, other=0.0)
    cr = tl.zeros((BLOCK,), dtype=tl.float32)
    cg = tl.zeros((BLOCK,), dtype=tl.float32)
    cb = tl.zeros((BLOCK,), dtype=tl.float32)
    dep = tl.zeros((BLOCK,), dtype=tl.float32)
    op = tl.zeros((BLOCK,), dtype=tl.float32)
    for j in range(max_count):
        m = mask & (j < count)
        i = start + j
        a = 1.0 - tl.exp(-tl.load(sigma_ptr + i, mask=m, other=0.0) * dt)
        w = T * a
        cr += w * tl.load(rgb_ptr + i * 3 + 0, mask=m, other=0.0)
        cg += w * tl.load(rgb_ptr + i * 3 + 1, mask=m, other=0.0)
        cb += w * tl.load(rgb_ptr + i * 3 + 2, mask=m, other=0.0)
        dep += w * tl.load(t_ptr + i, mask=m, other=0.0)
        op += w
        T = T * (1.0 - a)
    tl.store(out_rgb_ptr + rays * 3 + 0, cr, mask=mask)
    tl.store(out_rgb_ptr + rays * 3 + 1, cg, mask=mask)
    tl.store(out_rgb_ptr + rays * 3 + 2, cb, mask=mask)
    tl.store(depth_ptr + rays, dep, mask=mask)
    tl.store(op_ptr + rays, op, mask=mask)
    tl.store(tout_ptr + rays, T, mask=mask)


@triton.jit
def _alpha_and_dl_dw(sigma_ptr, rgb_ptr, t_ptr, i, m, dt, gr, gg, gb, gd, go):
    """Sample i's opacity and dL/dw_i (the loss gradient of its weight), read for both passes."""
    a = 1.0 - tl.exp(-tl.load(sigma_ptr + i, mask=m, other=0.0) * dt)
    e = (gr * tl.load(rgb_ptr + i * 3 + 0, mask=m, other=0.0) + gg * tl.load(rgb_ptr + i * 3 + 1, mask=m, other=0.0)
         + gb * tl.load(rgb_ptr + i * 3 + 2, mask=m, other=0.0) + go + gd * tl.load(t_ptr + i, mask=m, other=0.0))
    return a, e


@triton.jit
def _composite_bwd_kernel(sigma_ptr, rgb_ptr, t_ptr, off_ptr, tin_ptr, tout_ptr, g_rgb_ptr, g_depth_ptr, g_op_ptr,
                          g_trans_ptr, g_sigma_ptr, g_col_ptr, N, max_count, dt, BLOCK: tl.constexpr):
    rays = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = rays < N
    start = tl.load(off_ptr + rays, mask=mask, other=0)
    count = tl.load(off_ptr + rays + 1, mask=mask, other=0) - start
    gr = tl.load(g_rgb_ptr + rays * 3 + 0, mask=mask, other=0.0)
    gg = tl.load(g_rgb_ptr + rays * 3 + 1, mask=mask, other=0.0)
    gb = tl.load(g_rgb_ptr + rays * 3 + 2, mask=mask, other=0.0)
    gd = tl.load(g_depth_ptr + rays, mask=mask, other=0.0)
    go = tl.load(g_op_ptr + rays, mask=mask, other=0.0)
    tail = tl.load(tout_ptr + rays, mask=mask, other=0.0) * tl.load(g_trans_ptr + rays, mask=mask, other=0.0)
    t_in = tl.load(tin_ptr + rays, mask=mask, other=0.0)
    # Pass 1: S = sum_k w_k e_k with e_k = dL/dw_k.
    T = t_in
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for j in range(max_count):
        m = mask & (j < count)
        i = start + j
        a, e = _alpha_and_dl_dw(sigma_ptr, rgb_ptr, t_ptr, i, m, dt, gr, gg, gb, gd, go)
        total += T * a * e
        T = T * (1.0 - a)
    # Pass 2: dL/dsigma_i = dt * (T_{i+1} e_i - sum_{k>i} w_k e_k) - dt * T_out * dL/dT_out.
    T = t_in
    prefix = tl.zeros((BLOCK,), dtype=tl.float32)
    for j in range(max_count):
        m = mask & (j < count)
        i = start + j
        a, e = _alpha_and_dl_dw(sigma_ptr, rgb_ptr, t_ptr, i, m, dt, gr, gg, gb, gd, go)
        w = T * a
        prefix += w * e
        T = T * (1.0 - a)
        tl.store(g_sigma_ptr + i, dt * (T * e - (total - prefix) - tail), mask=m)
        tl.store(g_col_ptr + i * 3 + 0, w * gr, mask=m)
        tl.store(g_col_ptr + i * 3 + 1, w * gg, mask=m)
        tl.store(g_col_ptr + i * 3 + 2, w * gb, mask=m)


def _max_count(offsets: torch.Tensor, max_count: int | None) -> int:
    if max_count is not None:
        return int(max_count)
    return int((offsets[1:] - offsets[:-1]).max()) if offsets.numel() > 1 else 0  # one sync


class _CompositePacked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sigma, rgb, t, dt, offsets, trans_in, max_count):
        sigma = sigma.detach().float().contiguous()
        rgb = rgb.detach().float().contiguous()
        t = t.detach().float().contiguous()
        off = offsets.contiguous()
        tin = trans_in.detach().float().contiguous()
        n = off.shape[0] - 1
        dev = sigma.device
        out_rgb = torch.zeros(n, 3, device=dev)
        depth = torch.zeros(n, device=dev)
        opacity = torch.zeros(n, device=dev)
        trans_out = tin.clone()
        mc = _max_count(off, max_count)
        if n and mc:
            block = block_size(_BLOCK_COMPOSITE, 4096)
            _composite_fwd_kernel[(triton.cdiv(n, block),)](sigma, rgb, t, off, tin, out_rgb, depth, opacity, trans_out,
                                                            n, mc, float(dt), BLOCK=block)
        ctx.save_for_backward(sigma, rgb, t, off, tin, trans_out)
        ctx.dt, ctx.mc = float(dt), mc
        return out_rgb, depth, opacity, trans_out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_rgb, g_depth, g_op, g_trans):
        sigma, rgb, t, off, tin, trans_out = ctx.saved_tensors
        n = off.shape[0] - 1
        dev = sigma.device

        def prep(g, shape):
            return torch.zeros(shape, device=dev) if g is None else g.detach().float().contiguous()

        g_rgb, g_depth = prep(g_rgb, (n, 3)), prep(g_depth, (n,))
        g_op, g_trans = prep(g_op, (n,)), prep(g_trans, (n,))
        g_sigma = torch.zeros_like(sigma)
        g_col = torch.zeros_like(rgb)
        if n and ctx.mc:
            block = block_size(_BLOCK_COMPOSITE, 4096)
            _composite_bwd_kernel[(triton.cdiv(n, block),)](sigma, rgb, t, off, tin, trans_out, g_rgb, g_depth, g_op,
                                                            g_trans, g_sigma, g_col, n, ctx.mc, ctx.dt, BLOCK=block)
        return g_sigma, g_col, None, None, None, None, None


def composite_packed(sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor, dt: float, offsets: torch.Tensor,
                     transmittance: torch.Tensor, max_count: int | None = None):
    """Same contract as ``kernels.reference.packed.composite_packed``.

    ``max_count``: an upper bound of the samples of one ray when the caller knows it (the
    renderer's round size ``k``); otherwise it is read from ``offsets`` (one sync)."""
    n = offsets.shape[0] - 1
    s = t.shape[0]
    if sigma.shape != (s,) or rgb.shape != (s, 3) or transmittance.shape != (n,):
        raise ValueError(f"expected sigma [{s}], rgb [{s}, 3], transmittance [{n}]; got {tuple(sigma.shape)}, "
                         f"{tuple(rgb.shape)}, {tuple(transmittance.shape)}")
    return _CompositePacked.apply(sigma, rgb, t, dt, offsets, transmittance, max_count)


def _ray_index(offsets: torch.Tensor, n_samples: int) -> torch.Tensor:
    """Each packed sample's ray, without a host synchronisation (the size is known)."""
    n = offsets.shape[0] - 1
    return torch.repeat_interleave(torch.arange(n, device=offsets.device), offsets[1:] - offsets[:-1],
                                   output_size=n_samples)


def sample_points(o: torch.Tensor, d: torch.Tensor, t: torch.Tensor, offsets: torch.Tensor,
                  aabb: torch.Tensor) -> torch.Tensor:
    """Packed sample positions in the box's [0, 1]^3 (clamped), as ``NerfField.normalize``."""
    ray = _ray_index(offsets, t.shape[0])
    aabb = aabb.detach().float()
    p = o.detach().float()[ray] + t.detach().float()[:, None] * d.detach().float()[ray]
    return ((p - aabb[:3]) / (aabb[3:] - aabb[:3])).clamp(0, 1)


def sh_packed(d: torch.Tensor, offsets: torch.Tensor, degree: int = 4, n_samples: int | None = None) -> torch.Tensor:
    """Spherical-harmonics encoding of each packed sample's ray direction.

    ``n_samples`` (the field knows it: its features' length) avoids reading it from
    ``offsets`` (a host synchronisation on CUDA)."""
    from latentscape.kernels.sh import sh_encode

    n = int(offsets[-1]) if n_samples is None else int(n_samples)
    return sh_encode(d.float()[_ray_index(offsets, n)].contiguous(), degree)
