"""Plugin configuration: ``[guardrails]`` (:class:`HostConfig`) and ``[[plugins]]``
entries (:class:`PluginSpec`), parsed from a scene.toml with the shared validator."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latentscape.config import check_keys, config_from_dict
from latentscape.errors import ConfigError

ISOLATIONS = ("inline", "thread", "subprocess")


@dataclass
class PluginSpec:
    """One ``[[plugins]]`` entry (or a plugin object handed over directly, ``obj``)."""

    name: str
    """Unique name; the audit log and error messages use it."""
    module: str | None = None
    """Import path, "pkg.mod" or "pkg.mod:Object"; None: the entry point called ``name``."""
    settings: dict = field(default_factory=dict)
    """Handed to ``latentscape_configure``."""
    isolation: str = "thread"
    """"inline", "thread" or "subprocess"."""
    budget_ms: float | None = None
    """Time budget per hook call (None: the host's default)."""
    on_quarantine: str = "slate"
    """What a quarantined guardrail means: "slate" (every frame) or "skip"."""
    enabled: bool = True
    """False: the entry is ignored."""
    obj: Any = None
    """A plugin object (tests, the harness); ``module`` is then ignored. Not for subprocess mode."""


@dataclass
class HostConfig:
    """The ``[guardrails]`` section."""

    slate: Any = "#000000"
    """Colour ("#rrggbb" or [r, g, b] floats in 0..1) or an image file (relative to the bundle)."""
    audit_log: str | None = None
    """JSON-lines file for guardrail decisions (relative to the bundle); None: no audit log."""
    budget_ms: float = 250.0
    """Default time budget of one hook call."""
    quarantine_after: int = 5
    """Consecutive failed calls *of one hook* before a plugin is quarantined (a working
    hook does not reset another hook's count; a stall counts once, see ``stall_limit_s``)."""
    stall_limit_s: float = 10.0
    """A thread-isolated call that overran counts as one failure while it keeps running
    (the plugin is ``busy``); still running after this many seconds, the plugin is quarantined."""
    probation_after_s: float = 30.0
    """Cool-down before a quarantined plugin is tried again (0: never; it stays out until the
    scene is reloaded)."""
    probation_every_s: float = 5.0
    """During probation, one probe call (one frame for a guardrail) every this many seconds."""
    recover_after: int = 3
    """Consecutive probes answered correctly that bring a quarantined plugin back."""
    slate_hold_s: float = 1.0
    """Once shown, the slate stays at least this long (frame time), so that fail-closed
    decisions flipping frame to frame cannot themselves flash (BT.1702: <= 3 flashes/s)."""
    autoload_entry_points: bool = False
    """Also load every installed entry point of the ``latentscape`` group."""
    subprocess_start_s: float = 30.0
    """How long a subprocess worker may take to start and configure its plugin."""


_PLUGIN_KEYS = {"name", "module", "settings", "isolation", "budget_ms", "on_quarantine", "enabled"}


def parse_plugin_config(config: dict, *, path: Path | str | None = None) -> tuple[HostConfig, list[PluginSpec]]:
    """``[guardrails]`` and ``[[plugins]]`` of a parsed scene.toml -> host config and plugin specs."""
    hc = config_from_dict(HostConfig, config.get("guardrails", {}), where="[guardrails]", path=path)
    if not (isinstance(hc.quarantine_after, int) and hc.quarantine_after >= 1):
        raise ConfigError("[guardrails] quarantine_after must be an integer >= 1", path=path)
    if not hc.budget_ms > 0:
        raise ConfigError("[guardrails] budget_ms must be positive", path=path)
    if not (isinstance(hc.recover_after, int) and hc.recover_after >= 1):
        raise ConfigError("[guardrails] recover_after must be an integer >= 1", path=path)
    for key in ("stall_limit_s", "probation_after_s", "probation_every_s"):
        value = getattr(hc, key)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")):
            raise ConfigError(f"[guardrails] {key} must be a number of seconds >= 0, got {value!r}", path=path)
    if not hc.probation_every_s > 0:
        raise ConfigError("[guardrails] probation_every_s must be positive", path=path)
    entries = config.get("plugins", [])
    if isinstance(entries, dict):  # a single [plugins] table instead of [[plugins]]
        entries = [entries]
    if not isinstance(entries, list):
        raise ConfigError("[[plugins]] must be an array of tables", path=path,
                          hint='write each plugin as [[plugins]] name = "..." module = "..."')
    specs: list[PluginSpec] = []
    seen: set[str] = set()
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or "name" not in e:
            raise ConfigError(f"[[plugins]] entry {i} needs a name", path=path)
        check_keys(e, _PLUGIN_KEYS, where=f"[[plugins]] {e['name']!r}", path=path,
                   hint="plugin options go in [plugins.settings]")
        spec = PluginSpec(name=str(e["name"]), module=e.get("module"), settings=dict(e.get("settings", {})),
                          isolation=e.get("isolation", "thread"), budget_ms=e.get("budget_ms"),
                          on_quarantine=e.get("on_quarantine", "slate"), enabled=bool(e.get("enabled", True)))
        _check_spec(spec, path)
        if spec.name in seen:
            raise ConfigError(f"two plugins are called {spec.name!r}", path=path, hint="plugin names must be unique")
        seen.add(spec.name)
        specs.append(spec)
    return hc, specs


def _check_spec(spec: PluginSpec, path=None) -> None:
    if spec.isolation not in ISOLATIONS:
        raise ConfigError(f"plugin {spec.name!r}: isolation must be one of {ISOLATIONS}, got {spec.isolation!r}", path=path)
    if spec.on_quarantine not in ("slate", "skip"):
        raise ConfigError(f"plugin {spec.name!r}: on_quarantine must be 'slate' or 'skip'", path=path)
    if spec.budget_ms is not None and not spec.budget_ms > 0:
        raise ConfigError(f"plugin {spec.name!r}: budget_ms must be positive", path=path)
    if spec.obj is not None and spec.isolation == "subprocess":
        raise ConfigError(f"plugin {spec.name!r}: a plugin object cannot run in subprocess mode (give its module)", path=path)
