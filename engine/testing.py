"""Test harness for plugin authors: run a plugin against a scene headless and look at
what it did (frames shown, guardrail verdicts, adapter swaps).

    from latentscape.testing import PluginHarness

    def test_my_guard(tmp_path):
        with PluginHarness(plugins=[("my_guard", MyGuard())], settings={"my_guard": {"level": 3}}) as h:
            run = h.run(frames=12)                     # a tiny generated scene, 8x8 orbit
            assert run.slated == []                    # no frame replaced by the slate
            assert run.verdicts_of("my_guard") == ["pass"] * 12

    run = h.feed([rgb0, rgb1, ...], fps=30)            # or: your own frames, no rendering

``scene`` may be a bundle folder, a loaded Scene, or None (a tiny random scene is
written to a temporary folder: :func:`make_tiny_scene`). Plugins are objects, ``(name,
object)`` pairs, :class:`PluginSpec` s, or names of installed entry points.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from latentscape.clock import Clock
from latentscape.plugin_host import PluginHost, PluginSpec


def make_tiny_scene(out: str | Path, *, size: int = 8, frames: int = 24, seed: int = 0, extra_config: dict | None = None,
                    extra_files: dict[str, bytes] | None = None, adapters: Iterable[str] = (), overwrite: bool = True) -> Path:
    """Write a tiny random scene bundle (renders an 8x8 frame in milliseconds on a CPU).

    The field is untrained: random hash-grid features give a coloured cloud whose
    look depends on every colour-MLP weight, which is what plugin and adapter tests need.
    ``adapters``: names of random rank-2 LoRA adapters to ship for target ``nerf.color``
    (``adapters/<name>.safetensors``, declared in ``[adapters]``).
    """
    from latentscape.field.nerf import FieldConfig, NerfField
    from latentscape.render.camera_path import orbit_path
    from latentscape.render.occupancy import OccupancyGrid
    from latentscape.render.renderer import RenderConfig
    from latentscape.scene.bundle import SceneDraft, save_trained_scene

    g = torch.Generator().manual_seed(seed)
    cfg = FieldConfig(n_levels=2, n_features_per_level=2, log2_hashmap_size=8, base_resolution=4, finest_resolution=8,
                      density_hidden=16, density_layers=1, geo_features=3, color_hidden=16, color_layers=1, sh_degree=2)
    fld = NerfField(cfg)
    with torch.no_grad():
        fld.grid.copy_(torch.rand(fld.grid.shape, generator=g) * 2 - 1)
        for p in fld.parameters():
            if p is not fld.grid:
                p.copy_((torch.rand(p.shape, generator=g) * 2 - 1) / p.shape[-1] ** 0.5 * 2)
    grid = OccupancyGrid(cfg.aabb, resolution=8)
    extra_files = dict(extra_files or {})
    extra_config = dict(extra_config or {})
    adapters = list(adapters)
    if adapters:
        from safetensors.torch import save

        from latentscape.lora.format import FORMAT
        from latentscape.lora.targets import linear_modules

        sec = extra_config.setdefault("adapters", {})
        for k, name in enumerate(adapters):
            tensors = {}
            for mod, lin in linear_modules(fld.color_mlp, "color_mlp").items():
                out_f, in_f = lin.weight.shape
                tensors[f"{mod}.lora_A"] = torch.randn(2, in_f, generator=g)
                tensors[f"{mod}.lora_B"] = torch.randn(out_f, 2, generator=g)
            extra_files[f"adapters/{name}.safetensors"] = save(tensors, metadata={"format": FORMAT, "rank": "2", "alpha": "2.0"})
            sec[name] = {"file": f"adapters/{name}.safetensors", "target": "nerf.color"}
    path = orbit_path(frames, size, size, radius=3.0, fps=24.0)
    draft = SceneDraft(name="tiny", field=fld, grid=grid, render_config=RenderConfig(steps_per_diagonal=24, segment=8),
                       center=torch.zeros(3), scale=1.0, width=size, height=size, fps=24.0, background=(0.0, 0.0, 0.0),
                       camera_paths={"orbit": path}, extra_files=extra_files, extra_config=extra_config,
                       half_precision_grid=False)
    return save_trained_scene(draft, out, overwrite=overwrite)


@dataclass
class HarnessRun:
    """What happened over a run: per frame, what was shown and decided."""

    frames: list[np.ndarray]
    """The uint8 [H, W, 3] frames as the sinks got them."""
    contexts: list[Any]
    verdicts: list[dict]
    """Audit-log records (one per guardrail decision)."""
    swaps: list[tuple[int, str, str, str]]
    """(frame index, target, old version, new version) for every swap that landed."""

    @property
    def slated(self) -> list[int]:
        """Indices of frames replaced by the slate."""
        return [c.index for c in self.contexts if "latentscape.slate" in c.extras]

    @property
    def versions(self) -> list[dict[str, str]]:
        """Active adapter versions per frame."""
        return [dict(c.adapters) for c in self.contexts]

    def verdicts_of(self, plugin: str) -> list[str]:
        return [v["verdict"] for v in self.verdicts if v.get("plugin") == plugin and "verdict" in v]


class PluginHarness:
    """Runs plugins in a real :class:`PluginHost` around a real frame loop, headless: a
    :class:`latentscape.session.Session` on the scene clock (``ctx.now`` starts at noon
    and follows scene time), with the plugins given here added to the scene's."""

    def __init__(self, scene: Any = None, plugins: Iterable[Any] = (), *, settings: dict[str, dict] | None = None,
                 scene_plugins: bool = True, isolation: str = "inline", budget_ms: float | None = None,
                 clock: Callable[[], float] | None = None, audit_log: str | Path | None = None,
                 scene_clock: Clock | None = None):
        from latentscape.session import Session

        self._tmp = tempfile.TemporaryDirectory(prefix="latentscape-harness-")
        tmp = Path(self._tmp.name)
        if scene is None:
            scene = make_tiny_scene(tmp / "scene")
        settings = settings or {}
        specs = [self._spec(p, settings, isolation, budget_ms) for p in plugins]
        self.audit_path = Path(audit_log) if audit_log is not None else tmp / "audit.jsonl"
        self.swaps: list[tuple[int, str, str, str]] = []
        try:
            self.session = Session.open(scene, plugins=specs, scene_plugins=scene_plugins, audit_log=self.audit_path,
                                        stylize=False, host_clock=clock, clock=scene_clock)
        except BaseException:
            self._tmp.cleanup()
            raise
        self.session.on_swap(lambda ctx, t, old, new: self.swaps.append((getattr(ctx, "index", -1), t, old, new)))
        self._audit_seen = 0

    @property
    def scene(self):
        return self.session.scene

    @property
    def host(self) -> PluginHost:
        return self.session.hooks

    @property
    def adapters(self):
        return self.session.adapters

    @property
    def loop(self):
        return self.session.loop

    @staticmethod
    def _spec(p: Any, settings: dict, isolation: str, budget_ms: float | None) -> PluginSpec:
        if isinstance(p, PluginSpec):
            return p
        if isinstance(p, str):
            return PluginSpec(p, settings=settings.get(p, {}), isolation=isolation, budget_ms=budget_ms)
        name, obj = p if isinstance(p, tuple) else (type(p).__name__, p)
        return PluginSpec(name, obj=obj, settings=settings.get(name, {}), isolation=isolation, budget_ms=budget_ms)

    def _new_verdicts(self) -> list[dict]:
        self.host.audit.flush()
        lines = self.audit_path.read_text().splitlines() if self.audit_path.exists() else []
        new = lines[self._audit_seen:]
        self._audit_seen = len(lines)
        return [json.loads(x) for x in new]

    def run(self, frames: int = 8, *, camera: str | None = None, width: int | None = None, height: int | None = None,
            before_frame: Callable[[int], None] | None = None) -> HarnessRun:
        """Render ``frames`` frames of the scene's camera path (or an orbit) through the plugins."""
        from latentscape.session import CameraSpec

        sc = self.scene
        spec = CameraSpec(name=camera, width=width, height=height) if (camera or sc.camera_paths) \
            else CameraSpec(orbit=frames, width=width, height=height)
        path = self.session.camera_path(spec)
        shown, ctxs = [], []
        start = len(self.swaps)
        for i in range(frames):
            if before_frame is not None:
                before_frame(i)
            fr = self.session.render(path.cameras[i % len(path.cameras)], index=i, t=i / path.fps)
            shown.append(fr.rgb)
            ctxs.append(fr.context)
        return HarnessRun(shown, ctxs, self._new_verdicts(), self.swaps[start:])

    def feed(self, frames: Iterable[np.ndarray], *, fps: float = 24.0, start: int = 0) -> HarnessRun:
        """Run the guardrails on given uint8 frames (no rendering): frame i has time (start + i) / fps."""
        shown, ctxs = [], []
        for i, rgb in enumerate(frames):
            idx = start + i
            out, ctx = self.session.feed(rgb, index=idx, t=idx / fps)
            shown.append(out)
            ctxs.append(ctx)
        return HarnessRun(shown, ctxs, self._new_verdicts(), [])

    def close(self) -> None:
        self.session.close()
        self._tmp.cleanup()

    def __enter__(self) -> "PluginHarness":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
