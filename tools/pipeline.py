"""Builds the optional parts of a scene's frame loop (layers, stylizer, plugins) from
its ``scene.toml``. Each part's section is read by its own component; a scene without
the section simply has no such part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from latentscape.scene.bundle import Scene


def build_loop_parts(scene: Scene, *, stylize: bool = True, audit_log: str | Path | None = None,
                     stylizer: str | Path | None = None) -> dict[str, Any]:
    """Keyword arguments for :class:`latentscape.frame.FrameLoop`.

    ``hooks``: a :class:`latentscape.plugins_host.PluginHost` for ``[guardrails]`` and
    ``[[plugins]]`` (always present: with no plugins it passes frames through; call its
    ``close()`` when done); ``adapters``: the ``[adapters]`` manager, if the scene has
    adapters. ``audit_log`` overrides ``[guardrails] audit_log``. ``stages``/``layers``:
    ``[generators]`` and ``[[layers]]``. ``stylizer``: ``[stylizer]`` unless ``stylize``
    is False; the ``stylizer`` argument (a student or diffusers folder) overrides it.
    """
    from latentscape.tools.pipeline_layers import build_layers

    parts: dict[str, Any] = {}
    parts.update(_plugin_parts(scene, audit_log=audit_log))
    try:
        parts.update({k: parts.get(k, []) + v for k, v in build_layers(scene, hooks=parts.get("hooks")).items()})
        if stylize:
            styl = _stylizer(scene, stylizer)
            if styl is not None:
                parts["stylizer"] = styl
    except BaseException:
        parts["hooks"].close()  # no plugin threads or servers outlive a scene that failed to build
        raise
    return parts


def _stylizer(scene: Scene, override: str | Path | None):
    """``[stylizer] path = "stylizer"`` (inside the bundle) plus diffusion options."""
    from latentscape.errors import SceneError
    from latentscape.stylize import load_stylizer

    if override is not None:
        return load_stylizer(override, device=scene.device)
    sec = scene.config.get("stylizer")
    if not sec:
        return None
    if not isinstance(sec, dict) or not isinstance(sec.get("path"), str):
        raise SceneError("[stylizer] needs path = \"<folder inside the bundle>\"", path=scene.path / "scene.toml")
    if not sec.get("enabled", True):
        return None
    target = (scene.path / sec["path"]).resolve()
    if scene.path.resolve() not in target.parents:
        raise SceneError(f"[stylizer] path {sec['path']!r} leaves the bundle", path=scene.path / "scene.toml",
                         hint="keep the stylizer inside the scene folder so scene.lock covers it")
    mix = sec.get("mix", 1.0)
    if isinstance(mix, bool) or not isinstance(mix, (int, float)) or not 0.0 <= mix <= 1.0:
        raise SceneError(f"[stylizer] mix must be a number in [0, 1], got {mix!r}", path=scene.path / "scene.toml")
    options = {k: v for k, v in sec.items() if k not in ("path", "enabled", "mix")}
    styl = load_stylizer(target, device=scene.device, **options)
    return styl if mix == 1.0 else _Mixed(styl, float(mix))


class _Mixed:
    """``(1 - mix) * frame + mix * stylizer(frame)``: keeps the scene legible under a strong style."""

    def __init__(self, stylizer, mix: float):
        self.stylizer, self.mix = stylizer, mix
        self.name = f"{getattr(stylizer, 'name', 'stylizer')}*{mix:g}"
        self.version = getattr(stylizer, "version", "")

    def __call__(self, frame):
        return torch.lerp(frame, self.stylizer(frame), self.mix)


def _plugin_parts(scene: Scene, *, audit_log: str | Path | None = None) -> dict[str, Any]:
    from latentscape.lora.manager import build_adapters
    from latentscape.plugins_host import PluginHost

    adapters = build_adapters(scene)
    hooks = PluginHost.from_scene(scene, adapters=adapters, audit_log=audit_log)
    out: dict[str, Any] = {"hooks": hooks}
    if adapters is not None:
        out["adapters"] = adapters
    return out
