"""Latent programs: which w a generator synthesises at frame time ``t``.

A program is built from a plain dict (a ``scene.toml`` table) and evaluated with
``program.at(t) -> w [num_ws, w_dim]``. Kinds:

* ``{kind = "seed", seed = 3, psi = 0.7}`` — one fixed seed;
* ``{kind = "keyframes", seeds = [1, 5], times = [0.0, 4.0], interp = "slerp", space = "z"}``
  — interpolate between seeds at given times (clamped before/after);
* ``{kind = "walk", seeds = [1, 5, 9], period = 8.0, interp = "slerp", space = "z", psi = 0.7}``
  — a looping walk through the seeds, one full loop every ``period`` seconds.

``space = "z"`` interpolates z (``lerp`` or ``slerp``) and maps every frame;
``space = "w"`` maps each seed once and lerps w (slerp is refused in w, which is not
a sphere). Seeds become z exactly as the official scripts do
(``np.random.RandomState(seed).randn(1, z_dim)``). Truncation: ``psi`` (default 1)
and ``truncation_cutoff``. :meth:`LatentProgram.fingerprint` is the sha256 of the
canonical program, for the scene lock.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from latentscape.config import check_keys
from latentscape.errors import ConfigError, safe_repr

__all__ = ["LatentProgram", "slerp", "seed_to_z"]

_KINDS = ("seed", "keyframes", "walk")
_FIELDS = {
    "seed": {"kind", "seed", "psi", "truncation_cutoff"},
    "keyframes": {"kind", "seeds", "times", "interp", "space", "psi", "truncation_cutoff"},
    "walk": {"kind", "seeds", "period", "interp", "space", "psi", "truncation_cutoff"},
}


def seed_to_z(seed: int, z_dim: int) -> torch.Tensor:
    """``[z_dim]`` float32, the official gen_images.py z for ``seed``."""
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)[0]).to(torch.float32)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two vectors (falls back to lerp when nearly parallel)."""
    a64, b64 = a.double(), b.double()
    na, nb = a64.norm(), b64.norm()
    cos = ((a64 / na) @ (b64 / nb)).clamp(-1, 1)
    omega = torch.arccos(cos)
    if omega.abs() < 1e-6:
        return torch.lerp(a64, b64, t).to(a.dtype)
    so = torch.sin(omega)
    out = (torch.sin((1 - t) * omega) / so) * a64 + (torch.sin(t * omega) / so) * b64
    return out.to(a.dtype)


def _err(msg: str) -> ConfigError:
    return ConfigError(f"latent program: {msg}", hint="see latentscape.texture.latents for the fields")


def _int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**32:
        raise _err(f"{name} must be an integer in [0, 2**32), got {safe_repr(v, 80)}")
    return v


def _num(v: Any, name: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _err(f"{name} must be a finite number, got {safe_repr(v, 80)}")
    return float(v)


@dataclass(frozen=True)
class LatentProgram:
    kind: str
    seeds: tuple[int, ...]
    times: tuple[float, ...] = ()
    period: float = 0.0
    interp: str = "slerp"
    space: str = "z"
    psi: float = 1.0
    truncation_cutoff: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "LatentProgram":
        if not isinstance(data, Mapping):
            raise _err(f"must be a table, got {type(data).__name__}")
        kind = data.get("kind")
        if kind not in _KINDS:
            raise _err(f"kind must be one of {', '.join(_KINDS)}, got {safe_repr(kind, 80)}")
        check_keys(data, _FIELDS[kind], where=f"the latent program (kind {safe_repr(kind, 80)})",
                   hint="see latentscape.texture.latents for the fields")
        psi = _num(data.get("psi", 1.0), "psi")
        cutoff = data.get("truncation_cutoff")
        if cutoff is not None and (isinstance(cutoff, bool) or not isinstance(cutoff, int) or cutoff < 0):
            raise _err(f"truncation_cutoff must be a non-negative integer, got {safe_repr(cutoff, 80)}")
        interp = data.get("interp", "slerp")
        space = data.get("space", "z")
        if interp not in ("lerp", "slerp"):
            raise _err(f"interp must be lerp or slerp, got {safe_repr(interp, 80)}")
        if space not in ("z", "w"):
            raise _err(f"space must be z or w, got {safe_repr(space, 80)}")
        if space == "w" and interp == "slerp" and kind != "seed":
            raise _err("slerp is only meaningful in z; use interp = 'lerp' with space = 'w'")
        if kind == "seed":
            if "seed" not in data:
                raise _err("kind 'seed' needs seed")
            return cls(kind, (_int(data["seed"], "seed"),), psi=psi, truncation_cutoff=cutoff)
        seeds = data.get("seeds")
        if not isinstance(seeds, (list, tuple)) or len(seeds) < 1:
            raise _err(f"seeds must be a non-empty list, got {safe_repr(seeds, 80)}")
        seeds = tuple(_int(s, "seeds[]") for s in seeds)
        if kind == "walk":
            period = _num(data.get("period", 0), "period")
            if period <= 0:
                raise _err(f"period must be > 0 seconds, got {period}")
            return cls(kind, seeds, period=period, interp=interp, space=space, psi=psi, truncation_cutoff=cutoff)
        times = data.get("times")
        if not isinstance(times, (list, tuple)) or len(times) != len(seeds):
            raise _err("times must be a list with one time per seed")
        times = tuple(_num(t, "times[]") for t in times)
        if any(b <= a for a, b in zip(times, times[1:])):
            raise _err(f"times must be strictly increasing, got {list(times)}")
        return cls(kind, seeds, times=times, interp=interp, space=space, psi=psi, truncation_cutoff=cutoff)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "psi": self.psi}
        if self.kind == "seed":
            d["seed"] = self.seeds[0]
        else:
            d.update(seeds=list(self.seeds), interp=self.interp, space=self.space)
            if self.kind == "walk":
                d["period"] = self.period
            else:
                d["times"] = list(self.times)
        if self.truncation_cutoff is not None:
            d["truncation_cutoff"] = self.truncation_cutoff
        return d

    def fingerprint(self) -> str:
        """sha256 of the canonical JSON of the program (defaults filled in, keys sorted)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def segment(self, t: float) -> tuple[int, int, float]:
        """(index a, index b, fraction) of the keyframes active at time ``t``."""
        n = len(self.seeds)
        if self.kind == "seed" or n == 1:
            return 0, 0, 0.0
        if self.kind == "walk":
            pos = (t / self.period % 1.0) * n
            i = int(math.floor(pos)) % n
            return i, (i + 1) % n, pos - math.floor(pos)
        if t <= self.times[0]:
            return 0, 0, 0.0
        if t >= self.times[-1]:
            return n - 1, n - 1, 0.0
        i = int(np.searchsorted(self.times, t, side="right")) - 1
        return i, i + 1, (t - self.times[i]) / (self.times[i + 1] - self.times[i])

    def bind(self, G) -> "BoundLatentProgram":
        return BoundLatentProgram(self, G)


class BoundLatentProgram:
    """A program tied to one generator's mapping network; caches per-seed z and w."""

    def __init__(self, program: LatentProgram, G):
        self.program, self.G = program, G
        self._z = {s: seed_to_z(s, G.z_dim) for s in program.seeds}
        self._w: dict[int, torch.Tensor] = {}
        if G.c_dim:
            raise ConfigError("latent programs for conditional generators are not supported yet")

    def _map(self, z: torch.Tensor) -> torch.Tensor:
        p = self.program
        dev = self.G.mapping.w_avg.device
        with torch.no_grad():
            return self.G.mapping(z[None].to(dev), None, truncation_psi=p.psi,
                                  truncation_cutoff=p.truncation_cutoff)[0]

    def _w_of(self, seed: int) -> torch.Tensor:
        if seed not in self._w:
            self._w[seed] = self._map(self._z[seed])
        return self._w[seed]

    def at(self, t: float) -> torch.Tensor:
        """w ``[num_ws, w_dim]`` at time ``t`` seconds."""
        p = self.program
        i, j, f = p.segment(float(t))
        a, b = p.seeds[i], p.seeds[j]
        if p.space == "w":
            return torch.lerp(self._w_of(a), self._w_of(b), f) if f else self._w_of(a)
        if f == 0:
            return self._w_of(a)
        za, zb = self._z[a], self._z[b]
        z = slerp(za, zb, f) if p.interp == "slerp" else torch.lerp(za, zb, f)
        return self._map(z)
