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

Live shows (a wall-clock session: viewer, serve) do not wait for the generator:
:meth:`TextureStage.set_live` moves synthesis to a background thread at a lower CPU
priority. A frame then shows the newest *finished* texture (and the w that made it),
asks for the texture of its own time, and goes on; only the very first frame waits.
The texture lags the program by about one synthesis, so a slow generator (a StyleGAN3
at 200 ms on a 2-core CPU) no longer sets the frame rate. Offline renders (scene clock)
stay synchronous and byte-identical.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time

import torch

from typing import Any, Callable

from latentscape.texture.latents import LatentProgram

__all__ = ["TextureStage", "image_to_texture"]

log = logging.getLogger("latentscape.texture")


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
        self._worker: _SynthesisWorker | None = None

    @property
    def live(self) -> bool:
        return self._worker is not None

    def set_live(self, live: bool) -> None:
        """Synthesise in a background thread (live shows) or in the frame (offline, default)."""
        if live and self._worker is None:
            self._worker = _SynthesisWorker(self)
        elif not live and self._worker is not None:
            self._worker.stop()
            self._worker = None

    def close(self) -> None:
        self.set_live(False)

    def _synthesise(self, w: torch.Tensor) -> torch.Tensor:
        return image_to_texture(self.G.synthesis(w[None], noise_mode=self.noise_mode)[0])

    @torch.no_grad()
    def texture_at(self, t: float, ctx: Any = None) -> torch.Tensor:
        if self.rate:
            t = math.floor(t * self.rate) / self.rate
        w = self.bound.at(t)
        if self.guard is not None:
            w = self.guard(ctx, w[None])[0]
        if self._worker is not None:
            shown = self._worker.request(w)
            if shown is not None:
                self._last_w, self._last_tex = shown
                return self._last_tex
            # nothing finished yet (the first frame): make this one here, once
        if self._last_w is None or not torch.equal(w, self._last_w):
            self._last_w, self._last_tex = w, self._synthesise(w)
            if self._worker is not None:
                self._worker.seed(w, self._last_tex)
        return self._last_tex

    def prepare(self, ctx) -> None:
        tex = self.texture_at(ctx.time, ctx)
        ctx.extras.setdefault("textures", {})[self.name] = tex
        ctx.extras.setdefault("latents", {})[self.name] = self._last_w


class _SynthesisWorker:
    """One background thread per live texture stage: always works on the newest request."""

    DUTY = 0.3
    """Fraction of the time the worker may synthesise (after each texture it rests for the
    time it worked, times 1/DUTY - 1). Measured on the 2-core CPU, demo viewer at 128x128,
    40 frames, two runs each (``python -m latentscape.tools.benchmarks.live_viewer``): a worker that never rests: 3.9-4.1 fps (NeRF stage 220-234 ms,
    ~12 textures); DUTY 0.5: 4.9-5.6 fps (~6 textures); 0.3: 5.2-6.2 fps (NeRF 147-172 ms,
    3-5 textures); the frame waiting for every texture: 3.9-4.9 fps."""

    def __init__(self, stage: TextureStage):
        self.stage = stage
        self._cv = threading.Condition()
        self._wanted: torch.Tensor | None = None  # the newest w asked for
        self._done: tuple[torch.Tensor, torch.Tensor] | None = None  # (w, texture) last finished
        self._busy_with: torch.Tensor | None = None
        self._stop = False
        self.error: BaseException | None = None
        self.synthesised = 0
        self._thread = threading.Thread(target=self._run, name=f"latentscape-texture-{stage.name}", daemon=True)
        self._thread.start()

    def request(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Ask for ``w``'s texture; returns the newest finished (w, texture), or None before the first."""
        with self._cv:
            if self.error is not None:
                err, self.error = self.error, None
                raise err  # a generator failure surfaces in the frame, as it would offline
            done = self._done
            fresh = done is None or not torch.equal(w, done[0])
            busy = self._busy_with is not None and torch.equal(w, self._busy_with)
            if done is not None and fresh and not busy:
                self._wanted = w
                self._cv.notify()
            return done

    def seed(self, w: torch.Tensor, tex: torch.Tensor) -> None:
        with self._cv:
            self._done = (w, tex)

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=10.0)

    def _run(self) -> None:
        try:  # below the frame thread: the render (and its kernel threads) preempt synthesis
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):  # not Linux, or not allowed: same priority
            pass
        # One intra-op thread here (torch's thread count is per calling thread under OpenMP):
        # the frame thread keeps its kernel threads, the generator does not compete with them.
        torch.set_num_threads(1)
        while True:
            with self._cv:
                while self._wanted is None and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                w, self._wanted = self._wanted, None
                self._busy_with = w
            started = time.perf_counter()
            try:
                with torch.no_grad():
                    tex = self.stage._synthesise(w)
            except BaseException as err:  # noqa: BLE001 - handed to the next frame
                log.warning("texture %s: synthesis failed: %s", self.stage.name, err)
                with self._cv:
                    self.error, self._busy_with = err, None
                continue
            with self._cv:
                self._done, self._busy_with = (w, tex), None
                self.synthesised += 1
                # Leave the cores to the frame for a while (a duty cycle of DUTY): the frame's
                # kernels run on every core and wait for the slowest, so a generator that never
                # rests slows every frame, not just one core's worth.
                until = time.perf_counter() + (time.perf_counter() - started) * (1.0 / self.DUTY - 1.0)
                while not self._stop and (left := until - time.perf_counter()) > 0:
                    self._cv.wait(timeout=left)  # new requests wake it: rest out the time anyway
