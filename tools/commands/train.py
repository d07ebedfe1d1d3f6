"""``latentscape train DATA --out SCENE``: train a hash-grid NeRF into a scene bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        data: Annotated[Path, typer.Argument(help="Dataset folder (or its transforms.json), instant-ngp / nerfstudio format.")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Scene bundle folder to write.")],
        steps: Annotated[int, typer.Option(help="Training steps.")] = 2000,
        max_seconds: Annotated[Optional[float], typer.Option(help="Stop after this many seconds.")] = None,
        rays: Annotated[int, typer.Option(help="Rays per step.")] = 2048,
        levels: Annotated[int, typer.Option(help="Hash-grid levels.")] = 16,
        features: Annotated[int, typer.Option(help="Features per level (1, 2, 4, 8).")] = 2,
        log2_hashmap_size: Annotated[int, typer.Option(help="log2 of entries per level.")] = 19,
        finest_resolution: Annotated[int, typer.Option(help="Finest grid resolution.")] = 2048,
        steps_per_diagonal: Annotated[int, typer.Option(help="Marching steps across the box diagonal.")] = 512,
        occupancy_resolution: Annotated[int, typer.Option(help="Occupancy grid cells per side.")] = 64,
        eval_every: Annotated[int, typer.Option(help="Held-out PSNR every N steps (0: at the end).")] = 250,
        downscale: Annotated[int, typer.Option(help="Downscale images by this integer factor.")] = 1,
        name: Annotated[Optional[str], typer.Option(help="Scene name (default: the output folder's name).")] = None,
        device: Annotated[str, typer.Option(help="torch device: cpu, cuda, cuda:1...")] = "cpu",
        backend: Annotated[str, typer.Option(help="auto, torch, triton or tcnn.")] = "auto",
        seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
        orbit_frames: Annotated[int, typer.Option(help="Frames of the orbit camera path stored in the scene.")] = 96,
        force: Annotated[bool, typer.Option("--force", help="Replace an existing --out.")] = False,
    ) -> None:
        """Train a NeRF from posed images and write it as a scene bundle (scene.toml + safetensors + scene.lock)."""
        from latentscape.tools.training_job import run_training

        run_training(data=data, out=out, steps=steps, max_seconds=max_seconds, rays=rays, levels=levels, features=features,
                     log2_hashmap_size=log2_hashmap_size, finest_resolution=finest_resolution,
                     steps_per_diagonal=steps_per_diagonal, occupancy_resolution=occupancy_resolution,
                     eval_every=eval_every, downscale=downscale, name=name, device=device, backend=backend, seed=seed,
                     orbit_frames=orbit_frames, force=force)
