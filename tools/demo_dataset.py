"""Build the demo scene's multi-view dataset by rendering a real asset with blender.

The recipe: Debian's ``blender`` (Cycles on the CPU, no denoising) renders the
``CesiumMilkTruck`` from Debian's ``assimp-testmodels``, normalised to fit about
``[-1, 1]^3`` around the origin, lit by a CC0 HDRI from Debian's ``blender-data``
(the HDRI itself is not visible: transparent film, RGBA images as in the
NeRF-synthetic scenes), from seeded random cameras on the upper hemisphere and a
little below the equator, all looking at the origin. The output is one
``transforms.json`` in the instant-ngp / nerfstudio format with the images in
``images/``.

Debian packages needed to rebuild (install step; nothing downloads at run time)::

    apt-get update
    apt-get install -y --no-install-recommends blender assimp-testmodels
    # blender depends on blender-data, which ships the HDRIs in
    # /usr/share/blender/datafiles/studiolights/world/*.exr (CC0). Without it:
    apt-get download blender-data
    dpkg-deb --fsys-tarfile blender-data_*.deb \\
        | tar -x -C /tmp --wildcards './usr/share/blender/datafiles/studiolights/world/*.exr'

The same recipe renders any mesh file (``latentscape dataset blender --mesh FILE``):
formats blender imports itself (glTF/GLB, Collada, OBJ, PLY, STL, FBX) go to blender
as they are; other formats trimesh reads (``.off`` such as CGAL's meshes, ...) are
converted to a temporary PLY first (see :func:`prepare_mesh`). A mesh without a
material is rendered with its vertex colours if it has them, else light grey.

Usage::

    latentscape dataset demo --out data/demo_dataset
    latentscape dataset blender --mesh /usr/share/assimp/models/Collada/duck.dae \\
        --out data/duck --size 100 --train 60 --val 0 --test 12
    # or from Python
    from latentscape.tools.demo_dataset import build_demo_dataset
    build_demo_dataset("data/demo_dataset", size=128, n_train=100, n_val=10, n_test=10)

With ``n_val=0``, ``val_filenames`` lists the test views: nerfstudio's
``nerfstudio-data`` parser evaluates the val split, so both it and latentscape then
evaluate the same held-out views.

Camera matrices are blender's camera ``matrix_world``, written unchanged: a blender
camera looks down its local -Z with +Y up, which is the OpenGL convention that
``transforms.json`` uses. The world frame is blender's (+Z up), as in the
NeRF-synthetic scenes. After rendering, the origin (the asset's bounding-box centre)
is projected through every camera and must land at the image centre.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from latentscape.errors import DatasetError, OutputError
from latentscape.outputs import staged

BLENDER_SCRIPT = Path(__file__).with_name("blender_views.py")

APT_HINT = "apt-get update && apt-get install -y --no-install-recommends blender assimp-testmodels"
HDRI_HINT = (
    "apt-get install -y blender-data (or: apt-get download blender-data && dpkg-deb --fsys-tarfile "
    "blender-data_*.deb | tar -x -C /tmp --wildcards './usr/share/blender/datafiles/studiolights/world/*.exr'), "
    "or pass --hdri FILE.exr"
)

# Where Debian's assimp-testmodels puts the assets, in order of preference.
ASSET_CANDIDATES = (
    Path("/usr/share/assimp/models/glTF/CesiumMilkTruck/CesiumMilkTruck.gltf"),
    Path("/usr/share/assimp/models/Collada/duck.dae"),
)
HDRI_DIRS = (
    Path("/usr/share/blender/datafiles/studiolights/world"),
    Path("/tmp/usr/share/blender/datafiles/studiolights/world"),
)
DEFAULT_HDRI = "courtyard.exr"

# Mesh formats blender 3.4 imports itself (tools/blender_views.py); others go through trimesh.
BLENDER_FORMATS = (".gltf", ".glb", ".dae", ".obj", ".ply", ".stl", ".fbx")

EVENT_PREFIX = "LATENTSCAPE "


# --------------------------------------------------------------------------- cameras


def look_at(position: Sequence[float], target: Sequence[float] = (0.0, 0.0, 0.0),
            up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world matrix (OpenGL axes: looks down -Z, +Y up) at ``position`` facing ``target``."""
    eye = np.asarray(position, dtype=np.float64)
    back = eye - np.asarray(target, dtype=np.float64)  # camera +Z points away from the target
    norm = np.linalg.norm(back)
    if norm == 0:
        raise ValueError("camera position equals its target")
    back /= norm
    right = np.cross(np.asarray(up, dtype=np.float64), back)
    if np.linalg.norm(right) < 1e-8:  # looking straight along `up`: pick any right vector
        right = np.cross((0.0, 1.0, 0.0), back)
    right /= np.linalg.norm(right)
    cam_up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0] = right
    c2w[:3, 1] = cam_up
    c2w[:3, 2] = back
    c2w[:3, 3] = eye
    return c2w


def sample_camera_poses(n: int, *, seed: int = 0, radius: float = 4.0,
                        min_elevation_deg: float = -15.0, max_elevation_deg: float = 85.0) -> list[np.ndarray]:
    """``n`` seeded camera-to-world matrices on a sphere of ``radius``, looking at the origin.

    Positions are uniform in area over the band of elevations (blender's +Z up) from
    ``min_elevation_deg`` (a little below the equator) to ``max_elevation_deg``.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = np.random.default_rng(seed)
    z = rng.uniform(math.sin(math.radians(min_elevation_deg)), math.sin(math.radians(max_elevation_deg)), n)
    azimuth = rng.uniform(0.0, 2 * math.pi, n)
    ring = np.sqrt(1.0 - z**2)
    points = radius * np.stack([ring * np.cos(azimuth), ring * np.sin(azimuth), z], axis=1)
    return [look_at(p) for p in points]


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (no distortion; square pixels)."""

    width: int
    height: int
    fl_x: float
    fl_y: float
    cx: float
    cy: float

    @classmethod
    def from_fov_y(cls, width: int, height: int, fov_y_deg: float) -> Intrinsics:
        focal = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2)
        return cls(width, height, focal, focal, width / 2, height / 2)

    @property
    def camera_angle_x(self) -> float:
        return 2 * math.atan(self.width / (2 * self.fl_x))


def project(c2w: np.ndarray, intrinsics: Intrinsics, point: Sequence[float]) -> tuple[float, float, float]:
    """Pixel (u right, v down) and depth of a world point seen by an OpenGL-axes camera."""
    w2c = np.linalg.inv(np.asarray(c2w, dtype=np.float64))
    x, y, z = (w2c @ np.append(np.asarray(point, dtype=np.float64), 1.0))[:3]
    depth = -z
    return intrinsics.cx + intrinsics.fl_x * x / depth, intrinsics.cy - intrinsics.fl_y * y / depth, depth


# --------------------------------------------------------------------------- transforms.json


def frame_paths(n_train: int, n_val: int, n_test: int) -> dict[str, list[str]]:
    """File paths per split: ``images/r_000.png`` ... numbered across train, val, test."""
    total = n_train + n_val + n_test
    digits = max(3, len(str(max(total - 1, 0))))
    names = [f"images/r_{i:0{digits}d}.png" for i in range(total)]
    return {
        "train": names[:n_train],
        "val": names[n_train:n_train + n_val],
        "test": names[n_train + n_val:],
    }


def build_transforms(matrices: Sequence[np.ndarray], intrinsics: Intrinsics, splits: dict[str, list[str]],
                     *, aabb_scale: int = 1, recipe: dict | None = None) -> dict:
    """The ``transforms.json`` document (instant-ngp + nerfstudio fields) for these frames."""
    paths = splits["train"] + splits["val"] + splits["test"]
    if len(paths) != len(matrices):
        raise ValueError(f"{len(matrices)} matrices for {len(paths)} file paths")
    doc = {
        "camera_angle_x": intrinsics.camera_angle_x,
        "fl_x": intrinsics.fl_x,
        "fl_y": intrinsics.fl_y,
        "cx": intrinsics.cx,
        "cy": intrinsics.cy,
        "w": intrinsics.width,
        "h": intrinsics.height,
        "aabb_scale": aabb_scale,
        "frames": [
            {"file_path": path, "transform_matrix": np.asarray(m, dtype=np.float64).tolist()}
            for path, m in zip(paths, matrices)
        ],
        "train_filenames": list(splits["train"]),
        # No val views: nerfstudio evaluates the val split, so it gets the test views.
        "val_filenames": list(splits["val"] or splits["test"]),
        "test_filenames": list(splits["test"]),
    }
    if recipe is not None:
        doc["latentscape_recipe"] = recipe
    return doc


def write_transforms(path: str | Path, doc: dict) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as err:
        raise OutputError(f"cannot write transforms.json: {err.strerror}", path=path,
                          hint="choose a writable --out folder") from err
    return path


def check_centred(doc: dict, point: Sequence[float] = (0.0, 0.0, 0.0), tolerance_px: float = 1.0) -> float:
    """Project ``point`` through every frame; return the largest distance from the image centre.

    Raises :class:`DatasetError` beyond ``tolerance_px``: it would mean the matrices are
    not camera-to-world with OpenGL axes (or the cameras do not look at the point).
    """
    intr = Intrinsics(doc["w"], doc["h"], doc["fl_x"], doc["fl_y"], doc["cx"], doc["cy"])
    worst = 0.0
    for frame in doc["frames"]:
        u, v, depth = project(np.asarray(frame["transform_matrix"]), intr, point)
        off = math.hypot(u - intr.width / 2, v - intr.height / 2)
        if depth <= 0 or off > tolerance_px:
            raise DatasetError(
                f"{frame['file_path']}: point {list(point)} projects to ({u:.1f}, {v:.1f}) at depth {depth:.2f}, "
                f"not the image centre", hint="the camera matrices are not OpenGL camera-to-world")
        worst = max(worst, off)
    return worst


# --------------------------------------------------------------------------- finding tools and assets


def find_blender(blender: str | Path | None = None) -> Path:
    found = shutil.which(str(blender)) if blender is not None else shutil.which("blender")
    if found is None:
        raise DatasetError(f"blender not found ({blender or 'not on PATH'})",
                           hint=f"{APT_HINT}, or pass --blender PATH")
    return Path(found)


def find_asset(asset: str | Path | None = None) -> Path:
    candidates = (Path(asset),) if asset is not None else ASSET_CANDIDATES
    for path in candidates:
        if path.is_file():
            return path
    raise DatasetError("no asset to render: " + ", ".join(str(p) for p in candidates) + " missing",
                       hint=f"{APT_HINT}, or pass a mesh file (glTF, Collada, OBJ, PLY, STL, FBX, OFF)")


def find_hdri(hdri: str | Path | None = None, dirs: Sequence[Path] = HDRI_DIRS) -> Path:
    if hdri is not None:
        path = Path(hdri)
        if path.is_file():
            return path
        raise DatasetError("HDRI not found", path=path, hint=HDRI_HINT)
    for d in dirs:
        if (d / DEFAULT_HDRI).is_file():
            return d / DEFAULT_HDRI
    for d in dirs:
        found = sorted(d.glob("*.exr")) if d.is_dir() else []
        if found:
            return found[0]
    raise DatasetError("no HDRI (*.exr) in " + ", ".join(str(d) for d in dirs), hint=HDRI_HINT)


def prepare_mesh(path: str | Path, tmp_dir: str | Path) -> tuple[Path, str | None]:
    """The file blender should import for ``path``, and how it was converted (``None``: as is).

    Formats blender imports itself are returned unchanged. Anything else trimesh can
    read (``.off``, ...) is loaded as one mesh and written to ``tmp_dir`` as a binary
    PLY, which keeps vertex colours.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext in BLENDER_FORMATS:
        return path, None
    import trimesh

    if ext.lstrip(".") not in trimesh.available_formats():
        raise DatasetError(f"cannot read {ext or 'extensionless'} meshes", path=path,
                           hint="use a mesh blender (" + ", ".join(BLENDER_FORMATS) + ") or trimesh can read")
    try:
        mesh = trimesh.load(str(path), force="mesh")
    except Exception as err:  # trimesh raises many kinds of errors for bad files
        raise DatasetError(f"trimesh cannot read the mesh: {err}", path=path) from err
    if len(mesh.faces) == 0:
        raise DatasetError("the mesh has no faces", path=path)
    converted = Path(tmp_dir) / (path.stem + ".ply")
    mesh.export(str(converted), file_type="ply")
    return converted, f"trimesh {trimesh.__version__}: {ext} -> .ply"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- running blender


def _run_blender(blender: Path, job_path: Path, n_frames: int, log_path: Path, progress: bool) -> None:
    cmd = [str(blender), "-b", "-noaudio", "--factory-startup", "--python-exit-code", "3",
           "--python", str(BLENDER_SCRIPT), "--", "--job", str(job_path)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_frames, unit="view", desc="rendering")
    error = None
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(" ".join(cmd) + "\n")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace", env={**os.environ, "PYTHONNOUSERSITE": "1"})
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if not line.startswith(EVENT_PREFIX):
                continue
            try:
                event = json.loads(line[len(EVENT_PREFIX):])
            except json.JSONDecodeError:
                continue
            if event.get("event") == "frame" and bar is not None:
                bar.update(1)
            elif event.get("event") == "error":
                error = event.get("message")
        code = proc.wait()
    if bar is not None:
        bar.close()
    if code != 0 or error:
        raise DatasetError(f"blender failed (exit {code}): {error or 'see the log'}", path=log_path,
                           hint="read the blender log; check the asset and HDRI paths")


def build_demo_dataset(out: str | Path, *, size: int = 128, n_train: int = 100, n_val: int = 10,
                       n_test: int = 10, samples: int = 32, seed: int = 0, radius: float = 4.0,
                       fov_y_deg: float = 40.0, blender: str | Path | None = None,
                       asset: str | Path | None = None, hdri: str | Path | None = None,
                       threads: int | None = None, progress: bool = True, force: bool = False) -> Path:
    """Render the dataset into ``out`` and return the path of its ``transforms.json``.

    ``out`` is written like every latentscape output (:mod:`latentscape.outputs`): staged
    in a hidden folder and renamed into place when complete; an existing output is
    refused unless ``force`` (and then only one latentscape wrote is replaced). On a
    failure nothing is left at ``out``; blender's log stays in the temporary folder the
    error names."""
    if size < 8 or n_train < 1 or n_val < 0 or n_test < 0 or samples < 1:
        raise DatasetError(f"bad settings: size={size} train={n_train} val={n_val} test={n_test} samples={samples}",
                           hint="size >= 8, train >= 1, val and test >= 0, samples >= 1")
    blender_path = find_blender(blender)
    asset_path = find_asset(asset)
    hdri_path = find_hdri(hdri)
    out = Path(out).resolve()
    with staged(out, kind="dir", force=force, command="dataset") as root:  # refuses before any rendering
        # blender's log lives outside the output: a failed run leaves no partial dataset, but its log stays
        fd, log_name = tempfile.mkstemp(prefix="latentscape-blender-", suffix=".log")
        os.close(fd)
        log_path = Path(log_name)
        _render_dataset(root, log_path, size=size, n_train=n_train, n_val=n_val, n_test=n_test, samples=samples,
                        seed=seed, radius=radius, fov_y_deg=fov_y_deg, blender_path=blender_path,
                        asset_path=asset_path, hdri_path=hdri_path, threads=threads, progress=progress)
    log_path.unlink(missing_ok=True)
    return out / "transforms.json"


def _render_dataset(out: Path, log_path: Path, *, size: int, n_train: int, n_val: int, n_test: int, samples: int,
                    seed: int, radius: float, fov_y_deg: float, blender_path: Path, asset_path: Path, hdri_path: Path,
                    threads: int | None, progress: bool) -> None:
    """Render into the (empty, staged) folder ``out``; blender writes its log to ``log_path``."""
    (out / "images").mkdir()

    splits = frame_paths(n_train, n_val, n_test)
    paths = splits["train"] + splits["val"] + splits["test"]
    poses = sample_camera_poses(len(paths), seed=seed, radius=radius)
    intr = Intrinsics.from_fov_y(size, size, fov_y_deg)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="latentscape-views-") as tmp:
        job_path = Path(tmp) / "job.json"
        result_path = Path(tmp) / "result.json"
        blender_asset, converted = prepare_mesh(asset_path, tmp)
        job = {
            "asset": str(blender_asset), "hdri": str(hdri_path), "out_dir": str(out), "result": str(result_path),
            "width": size, "height": size, "fov_y_deg": fov_y_deg, "samples": samples, "seed": seed,
            "fit_half_extent": 1.0, "hdri_strength": 1.0, "view_transform": "Standard", "threads": threads,
            "frames": [{"file_path": p, "transform_matrix": m.tolist()} for p, m in zip(paths, poses)],
        }
        job_path.write_text(json.dumps(job), encoding="utf-8")
        _run_blender(blender_path, job_path, len(paths), log_path, progress)
        if not result_path.is_file():
            raise DatasetError("blender finished without writing its result", path=log_path)
        result = json.loads(result_path.read_text(encoding="utf-8"))
    seconds = time.time() - started

    # Intrinsics as blender holds them (sensor fit vertical: the sensor height spans the image).
    cam = result["camera"]
    focal = cam["lens_mm"] / cam["sensor_height_mm"] * cam["height"]
    if abs(focal - intr.fl_y) > 1e-3 * intr.fl_y or cam["shift"] != [0.0, 0.0]:
        raise DatasetError(f"blender's focal length {focal:.3f}px differs from the requested {intr.fl_y:.3f}px")
    matrices = [np.asarray(f["matrix_world"]) for f in result["frames"]]
    for wanted, got in zip(poses, matrices):
        if not np.allclose(wanted, got, atol=1e-4):
            raise DatasetError("blender changed a camera matrix", hint="the pose is not a rigid transform")

    bounds = result["asset"]["bounds"]
    recipe = {
        "asset": str(asset_path),
        "asset_sha256": _sha256(asset_path),
        "asset_converted": converted,
        "hdri": hdri_path.name,
        "hdri_path": str(hdri_path),
        "hdri_sha256": _sha256(hdri_path),
        "hdri_license": "CC0 (Debian blender-data, studiolights/world)",
        "seed": seed,
        "samples": samples,
        "blender_version": result["blender_version"],
        "engine": "CYCLES CPU, no denoising",
        "view_transform": result["render"]["view_transform"],
        "film_transparent": True,
        "radius": radius,
        "fov_y_deg": fov_y_deg,
        "elevation_deg": [-15.0, 85.0],
        "world_up": [0.0, 0.0, 1.0],
        "asset_bounds": bounds,
        "asset_scale": result["asset"]["scale"],
        "render_seconds": round(seconds, 1),
        "debian_packages": ["blender", "blender-data"]
        + (["assimp-testmodels"] if str(asset_path).startswith("/usr/share/assimp/") else []),
    }
    doc = build_transforms(matrices, intr, splits, aabb_scale=1, recipe=recipe)
    centre = [(a + b) / 2 for a, b in zip(*bounds)]
    check_centred(doc, centre)
    missing = [p for p in paths if not (out / p).is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} images were not rendered, first {missing[0]}", path=log_path)
    shutil.copyfile(log_path, out / "blender.log")
    write_transforms(out / "transforms.json", doc)


def main(argv: list[str] | None = None) -> None:
    """``python -m latentscape.tools.demo_dataset [latentscape dataset demo options]``."""
    from latentscape.tools.cli import main as cli_main

    import sys

    cli_main(["dataset", "demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
