"""``latentscape distill``: train a real-time student stylizer from a slow teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("distill")
    def distill_cmd(
        scene: Optional[Path] = typer.Argument(
            None, help="Scene folder; its rendered frames are read from SCENE/frames/ (camera-path renders)."),
        teacher: str = typer.Option(..., "--teacher", "-t",
                                    help="multistyle26:<0-25>, multistyle26:3:0.5,12:0.5, arbitrary:<style image>, "
                                         "or a local diffusers pipeline folder."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder: student.safetensors/.json, metrics.json, checkpoint/."),
        frames: list[Path] = typer.Option([], "--frames", "-f", help="Folder of training images (repeatable)."),
        skimage: bool = typer.Option(True, "--skimage/--no-skimage",
                                     help="Also train on scikit-image's bundled photos, if it is installed."),
        sequence: bool = typer.Option(False, "--sequence", help="Frames are consecutive (a camera path)."),
        steps: int = typer.Option(2000, help="Optimiser steps in total."),
        batch_size: int = typer.Option(8, help="Crop pairs per step."),
        crop: int = typer.Option(128, help="Training crop side in pixels."),
        lr: float = typer.Option(2e-3, help="Adam learning rate."),
        train_size: int = typer.Option(256, help="Longer side of the frames the teacher sees."),
        seed: int = typer.Option(0, help="Seed of the student init and the crops."),
        holdout: float = typer.Option(0.15, help="Fraction of frames held out for metrics.json."),
        checkpoint_every: int = typer.Option(100, help="Steps between checkpoints."),
        time_budget: Optional[float] = typer.Option(None, help="Stop (and save) after this many seconds of training."),
        resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from OUT/checkpoint if present."),
        device: str = typer.Option("cpu", help="Device the student trains on (cpu, cuda)."),
        prompt: str = typer.Option("", help="Diffusion teacher: the prompt."),
        strength: float = typer.Option(0.5, help="Diffusion teacher: img2img strength."),
        diffusion_steps: int = typer.Option(2, help="Diffusion teacher: denoising steps (1-4)."),
    ) -> None:
        """Distil TEACHER into a small student network that runs in real time."""
        import json

        from latentscape.errors import DatasetError
        from latentscape.stylize.distill import DistillConfig, distill, load_frames
        from latentscape.stylize.teachers import teacher_from_spec

        folders = list(frames)
        if scene is not None:
            scene_frames = scene / "frames"
            if not scene_frames.is_dir():
                raise DatasetError("scene has no rendered frames folder", path=scene_frames,
                                   hint="render the camera path into SCENE/frames/ first, or pass --frames DIR")
            folders.insert(0, scene_frames)
            sequence = True
        cfg = DistillConfig(steps=steps, batch_size=batch_size, crop=crop, lr=lr, seed=seed, train_size=train_size, holdout=holdout,
                            sequence=sequence, checkpoint_every=checkpoint_every, time_budget_s=time_budget,
                            device=device)
        cfg.validate()
        data = load_frames(folders, include_skimage=skimage, size=train_size)
        if not data:
            raise DatasetError("no training frames", hint="pass --frames DIR, a SCENE with frames/, or install scikit-image")
        t = teacher_from_spec(teacher, device=device, diffusion_options={
            "prompt": prompt, "strength": strength, "steps": diffusion_steps})
        result = distill(t, data, out, cfg, resume=resume)
        typer.echo(f"student: {result.student_path} (steps {result.resumed_from} -> {result.step})")
        typer.echo(json.dumps({k: v for k, v in result.metrics.items() if k.startswith("heldout")}, indent=2))
