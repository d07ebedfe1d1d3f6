"""Packed ray marching and compositing on the CPU (numba).

Mirrors ``latentscape.kernels.reference.packed`` (``march_next``, ``composite_packed``);
the occupancy lookup mirrors ``kernels.reference.raymarch.occupancy_lookup``.

* :func:`march_next`: two passes over the rays (count, then fill at prefix-sum
  offsets), parallel over rays; a ray walks its lattice cell by cell and only
  occupied samples are stored.
* :func:`composite_packed`: forward and backward parallel over rays; the backward is
  the closed form of d(weights)/d(sigma) (one pass with a running suffix sum), so no
  per-sample graph is kept.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit, prange

_HALF = np.float32(0.5)
_ONE = np.float32(1.0)


@njit(inline="always")
def _lookup(px, py, pz, bits, levels, res, center, half):
    """(occupied, level, cx, cy, cz, level scale) of a point, as ``occupancy_lookup`` reads it."""
    rx = (px - center[0]) / half[0]
    ry = (py - center[1]) / half[1]
    rz = (pz - center[2]) / half[2]
    ext = max(abs(rx), abs(ry), abs(rz))
    level = 0
    lim = _ONE
    while ext > lim:
        level += 1
        lim = lim * np.float32(2.0)
    if level >= levels:
        return False, level, 0, 0, 0, lim
    sc = _ONE / lim
    ux = (rx * sc + _ONE) * _HALF
    uy = (ry * sc + _ONE) * _HALF
    uz = (rz * sc + _ONE) * _HALF
    cx = min(max(np.int64(ux * np.float32(res)), 0), res - 1)
    cy = min(max(np.int64(uy * np.float32(res)), 0), res - 1)
    cz = min(max(np.int64(uz * np.float32(res)), 0), res - 1)
    return bits[level, cx, cy, cz] != 0, level, cx, cy, cz, lim


@njit(inline="always")
def _axis_exit(p, dv, c, cidx, lim, center, half, res):
    """Distance along the ray from p to where it leaves cell ``cidx`` on one axis."""
    size = np.float32(2.0) * half * lim / np.float32(res)
    lo = center - half * lim + np.float32(cidx) * size
    if dv > 0:
        return (lo + size - p) / dv
    if dv < 0:
        return (lo - p) / dv
    return np.float32(np.inf)


@njit(inline="always")
def _box_entry(px, py, pz, dx, dy, dz, center, half, lim):
    """Distance along the ray from p to the box ``center +- half * lim`` (inf if it misses)."""
    t0 = np.float32(0.0)
    t1 = np.float32(np.inf)
    for k in range(3):
        p = px if k == 0 else (py if k == 1 else pz)
        dv = dx if k == 0 else (dy if k == 1 else dz)
        lo = center[k] - half[k] * lim
        hi = center[k] + half[k] * lim
        if dv == 0:
            if p < lo or p > hi:
                return np.float32(np.inf)
            continue
        a = (lo - p) / dv
        b = (hi - p) / dv
        t0 = max(t0, min(a, b))
        t1 = min(t1, max(a, b))
    return t0 if t0 <= t1 else np.float32(np.inf)


@njit(inline="always")
def _walk(r, o, d, t_start, tfar, dt, bits, levels, res, center, half, max_samples, t_out, pos):
    """Walk ray r; store kept samples at t_out[pos:] when pos >= 0. Returns (kept, steps taken, full).

    In an empty cell the walk jumps over the lattice points that lie certainly inside it
    (all but the last step before the cell's exit, so float rounding at the boundary
    cannot skip a sample): the samples are exactly those of a step-by-step walk.
    """
    ts = t_start[r]
    tf = tfar[r]
    ox, oy, oz = o[r, 0], o[r, 1], o[r, 2]
    dx, dy, dz = d[r, 0], d[r, 1], d[r, 2]
    kept = 0
    k = 0
    while True:
        t = ts + (np.float32(k) + _HALF) * dt
        if not t < tf:
            break
        k += 1
        px, py, pz = ox + t * dx, oy + t * dy, oz + t * dz
        occ, level, cx, cy, cz, lim = _lookup(px, py, pz, bits, levels, res, center, half)
        if occ:
            if pos >= 0:
                t_out[pos + kept] = t
            kept += 1
            if kept == max_samples:
                return kept, k, True
        elif level < levels:
            ex = min(_axis_exit(px, dx, cx, cx, lim, center[0], half[0], res),
                     _axis_exit(py, dy, cy, cy, lim, center[1], half[1], res),
                     _axis_exit(pz, dz, cz, cz, lim, center[2], half[2], res))
            if level > 0:
                # A coarse cell can contain part of the finer cascade, which is read instead.
                ex = min(ex, _box_entry(px, py, pz, dx, dy, dz, center, half, lim * _HALF))
            skip = np.int64((ex - dt) / dt)
            if skip > 0:
                # Never past tfar: the caller reads k as the lattice points consumed.
                left = np.int64((tf - t) / dt)
                k += min(skip, max(left - 1, 0))
    return kept, k, False


@njit(parallel=True, cache=True, nogil=True)
def _march_count(o, d, t_start, tfar, dt, bits, res, center, half, max_samples, counts):
    levels = bits.shape[0]
    dummy = np.empty(0, np.float32)
    for r in prange(o.shape[0]):
        kept, _k, _full = _walk(r, o, d, t_start, tfar, dt, bits, levels, res, center, half, max_samples, dummy, -1)
        counts[r] = kept


@njit(parallel=True, cache=True, nogil=True)
def _march_fill(o, d, t_start, tfar, dt, bits, res, center, half, max_samples, offsets, t_out, t_next):
    levels = bits.shape[0]
    for r in prange(o.shape[0]):
        kept, k, full = _walk(r, o, d, t_start, tfar, dt, bits, levels, res, center, half, max_samples, t_out, offsets[r])
        tn = t_start[r] + np.float32(k) * dt
        if not full and tn < tfar[r]:
            tn = tfar[r]
        t_next[r] = tn


@njit(parallel=True, cache=True, nogil=True)
def _march_scratch(o, d, t_start, tfar, dt, bits, res, center, half, max_samples, scratch, counts, t_next):
    """One walk per ray into a ``[rays, max_samples]`` scratch buffer (small rounds)."""
    levels = bits.shape[0]
    for r in prange(o.shape[0]):
        kept, k, full = _walk(r, o, d, t_start, tfar, dt, bits, levels, res, center, half, max_samples,
                              scratch[r], 0)
        counts[r] = kept
        tn = t_start[r] + np.float32(k) * dt
        if not full and tn < tfar[r]:
            tn = tfar[r]
        t_next[r] = tn


@njit(parallel=True, cache=True, nogil=True)
def _compact(scratch, offsets, t_out):
    for r in prange(scratch.shape[0]):
        base = offsets[r]
        for j in range(offsets[r + 1] - base):
            t_out[base + j] = scratch[r, j]


# Rounds of at most this many samples per ray walk once into a scratch buffer and compact;
# larger ones (training marches whole rays) count first, then fill (two walks, no scratch).
_SCRATCH_MAX = 64


def march_next(o: torch.Tensor, d: torch.Tensor, t_start: torch.Tensor, tfar: torch.Tensor, dt: float,
               bitfield: torch.Tensor, aabb: torch.Tensor, max_samples: int):
    """Same contract as ``kernels.reference.packed.march_next`` (CPU tensors)."""
    o = o.detach().float().contiguous()
    d = d.detach().float().contiguous()
    ts = t_start.detach().float().contiguous()
    tf = tfar.detach().float().contiguous()
    bits = bitfield.contiguous().view(torch.uint8).numpy()
    aabb = aabb.detach().float()
    center = ((aabb[:3] + aabb[3:]) * 0.5).numpy()
    half = ((aabb[3:] - aabb[:3]) * 0.5).numpy()
    n = o.shape[0]
    dt32 = np.float32(dt)
    res = np.int64(bitfield.shape[1])
    if 0 < max_samples <= _SCRATCH_MAX and n:
        scratch = np.empty((n, max_samples), np.float32)
        counts = np.zeros(n, np.int64)
        t_next = np.empty(n, np.float32)
        _march_scratch(o.numpy(), d.numpy(), ts.numpy(), tf.numpy(), dt32, bits, res, center, half, max_samples,
                       scratch, counts, t_next)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(counts, out=offsets[1:])
        t_out = np.empty(int(offsets[-1]), np.float32)
        _compact(scratch, offsets, t_out)
        return torch.from_numpy(offsets), torch.from_numpy(t_out), torch.from_numpy(t_next)
    counts = np.zeros(n, np.int64)
    if n:
        _march_count(o.numpy(), d.numpy(), ts.numpy(), tf.numpy(), dt32, bits, res, center, half, max_samples, counts)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    t_out = np.empty(int(offsets[-1]), np.float32)
    t_next = np.empty(n, np.float32)
    if n:
        _march_fill(o.numpy(), d.numpy(), ts.numpy(), tf.numpy(), dt32, bits, res, center, half, max_samples,
                    offsets, t_out, t_next)
    return torch.from_numpy(offsets), torch.from_numpy(t_out), torch.from_numpy(t_next)


@njit(parallel=True, cache=True, nogil=True)
def _composite_fwd(sigma, rgb, t, dt, offsets, trans_in, out_rgb, depth, opacity, trans_out):
    for r in prange(offsets.shape[0] - 1):
        T = trans_in[r]
        cr = np.float32(0.0)
        cg = np.float32(0.0)
        cb = np.float32(0.0)
        dep = np.float32(0.0)
        op = np.float32(0.0)
        for i in range(offsets[r], offsets[r + 1]):
            a = _ONE - np.exp(-sigma[i] * dt)
            w = T * a
            cr += w * rgb[i, 0]
            cg += w * rgb[i, 1]
            cb += w * rgb[i, 2]
            dep += w * t[i]
            op += w
            T = T * (_ONE - a)
        out_rgb[r, 0] = cr
        out_rgb[r, 1] = cg
        out_rgb[r, 2] = cb
        depth[r] = dep
        opacity[r] = op
        trans_out[r] = T


@njit(parallel=True, cache=True, nogil=True)
def _composite_bwd(sigma, rgb, t, dt, offsets, trans_in, trans_out, g_rgb, g_depth, g_op, g_trans,
                   g_sigma, g_col):
    for r in prange(offsets.shape[0] - 1):
        gr, gg, gb = g_rgb[r, 0], g_rgb[r, 1], g_rgb[r, 2]
        gd, go = g_depth[r], g_op[r]
        # Pass 1: S = sum_k w_k e_k, with e_k = dL/dw_k.
        T = trans_in[r]
        total = np.float32(0.0)
        for i in range(offsets[r], offsets[r + 1]):
            a = _ONE - np.exp(-sigma[i] * dt)
            w = T * a
            e = gr * rgb[i, 0] + gg * rgb[i, 1] + gb * rgb[i, 2] + go + gd * t[i]
            total += w * e
            T = T * (_ONE - a)
        # Pass 2: dL/dsigma_i = dt * (T_{i+1} e_i - sum_{k>i} w_k e_k) - dt * T_out * dL/dT_out.
        T = trans_in[r]
        prefix = np.float32(0.0)
        tail = trans_out[r] * g_trans[r]
        for i in range(offsets[r], offsets[r + 1]):
            a = _ONE - np.exp(-sigma[i] * dt)
            w = T * a
            e = gr * rgb[i, 0] + gg * rgb[i, 1] + gb * rgb[i, 2] + go + gd * t[i]
            prefix += w * e
            T = T * (_ONE - a)
            g_sigma[i] = dt * (T * e - (total - prefix) - tail)
            g_col[i, 0] = w * gr
            g_col[i, 1] = w * gg
            g_col[i, 2] = w * gb


class _CompositePacked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sigma, rgb, t, dt, offsets, trans_in):
        sigma32 = sigma.detach().float().contiguous()
        rgb32 = rgb.detach().float().contiguous()
        t32 = t.detach().float().contiguous()
        off = offsets.contiguous()
        tin = trans_in.detach().float().contiguous()
        n = off.shape[0] - 1
        out_rgb = torch.zeros(n, 3)
        depth = torch.zeros(n)
        opacity = torch.zeros(n)
        trans_out = tin.clone()
        if n:
            _composite_fwd(sigma32.numpy(), rgb32.numpy(), t32.numpy(), np.float32(dt), off.numpy(), tin.numpy(),
                           out_rgb.numpy(), depth.numpy(), opacity.numpy(), trans_out.numpy())
        ctx.save_for_backward(sigma32, rgb32, t32, off, tin, trans_out)
        ctx.dt = dt
        return out_rgb, depth, opacity, trans_out

    @staticmethod
    def backward(ctx, g_rgb, g_depth, g_op, g_trans):
        sigma, rgb, t, off, tin, trans_out = ctx.saved_tensors
        n = off.shape[0] - 1

        def prep(g, shape):
            return torch.zeros(shape) if g is None else g.detach().float().contiguous()

        g_rgb, g_depth = prep(g_rgb, (n, 3)), prep(g_depth, (n,))
        g_op, g_trans = prep(g_op, (n,)), prep(g_trans, (n,))
        g_sigma = torch.zeros_like(sigma)
        g_col = torch.zeros_like(rgb)
        if n:
            _composite_bwd(sigma.numpy(), rgb.numpy(), t.numpy(), np.float32(ctx.dt), off.numpy(), tin.numpy(),
                           trans_out.numpy(), g_rgb.numpy(), g_depth.numpy(), g_op.numpy(), g_trans.numpy(),
                           g_sigma.numpy(), g_col.numpy())
        return g_sigma, g_col, None, None, None, None


def composite_packed(sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor, dt: float, offsets: torch.Tensor,
                     transmittance: torch.Tensor, max_count: int | None = None):
    """Same contract as ``kernels.reference.packed.composite_packed`` (CPU tensors;
    ``max_count`` is not needed here)."""
    return _CompositePacked.apply(sigma, rgb, t, dt, offsets, transmittance)


@njit(parallel=True, cache=True, nogil=True)
def _sample_points(o, d, t, offsets, lo, inv_ext, out):
    for r in prange(offsets.shape[0] - 1):
        for i in range(offsets[r], offsets[r + 1]):
            for k in range(3):
                v = ((o[r, k] + t[i] * d[r, k]) - lo[k]) * inv_ext[k]
                out[i, k] = min(max(v, np.float32(0.0)), _ONE)


def sample_points(o: torch.Tensor, d: torch.Tensor, t: torch.Tensor, offsets: torch.Tensor,
                  aabb: torch.Tensor) -> torch.Tensor:
    """Packed sample positions mapped into the box's [0, 1]^3 (clamped): the hash grid's input.

    Mirrors ``NerfField.normalize(o[ray] + t * d[ray])`` (no gradient).
    """
    o = o.detach().float().contiguous()
    d = d.detach().float().contiguous()
    t = t.detach().float().contiguous()
    aabb = aabb.detach().float()
    lo = aabb[:3].numpy()
    inv_ext = (1.0 / (aabb[3:] - aabb[:3])).numpy()
    out = torch.empty(t.shape[0], 3)
    if t.shape[0]:
        _sample_points(o.numpy(), d.numpy(), t.numpy(), offsets.contiguous().numpy(), lo, inv_ext, out.numpy())
    return out

