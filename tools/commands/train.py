"""``latentscape train DATA --out SCENE``: train a hash-grid NeRF into a scene bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        data: Annotated[Path, typer.Argument(help="Dataset folder (or its transforms.json), instant-ngp / nerfstudio format.")],
        out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Scene bundle folder to write (default: ./DATA-NAME-scene).")] = None,
        steps: Annotated[Optional[int], typer.Option(help="Training steps (default: the profile's; the budget usually ends the run).")] = None,
        max_seconds: Annotated[Optional[float], typer.Option(help="Wall-clock budget for the whole command, start-up to saved bundle (default: the profile's, 480 s on CPU, 120 s on GPU).")] = None,
        rays: Annotated[Optional[int], typer.Option(help="Fixed rays per step (default: adaptive, aiming at the profile's samples per step).")] = None,
        levels: Annotated[Optional[int], typer.Option(help="Hash-grid levels.")] = None,
        features: Annotated[Optional[int], typer.Option(help="Features per level (1, 2, 4, 8).")] = None,
        log2_hashmap_size: Annotated[Optional[int], typer.Option(help="log2 of entries per level.")] = None,
        finest_resolution: Annotated[Optional[int], typer.Option(help="Finest grid resolution.")] = None,
        steps_per_diagonal: Annotated[Optional[int], typer.Option(help="Marching steps across the box diagonal.")] = None,
        occupancy_resolution: Annotated[Optional[int], typer.Option(help="Occupancy grid cells per side.")] = None,
        eval_every: Annotated[Optional[int], typer.Option(help="Held-out PSNR every N steps (0: at the end).")] = None,
        downscale: Annotated[int, typer.Option(help="Downscale images by this integer factor.")] = 1,
        name: Annotated[Optional[str], typer.Option(help="Scene name (default: the output folder's name).")] = None,
        device: Annotated[str, typer.Option(help="torch device: cpu, cuda, cuda:1...")] = "cpu",
        backend: Annotated[str, typer.Option(help="auto, torch, cpu, triton or tcnn.")] = "auto",
        profile: Annotated[str, typer.Option(help="Training defaults: auto (by device), cpu or gpu.")] = "auto",
        full_eval: Annotated[bool, typer.Option("--full-eval", help="Evaluate every test view, however long it takes.")] = False,
        eval_fraction: Annotated[float, typer.Option(help="Share of the budget the final evaluation may use.")] = 0.05,
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        orbit_frames: Annotated[int, typer.Option(help="Frames of the orbit camera path stored in the scene.")] = 96,
        force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    ) -> None:
        """Train a NeRF from posed images and write it as a scene bundle (scene.toml + safetensors + scene.lock)."""
        import time

        from latentscape.tools.training_job import process_age, run_training

        started = time.perf_counter() - process_age()

        if out is None:
            out = Path(f"{(data.parent if data.name == 'transforms.json' else data).resolve().name}-scene")

        run_training(data=data, out=out, steps=steps, max_seconds=max_seconds, rays=rays, levels=levels, features=features,
                     log2_hashmap_size=log2_hashmap_size, finest_resolution=finest_resolution,
                     steps_per_diagonal=steps_per_diagonal, occupancy_resolution=occupancy_resolution,
                     eval_every=eval_every, downscale=downscale, name=name, device=device, backend=backend, seed=seed,
                     orbit_frames=orbit_frames, force=force, profile=profile, full_eval=full_eval,
                     eval_fraction=eval_fraction, started=started)
