"""Cameras and ray generation: pinhole, fisheye (equidistant) and equirectangular.

Poses are camera-to-world 4x4 matrices in the OpenGL convention that instant-ngp
and nerfstudio use: the camera looks down -Z, +Y is up, +X is right. Pixel centres
sit at half-integer coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

CAMERA_MODELS = ("pinhole", "fisheye", "equirectangular")


@dataclass(frozen=True)
class Camera:
    """One camera: pose, image size, intrinsics and projection model."""

    c2w: torch.Tensor  # [4, 4] float32, camera-to-world (OpenGL axes)
    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    model: str = "pinhole"

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"resolution must be positive, got {self.width}x{self.height}")
        if not all(math.isfinite(v) for v in (self.fx, self.fy, self.cx, self.cy)) or (
                self.model != "equirectangular" and (self.fx <= 0 or self.fy <= 0)):  # equirect ignores them
            raise ValueError(f"intrinsics must be finite with positive focal lengths, got fx={self.fx} fy={self.fy} "
                             f"cx={self.cx} cy={self.cy}")
        if self.model not in CAMERA_MODELS:
            raise ValueError(f"unknown camera model {self.model!r} (known: {', '.join(CAMERA_MODELS)})")

    @classmethod
    def from_fov(cls, c2w, width: int, height: int, fov_y_deg: float, model: str = "pinhole") -> "Camera":
        """Vertical field of view in degrees (three.js / nerfstudio convention). A pinhole
        sees less than 180 degrees: a fov of 180 or more (a black image) is a ValueError."""
        if model == "pinhole" and not (isinstance(fov_y_deg, (int, float)) and 0 < fov_y_deg < 180):
            raise ValueError(f"a pinhole's vertical fov must be in (0, 180) degrees, got {fov_y_deg!r}")
        fy = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
        return cls(torch.as_tensor(c2w, dtype=torch.float32), width, height, fy, fy, width / 2, height / 2, model)

    def scaled(self, factor: float) -> "Camera":
        """Same view at ``factor`` times the resolution (dynamic resolution)."""
        w = max(1, round(self.width * factor))
        h = max(1, round(self.height * factor))
        sx, sy = w / self.width, h / self.height
        return replace(self, width=w, height=h, fx=self.fx * sx, fy=self.fy * sy, cx=self.cx * sx, cy=self.cy * sy)


def camera_directions(cam: Camera, device: torch.device | str = "cpu", pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit directions in camera space for each pixel, and a validity mask.

    pixels: optional [N, 2] float (u, v) pixel coordinates; default all pixel centres
    in row-major order. Returns (dirs [N, 3], valid [N] bool).
    """
    if pixels is None:
        v, u = torch.meshgrid(
            torch.arange(cam.height, device=device, dtype=torch.float32) + 0.5,
            torch.arange(cam.width, device=device, dtype=torch.float32) + 0.5,
            indexing="ij",
        )
        u, v = u.reshape(-1), v.reshape(-1)
    else:
        u, v = pixels[:, 0].to(device), pixels[:, 1].to(device)
    valid = torch.ones_like(u, dtype=torch.bool)
    if cam.model == "pinhole":
        d = torch.stack(((u - cam.cx) / cam.fx, -(v - cam.cy) / cam.fy, -torch.ones_like(u)), -1)
    elif cam.model == "fisheye":
        # Equidistant model: the angle from the axis is proportional to the image radius.
        x, y = (u - cam.cx) / cam.fx, -(v - cam.cy) / cam.fy
        theta = torch.sqrt(x * x + y * y)
        valid = theta < math.pi
        s = torch.where(theta > 1e-8, torch.sin(theta) / theta.clamp_min(1e-8), torch.ones_like(theta))
        d = torch.stack((x * s, y * s, -torch.cos(theta)), -1)
    else:  # equirectangular: the image centre looks down -Z, longitude grows to the right
        lon = (u / cam.width) * 2 * math.pi - math.pi
        lat = math.pi / 2 - (v / cam.height) * math.pi
        d = torch.stack((torch.cos(lat) * torch.sin(lon), torch.sin(lat), -torch.cos(lat) * torch.cos(lon)), -1)
    return torch.nn.functional.normalize(d, dim=-1), valid


def pixel_centres(cam: Camera, start: int, stop: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """[stop - start, 2] (u, v) centres of the pixels ``start:stop`` in row-major order: the
    same float32 values as the full grid :func:`camera_directions` builds, one chunk at a time."""
    idx = torch.arange(start, stop, device=device, dtype=torch.int64)
    v = (idx // cam.width).to(torch.float32) + 0.5
    u = (idx % cam.width).to(torch.float32) + 0.5
    return torch.stack((u, v), -1)


def generate_rays(cam: Camera, device: torch.device | str = "cpu", pixels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """World-space rays: (origins [N, 3], unit directions [N, 3], valid [N])."""
    d_cam, valid = camera_directions(cam, device, pixels)
    c2w = cam.c2w.to(device=device, dtype=torch.float32)
    d = d_cam @ c2w[:3, :3].T
    d = torch.nn.functional.normalize(d, dim=-1)
    o = c2w[:3, 3].expand_as(d)
    return o, d, valid


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 1.0, 0.0)) -> torch.Tensor:
    """Camera-to-world matrix of a camera at ``eye`` looking at ``target`` (OpenGL axes)."""
    eye = torch.as_tensor(eye, dtype=torch.float32)
    target = torch.as_tensor(target, dtype=torch.float32)
    up = torch.as_tensor(up, dtype=torch.float32)
    back = torch.nn.functional.normalize(eye - target, dim=0)  # +Z points away from the target
    right = torch.nn.functional.normalize(torch.linalg.cross(up, back), dim=0)
    true_up = torch.linalg.cross(back, right)
    m = torch.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = right, true_up, back, eye
    return m


def orbit_poses(n: int, radius: float, elevation_deg: float = 20.0, center=(0.0, 0.0, 0.0), up_axis: int = 2) -> list[torch.Tensor]:
    """``n`` camera-to-world poses on a circle around ``center`` (one full turn)."""
    poses = []
    el = math.radians(elevation_deg)
    c = torch.as_tensor(center, dtype=torch.float32)
    for i in range(n):
        az = 2 * math.pi * i / n
        ring = (radius * math.cos(el) * math.cos(az), radius * math.cos(el) * math.sin(az))
        height = radius * math.sin(el)
        if up_axis == 2:
            eye = (ring[0], ring[1], height)
            up = (0.0, 0.0, 1.0)
        else:
            eye = (ring[0], height, ring[1])
            up = (0.0, 1.0, 0.0)
        poses.append(look_at(c + torch.tensor(eye), c, up))
    return poses
