"""``latentscape serve [SCENE]``: render continuously and take control over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        scene: Annotated[Optional[Path], typer.Argument(help="Scene bundle folder (default: the bundled demo scene).")] = None,
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
        token: Annotated[Optional[str], typer.Option(envvar="LATENTSCAPE_TOKEN",
                                                     help="Bearer token for POST calls (default: a random one, printed).")] = None,
        width: Annotated[int, typer.Option(help="Render width.")] = 128,
        height: Annotated[int, typer.Option(help="Render height.")] = 128,
        orbit: Annotated[int, typer.Option(help="Frames in one orbit of the scene.")] = 120,
        max_fps: Annotated[Optional[float], typer.Option(help="Render at most this many frames per second.")] = None,
        out: Annotated[Optional[list[str]], typer.Option("--out", "-o", help="Live output (rtmp://..., DIR/stream.m3u8); repeatable.")] = None,
        device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
        backend: Annotated[Optional[str], typer.Option(help="auto, torch, triton or tcnn (default: the scene's).")] = None,
    ) -> None:
        """Render a scene continuously; health, metrics and control over HTTP (FastAPI)."""
        from latentscape.errors import ConfigError

        try:
            from latentscape.serve import ServeConfig, serve
        except ImportError as err:
            raise ConfigError(f"serve needs FastAPI and uvicorn ({err})", hint="pip install 'latentscape[serve]'") from None
        for flag, value in (("--width", width), ("--height", height), ("--orbit", orbit)):
            if value <= 0:
                raise ConfigError(f"{flag} must be positive, got {value}")
        cfg = ServeConfig(scene=scene, width=width, height=height, orbit_frames=orbit, device=device, backend=backend,
                          max_fps=max_fps, outputs=list(out or []))
        serve(cfg, host=host, port=port, token=token)
