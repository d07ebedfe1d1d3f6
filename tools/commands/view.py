"""``latentscape view [SCENE]``: fly through a scene in a window."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("view")
    def view_cmd(
        scene: Annotated[Optional[Path], typer.Argument(help="Scene bundle folder (default: the bundled demo scene).")] = None,
        width: Annotated[int, typer.Option(help="Window and full render width.")] = 512,
        height: Annotated[int, typer.Option(help="Window and full render height.")] = 512,
        target_fps: Annotated[float, typer.Option(help="Frame rate held by dynamic resolution.")] = 10.0,
        device: Annotated[str, typer.Option(help="torch device.")] = "cpu",
        backend: Annotated[Optional[str], typer.Option(help="auto, torch, triton or tcnn (default: the scene's).")] = None,
        hud: Annotated[bool, typer.Option("--hud/--no-hud", help="Show fps, stage times, adapters, guardrails.")] = True,
        stylize: Annotated[bool, typer.Option("--stylize/--no-stylize", help="Apply the scene's stylizer, if it has one.")] = True,
        stylizer: Annotated[Optional[Path], typer.Option(help="Use this stylizer instead of \\[stylizer] (its mix is not applied): a distilled student, or an exported student.onnx / `latentscape export` folder (run by onnxruntime, faster on the CPU).")] = None,
    ) -> None:
        """Interactive viewer: drag to turn, wheel to zoom, WASD to move, TAB fly/orbit, C paths, 1-9 adapters, P screenshot."""
        from latentscape.errors import ConfigError

        if width <= 0 or height <= 0 or target_fps <= 0:
            raise ConfigError("--width, --height and --target-fps must be positive")
        try:
            import pyglet  # noqa: F401
        except ImportError:
            raise ConfigError("the viewer needs pyglet", hint="pip install 'latentscape[viewer]'") from None
        from latentscape.viewer import Viewer, ViewerCore

        if stylizer is not None and not stylize:
            raise ConfigError("--stylizer and --no-stylize contradict each other", hint="drop one of them")
        core = ViewerCore(scene, width=width, height=height, target_fps=target_fps, device=device, backend=backend,
                          stylize=stylize, stylizer=stylizer)
        try:
            viewer = Viewer(core, hud=hud)
        except Exception as err:  # pyglet raises its own types when no display / GL is there
            core.close()
            raise ConfigError(f"cannot open a window: {err}",
                              hint="run on a desktop, or under Xvfb (xvfb-run latentscape view ...)") from None
        viewer.run()
