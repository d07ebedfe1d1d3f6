"""The interactive viewer: a pyglet window on the frame loop, with fly and orbit cameras.

``latentscape view [SCENE]``. Mouse drag turns the camera, the wheel zooms (orbit),
WASD moves (Q/E down/up in fly mode). Keys:

    TAB     orbit <-> fly camera           C   cycle camera paths (interactive, then the scene's)
    1-9     toggle the n-th adapter        P   screenshot (PNG in the current folder)
    H       HUD on/off                     R   reload the scene now   ESC  quit

The viewer holds ``target_fps`` with :class:`latentscape.frame.DynamicResolution`
(the image is rendered smaller and scaled up, nearest neighbour). The HUD shows fps,
ms per stage (``ctx.stats``), the render size, active adapters and guardrail state.
The scene folder is watched (``scene.toml`` and ``scene.lock``): on change it is
reloaded, and a scene that fails to load leaves the old one running, with the error
on the HUD. Every input event is reported to the plugin host's activity hook.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentscape.render.cameras import Camera, look_at

log = logging.getLogger("latentscape.viewer")

PER_PIXEL_STAGES = ("layers", "nerf", "stylize", "hooks.check_frame")
"""Frame-loop stages whose cost scales with the render size (:class:`DynamicResolution`
scales only these; texture synthesis, plugin hooks and swaps cost the same at any size)."""


@dataclass
class CameraRig:
    """An interactive camera: ``orbit`` (around ``center``) or ``fly`` (free position, yaw/pitch).

    Pure state, no window: the viewer feeds it mouse and key input."""

    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    radius: float = 3.0
    azimuth: float = 0.0
    """Degrees around the up axis."""
    elevation: float = 20.0
    """Degrees above the horizon."""
    up_axis: int = 2
    fov_deg: float = 40.0
    mode: str = "orbit"
    speed: float = 1.0
    """Fly speed in world units per second."""

    def __post_init__(self) -> None:
        self.position = self._orbit_eye()

    def _basis(self, az: float, el: float) -> np.ndarray:
        """Unit vector from the centre towards the eye for azimuth/elevation (degrees)."""
        a, e = math.radians(az), math.radians(el)
        ring = (math.cos(e) * math.cos(a), math.cos(e) * math.sin(a))
        h = math.sin(e)
        if self.up_axis == 2:
            return np.array([ring[0], ring[1], h])
        if self.up_axis == 1:
            return np.array([ring[0], h, ring[1]])
        return np.array([h, ring[0], ring[1]])

    def _up(self) -> np.ndarray:
        up = np.zeros(3)
        up[self.up_axis] = 1.0
        return up

    def _orbit_eye(self) -> np.ndarray:
        return np.asarray(self.center) + self.radius * self._basis(self.azimuth, self.elevation)

    def toggle_mode(self) -> str:
        if self.mode == "orbit":
            self.position = self._orbit_eye()
            self.mode = "fly"
        else:
            # Back to orbit around the point the fly camera looks at, at the same distance.
            fwd = -self._basis(self.azimuth, self.elevation)
            self.center = tuple(self.position + fwd * self.radius)
            self.mode = "orbit"
        return self.mode

    def drag(self, dx: float, dy: float) -> None:
        self.azimuth -= dx * 0.4
        self.elevation = max(-89.0, min(89.0, self.elevation - dy * 0.4 * (1 if self.mode == "orbit" else -1)))

    def zoom(self, clicks: float) -> None:
        self.radius = max(0.05, self.radius * (0.9 ** clicks))

    def move(self, forward: float, right: float, up: float, dt: float) -> None:
        if self.mode == "orbit":
            self.zoom(forward * dt * 5)
            self.azimuth += right * dt * 60
            return
        look = -self._basis(self.azimuth, self.elevation)
        side = np.cross(look, self._up())
        n = np.linalg.norm(side)
        side = side / n if n > 1e-6 else side
        self.position = self.position + (look * forward + side * right + self._up() * up) * self.speed * dt

    def c2w(self) -> torch.Tensor:
        up = tuple(self._up())
        if self.mode == "orbit":
            return look_at(tuple(self._orbit_eye()), self.center, up)
        target = self.position - self._basis(self.azimuth, self.elevation)
        return look_at(tuple(self.position), tuple(target), up)

    def camera(self, width: int, height: int) -> Camera:
        return Camera.from_fov(self.c2w(), width, height, self.fov_deg)


class SceneWatcher:
    """Notices changes to a scene bundle's ``scene.toml`` / ``scene.lock`` (polled mtimes)."""

    def __init__(self, root: Path | None):
        self.root = root
        self._seen = self._stamp()

    def _stamp(self):
        if self.root is None:
            return None
        out = []
        for name in ("scene.toml", "scene.lock"):
            try:
                st = (self.root / name).stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def changed(self) -> bool:
        now = self._stamp()
        if now != self._seen:
            self._seen = now
            return True
        return False


class ViewerCore:
    """Everything the viewer does except the window: scene, loop, cameras, adapters, reload.

    Kept apart so that it is testable headless."""

    def __init__(self, scene: Path | None = None, *, width: int = 256, height: int = 256, target_fps: float = 10.0,
                 device: str = "cpu", backend: str | None = None, dynamic: bool = True, stylize: bool = True,
                 stylizer: str | Path | None = None):
        """``stylize=False``: no stylizer; ``stylizer``: run this one instead of the scene's
        ``[stylizer]`` (e.g. an exported ``student.onnx``), kept across reloads."""
        from latentscape.frame import DynamicResolution

        self.scene_path = Path(scene) if scene is not None else None
        self.stylize, self.stylizer = stylize, stylizer
        self.width, self.height = width, height
        self.device, self.backend = device, backend
        self.dynres = DynamicResolution(target_fps) if dynamic else None
        self.error: str | None = None
        self.index = 0
        self.path_index = 0  # 0: the interactive rig; k: the k-th scene camera path
        self.last_frame = None
        self.fps = 0.0
        self._t_last = time.perf_counter()
        self._load(self.scene_path)
        self.watcher = SceneWatcher(self.scene.path if self.scene_path is not None else None)

    def _load(self, path: Path | None) -> None:
        from latentscape.clock import WallClock
        from latentscape.session import Session

        self.session = Session.open(path, device=self.device, backend=self.backend, clock=WallClock(),
                                    stylize=self.stylize, stylizer=self.stylizer)
        self._scene_changed()

    def _scene_changed(self) -> None:
        scene = self.session.scene
        self.paths = [None, *sorted(scene.camera_paths)]
        self.path_index = min(getattr(self, "path_index", 0), len(self.paths) - 1)
        self.rig = getattr(self, "rig", None) or CameraRig(center=tuple(scene.center.tolist()), radius=2.0 / scene.scale,
                                                           up_axis=scene.up_axis)
        self._path_cache: dict[str, Any] = {}

    @property
    def scene(self):
        return self.session.scene

    @property
    def loop(self):
        return self.session.loop

    @property
    def hooks(self):
        return self.session.hooks

    @property
    def adapters(self):
        return self.session.adapters

    def reload(self) -> bool:
        """Load the scene again; on failure keep the old one and remember the error."""
        try:
            self.session.reload(self.scene_path)
        except Exception as err:  # noqa: BLE001 - any failure keeps the old scene running
            self.error = f"reload failed, kept the old scene: {err}"
            log.warning("%s", self.error)
            return False
        self._scene_changed()
        self.error = None
        log.info("reloaded %s (%s)", self.scene.name, self.scene.version)
        return True

    def poll_reload(self) -> bool | None:
        if self.watcher.changed():
            return self.reload()
        return None

    def activity(self, kind: str, magnitude: float = 1.0, **data) -> None:
        self.session.activity(kind, magnitude, **data)

    def cycle_path(self) -> str:
        self.path_index = (self.path_index + 1) % len(self.paths)
        return self.paths[self.path_index] or f"interactive ({self.rig.mode})"

    def adapter_slots(self) -> list[tuple[str, str]]:
        """(target, adapter name) for keys 1-9, sorted."""
        if self.adapters is None:
            return []
        return sorted((t, n) for t, names in self.adapters.names().items() for n in names)[:9]

    def toggle_adapter(self, slot: int) -> str | None:
        slots = self.adapter_slots()
        if not 0 <= slot < len(slots):
            return None
        target, name = slots[slot]
        active = dict(self.adapters.active_versions()).get(target, "")
        mix = None if active.startswith(name) else name
        try:
            self.session.request_adapter(target, mix, source="viewer")
        except Exception as err:  # noqa: BLE001 - shown on the HUD
            self.error = f"adapter {name}: {err}"
            return None
        return f"{target} -> {mix or 'base'}"

    def camera(self, width: int | None = None, height: int | None = None) -> Camera:
        width, height = width or self.width, height or self.height
        name = self.paths[self.path_index]
        if name is None:
            return self.rig.camera(width, height)
        if name not in self._path_cache:
            self._path_cache[name] = self.scene.camera_path(name, width=width, height=height)
        cams = self._path_cache[name].cameras
        return cams[self.index % len(cams)]

    def step(self, camera: Camera | None = None):
        """Render one frame (at the dynamic resolution factor unless ``camera`` is given)."""
        cam = camera or self.camera()
        factor = self.dynres.factor if (self.dynres is not None and camera is None) else 1.0
        if factor < 1.0:
            cam = cam.scaled(factor)
        t0 = time.perf_counter()
        frame = self.session.render(cam, index=self.index)
        ms = (time.perf_counter() - t0) * 1000
        if self.dynres is not None and camera is None:
            # Only the per-pixel stages shrink with the image; the rest is fixed per frame.
            scaled = sum(v for k, v in frame.context.stats.items() if k in PER_PIXEL_STAGES)
            self.dynres.update(ms, fixed_ms=ms - scaled)
        now = time.perf_counter()
        dt = max(now - self._t_last, 1e-6)
        self.fps = 1 / dt if self.index == 0 else 0.8 * self.fps + 0.2 / dt
        self._t_last = now
        self.index += 1
        self.last_frame = frame
        return frame

    def hud_lines(self) -> list[str]:
        f = self.last_frame
        lines = [f"{self.scene.name} {self.scene.version}  {self.fps:5.1f} fps"]
        if f is not None:
            h, w = f.rgb.shape[:2]
            lines.append(f"render {w}x{h} (factor {self.dynres.factor if self.dynres else 1.0:.2f})  "
                         f"camera: {self.paths[self.path_index] or self.rig.mode}")
            lines.append("  ".join(f"{k} {v:.1f}ms" for k, v in f.context.stats.items()))
            act = {t: v for t, v in f.context.adapters.items() if v}
            lines.append("adapters: " + (", ".join(f"{t}={v.split('@')[0]}" for t, v in act.items()) or "base"))
            slate = f.context.extras.get("latentscape.slate")
            quarantined = [n for n, r in self.hooks.report().items() if r.get("quarantined")]
            lines.append("guardrails: " + (f"SLATE ({slate})" if slate else "ok")
                         + (f"  quarantined: {', '.join(quarantined)}" if quarantined else ""))
        if self.error:
            lines.append(self.error[:160])
        return lines

    def close(self) -> None:
        self.session.close()


class Viewer:
    """The pyglet window around a :class:`ViewerCore`."""

    def __init__(self, core: ViewerCore, *, window_size: tuple[int, int] | None = None, hud: bool = True,
                 visible: bool = True, screenshot_dir: Path = Path(".")):
        import pyglet
        from pyglet.window import key

        self.pyglet, self.key = pyglet, key
        self.core = core
        self.hud = hud
        self.screenshot_dir = Path(screenshot_dir)
        w, h = window_size or (core.width, core.height)
        self.window = pyglet.window.Window(w, h, caption=f"latentscape - {core.scene.name}", resizable=True,
                                           visible=visible)
        self.keys = key.KeyStateHandler()
        self.window.push_handlers(self.keys)
        self.label = pyglet.text.Label("", x=6, y=h - 6, anchor_y="top", multiline=True, width=max(w - 12, 50),
                                       font_size=10, color=(255, 255, 255, 255))
        self._texture = None
        self._last_tick = time.perf_counter()
        self._install_handlers()

    # ---- drawing
    def draw_frame(self, rgb: np.ndarray) -> None:
        """Show a uint8 [H, W, 3] frame scaled to the window (nearest neighbour)."""
        from pyglet import gl

        h, w = rgb.shape[:2]
        img = self.pyglet.image.ImageData(w, h, "RGB", np.ascontiguousarray(rgb).tobytes(), pitch=-w * 3)
        tex = img.get_texture()
        gl.glBindTexture(tex.target, tex.id)
        gl.glTexParameteri(tex.target, gl.GL_TEXTURE_MAG_FILTER, gl.GL_NEAREST)
        gl.glTexParameteri(tex.target, gl.GL_TEXTURE_MIN_FILTER, gl.GL_NEAREST)
        self.window.clear()
        fw, fh = self.window.get_framebuffer_size()
        tex.blit(0, 0, width=fw, height=fh)
        self._texture = tex

    def draw_hud(self) -> None:
        self.label.text = "\n".join(self.core.hud_lines())
        self.label.y = self.window.height - 6
        self.label.draw()

    def screenshot(self) -> np.ndarray:
        """The window's colour buffer as uint8 [H, W, 3] (top row first)."""
        buf = self.pyglet.image.get_buffer_manager().get_color_buffer().get_image_data()
        data = np.frombuffer(buf.get_data("RGB", buf.width * 3), np.uint8).reshape(buf.height, buf.width, 3)
        return data[::-1].copy()

    def render_once(self, camera: Camera | None = None) -> np.ndarray:
        """Render, draw and read back one frame (tests, screenshots)."""
        self.window.switch_to()
        self.window.dispatch_events()
        frame = self.core.step(camera)
        self.draw_frame(frame.rgb)
        if self.hud:
            self.draw_hud()
        from pyglet import gl

        gl.glFinish()
        return self.screenshot()

    # ---- input
    def _install_handlers(self) -> None:
        key, core, win = self.key, self.core, self.window

        @win.event
        def on_draw():
            frame = core.last_frame
            if frame is not None:
                self.draw_frame(frame.rgb)
            if self.hud:
                self.draw_hud()

        @win.event
        def on_mouse_drag(x, y, dx, dy, buttons, modifiers):
            core.rig.drag(dx, dy)
            core.path_index = 0
            core.activity("mouse", math.hypot(dx, dy), dx=dx, dy=dy)

        @win.event
        def on_mouse_scroll(x, y, scroll_x, scroll_y):
            core.rig.zoom(scroll_y)
            core.activity("scroll", abs(scroll_y))

        @win.event
        def on_key_press(symbol, modifiers):
            core.activity("key", 1.0, key=key.symbol_string(symbol))
            if symbol == key.ESCAPE:
                win.close()
                self.pyglet.app.exit()
            elif symbol == key.TAB:
                core.rig.toggle_mode()
                core.path_index = 0
            elif symbol == key.C:
                log.info("camera: %s", core.cycle_path())
            elif symbol == key.P:
                self.save_screenshot()
            elif symbol == key.H:
                self.hud = not self.hud
            elif symbol == key.R:
                core.reload()
            elif key._1 <= symbol <= key._9:
                done = core.toggle_adapter(symbol - key._1)
                if done:
                    log.info("adapter %s", done)
            return True  # ESC handled above; stop pyglet's default close-on-escape

    def save_screenshot(self) -> Path:
        from PIL import Image

        self.screenshot_dir.mkdir(parents=True, exist_ok=True)
        n = 0
        while (p := self.screenshot_dir / f"screenshot_{n:04d}.png").exists():
            n += 1
        frame = self.core.last_frame
        Image.fromarray(frame.rgb if frame is not None else self.screenshot()).save(p)
        log.info("saved %s", p)
        return p

    def tick(self, dt: float) -> None:
        k, core = self.keys, self.core
        fwd = (k[self.key.W] - k[self.key.S])
        right = (k[self.key.D] - k[self.key.A])
        up = (k[self.key.E] - k[self.key.Q])
        if fwd or right or up:
            core.rig.move(fwd, right, up, dt)
            core.path_index = 0
            core.activity("key", float(abs(fwd) + abs(right) + abs(up)), held=True)
        core.poll_reload()
        core.step()
        self.window.invalid = True

    def run(self) -> None:
        # Render as fast as frames come; DynamicResolution keeps each one near the target.
        self.pyglet.clock.schedule(self.tick)
        try:
            self.pyglet.app.run(interval=None)
        finally:
            self.core.close()
