"""The options of ``latentscape render``, shared by every command that renders a camera path
(``render``, ``farm render``): declared once, checked once.

    @app.command("render")
    @render_options()
    def render_cmd(opts: RenderOptions) -> None: ...

    @farm.command("render")
    @render_options(out=Annotated[Path, typer.Option("--out", "-o", help="the farm folder")])
    def farm_render(opts: RenderOptions, chunk: Annotated[int, typer.Option()] = 8) -> None: ...

:func:`render_options` gives the command every option of :data:`RENDER_PARAMETERS` (an
option added here appears in both commands) and passes them as one :class:`RenderOptions`;
keyword arguments replace a declaration (type, flags and help) when a command gives an
option another meaning, as ``farm render --out`` does.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer


@dataclass
class RenderOptions:
    """What ``latentscape render`` was asked for (see ``latentscape render --help``)."""

    scene: Optional[Path] = None
    out: Any = "render.mp4"
    camera_path: Optional[Path] = None
    camera: Optional[str] = None
    orbit: Optional[int] = None
    width: Optional[int] = None
    height: Optional[int] = None
    frames: Optional[int] = None
    device: str = "cpu"
    backend: Optional[str] = None
    stylize: bool = True
    stylizer: Optional[Path] = None
    force: bool = False
    audit_log: Optional[Path] = None

    def check(self) -> None:
        """Reject values no render can use (a typed error, before any work)."""
        from latentscape.errors import ConfigError

        for flag, value in (("--width", self.width), ("--height", self.height), ("--frames", self.frames),
                            ("--orbit", self.orbit)):
            if value is not None and value <= 0:
                raise ConfigError(f"{flag} must be positive, got {value}")

    def cameras(self, camera_path: Path | None = None):
        """The :class:`latentscape.session.CameraSpec` these options ask for
        (``camera_path`` replaces ``--camera-path``: a copy of the file elsewhere)."""
        from latentscape.session import CameraSpec

        return CameraSpec(name=self.camera, file=camera_path or self.camera_path, orbit=self.orbit, width=self.width,
                          height=self.height)

    def session_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`latentscape.session.Session.open` (all but the scene)."""
        return {"device": self.device, "backend": self.backend, "stylize": self.stylize, "stylizer": self.stylizer,
                "audit_log": self.audit_log, "cameras": self.cameras()}


RENDER_PARAMETERS: dict[str, Any] = {
    "scene": Annotated[Optional[Path], typer.Argument(help="Scene bundle folder (default: the bundled demo scene).")],
    "out": Annotated[str, typer.Option("--out", "-o", help="OUT.mp4 (H.264), DIR/stream.m3u8 (HLS), rtmp://host/app/key (live), otherwise a folder of PNGs.")],
    "camera_path": Annotated[Optional[Path], typer.Option(help="nerfstudio camera_path.json (default: the scene's default path).")],
    "camera": Annotated[Optional[str], typer.Option(help="Name of one of the scene's camera paths.")],
    "orbit": Annotated[Optional[int], typer.Option(help="Render a built-in orbit of this many frames instead.")],
    "width": Annotated[Optional[int], typer.Option(help="Override the path's width.")],
    "height": Annotated[Optional[int], typer.Option(help="Override the path's height.")],
    "frames": Annotated[Optional[int], typer.Option(help="Render only the first N frames.")],
    "device": Annotated[str, typer.Option(help="torch device.")],
    "backend": Annotated[Optional[str], typer.Option(help="auto, torch, triton or tcnn (default: the scene's).")],
    "stylize": Annotated[bool, typer.Option("--stylize/--no-stylize", help="Apply the scene's stylizer, if it has one.")],
    "stylizer": Annotated[Optional[Path], typer.Option(help="Use this stylizer instead of \\[stylizer] (its mix is not applied): a distilled student, an exported student.onnx / student.int8.onnx or `latentscape export` folder (run by onnxruntime), or a diffusers pipeline folder.")],
    "force": Annotated[bool, typer.Option("--force", help="Replace an existing output.")],
    "audit_log": Annotated[Optional[Path], typer.Option(help="Append guardrail decisions (JSON lines) here; overrides \\[guardrails] audit_log.")],
}
"""Every option of ``latentscape render`` (name -> annotated type); defaults are :class:`RenderOptions`'."""

_DEFAULTS = {f.name: f.default for f in fields(RenderOptions)}
assert set(RENDER_PARAMETERS) == set(_DEFAULTS), "RENDER_PARAMETERS and RenderOptions must list the same options"


def render_options(**overrides: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command ``fn(opts: RenderOptions, **own)``: the command takes every render
    option (``overrides``: name -> annotated type, for options it declares differently) and
    then its own parameters."""
    unknown = set(overrides) - set(RENDER_PARAMETERS)
    if unknown:
        raise TypeError(f"not render options: {sorted(unknown)}")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        own = list(inspect.signature(fn, eval_str=True).parameters.values())[1:]
        clash = {p.name for p in own} & set(RENDER_PARAMETERS)
        if clash:
            raise TypeError(f"{fn.__name__} declares render options itself: {sorted(clash)} (pass them as overrides)")
        params = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=_DEFAULTS[name],
                                    annotation=overrides.get(name, annotation))
                  for name, annotation in RENDER_PARAMETERS.items()]
        params += [p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD) for p in own]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            opts = RenderOptions(**{k: kwargs.pop(k) for k in RENDER_PARAMETERS})
            return fn(opts, **kwargs)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # typer must see the combined signature, not fn's
        return command

    return decorate
