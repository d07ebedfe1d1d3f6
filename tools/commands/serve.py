"""``latentscape serve [SCENE]``: render continuously and take control over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def _need_serve_extra() -> None:
    """One line instead of an ImportError traceback when the [serve] extra is missing."""
    from latentscape.errors import ConfigError

    missing = []
    for module in ("fastapi", "uvicorn", "prometheus_client"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise ConfigError(f"serve needs {', '.join(missing)}, not installed",
                          hint="pip install 'latentscape[serve]'")


def read_token(token: str | None, token_file: Path | None) -> str | None:
    """The bearer token: ``--token-file`` (first line, stripped; it wins), else ``--token`` /
    ``LATENTSCAPE_TOKEN``; None when none is given."""
    from latentscape.errors import ConfigError

    if token_file is not None:
        try:
            with open(token_file, "rb") as f:
                raw = f.read(4097)
        except OSError as err:
            raise ConfigError(f"cannot read the token file: {err.strerror}", path=token_file,
                              hint="give a readable file holding the token") from None
        try:
            lines = raw[:4096].decode("utf-8").strip().splitlines()
        except UnicodeDecodeError:
            lines = []
        text = lines[0].strip() if lines else ""
        if len(raw) > 4096 or not text or not text.isprintable():
            raise ConfigError("the token file holds no usable token (one printable line, at most 4 KiB)",
                              path=token_file, hint="write the token on the file's first line")
        return text
    if token is not None and not token.strip():
        raise ConfigError("the token is empty", hint="pass --token-file or set LATENTSCAPE_TOKEN")
    return token.strip() if token else None


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve_cmd(
        scene: Annotated[Optional[Path], typer.Argument(help="Scene bundle folder (default: the bundled demo scene).")] = None,
        host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
        token: Annotated[Optional[str], typer.Option(envvar="LATENTSCAPE_TOKEN",
                                                     help="Bearer token (prefer LATENTSCAPE_TOKEN or --token-file: "
                                                          "command lines are visible to other users; default: a "
                                                          "random one, printed).")] = None,
        token_file: Annotated[Optional[Path], typer.Option(help="File whose first line is the bearer token.")] = None,
        scene_root: Annotated[Optional[list[Path]], typer.Option(
            "--scene-root", help="Folder POST /scene may load scenes from (it or anything under it); repeatable "
                                 "(default: SCENE itself; the bundled demo is always allowed).")] = None,
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

        _need_serve_extra()
        from latentscape.serve import ServeConfig, serve

        for flag, value in (("--width", width), ("--height", height), ("--orbit", orbit)):
            if value <= 0:
                raise ConfigError(f"{flag} must be positive, got {value}")
        for root in scene_root or []:
            if not root.is_dir():
                raise ConfigError("--scene-root is not a folder", path=root)
        cfg = ServeConfig(scene=scene, width=width, height=height, orbit_frames=orbit, device=device, backend=backend,
                          max_fps=max_fps, outputs=list(out or []), scene_roots=list(scene_root) if scene_root else None)
        serve(cfg, host=host, port=port, token=read_token(token, token_file))
