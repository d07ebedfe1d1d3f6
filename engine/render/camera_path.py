"""Camera paths in nerfstudio's ``camera_path.json`` format, plus built-in orbits.

The file is what nerfstudio's viewer exports and ``ns-render camera-path`` reads:
``render_width``, ``render_height``, optional ``camera_type`` (``perspective``,
``fisheye``, ``equirectangular``), ``fps`` and/or ``seconds``, and ``camera_path``, a
list of ``{camera_to_world: 16 floats (row-major 4x4), fov: vertical degrees, aspect}``.
Poses are in the dataset's world coordinates.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from latentscape.errors import CameraPathError, safe_repr
from latentscape.render.cameras import Camera, orbit_poses

_TYPES = {"perspective": "pinhole", "pinhole": "pinhole", "fisheye": "fisheye", "equirectangular": "equirectangular"}

MAX_JSON_BYTES = 256 * 2**20
"""Largest JSON file accepted (a camera path of 10^6 cameras is about 200 MB)."""


@dataclass
class CameraPath:
    """A sequence of cameras with a frame rate."""

    cameras: list[Camera]
    fps: float
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.cameras)

    def to_json(self) -> dict:
        """Serialise in nerfstudio's format (one fov for the path's image size)."""
        first = self.cameras[0]
        kind = {"pinhole": "perspective"}.get(first.model, first.model)
        return {
            "camera_type": kind,
            "render_width": first.width,
            "render_height": first.height,
            "fps": self.fps,
            "seconds": len(self.cameras) / self.fps,
            "camera_path": [
                {
                    "camera_to_world": [float(v) for v in c.c2w.reshape(-1).tolist()],
                    "fov": math.degrees(2 * math.atan(0.5 * c.height / c.fy)),
                    "aspect": c.width / c.height,
                }
                for c in self.cameras
            ],
        }


MAX_FRAMES = 1_000_000
"""Most cameras one path may hold (a day at 10 fps)."""


def _need(data: dict, key: str, kind, path: Path):
    if key not in data:
        raise CameraPathError(f"missing field {key!r}", path=path, hint="export the path again from nerfstudio's viewer or see README 'Camera paths'")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CameraPathError(f"field {key!r} must be {getattr(kind, '__name__', 'a number')}, got {type(value).__name__}", path=path)
    return value


def _number(value, name: str, path: Path, **kw):
    from latentscape.config import check_number
    from latentscape.errors import ConfigError

    try:
        return check_number(value, name=name, **kw)
    except ConfigError as err:
        raise CameraPathError(err.message, path=path) from None


def check_frame_size(width: int, height: int, *, path: str | Path | None = None, what: str = "resolution") -> None:
    """Refuse a frame size whose buffers would not fit, before anything is allocated.

    Sides are capped at :data:`latentscape.render.renderer.MAX_IMAGE_SIDE`, and the frame's
    estimated memory (:func:`latentscape.render.renderer.frame_bytes`) at
    :func:`latentscape.render.renderer.frame_budget` (half this machine's memory)."""
    from latentscape.render.renderer import MAX_IMAGE_SIDE, frame_budget, frame_bytes

    for name, v in (("width", width), ("height", height)):
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_IMAGE_SIDE:
            raise CameraPathError(f"{what}: {name} must be a positive integer (at most {MAX_IMAGE_SIDE}), got "
                                  f"{safe_repr(v, 40)}", path=path, hint="ask for a smaller --width/--height")
    need, budget = frame_bytes(width, height), frame_budget()
    if need > budget:
        raise CameraPathError(f"{what} {width}x{height} needs about {need / 2**30:.1f} GiB per frame, more than the "
                              f"{budget / 2**30:.1f} GiB budget (half this machine's memory, or LATENTSCAPE_MAX_FRAME_GB)",
                              path=path,
                              hint="ask for a smaller --width/--height")


def load_camera_path(path: str | Path, *, width: int | None = None, height: int | None = None) -> CameraPath:
    """Read a ``camera_path.json``; ``width``/``height`` override the file's resolution."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir() and not path.is_file():  # /dev/zero, a FIFO: never read
            raise CameraPathError("not a regular file", path=path, hint="give a camera_path.json file")
        if path.is_file() and path.stat().st_size > MAX_JSON_BYTES:
            raise CameraPathError(f"file is larger than {MAX_JSON_BYTES // 2**20} MiB", path=path)
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CameraPathError("file not found", path=path) from None
    except IsADirectoryError:
        raise CameraPathError("this is a folder, not a camera_path.json", path=path) from None
    except (OSError, UnicodeDecodeError, RecursionError) as err:
        raise CameraPathError(f"cannot read: {safe_repr(str(err), 160)[1:-1]}", path=path) from None
    except json.JSONDecodeError as err:
        raise CameraPathError(f"not valid JSON ({err.msg} at line {err.lineno})", path=path) from None
    if not isinstance(data, dict):
        raise CameraPathError("top level must be a JSON object", path=path)
    w = width if width is not None else _need(data, "render_width", int, path)
    h = height if height is not None else _need(data, "render_height", int, path)
    check_frame_size(w, h, path=path)
    kind = data.get("camera_type", "perspective")
    if not isinstance(kind, str) or kind not in _TYPES:
        raise CameraPathError(f"unsupported camera_type {safe_repr(kind, 60)}", path=path,
                              hint=f"supported: {', '.join(sorted(_TYPES))}")
    frames = _need(data, "camera_path", list, path)
    if not frames:
        raise CameraPathError("camera_path is empty", path=path)
    if len(frames) > MAX_FRAMES:
        raise CameraPathError(f"camera_path has {len(frames)} cameras, more than {MAX_FRAMES}", path=path)
    if "fps" in data:
        fps = _number(data["fps"], "fps", path, low=0, high=1000, low_open=True)
    elif "seconds" in data:
        seconds = _number(data["seconds"], "seconds", path, low=0, high=1e7, low_open=True)
        fps = _number(len(frames) / seconds, "fps (frames / seconds)", path, low=0, high=1000, low_open=True)
    else:
        fps = 30.0
    model = _TYPES[kind]
    cams = []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise CameraPathError(f"camera_path[{i}] must be an object", path=path)
        m = frame.get("camera_to_world")
        if not isinstance(m, list) or len(m) != 16 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= 1e9
                for v in m):
            raise CameraPathError(f"camera_path[{i}].camera_to_world must be 16 finite numbers (row-major 4x4)", path=path)
        # a pinhole sees less than 180 degrees (180 renders black); a fisheye up to 360
        high = 180.0 if model == "pinhole" else 360.0
        fov = _number(frame.get("fov", 50.0 if model == "pinhole" else 180.0), f"camera_path[{i}].fov", path,
                      low=0, high=high, low_open=True, high_open=model == "pinhole")
        c2w = torch.tensor(m, dtype=torch.float32).reshape(4, 4)
        if abs(float(torch.linalg.det(c2w[:3, :3].double()))) < 1e-9:
            raise CameraPathError(f"camera_path[{i}].camera_to_world has a degenerate (zero or flat) rotation",
                                  path=path)
        try:
            if model == "fisheye":
                # nerfstudio's fisheye: fov is the full angle across the image height.
                fy = 0.5 * h / math.radians(fov / 2)
                cams.append(Camera(c2w, w, h, fy, fy, w / 2, h / 2, "fisheye"))
            else:
                cams.append(Camera.from_fov(c2w, w, h, fov, model))
        except ValueError as err:
            raise CameraPathError(f"camera_path[{i}]: {err}", path=path) from None
    return CameraPath(cams, float(fps), str(path))


def orbit_path(n_frames: int, width: int, height: int, *, radius: float, elevation_deg: float = 20.0,
               fov_deg: float = 40.0, fps: float = 24.0, center=(0.0, 0.0, 0.0), up_axis: int = 2) -> CameraPath:
    """A built-in orbit: ``n_frames`` cameras on a circle, looking at ``center``."""
    check_frame_size(width, height)
    if isinstance(n_frames, bool) or not isinstance(n_frames, int) or not 0 < n_frames <= MAX_FRAMES:
        raise CameraPathError(f"frame count must be an integer in [1, {MAX_FRAMES}], got {safe_repr(n_frames, 40)}")
    try:
        Camera.from_fov(torch.eye(4), width, height, fov_deg)
    except ValueError as err:
        raise CameraPathError(str(err)) from None
    poses = orbit_poses(n_frames, radius, elevation_deg, center, up_axis)
    return CameraPath([Camera.from_fov(p, width, height, fov_deg) for p in poses], fps, "orbit")
