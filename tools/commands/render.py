"""``latentscape render [SCENE] --out OUT``: render a camera path to MP4 or PNGs."""

from __future__ import annotations

import typer

from latentscape.tools.render_options import RenderOptions, render_options


def register(app: typer.Typer) -> None:
    @app.command("render")
    @render_options()
    def render_cmd(opts: RenderOptions) -> None:
        """Render a scene's camera path (nerfstudio format) to a video or PNG frames.

        Offline: the scene's clock, not the wall clock, says what time it is, so the
        output is the same at any hour (a schedule trigger sees scene time from noon).
        `latentscape farm render` takes the same options and splits the frames across Ray workers."""
        from latentscape.session import Session
        from latentscape.sinks import open_sink

        opts.check()
        sink = open_sink(opts.out, overwrite=opts.force)  # checks the output before any work
        with Session.open(opts.scene, **opts.session_kwargs()) as session:
            path = session.path
            stats = session.run(path, sink, count=opts.frames)
        typer.echo(f"wrote {opts.out} ({stats.frames} frames, {path.cameras[0].width}x{path.cameras[0].height}, "
                   f"{stats.fps:.2f} frames/s)")
