"""Builds the optional parts of a scene's frame loop (layers, stylizer, plugins) from
its ``scene.toml``. Each part's section is read by its own component; a scene without
the section simply has no such part."""

from __future__ import annotations

from typing import Any

from latentscape.scene.bundle import Scene


def build_loop_parts(scene: Scene, *, stylize: bool = True) -> dict[str, Any]:
    """Keyword arguments for :class:`latentscape.frame.FrameLoop`."""
    return {}
