"""``latentscape distill``: train a real-time student stylizer from a slow teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

import typer


def register(app: typer.Typer) -> None:
    @app.command("distill")
    def distill_cmd(
        scene: Optional[Path] = typer.Argument(
            None, help="Scene bundle: the student trains on frames of its default camera path (SCENE/frames/ if present, "
                       "else rendered now into OUT/scene_frames/)."),
        scene_frames: int = typer.Option(48, help="Frames of the scene's camera path to render for training."),
        also_size: list[int] = typer.Option([], "--also-size", help="Also train on the scene's frames rendered at this "
                                            "size (repeatable; e.g. 128, serve's and the viewer's size: a style's "
                                            "strokes are a number of pixels, so the teacher's look changes with size)."),
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
        lr_schedule: str = typer.Option("constant", help="constant, or cosine (decays to 0 over --steps)."),
        train_size: int = typer.Option(256, help="Longer side of the frames the teacher sees."),
        seed: int = typer.Option(0, help="Seed of the student init and the crops."),
        holdout: float = typer.Option(0.15, help="Fraction of frames held out for metrics.json."),
        checkpoint_every: int = typer.Option(100, help="Steps between checkpoints."),
        time_budget: Optional[float] = typer.Option(None, help="Stop (and save) after this many seconds of training."),
        resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from OUT/checkpoint if present."),
        device: str = typer.Option("cpu", help="Device the student trains on (cpu, cuda)."),
        init: str = typer.Option("random", help="Student init: random, or teacher (multistyle26 teachers: start from "
                                                "the teacher's weights, norms folded with the scene's statistics)."),
        inherit_blocks: int = typer.Option(6, help="With --init teacher: residual blocks kept of the teacher's six."),
        inherit_kernel: int = typer.Option(9, help="With --init teacher: stem/head kernel (1-9, odd; the teacher's "
                                                   "9x9 cropped to its centre: smaller is faster)."),
        warp_weight: float = typer.Option(0.0, help="Weight of the depth-warped temporal loss (scene frames rendered "
                                                    "by distill: they come with exact warps between neighbours)."),
        feature_weight: float = typer.Option(0.5, help="Weight of the random-conv feature loss."),
        ssim_weight: float = typer.Option(0.2, help="Weight of the 1 - SSIM loss."),
        prompt: str = typer.Option("", help="Diffusion teacher: the prompt."),
        strength: float = typer.Option(0.5, help="Diffusion teacher: img2img strength."),
        diffusion_steps: int = typer.Option(2, help="Diffusion teacher: denoising steps (1-4)."),
        track: bool = typer.Option(False, "--track", help="Log an MLflow run (params, loss curve, held-out sheet "
                                                          "input|teacher|student with per-view PSNR); also LATENTSCAPE_TRACK=1."),
    ) -> None:
        """Distil TEACHER into a small student network that runs in real time."""
        import json

        from latentscape import tracking
        from latentscape.errors import ConfigError, DatasetError
        from latentscape.outputs import open_resumable
        from latentscape.stylize.distill import OUTPUT_ENTRIES, DistillConfig, distill, load_frames
        from latentscape.stylize.teachers import teacher_from_spec

        tracked = tracking.wanted(track)
        if tracked:
            tracking.client()  # a missing extra or a bad URI fails before any work
        open_resumable(out, command="distill", entries=OUTPUT_ENTRIES)  # refuses a folder distill did not write
        folders = list(frames)
        cfg = DistillConfig(steps=steps, batch_size=batch_size, crop=crop, lr=lr, lr_schedule=lr_schedule, seed=seed, train_size=train_size, holdout=holdout,
                            sequence=sequence or scene is not None, checkpoint_every=checkpoint_every,
                            time_budget_s=time_budget, device=device, init=init, inherit_blocks=inherit_blocks, inherit_kernel=inherit_kernel,
                            w_warp=warp_weight, w_feature=feature_weight, w_ssim=ssim_weight)
        cfg.validate()
        warps, extra = [], []
        if scene is not None:
            folder = scene / "frames"
            if not folder.is_dir():
                folder = _render_scene_frames(scene, out / "scene_frames", scene_frames, train_size)
                warps = _load_warps(folder) if warp_weight else []
                for size in also_size:
                    if size < 16:
                        raise ConfigError(f"--also-size must be at least 16, got {size}")
                    extra.append((_render_scene_frames(scene, folder / f"{size}px", scene_frames, size), size))
            folders.insert(0, folder)
        data = load_frames(folders, include_skimage=skimage, size=train_size)
        for sub, size in extra:
            offset = len(data)
            data += load_frames([sub], size=size)
            if warp_weight:
                warps += [(a + offset, b + offset, g, v) for a, b, g, v in _load_warps(sub)]
        if not data:
            raise DatasetError("no training frames", hint="pass --frames DIR, a SCENE with frames/, or install scikit-image")
        t = teacher_from_spec(teacher, device=device, diffusion_options={
            "prompt": prompt, "strength": strength, "steps": diffusion_steps})
        params = {"teacher": teacher, "scene": scene, "frames": [str(f) for f in folders], "skimage": skimage,
                  "n_frames": len(data), "out": out, **{k: v for k, v in cfg.fingerprint().items() if k != "student"},
                  **{f"student.{k}": v for k, v in cfg.student.__dict__.items()}}
        tags = tracking.scene_tags(scene) if tracked and scene is not None else {}
        with tracking.run("distill", tracked, params=params, tags=tags) as run:
            on_step = None
            if run:
                every = max(1, steps // 200)

                def on_step(step: int, loss: float) -> None:
                    if step % every == 0 or step == 1:
                        run.metric("loss", loss, step)

            result = distill(t, data, out, cfg, resume=resume, on_step=on_step, warps=warps)
            if run:
                _track_distill(run, result, data, out)
                typer.echo(f"tracked: run {run.id} at {tracking.tracking_uri()}")
        typer.echo(f"student: {result.student_path} (steps {result.resumed_from} -> {result.step})")
        typer.echo(json.dumps({k: v for k, v in result.metrics.items() if k.startswith("heldout")}, indent=2))


def _track_distill(run, result, data, out: Path) -> None:
    """Metrics, the student's files' digests, and a held-out sheet: input | teacher | student (PSNR vs teacher)."""
    import torch
    from safetensors.torch import load_file

    from latentscape import tracking
    from latentscape.stylize.student import load_student

    run.metrics({k: v for k, v in result.metrics.items() if k.startswith("heldout") or k == "train_seconds"})
    run.tags(tracking.file_tags([result.student_path, result.student_path.with_suffix(".json")],
                                prefix="sha256:student/"))
    run.file(out / "metrics.json")
    held = result.metrics.get("held_out") or []
    cache = out / "checkpoint" / "teacher.safetensors"
    if not held or not cache.is_file():
        return
    targets = load_file(str(cache))
    net = load_student(result.student_path)
    rows, labels = [], []
    for i in held[:6]:
        x, tgt = data[i], targets[f"t{i}"]
        with torch.no_grad():
            y = net(x[None])[0].clamp(0, 1)
        p = tracking.psnr(y, tgt)
        run.metric("heldout_view_psnr_db", p, step=i)
        rows.append([x, tgt, y])
        labels.append(f"frame {i}: {p:.2f} dB")
    run.image(tracking.contact_sheet(rows, labels, header=["input", "teacher", "student"]), "heldout_sheet.png")


WARPS = "warps.safetensors"


def _render_scene_frames(scene: Path, folder: Path, n: int, size: int) -> Path:
    """Render ``n`` frames of the scene's default camera path: field and layers only,
    and the exact depth warps between neighbours (``warps.safetensors``).

    No stylizer (it is what is being trained) and no plugins (guardrails and triggers
    are about what is shown, not about training data). The session's scene clock
    makes the frames independent of when the recipe runs.
    """
    from safetensors.torch import save_file
    import torch

    from latentscape.errors import ConfigError
    from latentscape.session import CameraSpec, Session
    from latentscape.sinks import PngSequenceSink
    from latentscape.stylize.temporal import depth_warp

    if n <= 1:
        raise ConfigError(f"--scene-frames must be at least 2, got {n}")
    if folder.is_dir() and len(list(folder.glob("*.png"))) == n and (folder / WARPS).is_file():
        return folder  # rendered by an earlier (interrupted) run
    with Session.open(scene, stylize=False, scene_plugins=False) as session:
        sc = session.scene
        spec = CameraSpec(width=size, height=size) if sc.camera_paths else CameraSpec(orbit=n, width=size, height=size)
        path = session.camera_path(spec)
        step = max(1, len(path.cameras) // n)
        cams = path.cameras[::step][:n]
        sink = PngSequenceSink(folder, overwrite=True)
        sink.open(cams[0].width, cams[0].height, path.fps)
        tensors, prev = {}, None
        try:
            from tqdm.auto import tqdm

            for j, cam in enumerate(tqdm(cams, desc="scene frames", unit="frame", leave=False)):
                fr = session.render(cam, index=j, t=j / path.fps)
                sink.write(fr.rgb)
                depth = torch.from_numpy(np.asarray(fr.depth, dtype=np.float32))
                if prev is not None:
                    grid, valid = depth_warp(prev[0], prev[1], depth, cam)
                    tensors[f"grid_{j - 1}_{j}"] = grid.contiguous()
                    tensors[f"valid_{j - 1}_{j}"] = valid.to(torch.uint8).contiguous()
                prev = (depth, cam)
        except BaseException:
            sink.abort()
            raise
        sink.close()
    save_file(tensors, str(folder / WARPS), metadata={"format": "latentscape.distill.warps/1"})
    return folder


def _load_warps(folder: Path) -> list:
    """``(a, b, grid, valid)`` pairs written by :func:`_render_scene_frames`."""
    from safetensors.torch import load_file

    from latentscape.errors import DatasetError

    try:
        data = load_file(str(folder / WARPS))
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read the scene frames' warps: {err}", path=folder / WARPS,
                           hint="delete the scene_frames folder; distill renders it again") from None
    pairs = []
    for key in sorted(k for k in data if k.startswith("grid_")):
        a, b = (int(v) for v in key.split("_")[1:])
        pairs.append((a, b, data[key], data[f"valid_{a}_{b}"].bool()))
    return pairs
