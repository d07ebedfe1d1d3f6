"""The training job behind ``latentscape train``: dataset -> trained field -> bundle."""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import torch
import typer

from latentscape.dataset import load_dataset
from latentscape.errors import ConfigError, OutputError
from latentscape.field.nerf import FieldConfig
from latentscape.render.camera_path import orbit_path
from latentscape.render.renderer import RenderConfig
from latentscape.scene.bundle import SceneDraft, save_trained_scene
from latentscape.training import TrainConfig, evaluate, train


def _heldout_files(dataset, split: str) -> dict[str, bytes]:
    """The held-out views (images + a transforms.json) to ship inside the bundle."""
    frames = dataset.split(split)
    if not frames:
        return {}
    files: dict[str, bytes] = {}
    entries = []
    for fr in frames:
        rel = f"heldout/images/{fr.path.name}"
        files[rel] = fr.path.read_bytes()
        cam = fr.camera
        entries.append({"file_path": f"images/{fr.path.name}", "transform_matrix": cam.c2w.tolist(),
                        "fl_x": cam.fx, "fl_y": cam.fy, "cx": cam.cx, "cy": cam.cy, "w": cam.width, "h": cam.height})
    meta = {"frames": entries, "test_filenames": [e["file_path"] for e in entries],
            "train_filenames": [], "aabb_scale": dataset.aabb_scale}
    files["heldout/transforms.json"] = json.dumps(meta, indent=1).encode()
    return files


def run_training(*, data: Path, out: Path, steps: int, max_seconds, rays: int, levels: int, features: int,
                 log2_hashmap_size: int, finest_resolution: int, steps_per_diagonal: int, occupancy_resolution: int,
                 eval_every: int, downscale: int, name, device: str, backend: str, seed: int, orbit_frames: int,
                 force: bool) -> Path:
    if out.exists() and not force:
        raise OutputError("already exists", path=out, hint="choose another --out or pass --force to replace it")
    if steps <= 0 or rays <= 0:
        raise ConfigError("--steps and --rays must be positive")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for, but torch sees no CUDA device", hint="use --device cpu")
    dataset = load_dataset(data, downscale=downscale)
    ext = dataset.aabb_scale
    fcfg = FieldConfig.from_dict({
        "n_levels": levels, "n_features_per_level": features, "log2_hashmap_size": log2_hashmap_size,
        "finest_resolution": finest_resolution, "aabb": [-ext, -ext, -ext, ext, ext, ext],
    }, source="training flags")
    tcfg = TrainConfig(steps=steps, max_seconds=max_seconds, rays_per_step=rays, eval_every=eval_every,
                       occupancy_resolution=occupancy_resolution, seed=seed)
    rcfg = RenderConfig(steps_per_diagonal=steps_per_diagonal)
    from latentscape.kernels.backend import resolve_backend, select_ops

    chosen = resolve_backend(backend, torch.device(device))
    result = train(dataset, fcfg, tcfg, rcfg, device=device, ops=select_ops(chosen, torch.device(device)))
    test = dataset.split("test") or dataset.split("val")
    metrics = {"steps": result.steps, "seconds": round(result.seconds, 1), "device": str(device), "backend": chosen,
               "train_views": len(dataset.split("train"))}
    if test:
        metrics.update({f"test_{k}": v for k, v in evaluate(result.field, result.grid, rcfg, test, result.center, result.scale).items()})
        typer.echo(f"held-out PSNR {metrics['test_psnr']:.2f} dB on {metrics['test_views']} test views")
    first = dataset.split("train")[0].camera
    radius = float(torch.stack([f.camera.c2w[:3, 3] - result.center for f in dataset.split("train")]).norm(dim=-1).mean())
    up = dataset.meta.get("latentscape_recipe", {}).get("world_up", [0.0, 0.0, 1.0])
    up_axis = max(range(3), key=lambda i: abs(up[i]))
    fov = math.degrees(2 * math.atan(0.5 * first.height / first.fy))
    w = h = 256
    orbit = orbit_path(orbit_frames, w, h, radius=radius, elevation_deg=25.0, fov_deg=fov, fps=24.0,
                       center=result.center.tolist(), up_axis=up_axis)
    files = _heldout_files(dataset, "test" if dataset.split("test") else "val")
    files["metrics.json"] = json.dumps({**metrics, "history": [h for h in result.history if "psnr" in h]}, indent=1).encode()
    draft = SceneDraft(name=name or out.name, field=result.field.cpu(), grid=result.grid.cpu(), render_config=rcfg,
                       center=result.center, scale=result.scale, up=up, width=w, height=h, fps=24.0,
                       description=f"NeRF trained by `latentscape train` from {Path(data).name}",
                       camera_paths={"orbit": orbit}, extra_files=files)
    path = save_trained_scene(draft, out, overwrite=force)
    typer.echo(f"wrote scene bundle {path}")
    return path
