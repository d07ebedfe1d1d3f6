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

from latentscape.errors import CameraPathError
from latentscape.render.cameras import Camera, orbit_poses

_TYPES = {"perspective": "pinhole", "pinhole": "pinhole", "fisheye": "fisheye", "equirectangular": "equirectangular"}


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


def _need(data: dict, key: str, kind, path: Path):
    if key not in data:
        raise CameraPathError(f"missing field {key!r}", path=path, hint="export the path again from nerfstudio's viewer or see README 'Camera paths'")
    value = data[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CameraPathError(f"field {key!r} must be {getattr(kind, '__name__', kind)}, got {type(value).__name__}", path=path)
    return value


def load_camera_path(path: str | Path, *, width: int | None = None, height: int | None = None) -> CameraPath:
    """Read a ``camera_path.json``; ``width``/``height`` override the file's resolution."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CameraPathError("file not found", path=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise CameraPathError(f"cannot read: {err}", path=path) from None
    except json.JSONDecodeError as err:
        raise CameraPathError(f"not valid JSON ({err.msg} at line {err.lineno})", path=path) from None
    if not isinstance(data, dict):
        raise CameraPathError("top level must be a JSON object", path=path)
    w = width if width is not None else _need(data, "render_width", int, path)
    h = height if height is not None else _need(data, "render_height", int, path)
    if w <= 0 or h <= 0:
        raise CameraPathError(f"resolution must be positive, got {w}x{h}", path=path)
    kind = data.get("camera_type", "perspective")
    if kind not in _TYPES:
        raise CameraPathError(f"unsupported camera_type {kind!r}", path=path, hint=f"supported: {', '.join(sorted(_TYPES))}")
    frames = _need(data, "camera_path", list, path)
    if not frames:
        raise CameraPathError("camera_path is empty", path=path)
    if "fps" in data:
        fps = _need(data, "fps", (int, float), path)
    elif "seconds" in data:
        fps = len(frames) / _need(data, "seconds", (int, float), path)
    else:
        fps = 30.0
    if fps <= 0:
        raise CameraPathError(f"fps must be positive, got {fps}", path=path)
    cams = []
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict):
            raise CameraPathError(f"camera_path[{i}] must be an object", path=path)
        m = frame.get("camera_to_world")
        if not isinstance(m, list) or len(m) != 16 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in m):
            raise CameraPathError(f"camera_path[{i}].camera_to_world must be 16 finite numbers (row-major 4x4)", path=path)
        fov = frame.get("fov", 50.0 if _TYPES[kind] == "pinhole" else 180.0)
        if not isinstance(fov, (int, float)) or not 0 < fov < 360:
            raise CameraPathError(f"camera_path[{i}].fov must be degrees in (0, 360), got {fov!r}", path=path)
        c2w = torch.tensor(m, dtype=torch.float32).reshape(4, 4)
        if _TYPES[kind] == "fisheye":
            # nerfstudio's fisheye: fov is the full angle across the image height.
            fy = 0.5 * h / math.radians(fov / 2)
            cams.append(Camera(c2w, w, h, fy, fy, w / 2, h / 2, "fisheye"))
        else:
            cams.append(Camera.from_fov(c2w, w, h, fov, _TYPES[kind]))
    return CameraPath(cams, float(fps), str(path))


def orbit_path(n_frames: int, width: int, height: int, *, radius: float, elevation_deg: float = 20.0,
               fov_deg: float = 40.0, fps: float = 24.0, center=(0.0, 0.0, 0.0), up_axis: int = 2) -> CameraPath:
    """A built-in orbit: ``n_frames`` cameras on a circle, looking at ``center``."""
    if width <= 0 or height <= 0:
        raise CameraPathError(f"resolution must be positive, got {width}x{height}")
    if n_frames <= 0:
        raise CameraPathError(f"frame count must be positive, got {n_frames}")
    poses = orbit_poses(n_frames, radius, elevation_deg, center, up_axis)
    return CameraPath([Camera.from_fov(p, width, height, fov_deg) for p in poses], fps, "orbit")
