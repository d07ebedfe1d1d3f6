"""Builds the optional parts of a scene's frame loop (layers, stylizer, plugins) from
its ``scene.toml``. Each part's section is read by its own component; a scene without
the section simply has no such part."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentscape.scene.bundle import Scene


def build_loop_parts(scene: Scene, *, stylize: bool = True, audit_log: str | Path | None = None) -> dict[str, Any]:
    """Keyword arguments for :class:`latentscape.frame.FrameLoop`.

    ``hooks``: a :class:`latentscape.plugins_host.PluginHost` for ``[guardrails]`` and
    ``[[plugins]]`` (always present: with no plugins it passes frames through; call its
    ``close()`` when done); ``adapters``: the ``[adapters]`` manager, if the scene has
    adapters. ``audit_log`` overrides ``[guardrails] audit_log``.
    """
    parts: dict[str, Any] = {}
    parts.update(_plugin_parts(scene, audit_log=audit_log))
    return parts


def _plugin_parts(scene: Scene, *, audit_log: str | Path | None = None) -> dict[str, Any]:
    from latentscape.lora.manager import build_adapters
    from latentscape.plugins_host import PluginHost

    adapters = build_adapters(scene)
    hooks = PluginHost.from_scene(scene, adapters=adapters, audit_log=audit_log)
    out: dict[str, Any] = {"hooks": hooks}
    if adapters is not None:
        out["adapters"] = adapters
    return out
