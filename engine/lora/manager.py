"""Live LoRA swaps: adapters preloaded and merged ahead of time, committed between frames.

Thread model: :meth:`AdapterManager.request` may be called from any thread at any
time (a trigger, the OSC server, the viewer); it only records the wish. The frame
loop calls :meth:`commit_pending` between frames, in its own thread, and that is
the only place live weights change, so no frame ever mixes two versions.

Hot path: for every preloaded adapter the merged weights ``W0 + delta`` are computed
at preload time; a commit is ``weight.copy_(merged)`` into the module's existing
parameter (no allocation, nothing to recompile). Blends and cross-fades write
``W0 + sum_i w_i delta_i`` into a preallocated staging buffer with in-place ops,
then ``copy_`` it in. Cross-fades advance with frame time (``ctx.time``), so an
offline render fades identically at any speed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from latentscape.errors import AdapterError, safe_repr
from latentscape.lora.format import LoraAdapter, load_adapter


@dataclass
class _Target:
    modules: dict[str, nn.Linear]
    base: dict[str, torch.Tensor]
    staging: dict[str, torch.Tensor]
    mix: dict[str, float] = field(default_factory=dict)
    version: str = ""
    fade: tuple | None = None  # (from_mix, to_mix, t0 or None, duration)


@dataclass
class _Loaded:
    adapter: LoraAdapter
    target: str
    delta: dict[str, torch.Tensor]
    merged: dict[str, torch.Tensor]


def _is_one(mix: dict[str, float]) -> str | None:
    if len(mix) == 1:
        (name, w), = mix.items()
        if w == 1.0:
            return name
    return None


class AdapterManager:
    """Adapters per target, swapped only at frame boundaries (``adapters`` of FrameLoop)."""

    def __init__(self):
        self._targets: dict[str, _Target] = {}
        self._adapters: dict[str, _Loaded] = {}
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[dict[str, float], float]] = {}
        self._listeners: list[Callable] = []
        self.commits = 0
        self.coalesced = 0

    # ---- setup
    def add_target(self, name: str, modules: dict[str, nn.Linear]) -> None:
        """Register the live modules of a target; their current weights become its base."""
        if not modules:
            raise AdapterError(f"target {safe_repr(name, 80)} has no linear modules")
        with torch.no_grad():
            base = {m: lin.weight.detach().clone() for m, lin in modules.items()}
            staging = {m: torch.empty_like(w) for m, w in base.items()}
        self._targets[name] = _Target(dict(modules), base, staging)

    def preload(self, name: str, source: str | Path | LoraAdapter, target: str, *, alpha: float | None = None) -> LoraAdapter:
        """Load (if a path), check against ``target`` and precompute merged weights.
        Raises AdapterError before anything changes if the adapter does not fit."""
        adapter = source if isinstance(source, LoraAdapter) else load_adapter(source, name=name, alpha=alpha)
        if target not in self._targets:
            raise AdapterError(f"adapter {safe_repr(name, 80)}: unknown target {safe_repr(target, 80)}", path=adapter.path,
                               hint=f"targets of this scene: {', '.join(sorted(self._targets)) or 'none'}")
        t = self._targets[target]
        unknown = sorted(set(adapter.layers) - set(t.modules))
        if unknown:
            raise AdapterError(f"adapter {safe_repr(name, 80)}: target {safe_repr(target, 80)} has no modules {unknown}", path=adapter.path,
                               hint=f"its modules: {sorted(t.modules)}")
        delta, merged = {}, {}
        for mod, (a, b) in adapter.layers.items():
            w = t.base[mod]
            out_f, in_f = w.shape
            if a.shape[1] != in_f or b.shape[0] != out_f:
                raise AdapterError(f"adapter {safe_repr(name, 80)}: {mod} is [{out_f}, {in_f}], the adapter's B @ A is "
                                   f"[{b.shape[0]}, {a.shape[1]}]", path=adapter.path,
                                   hint="the adapter was trained for another field config")
            d = adapter.delta(mod).to(dtype=w.dtype, device=w.device)
            if not torch.isfinite(d).all():
                raise AdapterError(f"adapter {safe_repr(name, 80)}: {mod} overflows (NaN/Inf after B @ A * scale)", path=adapter.path)
            delta[mod] = d
        for mod, w in t.base.items():
            # Modules the adapter leaves alone still get a merged buffer (= base), so a commit is one copy_ per module.
            merged[mod] = w + delta[mod] if mod in delta else w.clone()
            delta.setdefault(mod, torch.zeros_like(w))
        with self._lock:
            if name in self._adapters and self._adapters[name].target != target:
                raise AdapterError(f"adapter name {safe_repr(name, 80)} is already used for target {self._adapters[name].target!r}")
            self._adapters[name] = _Loaded(adapter, target, delta, merged)
        return adapter

    def add_listener(self, fn: Callable[[Any, str, str, str], None]) -> None:
        """``fn(ctx, target, old_version, new_version)`` after a swap lands."""
        self._listeners.append(fn)

    # ---- requests (any thread)
    def validate_request(self, target: str, mix: dict[str, float]) -> None:
        if target not in self._targets:
            raise AdapterError(f"unknown adapter target {safe_repr(target, 80)}", hint=f"targets: {', '.join(sorted(self._targets)) or 'none'}")
        for n, w in mix.items():
            loaded = self._adapters.get(n)
            if loaded is None:
                raise AdapterError(f"adapter {safe_repr(n, 80)} is not loaded", hint=f"loaded: {', '.join(self.names().get(target, [])) or 'none'}")
            if loaded.target != target:
                raise AdapterError(f"adapter {safe_repr(n, 80)} belongs to target {safe_repr(loaded.target, 80)}, not {safe_repr(target, 80)}")
            if not (isinstance(w, (int, float)) and w == w and abs(w) <= 16.0):
                raise AdapterError(f"adapter {safe_repr(n, 80)}: blend weight must be a finite number in [-16, 16], got {safe_repr(w, 80)}")

    def request(self, target: str, mix: dict[str, float] | str | None, *, fade_s: float = 0.0) -> None:
        """Ask for ``mix`` on ``target`` from the next frame boundary (thread-safe; the
        latest request per target wins)."""
        mix = {mix: 1.0} if isinstance(mix, str) else {k: float(v) for k, v in (mix or {}).items() if v != 0}
        self.validate_request(target, mix)
        if not (fade_s >= 0 and fade_s == fade_s):
            raise AdapterError(f"fade_s must be >= 0, got {fade_s}")
        with self._lock:
            if target in self._pending:
                self.coalesced += 1
            self._pending[target] = (mix, float(fade_s))

    # ---- the frame boundary (loop thread only)
    @torch.no_grad()
    def commit_pending(self, ctx=None) -> None:
        """Land requested swaps and advance cross-fades. Called by the frame loop between frames."""
        with self._lock:
            pending, self._pending = self._pending, {}
        now = getattr(ctx, "time", 0.0)
        for name, (mix, fade_s) in pending.items():
            t = self._targets[name]
            old = t.version
            if fade_s > 0 and mix != t.mix:
                t.fade = (dict(t.mix), mix, None, fade_s)
            else:
                t.fade = None
                self._write(t, mix)
            if t.fade is None:
                self._notify(ctx, name, old, t.version)
        for name, t in self._targets.items():
            if t.fade is None:
                continue
            src, dst, t0, dur = t.fade
            if t0 is None:
                t0 = now
                t.fade = (src, dst, t0, dur)
            a = min(1.0, max(0.0, (now - t0) / dur))
            old = t.version
            if a >= 1.0:
                t.fade = None
                self._write(t, dst)
                self._notify(ctx, name, old, t.version)
            else:
                eff = {k: (1 - a) * src.get(k, 0.0) + a * dst.get(k, 0.0) for k in set(src) | set(dst)}
                self._write(t, {k: w for k, w in eff.items() if w != 0.0})

    def _write(self, t: _Target, mix: dict[str, float]) -> None:
        one = _is_one(mix)
        if one is not None:
            merged = self._adapters[one].merged
            for m, lin in t.modules.items():
                lin.weight.copy_(merged[m])
        elif not mix:
            for m, lin in t.modules.items():
                lin.weight.copy_(t.base[m])
        else:
            for m, lin in t.modules.items():
                s = t.staging[m]
                s.copy_(t.base[m])
                for n, w in mix.items():
                    s.add_(self._adapters[n].delta[m], alpha=w)
                lin.weight.copy_(s)
        t.mix = dict(mix)
        t.version = self._version(mix)
        self.commits += 1

    def _version(self, mix: dict[str, float]) -> str:
        one = _is_one(mix)
        if one is not None:
            return f"{one}@{self._adapters[one].adapter.version}"
        return "+".join(f"{n}@{self._adapters[n].adapter.version}*{w:.4g}" for n, w in sorted(mix.items()))

    def _notify(self, ctx, target: str, old: str, new: str) -> None:
        if old == new:
            return
        for fn in self._listeners:
            fn(ctx, target, old, new)

    # ---- state
    def active_versions(self) -> dict[str, str]:
        """target -> version of what is applied now ("" = base weights; "name@sha256" or a weighted blend)."""
        return {name: t.version for name, t in self._targets.items()}

    def names(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {t: [] for t in self._targets}
        for n, ld in self._adapters.items():
            out[ld.target].append(n)
        return {k: sorted(v) for k, v in out.items()}

    def fading(self, target: str) -> bool:
        return self._targets[target].fade is not None


def build_adapters(scene) -> AdapterManager | None:
    """The scene's ``[adapters]`` section -> a manager with every adapter preloaded (None if absent).

    ::

        [adapters]
        initial = { "nerf.color" = "warm" }   # optional: applied at the first frame
        [adapters.warm]
        file = "adapters/warm.safetensors"   # relative to the bundle
        target = "nerf.color"
        alpha = 8.0                           # optional (peft files keep alpha elsewhere)
    """
    from latentscape.errors import ConfigError
    from latentscape.config import check_keys
    from latentscape.lora.targets import resolve_target

    sec = scene.config.get("adapters")
    if not sec:
        return None
    toml = scene.path / "scene.toml"
    if not isinstance(sec, dict):
        raise ConfigError("[adapters] must be a table", path=toml)
    mgr = AdapterManager()
    entries = {k: v for k, v in sec.items() if isinstance(v, dict) and k != "initial"}
    for name, e in entries.items():
        check_keys(e, ("file", "target", "alpha"), where=f"[adapters.{name}]", path=toml)
        if "file" not in e or "target" not in e:
            raise ConfigError(f"[adapters.{name}] needs `file` and `target` (and optionally `alpha`)", path=toml)
        target = e["target"]
        if target not in mgr._targets:
            mgr.add_target(target, resolve_target(target, scene))
        from latentscape.config import resolve_in_bundle

        alpha = e.get("alpha")
        if alpha is not None:
            from latentscape.config import check_number

            alpha = check_number(alpha, name="alpha", low=0.0, high=1e6, where=f"[adapters.{name}]", path=toml)
        mgr.preload(name, resolve_in_bundle(scene.path, e["file"], f"[adapters.{name}] file", toml=toml), target,
                    alpha=alpha)
    for target, name in (sec.get("initial") or {}).items():
        mgr.request(target, name)
    return mgr
