"""The frame loop: one place where a frame is made, for the CLI, viewer, streams and farm.

One frame (see docs/architecture.md)::

    hooks.frame_begin(ctx)            plugins: triggers ask for swaps and parameters
    adapters.commit_pending(ctx)      swaps land only between frames
    stage.prepare(ctx)                per-frame work before rendering (latents, textures)
    layers -> rgb, depth              opaque mesh layers for this camera
    nerf   -> rgb, depth, alpha       the field, stopped at the layers' depth
    stylizer(frame)                   optional restyling
    hooks.check_frame(ctx, frame)     guardrails: the frame, or the slate
    sinks.write(frame)
    hooks.frame_end(ctx, frame, stats)

Offline (farm) mode renders at a fixed resolution and is deterministic: the same
scene, camera and frame index give the same bytes on the same device. Interactive
mode holds a target frame rate with :class:`DynamicResolution`.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from latentscape.clock import Clock, SceneClock
from latentscape.render.camera_path import CameraPath
from latentscape.render.cameras import Camera
from latentscape.render.renderer import render_camera
from latentscape.scene.bundle import Scene
from latentscape.sinks.base import FrameSink


@dataclass
class FrameContext:
    """What every stage and hook knows about the frame being made."""

    index: int
    time: float
    camera: Camera
    deadline: float | None
    """Wall-clock time (time.perf_counter) the frame should be done by; None offline."""
    scene_version: str
    adapters: dict[str, str] = field(default_factory=dict)
    """Active adapter versions (target -> adapter id/hash) for this frame."""
    params: dict[str, Any] = field(default_factory=dict)
    """Scene parameters in force for this frame (set by triggers between frames)."""
    stats: dict[str, float] = field(default_factory=dict)
    """Milliseconds per stage, filled as the frame is made."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Per-frame data stages share (e.g. latents, textures)."""
    now: dt.datetime | None = None
    """The frame's local date and time, from the loop's clock (:mod:`latentscape.clock`):
    the wall clock live, ``start + time`` offline. Triggers read it instead of the system clock."""


@dataclass
class Frame:
    rgb: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray  # [H, W] float32, world units (inf where empty)
    alpha: np.ndarray  # [H, W] float32
    context: FrameContext


class FrameHooks(Protocol):
    """What the loop calls on the plugin host (``latentscape.hooks`` implements it)."""

    def frame_begin(self, ctx: FrameContext) -> None: ...

    def check_frame(self, ctx: FrameContext, rgb: np.ndarray) -> np.ndarray: ...

    def frame_end(self, ctx: FrameContext, frame: Frame) -> None: ...


class NullHooks:
    """No plugins: every frame passes unchanged."""

    def frame_begin(self, ctx: FrameContext) -> None:
        pass

    def check_frame(self, ctx: FrameContext, rgb: np.ndarray) -> np.ndarray:
        return rgb

    def frame_end(self, ctx: FrameContext, frame: Frame) -> None:
        pass


class Stage(Protocol):
    """Per-frame work before rendering (latent programs, texture synthesis, adapters).

    Optional: ``set_live(bool)``, called by the loop (True in live shows: the stage may
    work in the background and hand the newest finished result to each frame), and
    ``close()``, called when the scene is unloaded."""

    def prepare(self, ctx: FrameContext) -> None: ...


class Layer(Protocol):
    """An opaque layer drawn for the frame's camera: rgb [H, W, 3] float in [0, 1], and
    distance along each ray in world units (inf where the layer is absent)."""

    def render(self, ctx: FrameContext) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class RunStats:
    frames: int
    seconds: float
    stage_ms: dict[str, float]

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


class FrameLoop:
    """Makes frames of a scene. Stages, layers, a stylizer and hooks plug in.

    ``clock`` sets ``ctx.now`` (default: a :class:`latentscape.clock.SceneClock`, so
    offline output does not depend on the hour). Applications do not build a loop
    themselves: :class:`latentscape.session.Session` assembles and drives it."""

    def __init__(self, scene: Scene, *, hooks: FrameHooks | None = None, stages: Iterable[Stage] = (),
                 layers: Iterable[Layer] = (), stylizer: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 adapters: Any = None, deterministic: bool = True, clock: Clock | None = None):
        self.scene = scene
        self.clock = clock if clock is not None else SceneClock()
        self.hooks = hooks or NullHooks()
        self.stages = list(stages)
        self.layers = list(layers)
        self.stylizer = stylizer
        self.adapters = adapters
        self.deterministic = deterministic
        self.params: dict[str, Any] = {}
        for stage in self.stages:
            # Live shows do not wait for slow stages (a GAN texture is made in the background
            # and the frame shows the newest finished one); offline renders stay synchronous.
            set_live = getattr(stage, "set_live", None)
            if set_live is not None:
                set_live(not deterministic)
        if deterministic and scene.device.type == "cuda":
            # index_add and friends use atomics on CUDA; ask torch for the deterministic kernels.
            torch.use_deterministic_algorithms(True, warn_only=True)

    def context(self, camera: Camera, index: int = 0, t: float | None = None, deadline: float | None = None) -> FrameContext:
        t = index / self.scene.fps if t is None else t
        return FrameContext(index=index, time=t, camera=camera, deadline=deadline, scene_version=self.scene.version,
                            params=dict(self.params), now=self.clock.now(t))

    def render(self, camera: Camera, *, index: int = 0, t: float | None = None, deadline: float | None = None) -> Frame:
        """Make one frame for ``camera``."""
        ctx = self.context(camera, index, t, deadline)
        stats = ctx.stats

        def timed(name: str, fn, *args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            stats[name] = (time.perf_counter() - start) * 1000.0
            return out

        self._begin(ctx, timed)
        for i, stage in enumerate(self.stages):
            timed(f"stage.{getattr(stage, 'name', i)}", stage.prepare, ctx)
        bg_image, depth_limit = None, None
        if self.layers:
            bg_image, depth_limit = timed("layers", self._layers, ctx)
        scene = self.scene
        out = timed("nerf", render_camera, scene.field, scene.grid, camera, scene.render_config, scene.background,
                    world_to_field=(scene.center, scene.scale), background_image=bg_image, depth_limit=depth_limit)
        rgb = out.rgb
        if self.stylizer is not None:
            rgb = timed("stylize", self._stylize, rgb)
        rgb8 = (rgb.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
        rgb8 = timed("hooks.check_frame", self.hooks.check_frame, ctx, rgb8)
        alpha = out.alpha.cpu().numpy()
        depth = np.where(alpha > 1e-3, out.depth.cpu().numpy(), np.inf).astype(np.float32)
        if depth_limit is not None:
            depth = np.minimum(depth, depth_limit.cpu().numpy())
        return Frame(rgb8, depth, alpha, ctx)

    def _begin(self, ctx: FrameContext, timed) -> None:
        """Between frames: triggers speak, then requested adapter swaps land."""
        timed("hooks.begin", self.hooks.frame_begin, ctx)
        if self.adapters is not None:
            timed("adapters", self.adapters.commit_pending, ctx)
            ctx.adapters = dict(self.adapters.active_versions())

    def check(self, rgb: np.ndarray, *, index: int = 0, t: float | None = None) -> tuple[np.ndarray, FrameContext]:
        """The hooks of one frame around a given uint8 [H, W, 3] frame instead of a
        rendered one (frame begin, adapter swaps, guardrails, frame end): returns what
        would be shown, and the frame's context."""
        ctx = self.context(None, index, t)
        self._begin(ctx, lambda name, fn, *a: fn(*a))
        out = self.hooks.check_frame(ctx, np.ascontiguousarray(rgb, dtype=np.uint8))
        self.hooks.frame_end(ctx, out)
        return out, ctx

    def _layers(self, ctx: FrameContext):
        cam = ctx.camera
        dev = self.scene.device
        bg = torch.as_tensor(self.scene.background, dtype=torch.float32, device=dev).expand(cam.height, cam.width, 3).clone()
        depth = torch.full((cam.height, cam.width), math.inf, device=dev)
        for layer in self.layers:
            rgb, d = layer.render(ctx)
            rgb, d = rgb.to(dev), d.to(dev)
            closer = d < depth
            bg = torch.where(closer[..., None], rgb, bg)
            depth = torch.where(closer, d, depth)
        return bg, depth

    def _stylize(self, rgb: torch.Tensor) -> torch.Tensor:
        x = rgb.permute(2, 0, 1)[None]
        return self.stylizer(x)[0].permute(1, 2, 0)

    def run(self, path: CameraPath, sinks: list[FrameSink], *, progress: bool = True, start: int = 0,
            count: int | None = None, fps: float | None = None) -> RunStats:
        """Render frames ``start .. start+count`` of ``path`` into every sink.

        On any error every sink is aborted (no partial output is left that looks
        complete) and the error propagates; on success the sinks are closed.
        """
        cams = path.cameras[start:start + count if count is not None else None]
        if not cams:
            raise ValueError("no frames to render")
        w, h = cams[0].width, cams[0].height
        opened: list[FrameSink] = []
        totals: dict[str, float] = {}
        t0 = time.perf_counter()
        try:
            for sink in sinks:
                sink.open(w, h, fps or path.fps)
                opened.append(sink)
            for i, cam in enumerate(tqdm(cams, desc="render", unit="frame", disable=not progress, dynamic_ncols=True)):
                index = start + i
                frame = self.render(cam, index=index, t=index / (fps or path.fps))
                for sink in opened:
                    sink.write(frame.rgb)
                self.hooks.frame_end(frame.context, frame)
                for k, v in frame.context.stats.items():
                    totals[k] = totals.get(k, 0.0) + v
        except BaseException:
            for sink in opened:
                sink.abort()
            raise
        for i, sink in enumerate(opened):
            try:
                sink.close()
            except BaseException:  # e.g. the disk filled at the last flush: no other sink is left half-done
                for rest in opened[i + 1:]:
                    rest.abort()
                raise
        n = len(cams)
        return RunStats(n, time.perf_counter() - t0, {k: v / n for k, v in totals.items()})


class DynamicResolution:
    """Holds a target frame rate by scaling the render resolution (instant-ngp's rule).

    factor = sqrt(target_ms / ms_at_full_resolution), clamped to [1/16, 1]; the
    factor in use changes only when the wanted one differs by more than x1.2 or
    x0.8 (hysteresis), so the image does not flicker between sizes.
    """

    def __init__(self, target_fps: float, min_factor: float = 1.0 / 16, max_factor: float = 1.0):
        if target_fps <= 0:
            raise ValueError("target_fps must be positive")
        self.target_ms = 1000.0 / target_fps
        self.min_factor, self.max_factor = min_factor, max_factor
        self.factor = max_factor

    def update(self, frame_ms: float, fixed_ms: float = 0.0) -> float:
        """Feed the last frame's time (at the current factor); returns the factor to use next.

        ``fixed_ms``: the part of ``frame_ms`` that does not scale with the pixel count
        (texture synthesis, hooks, adapter swaps). Only the rest is scaled; when the fixed
        part alone eats the target, the image still gets half of it (shrinking the image
        cannot make fixed work faster, it would only collapse the picture)."""
        fixed_ms = min(max(fixed_ms, 0.0), frame_ms)
        full_ms = (frame_ms - fixed_ms) / (self.factor * self.factor)
        budget = max(self.target_ms - fixed_ms, 0.5 * self.target_ms)
        wanted = min(self.max_factor, max(self.min_factor, math.sqrt(budget / max(full_ms, 1e-6))))
        if wanted > self.factor * 1.2 or wanted < self.factor * 0.8:
            self.factor = wanted
        return self.factor
