"""The training job behind ``latentscape train``: dataset -> trained field -> bundle."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch
import typer

from latentscape.dataset import load_dataset
from latentscape.errors import ConfigError
from latentscape.outputs import check_output
from latentscape.field.nerf import FieldConfig
from latentscape.render.camera_path import orbit_path
from latentscape.render.renderer import RenderConfig
from latentscape.scene.bundle import SceneDraft, save_trained_scene
from latentscape.training import TrainConfig, evaluate, profile_for, train


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


def process_age() -> float:
    """Seconds since this process started (Linux: from /proc; elsewhere 0)."""
    try:
        ticks = os.sysconf("SC_CLK_TCK")
        start = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19]) / ticks
        uptime = float(open("/proc/uptime").read().split()[0])
        return max(0.0, uptime - start)
    except (OSError, ValueError, IndexError):
        return 0.0


def run_training(*, data: Path, out: Path, steps, max_seconds, rays, levels, features, log2_hashmap_size,
                 finest_resolution, steps_per_diagonal, occupancy_resolution, eval_every, downscale: int, name,
                 device: str, backend: str, seed: int, orbit_frames: int, force: bool, profile: str = "auto",
                 full_eval: bool = False, eval_fraction: float = 0.05, started: float | None = None) -> Path:
    """Train, evaluate and save, within ``max_seconds`` of wall time counted from ``started``
    (a ``time.perf_counter()`` value; the CLI passes its process's start, default: now).

    Flags left as None take the device profile's value (``latentscape.training.PROFILES``);
    with ``steps`` given and no ``max_seconds`` there is no time limit. The budget covers
    everything: start-up, dataset loading, carving, training, the final evaluation (at
    most ``eval_fraction`` of the budget unless ``full_eval``) and writing the bundle.
    """
    clock0 = time.perf_counter() if started is None else started
    check_output(out, force=force, kind="dir")  # before any work; again when the bundle is renamed into place
    from latentscape.config import check_number

    # Every numeric flag through the shared validator: 0, negatives, NaN and absurd sizes are
    # a one-line ConfigError naming the flag, never a traceback or a silent default.
    for flag, value, kind, low, high in (
            ("--steps", steps, int, 1, 10**9), ("--rays", rays, int, 1, 1 << 24), ("--downscale", downscale, int, 1, 64),
            ("--levels", levels, int, 1, 32), ("--features", features, int, 1, 8),
            ("--log2-hashmap-size", log2_hashmap_size, int, 1, 24), ("--finest-resolution", finest_resolution, int, 1, 1 << 20),
            ("--steps-per-diagonal", steps_per_diagonal, int, 1, 1 << 16),
            ("--occupancy-resolution", occupancy_resolution, int, 2, 1024), ("--eval-every", eval_every, int, 0, 10**9),
            ("--orbit-frames", orbit_frames, int, 1, 100_000)):
        if value is not None:
            check_number(value, name=flag, kind=kind, low=low, high=high)
    if max_seconds is not None:
        check_number(max_seconds, name="--max-seconds", low=0, high=10**7, low_open=True)
    check_number(eval_fraction, name="--eval-fraction", low=0, high=1, low_open=True, high_open=True)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for, but torch sees no CUDA device", hint="use --device cpu")
    prof = profile_for(device, profile)
    budget = float(max_seconds) if max_seconds is not None else (None if steps is not None else prof.max_seconds)
    dataset = load_dataset(data, downscale=downscale)
    ext = dataset.aabb_scale

    def pick(value, table, key):
        return table[key] if value is None else value

    fcfg = FieldConfig.from_dict({
        "n_levels": pick(levels, prof.field, "n_levels"),
        "n_features_per_level": pick(features, prof.field, "n_features_per_level"),
        "log2_hashmap_size": pick(log2_hashmap_size, prof.field, "log2_hashmap_size"),
        "finest_resolution": pick(finest_resolution, prof.field, "finest_resolution"),
        "aabb": [-ext, -ext, -ext, ext, ext, ext],
    }, source="training flags")
    tp = prof.train
    rcfg = RenderConfig(**{**prof.render, "steps_per_diagonal": pick(steps_per_diagonal, prof.render, "steps_per_diagonal")})
    from latentscape.kernels.backend import resolve_backend, select_ops

    chosen = resolve_backend(backend, torch.device(device))
    ops = select_ops(chosen, torch.device(device))
    # What is left of the budget goes to training, less the final evaluation's share and
    # a reserve for writing the bundle (measured: ~1-2 s for a 2^17 table).
    train_seconds = eval_budget = None
    if budget is not None:
        eval_budget = None if full_eval else eval_fraction * budget
        reserve = (eval_budget or 0.0) + max(2.0, 0.01 * budget)
        train_seconds = budget - reserve - (time.perf_counter() - clock0)
        if train_seconds <= 1.0:
            raise ConfigError(f"--max-seconds {budget:g} leaves no time to train after start-up and evaluation",
                              hint="give a larger --max-seconds")
    tcfg = TrainConfig(steps=pick(steps, tp, "steps"), max_seconds=train_seconds,
                       rays_per_step=pick(rays, tp, "rays_per_step"),
                       samples_per_step=None if rays is not None else tp["samples_per_step"],
                       eval_every=pick(eval_every, tp, "eval_every"),
                       occupancy_resolution=pick(occupancy_resolution, tp, "occupancy_resolution"), seed=seed)
    limit = f"for up to {train_seconds:.0f} s of a {budget:g} s budget" if budget else f"for {tcfg.steps} steps"
    typer.echo(f"training on {device} ({chosen} backend, {prof.name} profile) {limit}")
    result = train(dataset, fcfg, tcfg, rcfg, device=device, ops=ops)
    test = dataset.split("test") or dataset.split("val")
    metrics = {"steps": result.steps, "seconds": round(result.seconds, 1), "device": str(device), "backend": chosen,
               "profile": prof.name, "train_views": len(dataset.split("train")),
               "occupancy_allowed_after_carving": round(result.occupancy_allowed, 4)}
    if test:
        eval_limit = None
        if eval_budget is not None:
            remaining = budget - (time.perf_counter() - clock0) - max(2.0, 0.01 * budget)
            eval_limit = max(0.0, min(eval_budget, remaining))
        ev = evaluate(result.field, result.grid, rcfg, test, result.center, result.scale, max_seconds=eval_limit,
                      progress=True)
        metrics.update({f"test_{k}": v for k, v in ev.items()})
        part = "" if ev["views"] == ev["of"] else f" (of {ev['of']}: the evaluation is bounded; --full-eval for all)"
        typer.echo(f"held-out PSNR {ev['psnr']:.2f} dB on {ev['views']} test views{part}")
    first = dataset.split("train")[0].camera
    radius = float(torch.stack([f.camera.c2w[:3, 3] - result.center for f in dataset.split("train")]).norm(dim=-1).mean())
    up = dataset.meta.get("latentscape_recipe", {}).get("world_up", [0.0, 0.0, 1.0])
    up_axis = max(range(3), key=lambda i: abs(up[i]))
    fov = math.degrees(2 * math.atan(0.5 * first.height / first.fy))
    w = h = 256
    orbit = orbit_path(orbit_frames, w, h, radius=radius, elevation_deg=25.0, fov_deg=fov, fps=24.0,
                       center=result.center.tolist(), up_axis=up_axis)
    files = _heldout_files(dataset, "test" if dataset.split("test") else "val")
    samples = [h["samples_per_ray"] for h in result.history]
    if samples:
        marks = sorted({0, len(samples) // 4, len(samples) // 2, 3 * len(samples) // 4, len(samples) - 1})
        metrics["samples_per_ray"] = {str(result.history[i]["step"]): round(samples[i], 2) for i in marks}
    files["metrics.json"] = json.dumps({**metrics, "history": [h for h in result.history if "psnr" in h]}, indent=1).encode()
    training = {"profile": prof.name, "budget_seconds": budget or 0.0, "steps": result.steps,
                "samples_per_step": tcfg.samples_per_step or 0, "rays_per_step": tcfg.rays_per_step,
                "occupancy_resolution": tcfg.occupancy_resolution, "seed": seed}
    draft = SceneDraft(name=name or out.name, field=result.field.cpu(), grid=result.grid.cpu(), render_config=rcfg,
                       center=result.center, scale=result.scale, up=up, width=w, height=h, fps=24.0,
                       description=f"NeRF trained by `latentscape train` from {Path(data).name}",
                       camera_paths={"orbit": orbit}, extra_files=files, extra_config={"training": training})
    save_trained_scene(draft, out, overwrite=force, command="train")  # staged: complete or absent
    path = out
    typer.echo(f"wrote scene bundle {path} in {time.perf_counter() - clock0:.0f} s")
    return path
