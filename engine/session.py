"""The Session: one running scene, from its bundle to its last frame.

Every application (``latentscape render``, ``serve``, ``view``, ``distill``, the farm
and the plugin test harness) goes through a Session and nothing below it::

    from latentscape.session import Session

    with Session.open("scenes/demo", device="cuda") as s:      # scene clock: offline
        s.run(s.camera_path(), open_sink("out.mp4"))           # every frame of the default path
        frame = s.render(17)                                   # frame 17 of it, alone

    live = Session.open(scene, clock=WallClock())              # live show: triggers see the wall clock
    live.render(camera, index=i, sinks=[stream])               # any camera (viewer, farm job)
    live.reload()                                              # atomic: a bad scene leaves the old one running

``open`` loads and verifies the bundle, assembles its parts
(:func:`latentscape.scene.assemble.assemble`: plugin host, adapters, texture stages,
mesh layers, stylizer) and builds the :class:`latentscape.frame.FrameLoop`. The
session's **clock** (:mod:`latentscape.clock`) decides what "now" is for each frame:
a :class:`SceneClock` (the default) derives it from scene time, so offline output is
the same bytes at any hour; a :class:`WallClock` follows the machine's time for live
shows. ``render``, ``run``, ``reload`` and ``close`` may be called from different
threads (a control API reloading while a loop thread renders): a frame never sees
half of a reload.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from latentscape.clock import Clock, SceneClock
from latentscape.frame import Frame, FrameLoop, RunStats
from latentscape.render.camera_path import CameraPath, load_camera_path
from latentscape.render.cameras import Camera
from latentscape.scene.assemble import LoopParts, assemble
from latentscape.scene.bundle import Scene, load_scene
from latentscape.sinks.base import FrameSink

__all__ = ["CameraSpec", "Session"]


@dataclass(frozen=True)
class CameraSpec:
    """Which camera path a session renders by frame index (resolved again on reload).

    The first that is set wins: ``orbit`` (a built-in orbit of that many frames),
    ``file`` (a nerfstudio ``camera_path.json``), ``name`` (one of the scene's paths;
    None: its default); a scene without camera paths gets a 48-frame orbit.
    ``width``/``height`` override the path's size.
    """

    name: str | None = None
    file: Path | None = None
    orbit: int | None = None
    width: int | None = None
    height: int | None = None

    def resolve(self, scene: Scene) -> CameraPath:
        if self.orbit is not None:
            return scene.orbit(self.orbit, self.width, self.height)
        if self.file is not None:
            return load_camera_path(self.file, width=self.width, height=self.height)
        if scene.camera_paths:
            return scene.camera_path(self.name, width=self.width, height=self.height)
        return scene.orbit(48, self.width, self.height)


@dataclass
class _Loaded:
    """One assembled scene: what a reload swaps as a whole."""

    scene: Scene
    parts: LoopParts
    loop: FrameLoop
    path: CameraPath


class Session:
    """Owns one running scene: its parts, its frame loop, its clock. Use :meth:`open`."""

    def __init__(self, source: str | Path | Scene | None, *, device: str = "cpu", backend: str | None = None,
                 clock: Clock | None = None, cameras: CameraSpec | None = None, options: dict[str, Any] | None = None):
        self.clock: Clock = clock if clock is not None else SceneClock()
        if isinstance(source, Scene):  # a reload reads its folder again onto the same device and backend
            device, backend = str(source.device), source.backend
        self.device, self.backend = device, backend
        self.cameras = cameras or CameraSpec()
        self._source = source
        self._options = dict(options or {})
        self._swap_listeners: list[Callable] = []
        self._lock = threading.RLock()
        self._closed = False
        self._next_index = 0
        self._current = self._build(source)

    # ---- opening and reloading
    @classmethod
    def open(cls, scene: str | Path | Scene | None = None, *, device: str = "cpu", backend: str | None = None,
             clock: Clock | None = None, plugins: Iterable[Any] = (), scene_plugins: bool = True,
             stylize: bool = True, stylizer: str | Path | None = None, audit_log: str | Path | None = None,
             cameras: CameraSpec | None = None, host_clock: Callable[[], float] | None = None,
             verdict_listeners: Iterable[Callable[[dict], None]] = ()) -> "Session":
        """Load ``scene`` (a bundle folder, a loaded :class:`Scene`, or None for the demo)
        and assemble everything it declares.

        ``device``/``backend``: where and how the field runs (``backend`` None: the
        scene's). ``clock``: what "now" is (default :class:`SceneClock`: offline and
        reproducible; :class:`latentscape.clock.WallClock` for live shows, which also
        turns off torch's deterministic algorithms). ``plugins``: extra
        :class:`latentscape.plugin_host.PluginSpec` s; ``scene_plugins=False`` leaves the
        scene's ``[[plugins]]`` out. ``stylize=False`` / ``stylizer``: no stylizer / a
        different one. ``audit_log`` overrides ``[guardrails] audit_log``.
        ``cameras``: the path :meth:`render` indexes (default: the scene's). ``host_clock``
        stamps input events (default: the clock's ``monotonic``). ``verdict_listeners``
        get every guardrail decision, across reloads.
        """
        options = {"plugins": list(plugins), "scene_plugins": scene_plugins, "stylize": stylize, "stylizer": stylizer,
                   "audit_log": audit_log, "host_clock": host_clock, "verdict_listeners": list(verdict_listeners)}
        return cls(scene, device=device, backend=backend, clock=clock, cameras=cameras, options=options)

    def _build(self, source: str | Path | Scene | None) -> _Loaded:
        scene = source if isinstance(source, Scene) else load_scene(source, device=self.device, backend=self.backend)
        o = self._options
        parts = assemble(scene, stylize=o.get("stylize", True), stylizer=o.get("stylizer"),
                         scene_plugins=o.get("scene_plugins", True), plugins=o.get("plugins", ()),
                         audit_log=o.get("audit_log"), host_clock=o.get("host_clock") or self.clock.monotonic,
                         verdict_listeners=o.get("verdict_listeners", ()))
        try:
            if parts.adapters is not None:
                for fn in self._swap_listeners:
                    parts.adapters.add_listener(fn)
            loop = FrameLoop(scene, deterministic=not self.clock.live, clock=self.clock, **parts.loop_kwargs())
            path = self.cameras.resolve(scene)
        except BaseException:
            parts.close()
            raise
        return _Loaded(scene, parts, loop, path)

    def reload(self, scene: str | Path | None = None) -> Scene:
        """Load ``scene`` (default: the folder this session came from) and swap it in
        between two frames. Atomic: if anything fails, the error propagates and the old
        scene keeps rendering, untouched. Returns the new :class:`Scene`."""
        if self._closed:
            raise RuntimeError("the session is closed")
        source = scene if scene is not None else self._source
        if isinstance(source, Scene):
            source = source.path  # load it again from its folder
        new = self._build(source)  # outside the lock: the old scene keeps rendering meanwhile
        with self._lock:
            old, self._current = self._current, new
            self._source = source
        old.parts.close()
        return new.scene

    def use_cameras(self, cameras: CameraSpec) -> None:
        """Make :meth:`render` index ``cameras`` from now on (and after reloads)."""
        path = cameras.resolve(self.scene)
        with self._lock:
            self.cameras = cameras
            self._current.path = path

    # ---- what is loaded
    @property
    def scene(self) -> Scene:
        return self._current.scene

    @property
    def loop(self) -> FrameLoop:
        return self._current.loop

    @property
    def hooks(self):
        """The plugin host (:class:`latentscape.plugin_host.PluginHost`)."""
        return self._current.parts.hooks

    @property
    def adapters(self):
        """The scene's adapter manager, or None."""
        return self._current.parts.adapters

    @property
    def path(self) -> CameraPath:
        """The camera path :meth:`render` indexes (see ``cameras``)."""
        return self._current.path

    @property
    def source(self) -> str | Path | Scene | None:
        """What :meth:`reload` loads again by default."""
        return self._source

    def camera_path(self, cameras: CameraSpec | None = None) -> CameraPath:
        """A camera path of the current scene (default: the session's)."""
        return (cameras or self.cameras).resolve(self.scene)

    def on_swap(self, fn: Callable[[Any, str, str, str], None]) -> None:
        """``fn(ctx, target, old, new)`` after every adapter swap lands, across reloads."""
        self._swap_listeners.append(fn)
        if self.adapters is not None:
            self.adapters.add_listener(fn)

    # ---- frames
    def render(self, frame: int | Camera = 0, t: float | None = None, *, index: int | None = None,
               deadline: float | None = None, sinks: Iterable[FrameSink] = ()) -> Frame:
        """Make one frame, write it to ``sinks`` and let the plugins see it (``frame_end``).

        ``frame``: an index into the session's camera path (cyclic), or any
        :class:`Camera` (then ``index`` numbers it; default: one more than the last).
        ``t``: scene time (default ``index / fps``)."""
        with self._lock:
            cur = self._current
            if isinstance(frame, Camera):
                cam = frame
                index = self._next_index if index is None else index
                fps = cur.scene.fps
            else:
                cams = cur.path.cameras
                index = int(frame) if index is None else index
                cam = cams[int(frame) % len(cams)]
                fps = cur.path.fps
            out = cur.loop.render(cam, index=index, t=index / fps if t is None else t, deadline=deadline)
            for sink in sinks:
                sink.write(out.rgb)
            cur.parts.hooks.frame_end(out.context, out)
            self._next_index = index + 1
            return out

    def run(self, camera_path: CameraPath | None = None, sinks: FrameSink | Iterable[FrameSink] = (), *,
            progress: bool = True, start: int = 0, count: int | None = None, fps: float | None = None) -> RunStats:
        """Render frames ``start .. start+count`` of ``camera_path`` (default: the
        session's) into every sink; on an error every sink is aborted. Offline work:
        with a :class:`SceneClock` the bytes do not depend on when this runs."""
        sinks = [sinks] if hasattr(sinks, "write") else list(sinks)
        with self._lock:
            cur = self._current
            return cur.loop.run(camera_path or cur.path, sinks, progress=progress, start=start, count=count, fps=fps)

    def feed(self, rgb: np.ndarray, *, index: int, t: float) -> tuple[np.ndarray, Any]:
        """Run the frame hooks on a given uint8 frame, no rendering (guardrail tests):
        returns what would be shown, and the frame's context."""
        with self._lock:
            return self._current.loop.check(rgb, index=index, t=t)

    # ---- input and controls (thread-safe)
    def activity(self, kind: str, magnitude: float = 1.0, **data) -> None:
        """Report a viewer input event to the plugins (``latentscape_activity``)."""
        self.hooks.activity(kind, magnitude, **data)

    def request_adapter(self, target: str, mix: dict[str, float] | str | None, *, fade_s: float = 0.0,
                        source: str = "") -> bool:
        """Queue an adapter swap (it lands between frames); False if a plugin vetoed it."""
        return self.hooks.request_adapter(target, mix, fade_s=fade_s, source=source)

    def set_param(self, key: str, value: Any, *, source: str = "") -> None:
        self.hooks.set_param(key, value, source=source)

    # ---- shutdown
    def close(self) -> None:
        """Stop the plugins (``latentscape_scene_unloaded``) and close the audit log. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._current.parts.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Session({self.scene.name!r}, version={self.scene.version!r}, clock={self.clock!r})"
