"""Finding plugin objects: import paths, the ``latentscape`` entry-point group, and the
hook implementations a registered plugin provides."""

from __future__ import annotations

import importlib
import importlib.metadata
from typing import Any, Callable

from latentscape.errors import PluginError
from latentscape.hooks import HOOK_NAMES

ENTRY_POINT_GROUP = "latentscape"


def resolve_plugin_object(ref: str, *, name: str = "?") -> Any:
    """Import "pkg.mod" or "pkg.mod:Object" and return the plugin object (classes are instantiated)."""
    mod_name, _, attr = ref.partition(":")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as err:
        raise PluginError(f"plugin {name!r}: cannot import {mod_name!r}: {err}",
                          hint="install the plugin's package (and its extras) or fix `module`") from None
    except Exception as err:  # noqa: BLE001 - a plugin's import is foreign code
        raise PluginError(f"plugin {name!r}: importing {mod_name!r} raised {type(err).__name__}: {err}") from None
    obj: Any = mod
    if attr:
        try:
            for part in attr.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"plugin {name!r}: {mod_name!r} has no {attr!r}") from None
    elif hasattr(mod, "latentscape_plugin"):
        obj = mod.latentscape_plugin
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as err:  # noqa: BLE001
            raise PluginError(f"plugin {name!r}: {ref} could not be created: {type(err).__name__}: {err}") from None
    return obj


def entry_point_refs() -> dict[str, str]:
    """Installed plugins: entry-point name -> "module:attr" (group ``latentscape``)."""
    return {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def impls_of(pm, name: str) -> tuple[dict[str, Callable], dict[str, tuple[str, ...]]]:
    impls, argnames = {}, {}
    plugin = pm.get_plugin(name)
    for hook in HOOK_NAMES:
        for impl in getattr(pm.hook, hook).get_hookimpls():
            if impl.plugin is plugin:
                impls[hook] = impl.function
                argnames[hook] = tuple(impl.argnames)
    return impls, argnames
