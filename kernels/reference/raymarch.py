"""Ray marching through an occupancy grid, and front-to-back compositing (pure torch).

These are the references for the Triton marcher: ``ray_aabb`` clips rays to the scene
box, ``occupancy_lookup`` reads the multi-level occupancy bitfield, ``march_segment``
proposes the next ``n_steps`` samples of each ray and marks the occupied ones, and
``composite_segment`` folds a segment of samples into the running colour, depth and
transmittance of its ray.
"""

from __future__ import annotations

import torch


def ray_aabb(o: torch.Tensor, d: torch.Tensor, aabb: torch.Tensor, near: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances of rays through a box.

    o, d: [N, 3]; aabb: [6] (min, max). Returns (tnear [N], tfar [N]); a ray that
    misses has tnear >= tfar. tnear is at least ``near`` (rays starting inside the
    box start at ``near``).
    """
    inv = 1.0 / torch.where(d.abs() < 1e-12, torch.full_like(d, 1e-12), d)
    t0 = (aabb[:3] - o) * inv
    t1 = (aabb[3:] - o) * inv
    tnear = torch.minimum(t0, t1).amax(-1).clamp_min(near)
    tfar = torch.maximum(t0, t1).amin(-1)
    return tnear, tfar


def occupancy_lookup(pts: torch.Tensor, bitfield: torch.Tensor, aabb: torch.Tensor) -> torch.Tensor:
    """Whether points fall in occupied cells of a multi-level (cascaded) grid.

    pts: [..., 3]; bitfield: [levels, R, R, R] bool, level k covering ``aabb`` scaled by
    2^k about its centre (instant-ngp's cascades). Each point reads the finest level
    that contains it; points outside the coarsest level are empty.
    """
    levels, res = bitfield.shape[0], bitfield.shape[1]
    center = (aabb[:3] + aabb[3:]) * 0.5
    half = (aabb[3:] - aabb[:3]) * 0.5
    rel = (pts - center) / half  # [-1, 1] inside level 0
    extent = rel.abs().amax(-1)
    level = torch.ceil(torch.log2(extent.clamp_min(1e-9))).clamp_min(0).long()
    inside = level < levels
    level = level.clamp_max(levels - 1)
    scale = torch.exp2(-level.to(pts.dtype))
    u = (rel * scale[..., None] + 1.0) * 0.5  # [0, 1] in the point's level
    cell = (u * res).long().clamp(0, res - 1)
    occ = bitfield[level, cell[..., 0], cell[..., 1], cell[..., 2]]
    return occ & inside


def march_segment(o, d, t_start, tfar, dt: float, n_steps: int, bitfield, aabb):
    """The next ``n_steps`` samples of each ray from ``t_start`` at spacing ``dt``.

    Returns (t [N, S] sample distances (midpoints), valid [N, S] bool: inside the box
    and in an occupied cell).
    """
    steps = torch.arange(n_steps, device=o.device, dtype=o.dtype)
    t = t_start[:, None] + (steps[None] + 0.5) * dt
    inside = t < tfar[:, None]
    pts = o[:, None, :] + t[..., None] * d[:, None, :]
    valid = inside & occupancy_lookup(pts, bitfield, aabb)
    return t, valid


def composite_segment(sigma, rgb, t, dt: float, transmittance):
    """Front-to-back compositing of one segment of samples per ray.

    sigma: [N, S] densities (0 where there is no sample), rgb: [N, S, 3], t: [N, S]
    distances, transmittance: [N] at the segment's start.
    Returns (rgb [N, 3], depth [N], opacity [N], transmittance_out [N]) of this segment.
    """
    alpha = 1.0 - torch.exp(-sigma * dt)
    trans = torch.cumprod(1.0 - alpha, dim=1)
    excl = torch.cat((torch.ones_like(trans[:, :1]), trans[:, :-1]), dim=1)
    w = transmittance[:, None] * excl * alpha  # [N, S]
    out_rgb = (w[..., None] * rgb).sum(1)
    depth = (w * t).sum(1)
    opacity = w.sum(1)
    return out_rgb, depth, opacity, transmittance * trans[:, -1]
