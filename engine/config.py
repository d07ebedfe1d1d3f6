"""One validator for configs read from TOML or JSON (scene.toml sections, weight
sidecars, plugin settings).

Every config table is checked the same way: a key the reader does not know is a
:class:`latentscape.errors.ConfigError` whose message names the file, the table and
the key, and whose hint lists the known keys (a typo such as
``log2_hashmap_szie`` never passes silently)::

    cfg = config_from_dict(FieldConfig, data, where="[field.config]", path=toml)
    opts = with_defaults(settings, DEFAULTS, where="flash guard settings")

This module sits beside :mod:`latentscape.errors` below every layer: kernels,
components, the runtime and plugins all use it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

from latentscape.errors import ConfigError

T = TypeVar("T")

__all__ = ["check_keys", "check_table", "config_from_dict", "with_defaults"]


def check_table(data: Any, *, where: str, path: str | Path | None = None) -> Mapping[str, Any]:
    """``data`` if it is a table (a mapping), else a ConfigError naming ``where``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table, got {type(data).__name__}", path=path)
    return data


def check_keys(data: Mapping[str, Any], known: Iterable[str], *, where: str, path: str | Path | None = None,
               hint: str | None = None) -> None:
    """Raise a ConfigError if ``data`` has keys outside ``known``.

    ``where`` names the table (``"[[layers]] #0 (screen)"``, ``"schedule settings"``),
    ``path`` the file it came from; ``hint`` adds to the list of known keys."""
    known = set(known)
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        text = f"known keys: {', '.join(sorted(known)) or 'none'}"
        raise ConfigError(f"unknown keys in {where}: {unknown}", path=path, hint=f"{text}; {hint}" if hint else text)


def config_from_dict(cls: type[T], data: Any, *, where: str, path: str | Path | None = None) -> T:
    """Build the dataclass ``cls`` from a parsed table: unknown keys and arguments the
    dataclass refuses (a missing field, ``ValueError`` from ``__post_init__``) are a
    ConfigError naming ``where`` and ``path``. Validation beyond that is the caller's."""
    check_table(data, where=where, path=path)
    check_keys(data, (f.name for f in dataclasses.fields(cls)), where=where, path=path)
    try:
        return cls(**data)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"invalid {where}: {err}", path=path) from None


def with_defaults(settings: Any, defaults: Mapping[str, Any], *, where: str,
                  path: str | Path | None = None) -> dict[str, Any]:
    """``{**defaults, **settings}`` after checking that ``settings`` is a table whose
    keys are all in ``defaults`` (plugin settings, option tables)."""
    check_table(settings, where=where, path=path)
    check_keys(settings, defaults, where=where, path=path)
    return {**defaults, **settings}
