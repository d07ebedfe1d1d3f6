"""``latentscape render [SCENE] --out OUT``: render a camera path to MP4 or PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("render")
    def render_cmd(
        scene: Annotated[Optional[Path], typer.Argument(help="Scene bundle folder (default: the bundled demo scene).")] = None,
        out: Annotated[str, typer.Option("--out", "-o", help="OUT.mp4 (H.264), DIR/stream.m3u8 (HLS), rtmp://host/app/key (live), otherwise a folder of PNGs.")] = "render.mp4",
        camera_path: Annotated[Optional[Path], typer.Option(help="nerfstudio camera_path.json (default: the scene's default path).")] = None,
        camera: Annotated[Optional[str], typer.Option(help="Name of one of the scene's camera paths.")] = None,
        orbit: Annotated[Optional[int], typer.Option(help="Render a built-in orbit of this many frames instead.")] = None,
        width: Annotated[Optional[int], typer.Option(help="Override the path's width.")] = None,
        height: Annotated[Optional[int], typer.Option(help="Override the path's height.")] = None,
        frames: Annotated[Optional[int], typer.Option(help="Render only the first N frames.")] = None,
        device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
        backend: Annotated[Optional[str], typer.Option(help="auto, torch, triton or tcnn (default: the scene's).")] = None,
        stylize: Annotated[bool, typer.Option("--stylize/--no-stylize", help="Apply the scene's stylizer, if it has one.")] = True,
        stylizer: Annotated[Optional[Path], typer.Option(help="Use this stylizer instead of [stylizer] (its mix is not applied): a distilled student, an exported student.onnx / student.int8.onnx or `latentscape export` folder (run by onnxruntime), or a diffusers pipeline folder.")] = None,
        force: Annotated[bool, typer.Option("--force", help="Replace an existing output.")] = False,
        audit_log: Annotated[Optional[Path], typer.Option(help="Append guardrail decisions (JSON lines) here; overrides [guardrails] audit_log.")] = None,
        track: Annotated[bool, typer.Option("--track", help="Log an MLflow run (params, scene digests, frames/s, preview MP4 + sheet); also LATENTSCAPE_TRACK=1.")] = False,
    ) -> None:
        """Render a scene's camera path (nerfstudio format) to a video or PNG frames.

        Offline: the scene's clock, not the wall clock, says what time it is, so the
        output is the same at any hour (a schedule trigger sees scene time from noon)."""
        from latentscape.errors import ConfigError
        from latentscape.session import CameraSpec, Session
        from latentscape.sinks import open_sink

        for flag, value in (("--width", width), ("--height", height), ("--frames", frames), ("--orbit", orbit)):
            if value is not None and value <= 0:
                raise ConfigError(f"{flag} must be positive, got {value}")
        from latentscape import tracking

        tracked = tracking.wanted(track)
        if tracked:
            tracking.client()  # a missing extra or a bad URI fails before any work
        sink = open_sink(out, overwrite=force)  # checks the output before any work
        cameras = CameraSpec(name=camera, file=camera_path, orbit=orbit, width=width, height=height)
        with Session.open(scene, device=device, backend=backend, stylize=stylize, stylizer=stylizer,
                          audit_log=audit_log, cameras=cameras) as session:
            path = session.path
            params = {"scene": str(session.scene.path), "out": out, "camera": camera, "orbit": orbit,
                      "width": path.cameras[0].width, "height": path.cameras[0].height, "frames": frames,
                      "device": device, "backend": backend, "stylize": stylize, "stylizer": stylizer}
            tags = tracking.scene_tags(session.scene.path) if tracked else {}
            if tracked and stylizer is not None:
                tags.update(tracking.file_tags([stylizer], prefix="sha256:stylizer/"))
            with tracking.run("render", tracked, params=params, tags=tags) as run:
                preview = tracking.PreviewSink() if run else None
                stats = session.run(path, [sink, preview] if preview else sink, count=frames)
                if run:
                    run.metrics({"frames": stats.frames, "fps": stats.fps,
                                 **{f"stage_ms.{k}": v for k, v in stats.stage_ms.items()}})
                    tracking.log_preview(run, preview)
                    typer.echo(f"tracked: run {run.id} at {tracking.tracking_uri()}")
        typer.echo(f"wrote {out} ({stats.frames} frames, {path.cameras[0].width}x{path.cameras[0].height}, "
                   f"{stats.fps:.2f} frames/s)")
