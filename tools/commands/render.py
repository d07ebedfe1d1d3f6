"""``latentscape render [SCENE] --out OUT``: render a camera path to MP4 or PNGs."""

from __future__ import annotations

from typing import Annotated

import typer

from latentscape.tools.render_options import RenderOptions, render_options


def register(app: typer.Typer) -> None:
    @app.command("render")
    @render_options()
    def render_cmd(
        opts: RenderOptions,
        track: Annotated[bool, typer.Option("--track", help="Log an MLflow run (params, scene digests, frames/s, preview MP4 + sheet); also LATENTSCAPE_TRACK=1.")] = False,
    ) -> None:
        """Render a scene's camera path (nerfstudio format) to a video or PNG frames.

        Offline: the scene's clock, not the wall clock, says what time it is, so the
        output is the same at any hour (a schedule trigger sees scene time from noon).
        `latentscape farm render` takes the same options and splits the frames across Ray workers."""
        from latentscape import tracking
        from latentscape.session import Session
        from latentscape.sinks import open_sink

        opts.check()
        tracked = tracking.wanted(track)
        if tracked:
            tracking.client()  # a missing extra or a bad URI fails before any work
        sink = open_sink(opts.out, overwrite=opts.force)  # checks the output before any work
        with Session.open(opts.scene, **opts.session_kwargs()) as session:
            path = session.path
            params = {"scene": str(session.scene.path), "out": opts.out, "camera": opts.camera, "orbit": opts.orbit,
                      "width": path.cameras[0].width, "height": path.cameras[0].height, "frames": opts.frames,
                      "device": opts.device, "backend": opts.backend, "stylize": opts.stylize,
                      "stylizer": opts.stylizer}
            tags = tracking.scene_tags(session.scene.path) if tracked else {}
            if tracked and opts.stylizer is not None:
                tags.update(tracking.file_tags([opts.stylizer], prefix="sha256:stylizer/"))
            with tracking.run("render", tracked, params=params, tags=tags) as run:
                preview = tracking.PreviewSink() if run else None
                stats = session.run(path, [sink, preview] if preview else sink, count=opts.frames)
                if run:
                    run.metrics({"frames": stats.frames, "fps": stats.fps,
                                 **{f"stage_ms.{k}": v for k, v in stats.stage_ms.items()}})
                    tracking.log_preview(run, preview)
                    typer.echo(f"tracked: run {run.id} at {tracking.tracking_uri()}")
        typer.echo(f"wrote {opts.out} ({stats.frames} frames, {path.cameras[0].width}x{path.cameras[0].height}, "
                   f"{stats.fps:.2f} frames/s)")
