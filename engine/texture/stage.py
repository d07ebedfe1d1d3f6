"""The frame-loop stage that turns a generator and its latent program into this frame's
texture: ``w = program.at(ctx.time)``, ``image = G.synthesis(w)``, stored as
``ctx.extras["textures"][name]`` ([H, W, 3] float in [0, 1]) for the mesh layers.

Before synthesis the latents pass the latent guardrails when a ``guard`` is given
(``PluginHost.check_latents``: ``guard(ctx, w [1, num_ws, w_dim]) -> w``, which may
project them, or mark the frame for the slate). The texture is re-synthesised only
when the (guarded) w changes (a ``seed`` program, or a
``keyframes`` program outside its key times, costs one synthesis per run), and the
last w is kept in ``ctx.extras["latents"][name]`` for plugins to inspect.

``rate`` (textures per second of scene time) samples the program at
``floor(t * rate) / rate``: the texture then changes ``rate`` times a second whatever the
frame rate, so a slow generator costs one synthesis per 1/rate seconds instead of one
per frame (offline renders stay deterministic: the same frame time gives the same w).
"""

from __future__ import annotations

import math

import torch

from typing import Any, Callable

from latentscape.texture.latents import LatentProgram

__all__ = ["TextureStage", "image_to_texture"]


def image_to_texture(img: torch.Tensor) -> torch.Tensor:
    """Generator output [C, H, W] in about [-1, 1] -> texture [H, W, 3] in [0, 1]
    (the same mapping as ``latentscape generate``: x * 127.5 + 128, over 255)."""
    x = ((img * 127.5 + 128.0) / 255.0).clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x[:3].permute(1, 2, 0).contiguous()


class TextureStage:
    """Synthesises one generator's texture per frame (a :class:`latentscape.frame.Stage`)."""

    def __init__(self, name: str, generator, program: LatentProgram, *, noise_mode: str = "const",
                 guard: Callable[[Any, torch.Tensor], torch.Tensor] | None = None, rate: float | None = None):
        self.name = name  # the frame loop times it as ``stage.<name>``
        self.G = generator
        self.program = program
        self.bound = program.bind(generator)
        self.noise_mode = noise_mode
        self.guard = guard
        self.rate = rate
        self._last_w: torch.Tensor | None = None
        self._last_tex: torch.Tensor | None = None

    @torch.no_grad()
    def texture_at(self, t: float, ctx: Any = None) -> torch.Tensor:
        if self.rate:
            t = math.floor(t * self.rate) / self.rate
        w = self.bound.at(t)
        if self.guard is not None:
            w = self.guard(ctx, w[None])[0]
        if self._last_w is None or not torch.equal(w, self._last_w):
            img = self.G.synthesis(w[None], noise_mode=self.noise_mode)[0]
            self._last_w, self._last_tex = w, image_to_texture(img)
        return self._last_tex

    def prepare(self, ctx) -> None:
        tex = self.texture_at(ctx.time, ctx)
        ctx.extras.setdefault("textures", {})[self.name] = tex
        ctx.extras.setdefault("latents", {})[self.name] = self._last_w
