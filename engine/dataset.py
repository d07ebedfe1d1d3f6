"""Posed-image datasets in the instant-ngp / nerfstudio ``transforms.json`` format.

Supported: shared or per-frame intrinsics (``fl_x fl_y cx cy w h``, or the
NeRF-synthetic ``camera_angle_x``), OpenGL camera-to-world ``transform_matrix``,
``aabb_scale``, and nerfstudio's split keys ``train_filenames`` / ``val_filenames`` /
``test_filenames`` (without them every 8th frame is held out for validation, as
nerfstudio's blender/instant-ngp parsers do). RGBA images keep their alpha: training
composites them on a random background so the field learns empty space.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from latentscape.errors import DatasetError
from latentscape.render.cameras import Camera

SPLITS = ("train", "val", "test")


@dataclass
class Frame:
    path: Path
    camera: Camera
    image: torch.Tensor  # [H, W, 4] float32 in [0, 1] (alpha 1 when the file has none)


@dataclass
class Dataset:
    root: Path
    frames: dict[str, list[Frame]]
    aabb_scale: float
    meta: dict

    def split(self, name: str) -> list[Frame]:
        return self.frames[name]


def _intrinsics(src: dict, img_w: int, img_h: int, where: str, path: Path) -> tuple[float, float, float, float]:
    w = src.get("w", img_w)
    h = src.get("h", img_h)
    if "fl_x" in src:
        fx = float(src["fl_x"])
        fy = float(src.get("fl_y", fx))
    elif "camera_angle_x" in src:
        fx = 0.5 * w / math.tan(0.5 * float(src["camera_angle_x"]))
        fy = 0.5 * h / math.tan(0.5 * float(src["camera_angle_y"])) if "camera_angle_y" in src else fx
    else:
        raise DatasetError(f"{where} has no focal length (fl_x or camera_angle_x)", path=path,
                           hint="add fl_x/fl_y (pixels) or camera_angle_x (radians) as instant-ngp and nerfstudio write them")
    cx = float(src.get("cx", w / 2))
    cy = float(src.get("cy", h / 2))
    # Intrinsics are given for (w, h); scale them if the image file has another size.
    sx, sy = img_w / w, img_h / h
    if fx <= 0 or fy <= 0:
        raise DatasetError(f"{where} has a non-positive focal length", path=path)
    return fx * sx, fy * sy, cx * sx, cy * sy


def _load_image(path: Path, transforms: Path) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DatasetError(f"image {path} is missing", path=transforms, hint="check the frame's file_path (relative to transforms.json)")
    try:
        with Image.open(path) as im:
            im.load()
            rgba = im.convert("RGBA")
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(f"image {path} cannot be read: {err}", path=transforms, hint="re-export the image as PNG or JPEG") from None
    return torch.from_numpy(np.asarray(rgba, dtype=np.float32) / 255.0)


def _resolve(root: Path, file_path: str) -> Path:
    p = root / file_path
    if p.suffix == "" and not p.exists():
        # NeRF-synthetic omits the extension.
        p = p.with_suffix(".png")
    return p


def load_dataset(path: str | Path, *, downscale: int = 1, max_frames: int | None = None, require_train: bool = True) -> Dataset:
    """Read ``transforms.json`` (or a folder holding it) and its images.

    ``require_train=False`` accepts evaluation-only sets (e.g. a bundle's held-out views).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "transforms.json"
    if not path.is_file():
        raise DatasetError("transforms.json not found", path=path, hint="point at a folder with a transforms.json (instant-ngp / nerfstudio format)")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"malformed JSON ({err.msg} at line {err.lineno}, column {err.colno})", path=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"cannot read: {err}", path=path) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise DatasetError("no 'frames' list (or it is empty)", path=path, hint="transforms.json needs frames[{file_path, transform_matrix}]")
    root = path.parent
    split_of: dict[str, str] = {}
    for split in SPLITS:
        names = meta.get(f"{split}_filenames")
        if names is not None:
            if not isinstance(names, list):
                raise DatasetError(f"{split}_filenames must be a list of file paths", path=path)
            for name in names:
                split_of[str(Path(name))] = split
    frames: dict[str, list[Frame]] = {s: [] for s in SPLITS}
    entries = meta["frames"][:max_frames] if max_frames else meta["frames"]
    for i, fr in enumerate(entries):
        where = f"frames[{i}]"
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise DatasetError(f"{where} needs file_path and transform_matrix", path=path)
        m = np.asarray(fr["transform_matrix"], dtype=np.float64) if isinstance(fr["transform_matrix"], list) else None
        if m is None or m.shape != (4, 4) or not np.isfinite(m).all():
            raise DatasetError(f"{where}.transform_matrix must be a finite 4x4 matrix", path=path)
        img_path = _resolve(root, fr["file_path"])
        image = _load_image(img_path, path)
        if downscale > 1:
            image = torch.nn.functional.avg_pool2d(image.permute(2, 0, 1)[None], downscale)[0].permute(1, 2, 0)
        h, w = image.shape[:2]
        src = {**meta, **{k: v for k, v in fr.items() if k in ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")}}
        fx, fy, cx, cy = _intrinsics(src, w * downscale, h * downscale, where, path)
        cam = Camera(torch.tensor(m, dtype=torch.float32), w, h, fx / downscale, fy / downscale, cx / downscale, cy / downscale)
        if split_of:
            split = split_of.get(str(Path(fr["file_path"])))
            if split is None:
                continue
        else:
            split = "val" if i % 8 == 0 else "train"
        frames[split].append(Frame(img_path, cam, image))
    if require_train and not frames["train"]:
        raise DatasetError("no training frames", path=path, hint="check train_filenames against the frames' file_path values")
    return Dataset(root, frames, float(meta.get("aabb_scale", 1.0)), meta)


def focus_center(cameras: list[Camera]) -> torch.Tensor:
    """The point closest (least squares) to every camera's optical axis."""
    a = torch.zeros(3, 3, dtype=torch.float64)
    b = torch.zeros(3, dtype=torch.float64)
    for cam in cameras:
        o = cam.c2w[:3, 3].double()
        d = -cam.c2w[:3, 2].double()
        d = d / d.norm()
        p = torch.eye(3, dtype=torch.float64) - torch.outer(d, d)
        a += p
        b += p @ o
    try:
        return torch.linalg.solve(a, b).float()
    except RuntimeError:  # all axes parallel: fall back to the mean camera position
        return torch.stack([c.c2w[:3, 3] for c in cameras]).mean(0)


def normalization(cameras: list[Camera], target_radius: float = 2.0) -> tuple[torch.Tensor, float]:
    """(center, scale) taking world points into the field's frame: (p - center) * scale,
    so that cameras sit at ``target_radius`` on average around the focus point."""
    center = focus_center(cameras)
    dist = torch.stack([(c.c2w[:3, 3] - center).norm() for c in cameras]).mean().item()
    return center, target_radius / max(dist, 1e-6)
