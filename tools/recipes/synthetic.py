"""Small analytic multi-view datasets for tests and quick experiments.

``make_sphere_dataset`` ray-casts a sphere whose colour follows its surface normal
(smooth, view-independent, exactly known), from cameras on a sphere around it, and
writes RGBA PNGs + ``transforms.json`` (instant-ngp / nerfstudio format, with split
keys). It is what the test suite trains on: real posed images, made in milliseconds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from latentscape.render.cameras import Camera, generate_rays, look_at


def _shade(o: torch.Tensor, d: torch.Tensor, radius: float) -> torch.Tensor:
    """RGBA of rays hitting a sphere at the origin (colour = 0.5 + 0.5 * normal)."""
    b = (o * d).sum(-1)
    c = (o * o).sum(-1) - radius * radius
    disc = b * b - c
    hit = disc > 0
    t = -b - torch.sqrt(disc.clamp_min(0))
    p = o + t[:, None] * d
    n = torch.nn.functional.normalize(p, dim=-1)
    rgb = 0.5 + 0.5 * n
    alpha = (hit & (t > 0)).float()
    return torch.cat((rgb * alpha[:, None], alpha[:, None]), -1)


def make_sphere_dataset(out: str | Path, *, n_train: int = 24, n_test: int = 4, size: int = 32, radius: float = 0.6,
                        camera_distance: float = 2.5, fov_deg: float = 45.0, seed: int = 0) -> Path:
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    frames = []
    fl = 0.5 * size / math.tan(math.radians(fov_deg) / 2)
    for i in range(n_train + n_test):
        z = rng.uniform(-0.6, 0.9)
        phi = rng.uniform(0, 2 * math.pi)
        r = math.sqrt(1 - z * z)
        eye = camera_distance * np.array([r * math.cos(phi), r * math.sin(phi), z])
        c2w = look_at(eye.tolist(), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
        cam = Camera(c2w, size, size, fl, fl, size / 2, size / 2)
        o, d, _ = generate_rays(cam)
        rgba = _shade(o, d, radius).reshape(size, size, 4)
        name = f"images/view_{i:03d}.png"
        Image.fromarray((rgba.numpy() * 255 + 0.5).astype(np.uint8), "RGBA").save(out / name)
        frames.append({"file_path": name, "transform_matrix": c2w.tolist()})
    meta = {
        "fl_x": fl, "fl_y": fl, "cx": size / 2, "cy": size / 2, "w": size, "h": size, "aabb_scale": 1,
        "frames": frames,
        "train_filenames": [f["file_path"] for f in frames[:n_train]],
        "test_filenames": [f["file_path"] for f in frames[n_train:]],
    }
    (out / "transforms.json").write_text(json.dumps(meta, indent=1))
    return out
