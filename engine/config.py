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
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable, Mapping, TypeVar

import math

from latentscape.errors import ConfigError, safe_repr

T = TypeVar("T")

__all__ = ["check_keys", "check_number", "check_table", "check_vector", "config_from_dict", "hashed_in_lock",
           "resolve_in_bundle", "with_defaults"]


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
    unknown = sorted(safe_repr(k, 60) for k in set(data) - known)[:20]
    if unknown:
        text = f"known keys: {', '.join(sorted(known)) or 'none'}"
        raise ConfigError(f"unknown keys in {where}: [{', '.join(unknown)}]", path=path, hint=f"{text}; {hint}" if hint else text)


def config_from_dict(cls: type[T], data: Any, *, where: str, path: str | Path | None = None) -> T:
    """Build the dataclass ``cls`` from a parsed table: unknown keys and arguments the
    dataclass refuses (a missing field, ``ValueError`` from ``__post_init__``) are a
    ConfigError naming ``where`` and ``path``. Validation beyond that is the caller's."""
    check_table(data, where=where, path=path)
    check_keys(data, (f.name for f in dataclasses.fields(cls)), where=where, path=path)
    try:
        return cls(**data)
    except (TypeError, ValueError, OverflowError) as err:
        raise ConfigError(f"invalid {where}: {safe_repr(str(err), 300)[1:-1]}", path=path) from None


def with_defaults(settings: Any, defaults: Mapping[str, Any], *, where: str,
                  path: str | Path | None = None) -> dict[str, Any]:
    """``{**defaults, **settings}`` after checking that ``settings`` is a table whose
    keys are all in ``defaults`` (plugin settings, option tables)."""
    check_table(settings, where=where, path=path)
    check_keys(settings, defaults, where=where, path=path)
    return {**defaults, **settings}


def _range_text(low, high, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return "finite"


def check_number(value: Any, *, name: str, kind: type = float, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, where: str = "", path: str | Path | None = None,
                 hint: str | None = None) -> Any:
    """``value`` as ``kind`` (int or float) if it is a finite number in range, else a ConfigError.

    ``name`` names the key or flag (``"fps"``, ``"--downscale"``), ``where`` the table.
    Booleans and strings are refused (TOML ``fps = "24"`` is a mistake, not 24); a
    float is refused where ``kind`` is int; NaN and infinities are always refused.
    ``low_open``/``high_open`` make a bound exclusive (a fov in (0, 180))."""
    label = f"{where} {name}".strip()
    want = "an integer" if kind is int else "a number"
    rng = _range_text(low, high, low_open, high_open)
    ok_types = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        try:  # numpy scalars from a pickle or a sidecar
            import numpy as np
            if isinstance(value, np.generic) and not isinstance(value, np.bool_):
                return check_number(value.item(), name=name, kind=kind, low=low, high=high, low_open=low_open,
                                    high_open=high_open, where=where, path=path, hint=hint)
        except ImportError:  # pragma: no cover
            pass
        raise ConfigError(f"{label} must be {want} {rng}, got {safe_repr(value, 60)} ({type(value).__name__})",
                          path=path, hint=hint)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{label} must be {want} {rng}, got {value}", path=path, hint=hint)
    bad = (low is not None and (value <= low if low_open else value < low)) or \
          (high is not None and (value >= high if high_open else value > high))
    if bad:
        raise ConfigError(f"{label} must be {want} {rng}, got {safe_repr(value, 60)}", path=path, hint=hint)
    return kind(value)


def check_vector(value: Any, *, name: str, length: int, low: float | None = None, high: float | None = None,
                 where: str = "", path: str | Path | None = None, hint: str | None = None) -> list[float]:
    """``value`` as a list of ``length`` finite floats (each in [low, high] when given)."""
    label = f"{where} {name}".strip()
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise ConfigError(f"{label} must be a list of {length} numbers, got {safe_repr(value, 80)}", path=path, hint=hint)
    return [check_number(v, name=f"{name}[{i}]", low=low, high=high, where=where, path=path, hint=hint)
            for i, v in enumerate(value)]


def hashed_in_lock(parts: tuple[str, ...]) -> bool:
    """Whether a bundle-relative path is one the lock covers."""
    return bool(parts) and not any(p.startswith(".") or p in ("__pycache__",) for p in parts) and parts[-1] != "__init__.py"


def resolve_in_bundle(root: str | Path, rel: object, key: str, *, kind: str = "file",
                      toml: str | Path | None = None, error: type | None = None) -> Path:
    """The file or folder ``rel`` names inside the bundle ``root``, or ``error`` naming ``key``.

    ``kind``: ``"file"`` (must be a regular file), ``"dir"`` (a folder), ``"output"`` (a file
    the scene writes: its folder must exist in the bundle; it may not exist yet, and if it
    does it must be a regular file). The path must be a relative string; after resolving
    symlinks it must lie strictly inside the bundle, in a place ``scene.lock`` hashes (no
    hidden or ``__pycache__`` parts). Returns the resolved path."""
    if error is None:
        from latentscape.errors import SceneError as error
    root = Path(root)
    where = toml if toml is not None else root / "scene.toml"
    fix = "give a path relative to the scene folder, to a file inside it (copy the file in), so scene.lock hashes it"
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise error(f"{key} must be a path string relative to the bundle, got {safe_repr(rel, 80)}", path=where, hint=fix)
    if PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute() or PureWindowsPath(rel).drive:
        raise error(f"{key} {safe_repr(rel, 120)} is an absolute path; it must be inside the scene bundle",
                    path=where, hint=fix)
    base = root.resolve()
    try:
        full = (base / rel).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a name the OS refuses
        raise error(f"{key} {safe_repr(rel, 120)} cannot be resolved", path=where, hint=fix) from None
    if base not in full.parents:
        raise error(f"{key} {safe_repr(rel, 120)} is outside the scene bundle (after resolving links: "
                    f"{safe_repr(str(full), 120)[1:-1]})", path=where, hint=fix)
    parts = full.relative_to(base).parts
    if kind == "output":
        if not full.parent.is_dir():
            raise error(f"{key} {safe_repr(rel, 120)}: its folder does not exist in the bundle", path=where, hint=fix)
        if (base / rel).is_symlink() or (full.exists() and not full.is_file()):
            raise error(f"{key} {safe_repr(rel, 120)} exists and is not a plain file", path=where,
                        hint="name a new file (or an existing log) inside the bundle")
        if any(p.startswith(".") for p in parts) or full.name == "scene.lock" or full.name == "scene.toml":
            raise error(f"{key} {safe_repr(rel, 120)} would overwrite a bundle file", path=where,
                        hint="name a new file inside the bundle, e.g. audit.jsonl")
        return full
    if not hashed_in_lock(parts):
        raise error(f"{key} {safe_repr(rel, 120)} is in a place scene.lock does not hash (hidden or cache folder)",
                    path=where, hint="move the file out of hidden folders")
    if kind == "file" and not full.is_file():
        what = "a folder" if full.is_dir() else "missing"
        raise error(f"{key} {safe_repr(rel, 120)} is {what}; it must be a file in the bundle", path=where,
                    hint="restore the file or fix the path in scene.toml")
    if kind == "dir" and not full.is_dir():
        raise error(f"{key} {safe_repr(rel, 120)} is not a folder in the bundle", path=where,
                    hint="restore the folder or fix the path in scene.toml")
    return full
