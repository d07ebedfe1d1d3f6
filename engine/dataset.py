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

from latentscape.errors import DatasetError, safe_repr
from latentscape.render.cameras import Camera

SPLITS = ("train", "val", "test")

MAX_JSON_BYTES = 256 * 2**20
"""Largest JSON file accepted (a camera path of 10^6 cameras is about 200 MB)."""


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


MAX_IMAGE_PIXELS = 1 << 26
"""Largest image a dataset may hold (67 Mpx, e.g. 8192x8192): decoded as float32 RGBA it
takes 1 GiB. Checked from the file header, before decoding."""
MAX_DATASET_BYTES = 24 * 2**30
"""Decoded size (float32 RGBA, after --downscale) of all of a dataset's images together."""
_BYTES_PER_PIXEL = 16  # float32 RGBA


def _num(src: dict, key: str, where: str, path: Path, *, low=None, high=None, low_open=False, high_open=False,
         kind: type = float):
    from latentscape.config import check_number
    from latentscape.errors import ConfigError

    try:
        return check_number(src[key], name=key, kind=kind, low=low, high=high, low_open=low_open,
                            high_open=high_open, where=where)
    except ConfigError as err:
        raise DatasetError(err.message, path=path) from None


def _intrinsics(src: dict, img_w: int, img_h: int, where: str, path: Path) -> tuple[float, float, float, float]:
    w = _num(src, "w", where, path, low=1, high=1 << 20) if "w" in src else img_w
    h = _num(src, "h", where, path, low=1, high=1 << 20) if "h" in src else img_h
    if "fl_x" in src:
        fx = _num(src, "fl_x", where, path, low=0, high=1e9, low_open=True)
        fy = _num(src, "fl_y", where, path, low=0, high=1e9, low_open=True) if "fl_y" in src else fx
    elif "camera_angle_x" in src:
        ax = _num(src, "camera_angle_x", where, path, low=0, high=math.pi, low_open=True, high_open=True)
        fx = 0.5 * w / math.tan(0.5 * ax)
        if "camera_angle_y" in src:
            ay = _num(src, "camera_angle_y", where, path, low=0, high=math.pi, low_open=True, high_open=True)
            fy = 0.5 * h / math.tan(0.5 * ay)
        else:
            fy = fx
    else:
        raise DatasetError(f"{where} has no focal length (fl_x or camera_angle_x)", path=path,
                           hint="add fl_x/fl_y (pixels) or camera_angle_x (radians) as instant-ngp and nerfstudio write them")
    cx = _num(src, "cx", where, path, low=-1e9, high=1e9) if "cx" in src else w / 2
    cy = _num(src, "cy", where, path, low=-1e9, high=1e9) if "cy" in src else h / 2
    # Intrinsics are given for (w, h); scale them if the image file has another size.
    sx, sy = img_w / w, img_h / h
    return fx * sx, fy * sy, cx * sx, cy * sy


def _transform(value, where: str, path: Path) -> np.ndarray:
    """A finite 4x4 camera-to-world matrix with an invertible rotation part."""
    fix = "transform_matrix is 4 rows of 4 numbers (OpenGL camera-to-world), as instant-ngp and nerfstudio write it"
    if not (isinstance(value, list) and len(value) == 4 and all(isinstance(r, list) and len(r) == 4 for r in value)
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for r in value for v in r)):
        raise DatasetError(f"{where}.transform_matrix must be a 4x4 matrix of numbers", path=path, hint=fix)
    m = np.asarray(value, dtype=np.float64)
    if not np.isfinite(m).all() or np.abs(m).max() > 1e9:
        raise DatasetError(f"{where}.transform_matrix must be finite (|v| <= 1e9)", path=path, hint=fix)
    if abs(np.linalg.det(m[:3, :3])) < 1e-9:
        raise DatasetError(f"{where}.transform_matrix has a degenerate (zero or flat) rotation", path=path, hint=fix)
    return m


def _image_size(path: Path, transforms: Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DatasetError(f"image {path} is missing", path=transforms, hint="check the frame's file_path (relative to transforms.json)")
    import warnings

    try:
        with warnings.catch_warnings():  # PIL's own bomb warning: the size is checked against ours below
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                return im.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"image {path} cannot be read: {safe_repr(str(err), 160)[1:-1]}", path=transforms,
                           hint="re-export the image as PNG or JPEG") from None


def _load_image(path: Path, transforms: Path) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    w, h = _image_size(path, transforms)
    if w * h > MAX_IMAGE_PIXELS:
        raise DatasetError(
            f"image {path} is {w}x{h} ({w * h / 1e6:.0f} Mpx): decoded it needs "
            f"{w * h * _BYTES_PER_PIXEL / 2**30:.1f} GiB, more than the {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx limit",
            path=transforms, hint="resize the images (e.g. to 2048 px wide) before training")
    try:
        with Image.open(path) as im:
            im.load()
            rgba = im.convert("RGBA")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(f"image {path} cannot be read: {safe_repr(str(err), 160)[1:-1]}", path=transforms,
                           hint="re-export the image as PNG or JPEG") from None
    return torch.from_numpy(np.asarray(rgba, dtype=np.float32) / 255.0)


def _resolve(root: Path, file_path: object, where: str, transforms: Path) -> Path:
    if not isinstance(file_path, str) or not file_path or "\x00" in file_path:
        raise DatasetError(f"{where}.file_path must be a non-empty path string, got {safe_repr(file_path, 60)}",
                           path=transforms)
    p = root / file_path
    if p.suffix == "" and not p.exists():
        # NeRF-synthetic omits the extension.
        p = p.with_suffix(".png")
    return p


def load_dataset(path: str | Path, *, downscale: int = 1, max_frames: int | None = None, require_train: bool = True,
                 max_bytes: int = MAX_DATASET_BYTES) -> Dataset:
    """Read ``transforms.json`` (or a folder holding it) and its images.

    ``require_train=False`` accepts evaluation-only sets (e.g. a bundle's held-out views).
    Every image's size is read from its header first: one larger than
    :data:`MAX_IMAGE_PIXELS`, or all of them together needing more than ``max_bytes``
    decoded, is a DatasetError that states the memory needed, before anything is decoded.
    """
    from latentscape.config import check_number
    from latentscape.errors import ConfigError

    path = Path(path)
    try:
        downscale = check_number(downscale, name="--downscale", kind=int, low=1, high=64)
        if max_frames is not None:
            max_frames = check_number(max_frames, name="max_frames", kind=int, low=1)
    except ConfigError as err:
        raise DatasetError(err.message, path=path, hint="--downscale is a whole factor >= 1 (2 halves the images)") from None
    if path.is_dir():
        path = path / "transforms.json"
    if not path.is_file():
        raise DatasetError("transforms.json not found", path=path, hint="point at a folder with a transforms.json (instant-ngp / nerfstudio format)")
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise DatasetError(f"file is larger than {MAX_JSON_BYTES // 2**20} MiB", path=path)
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DatasetError(f"malformed JSON ({err.msg} at line {err.lineno}, column {err.colno})", path=path) from None
    except (OSError, UnicodeDecodeError, RecursionError) as err:
        raise DatasetError(f"cannot read: {safe_repr(str(err), 160)[1:-1]}", path=path) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list) or not meta["frames"]:
        raise DatasetError("no 'frames' list (or it is empty)", path=path, hint="transforms.json needs frames[{file_path, transform_matrix}]")
    root = path.parent
    split_of: dict[str, str] = {}
    for split in SPLITS:
        names = meta.get(f"{split}_filenames")
        if names is not None:
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise DatasetError(f"{split}_filenames must be a list of file paths", path=path)
            for name in names:
                split_of[str(Path(name))] = split
    aabb_scale = _num(meta, "aabb_scale", "transforms.json", path, low=0, high=1e6, low_open=True) \
        if "aabb_scale" in meta else 1.0
    entries = meta["frames"][:max_frames] if max_frames else meta["frames"]
    # First pass: every entry checked and every image's size read from its header, so a
    # bad frame or an oversized dataset is refused before gigabytes are decoded.
    checked = []
    total = 0
    for i, fr in enumerate(entries):
        where = f"frames[{i}]"
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise DatasetError(f"{where} needs file_path and transform_matrix", path=path)
        m = _transform(fr["transform_matrix"], where, path)
        img_path = _resolve(root, fr["file_path"], where, path)
        if split_of and split_of.get(str(Path(fr["file_path"]))) is None:
            continue
        w, h = _image_size(img_path, path)
        if w * h > MAX_IMAGE_PIXELS:
            _load_image(img_path, path)  # raises, naming the size and the memory
        src = {**meta, **{k: v for k, v in fr.items() if k in ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")}}
        _intrinsics(src, w, h, where, path)  # NaN, strings, zero focal lengths: refused before decoding
        if downscale > min(w, h):
            raise DatasetError(f"--downscale {downscale} is larger than image {img_path} ({w}x{h})", path=path)
        total += (w // downscale) * (h // downscale) * _BYTES_PER_PIXEL + w * h * 4
        checked.append((i, fr, m, img_path))
    if total > max_bytes:
        raise DatasetError(f"the dataset's {len(checked)} images need {total / 2**30:.1f} GiB decoded, more than the "
                           f"{max_bytes / 2**30:.1f} GiB limit", path=path,
                           hint="pass --downscale 2 (or more), or use fewer or smaller images")
    frames: dict[str, list[Frame]] = {s: [] for s in SPLITS}
    for i, fr, m, img_path in checked:
        where = f"frames[{i}]"
        image = _load_image(img_path, path)
        if downscale > 1:
            image = torch.nn.functional.avg_pool2d(image.permute(2, 0, 1)[None], downscale)[0].permute(1, 2, 0)
        h, w = image.shape[:2]
        src = {**meta, **{k: v for k, v in fr.items() if k in ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x", "camera_angle_y")}}
        fx, fy, cx, cy = _intrinsics(src, w * downscale, h * downscale, where, path)
        cam = Camera(torch.tensor(m, dtype=torch.float32), w, h, fx / downscale, fy / downscale, cx / downscale, cy / downscale)
        if split_of:
            split = split_of[str(Path(fr["file_path"]))]
        else:
            split = "val" if i % 8 == 0 else "train"
        frames[split].append(Frame(img_path, cam, image))
    if require_train and not frames["train"]:
        raise DatasetError("no training frames", path=path, hint="check train_filenames against the frames' file_path values")
    return Dataset(root, frames, float(aabb_scale), meta)


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
