"""An example latentscape plugin package (pure Python, public hook API only).

``DimGuard``: a guardrail that dims frames whose mean brightness is above
``max_mean`` (0..255) and blocks frames above ``block_mean``.
``FrameCounter``: a trigger that counts frames and asks for an adapter every
``every`` frames, alternating through ``adapters`` (if the scene has them).
"""

from __future__ import annotations

import numpy as np

from latentscape.errors import ConfigError
from latentscape.hooks import Verdict, hookimpl


class DimGuard:
    def __init__(self):
        self.max_mean = 200.0
        self.block_mean = 256.0

    @hookimpl
    def latentscape_configure(self, settings):
        self.max_mean = float(settings.get("max_mean", 200.0))
        self.block_mean = float(settings.get("block_mean", 256.0))
        if not 0 < self.max_mean <= 255:
            raise ConfigError("example_dim: max_mean must be in (0, 255]")

    @hookimpl
    def latentscape_check_frame(self, ctx, frame):
        mean = float(frame.mean())
        if mean >= self.block_mean:
            return Verdict.block(mean, "far too bright")
        if mean <= self.max_mean:
            return Verdict.ok(mean)
        dimmed = (frame.astype(np.float32) * (self.max_mean / mean)).astype(np.uint8)
        return Verdict.replace(dimmed, mean, "dimmed")


class FrameCounter:
    def __init__(self):
        self.frames = 0
        self.every = 0
        self.adapters: list[str] = []
        self.target = "nerf.color"

    @hookimpl
    def latentscape_configure(self, settings, controls):
        self.controls = controls
        self.every = int(settings.get("every", 0))
        self.target = settings.get("target", "nerf.color")
        self.adapters = list(settings.get("adapters", []))

    @hookimpl
    def latentscape_frame_begin(self, ctx):
        if self.every and self.adapters and self.frames % self.every == 0:
            name = self.adapters[(self.frames // self.every) % len(self.adapters)]
            self.controls.request_adapter(self.target, name)
        self.frames += 1
