"""Exact depth warps between rendered frames (the stability measurement and the distill warp loss)."""

from __future__ import annotations

import math

import torch

from latentscape.render.cameras import Camera, camera_directions
from latentscape.stylize.temporal import depth_warp, warp, warped_error


def _plane_view(cam: Camera, z_plane: float = -5.0):
    """A textured plane z = z_plane seen by ``cam``: (rgb [3,H,W], ray distance [H,W])."""
    dirs, _ = camera_directions(cam)
    wd = dirs @ cam.c2w[:3, :3].T
    o = cam.c2w[:3, 3]
    t = (z_plane - o[2]) / wd[:, 2]
    p = o + wd * t[:, None]
    rgb = torch.stack((0.5 + 0.5 * torch.sin(3 * p[:, 0]), 0.5 + 0.5 * torch.cos(2 * p[:, 1]),
                       0.5 + 0.25 * torch.sin(p[:, 0] + p[:, 1])))
    return rgb.view(3, cam.height, cam.width), t.view(cam.height, cam.width)


def _cam(x: float, yaw_deg: float = 0.0, w: int = 48, h: int = 40) -> Camera:
    c, s = math.cos(math.radians(yaw_deg)), math.sin(math.radians(yaw_deg))
    c2w = torch.tensor([[c, 0, s, x], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1]], dtype=torch.float32)
    return Camera.from_fov(c2w, w, h, 50.0)


def test_warp_follows_a_moving_camera_and_masks_what_it_cannot_see():
    a, b = _cam(0.0), _cam(0.4, yaw_deg=-3.0)  # ~3.4 px of parallax + ~2.2 px of turn
    rgb_a, d_a = _plane_view(a)
    rgb_b, d_b = _plane_view(b)
    grid, valid = depth_warp(d_a, a, d_b, b)
    assert grid.shape == (40, 48, 2) and valid.dtype == torch.bool
    # the camera moved right: the right-hand columns of b were never in a's view
    assert not valid[:, -4:].any() and valid[:, :30].all()
    err_warped = float(warped_error(rgb_a, rgb_b, grid, valid))
    err_static = float((rgb_b - rgb_a).abs().mean(0)[valid].mean())
    assert err_warped < 0.02 < 0.1 < err_static, (err_warped, err_static)


def test_occluded_pixels_are_invalid_and_identity_is_exact():
    a = _cam(0.0)
    rgb, d = _plane_view(a)
    grid, valid = depth_warp(d, a, d, a)
    assert valid.all()
    torch.testing.assert_close(warp(rgb, grid), rgb, atol=1e-4, rtol=0)
    assert float(warped_error(rgb, rgb, grid, valid)) < 1e-4
    # something stood in front of the plane in the previous frame: those pixels are occluded there
    d_prev = d.clone()
    d_prev[10:20, 10:20] = 1.0
    _, valid = depth_warp(d_prev, a, d, a)
    assert not valid[10:20, 10:20].any() and valid[25:, 25:].all()
    # background (infinite depth) warps by rotation only
    inf = torch.full_like(d, float("inf"))
    grid, valid = depth_warp(inf, a, inf, _cam(5.0))
    assert valid.all()
    torch.testing.assert_close(warp(rgb, grid), rgb, atol=1e-4, rtol=0)


def test_warped_error_is_differentiable_and_batched():
    a, b = _cam(0.0), _cam(0.3)
    (rgb_a, d_a), (rgb_b, d_b) = _plane_view(a), _plane_view(b)
    grid, valid = depth_warp(d_a, a, d_b, b)
    x = rgb_a.clone().requires_grad_(True)
    warped_error(x, rgb_b, grid, valid).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    batched = warped_error(torch.stack([rgb_a, rgb_a]), torch.stack([rgb_b, rgb_b]), grid, valid)
    torch.testing.assert_close(batched, warped_error(rgb_a, rgb_b, grid, valid))
