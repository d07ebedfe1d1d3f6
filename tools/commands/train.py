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
        track: Annotated[bool, typer.Option("--track", help="Log an MLflow run (params, PSNR/loss over steps, scene digests, held-out contact sheet rendered|ground truth); also LATENTSCAPE_TRACK=1.")] = False,
    ) -> None:
        """Train a NeRF from posed images and write it as a scene bundle (scene.toml + safetensors + scene.lock)."""
        import time

        from latentscape import tracking
        from latentscape.tools.training_job import process_age, run_training

        started = time.perf_counter() - process_age()
        tracked = tracking.wanted(track)
        if tracked:
            tracking.client()  # a missing extra or a bad URI fails before any work

        if out is None:
            out = Path(f"{(data.parent if data.name == 'transforms.json' else data).resolve().name}-scene")

        path = run_training(data=data, out=out, steps=steps, max_seconds=max_seconds, rays=rays, levels=levels, features=features,
                     log2_hashmap_size=log2_hashmap_size, finest_resolution=finest_resolution,
                     steps_per_diagonal=steps_per_diagonal, occupancy_resolution=occupancy_resolution,
                     eval_every=eval_every, downscale=downscale, name=name, device=device, backend=backend, seed=seed,
                     orbit_frames=orbit_frames, force=force, profile=profile, full_eval=full_eval,
                     eval_fraction=eval_fraction, started=started)
        if tracked:
            _track_training(Path(path), data, locals_=dict(steps=steps, max_seconds=max_seconds, rays=rays, levels=levels,
                            features=features, log2_hashmap_size=log2_hashmap_size, finest_resolution=finest_resolution,
                            downscale=downscale, device=device, backend=backend, profile=profile, seed=seed))


def _track_training(scene: Path, data: Path, locals_: dict) -> None:
    """One MLflow run for a finished training: its params, the history in metrics.json as
    metrics over steps, the bundle's digests, and a held-out sheet (rendered | ground truth)."""
    import json

    from latentscape import tracking

    metrics = json.loads((scene / "metrics.json").read_text())
    with tracking.run("train", True, params={"data": str(data), "out": str(scene), **locals_},
                      tags=tracking.scene_tags(scene)) as run:
        for h in metrics.get("history", []):
            run.metrics({k: v for k, v in h.items() if k not in ("step",)}, step=int(h["step"]))
        run.metrics({k: v for k, v in metrics.items() if k != "history"})
        run.file(scene / "metrics.json")
        views = tracking.heldout_views(scene)
        if views:
            for i, (_, _, _, p) in enumerate(views):
                run.metric("heldout_view_psnr_db", p, step=i)
            run.image(tracking.contact_sheet([[v[1], v[2]] for v in views],
                                             [f"{v[0]}: {v[3]:.2f} dB" for v in views],
                                             header=["rendered", "ground truth"]), "heldout_sheet.png")
        typer.echo(f"tracked: run {run.id} at {tracking.tracking_uri()}")
