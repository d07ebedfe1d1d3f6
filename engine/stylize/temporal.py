"""Exact frame-to-frame warps from a NeRF's depth and two camera poses (no optical flow).

Video style transfer measures and trains stability with a *warped* error: frame k is
resampled where every pixel of frame k+1 was in frame k, occluded pixels masked out,
and ``|S(k+1) - warp(S(k))|`` is the flicker the stylizer adds (Ruder et al. 2016,
ReCoNet 2018 use optical flow; a rendered scene has the exact answer). Every pixel of
the next frame is back-projected with its depth, projected into the previous camera
and sampled there; pixels that leave the image or whose depth disagrees by more than
``tolerance`` (occlusion) are invalid; background (infinite depth) warps by rotation.

Used by ``tools/benchmarks/student_quality.py`` (the measurement) and by
``latentscape distill`` on a scene (the ``w_warp`` training loss).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def depth_warp(depth_prev: Tensor, cam_prev, depth_next: Tensor, cam_next, *,
               tolerance: float = 0.02) -> tuple[Tensor, Tensor]:
    """``(grid [H,W,2], valid [H,W] bool)``: for each pixel of the next frame, where it was in the
    previous one (``grid_sample`` coordinates, ``align_corners=False``) and whether that is trustworthy."""
    from latentscape.render.cameras import camera_directions

    h, w = depth_next.shape
    dirs, _ = camera_directions(cam_next)  # [HW,3] unit, camera space
    r_n, o_n = cam_next.c2w[:3, :3].float(), cam_next.c2w[:3, 3].float()
    r_p, o_p = cam_prev.c2w[:3, :3].float(), cam_prev.c2w[:3, 3].float()
    d = depth_next.reshape(-1).float()
    inf = ~torch.isfinite(d)
    world_dir = dirs.float() @ r_n.T
    x = o_n + world_dir * torch.where(inf, torch.zeros_like(d), d)[:, None]
    p = (x - o_p) @ r_p  # into the previous camera's frame
    p = torch.where(inf[:, None], world_dir @ r_p, p)  # points at infinity: rotation only
    z = -p[:, 2]
    u = cam_prev.cx + cam_prev.fx * p[:, 0] / z
    v = cam_prev.cy - cam_prev.fy * p[:, 1] / z
    grid = torch.stack((u / cam_prev.width * 2 - 1, v / cam_prev.height * 2 - 1), -1).view(h, w, 2)
    dp = F.grid_sample(depth_prev.float().nan_to_num(posinf=1e6)[None, None], grid[None], mode="nearest",
                       align_corners=False)[0, 0]
    dist = p.norm(dim=-1).view(h, w)
    inside = ((z > 0) & (u >= 0) & (u <= cam_prev.width) & (v >= 0) & (v <= cam_prev.height)).view(h, w)
    agree = torch.where(inf.view(h, w), dp >= 1e5, (dp - dist).abs() <= tolerance * dist)
    return grid.nan_to_num(0.0), inside & agree


def warp(prev: Tensor, grid: Tensor) -> Tensor:
    """``prev`` (``[C,H,W]`` or ``[N,C,H,W]``) resampled at ``grid`` (``[H,W,2]`` or ``[N,H,W,2]``); differentiable."""
    single = prev.ndim == 3
    p = prev[None] if single else prev
    g = grid[None] if grid.ndim == 3 else grid
    out = F.grid_sample(p, g.to(p.dtype).expand(p.shape[0], -1, -1, -1), mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out[0] if single else out


def warped_error(prev: Tensor, nxt: Tensor, grid: Tensor, valid: Tensor) -> Tensor:
    """Mean over valid pixels of ``|next - warp(prev)|`` (channel mean), for ``[C,H,W]`` or ``[N,C,H,W]``."""
    diff = (nxt - warp(prev, grid)).abs().mean(-3)
    m = valid.to(diff.dtype).expand_as(diff)
    return (diff * m).sum() / m.sum().clamp_min(1.0)
