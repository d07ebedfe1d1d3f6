"""Packed ray marching and compositing (pure torch): the references of ``kernels/cpu/raymarch.py``.

"Packed" means the samples of many rays live in one flat array, ray ``r`` owning
``[offsets[r], offsets[r + 1])`` (nerfacc's layout), so only occupied samples are
stored and evaluated.

* :func:`march_next` walks each ray from ``t_start`` on the lattice
  ``t_start + (k + 0.5) * dt`` and keeps up to ``max_samples`` samples that fall in
  occupied cells of the occupancy grid (read as :func:`~.raymarch.occupancy_lookup`
  reads it). It returns where the walk stopped, so a renderer can continue a ray in
  the next round exactly on the same lattice.
* :func:`composite_packed` composites the samples of each ray front to back from a
  starting transmittance, differentiably in ``sigma`` and ``rgb``.
"""

from __future__ import annotations

import torch

from latentscape.kernels.reference.raymarch import occupancy_lookup


def march_next(o: torch.Tensor, d: torch.Tensor, t_start: torch.Tensor, tfar: torch.Tensor, dt: float,
               bitfield: torch.Tensor, aabb: torch.Tensor, max_samples: int):
    """Up to ``max_samples`` occupied samples of each ray from ``t_start``.

    o, d: [R, 3]; t_start, tfar: [R]; bitfield: [levels, res, res, res] bool; aabb: [6].
    Returns (offsets [R+1] int64, t [S] float32 sample distances, t_next [R]): the walk
    stops after the ``max_samples``-th kept sample (then ``t_next`` is the end of that
    sample's step) or when the lattice passes ``tfar`` (then ``t_next`` >= ``tfar``).
    """
    n = o.shape[0]
    dt32 = torch.tensor(dt, dtype=torch.float32)
    span = (tfar - t_start).clamp_min(0)
    n_steps = int(torch.ceil(span.max() / dt32).item()) + 1 if n else 0
    steps = torch.arange(n_steps, dtype=torch.float32)
    t = t_start[:, None] + (steps[None] + 0.5) * dt32  # [R, K]
    inside = t < tfar[:, None]
    pts = o[:, None, :] + t[..., None] * d[:, None, :]
    keep = inside & occupancy_lookup(pts, bitfield, aabb)
    rank = torch.cumsum(keep.long(), 1)
    keep = keep & (rank <= max_samples)
    counts = keep.sum(1)
    offsets = torch.zeros(n + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(counts, 0)
    # Where the walk stopped: after the last kept sample of a full ray, else past the end.
    full = counts == max_samples
    last = torch.where(keep, torch.arange(n_steps)[None].expand(n, -1), -1).amax(1) if n_steps else torch.zeros(n, dtype=torch.long)
    n_taken = torch.where(full, last + 1, inside.sum(1))
    t_next = t_start + n_taken.to(torch.float32) * dt32
    t_next = torch.where(full, t_next, torch.maximum(t_next, tfar))
    return offsets, t[keep], t_next


def composite_packed(sigma: torch.Tensor, rgb: torch.Tensor, t: torch.Tensor, dt: float, offsets: torch.Tensor,
                     transmittance: torch.Tensor, max_count: int | None = None):
    """Front-to-back compositing of packed samples.

    ``max_count``: an upper bound of any ray's sample count, when the caller knows it
    (the Triton kernel loops that far without reading it back; unused here).
    sigma: [S], rgb: [S, 3], t: [S], offsets: [R+1], transmittance: [R] at the first sample.
    Returns (rgb [R, 3], depth [R] (weighted distance sum), opacity [R], transmittance_out [R]).
    Differentiable in ``sigma`` and ``rgb``.
    """
    n = offsets.shape[0] - 1
    counts = offsets[1:] - offsets[:-1]
    ray = torch.repeat_interleave(torch.arange(n), counts)
    tau = (sigma * dt).double()
    incl = torch.cumsum(tau, 0)
    excl = incl - tau
    base = excl[offsets[:-1].clamp_max(max(tau.numel() - 1, 0))] if tau.numel() else excl
    excl_ray = excl - base[ray]
    trans = transmittance.double()[ray] * torch.exp(-excl_ray)
    w = (trans * (1.0 - torch.exp(-tau))).float()
    out_rgb = torch.zeros(n, 3, dtype=rgb.dtype).index_add(0, ray, w[:, None] * rgb)
    depth = torch.zeros(n).index_add(0, ray, w * t)
    opacity = torch.zeros(n).index_add(0, ray, w)
    total = torch.zeros(n, dtype=torch.float64).index_add(0, ray, tau)
    return out_rgb, depth, opacity, (transmittance.double() * torch.exp(-total)).float()

