"""Where adapters can go: a registry of targets, each a set of named ``nn.Linear``s.

A target is resolved from a loaded scene to ``{module name: nn.Linear}``; adapter
keys name these modules. Components declare what is LoRA-loadable here (as
diffusers declares ``_lora_loadable_modules``): the NeRF colour MLP now, the
generator and the stylizer when they register.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from latentscape.errors import AdapterError, safe_repr

TargetResolver = Callable[[Any], dict[str, nn.Linear]]
_REGISTRY: dict[str, TargetResolver] = {}


def register_target(name: str, resolver: TargetResolver) -> None:
    """Declare a target: ``resolver(scene) -> {module name: nn.Linear}``."""
    _REGISTRY[name] = resolver


def target_names() -> list[str]:
    return sorted(_REGISTRY)


def resolve_target(name: str, scene: Any) -> dict[str, nn.Linear]:
    if name not in _REGISTRY:
        raise AdapterError(f"unknown adapter target {safe_repr(name, 80)}", hint=f"known targets: {', '.join(target_names())}")
    return _REGISTRY[name](scene)


def linear_modules(module: nn.Module, prefix: str = "") -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` inside ``module``, named as in its state_dict (``prefix.`` + path)."""
    out = {}
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            out[f"{prefix}.{name}" if prefix and name else (prefix or name)] = m
    return out


# The NeRF colour MLP: modules "color_mlp.0", "color_mlp.2", ... (NerfField state_dict names).
register_target("nerf.color", lambda scene: linear_modules(getattr(scene, "field", scene).color_mlp, "color_mlp"))
