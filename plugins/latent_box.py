"""Latent box: keeps generator latents inside the region an artist approved.

The region is declared by allowed latents: ``seeds`` (z = ``RandomState(seed).randn(z_dim)``,
the StyleGAN convention) and/or ``samples`` (a list of vectors, or a safetensors file
in the bundle with a ``latents`` tensor [M, D]). Shapes:

* ``region = "balls"`` (default): a latent is inside when it is within ``radius`` of
  some allowed latent (Euclidean; default radius: ``0.25 * sqrt(D)``);
* ``region = "box"``: per-dimension bounds of the allowed latents widened by ``margin``
  (a fraction of their range, default 0.1).

``action = "project"`` (default) moves each outside row to the nearest point of the
region (the nearest ball's surface, or a clamp into the box); ``"reject"`` blocks the
frame (the slate). Latents ``[N, D]`` and ``[N, num_ws, D]`` are both checked row by
row. The audit score is the largest distance outside the region (0 inside).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latentscape.config import with_defaults
from latentscape.errors import ConfigError
from latentscape.hooks import Verdict, hookimpl

DEFAULTS = {"seeds": [], "z_dim": 512, "samples": None, "region": "balls", "radius": None, "margin": 0.1,
            "action": "project"}


class LatentBox:
    def __init__(self):
        self.cfg = dict(DEFAULTS)
        self.allowed = None  # torch [M, D]
        self._pending_file: str | None = None

    @hookimpl
    def latentscape_configure(self, settings: dict) -> None:
        import torch

        cfg = with_defaults(settings, DEFAULTS, where="latent box settings")
        if cfg["region"] not in ("balls", "box") or cfg["action"] not in ("project", "reject"):
            raise ConfigError("latent box: region is 'balls' or 'box', action is 'project' or 'reject'")
        rows = []
        if cfg["seeds"]:
            if not all(isinstance(s, int) and 0 <= s < 2**32 for s in cfg["seeds"]):
                raise ConfigError("latent box: seeds are integers in [0, 2**32)")
            rows += [np.random.RandomState(s).randn(int(cfg["z_dim"])) for s in cfg["seeds"]]
        samples = cfg["samples"]
        if isinstance(samples, str):
            self._pending_file = samples
        elif samples is not None:
            try:
                rows += [np.asarray(r, dtype=np.float64).reshape(-1) for r in samples]
            except (TypeError, ValueError):
                raise ConfigError("latent box: samples must be a list of vectors or a file name") from None
        self.cfg = cfg
        if rows:
            self._set(torch.as_tensor(np.stack(rows), dtype=torch.float32))
        elif self._pending_file is None:
            raise ConfigError("latent box: declare the region with `seeds` or `samples`")

    def _set(self, allowed) -> None:
        import torch

        if allowed.ndim != 2 or allowed.shape[0] == 0 or not torch.isfinite(allowed).all():
            raise ConfigError("latent box: allowed latents must be a finite [M, D] array")
        if self.allowed is not None and self.allowed.shape[1] != allowed.shape[1]:
            raise ConfigError(f"latent box: seeds give D={self.allowed.shape[1]}, samples D={allowed.shape[1]}")
        self.allowed = allowed if self.allowed is None else torch.cat((self.allowed, allowed))
        d = self.allowed.shape[1]
        r = self.cfg["radius"]
        self.radius = float(r) if r is not None else 0.25 * d ** 0.5
        lo, hi = self.allowed.min(0).values, self.allowed.max(0).values
        pad = (hi - lo) * float(self.cfg["margin"])
        self.lo, self.hi = lo - pad, hi + pad

    @hookimpl
    def latentscape_scene_loaded(self, scene) -> None:
        if self._pending_file is None:
            return
        from safetensors.torch import load_file

        p = Path(self._pending_file)
        if not p.is_absolute() and scene.path is not None:
            p = Path(scene.path) / p
        try:
            t = load_file(str(p))["latents"].float()
        except Exception as err:  # noqa: BLE001
            raise ConfigError(f"latent box: cannot read samples: {err}", path=p) from None
        self._set(t.reshape(t.shape[0], -1))
        self._pending_file = None

    @hookimpl
    def latentscape_check_latents(self, latents):
        import torch

        if self.allowed is None:
            return Verdict.block(None, "latent region not loaded")
        d = self.allowed.shape[1]
        if latents.shape[-1] != d:
            return Verdict.block(None, f"latents have D={latents.shape[-1]}, the region D={d}")
        x = latents.detach().reshape(-1, d).float()
        allowed = self.allowed.to(x.device)
        if self.cfg["region"] == "box":
            lo, hi = self.lo.to(x.device), self.hi.to(x.device)
            proj = torch.minimum(torch.maximum(x, lo), hi)
            dist = (x - proj).norm(dim=1)
        else:
            dd = torch.cdist(x, allowed)  # [R, M]
            near, idx = dd.min(1)
            dist = (near - self.radius).clamp_min(0)
            c = allowed[idx]
            scale = (self.radius / near.clamp_min(1e-12)).clamp(max=1.0)[:, None]
            proj = c + (x - c) * scale
        worst = float(dist.max()) if dist.numel() else 0.0
        if worst == 0.0:
            return Verdict.ok(0.0)
        if self.cfg["action"] == "reject":
            return Verdict.block(worst, f"latents {worst:.3f} outside the approved region")
        return Verdict.replace(proj.reshape(latents.shape).to(latents.dtype), worst, "latents projected into the region")


latentscape_plugin = LatentBox
