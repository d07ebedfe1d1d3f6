"""The plugin host (a package): loads plugins, calls their hooks in isolation, and never lets a
frame through unchecked.

What the scene says (``scene.toml``)::

    [guardrails]
    slate = "#000000"            # colour ("#rrggbb" or [r, g, b] in 0..1) or an image file in the bundle
    audit_log = "audit.jsonl"    # JSON lines, one per guardrail decision (relative: to the bundle)
    budget_ms = 250.0            # default time budget of one hook call
    quarantine_after = 5         # consecutive failures of one hook before a plugin is quarantined
    stall_limit_s = 10.0         # a thread-isolated call still running this long quarantines
    probation_after_s = 30.0     # then, after this cool-down (0: never), one probe call ...
    probation_every_s = 5.0      # ... every this many seconds; recover_after good probes
    recover_after = 3            # in a row bring the plugin back
    slate_hold_s = 1.0           # once the slate is up, keep it at least this long (frame time)
    autoload_entry_points = false  # also load every installed `latentscape` entry point

    [[plugins]]
    name = "flash_guard"                       # unique; also the entry-point name when `module` is absent
    module = "latentscape.plugins.flash"       # "pkg.mod" or "pkg.mod:Object"
    isolation = "thread"                       # "thread" (default), "inline" or "subprocess"
    budget_ms = 50.0                           # this plugin's budget per call
    on_quarantine = "slate"                    # guardrails: "slate" (default) or "skip"
    enabled = true
    [plugins.settings]                         # handed to latentscape_configure
    mode = "hold"

The object a plugin entry names is a module with ``@hookimpl`` functions, an object,
or a class (instantiated without arguments); a module may name its plugin in a
``latentscape_plugin`` attribute.

Isolation (per call, ``budget_ms``):
* ``inline``: called in the frame loop's thread; an overrun is noticed afterwards.
* ``thread``: called in the plugin's own daemon worker thread; the loop waits at most
  the budget. A call that overruns keeps its thread; while it is still running, the
  plugin's next calls fail at once (``busy``).
* ``subprocess``: the plugin lives in a ``multiprocessing`` 'spawn' worker; a crash
  (``os.abort``, a segfault), ``sys.exit`` or an endless loop is a failed call; the
  worker is killed and started again for the next call (until quarantine). Hooks get
  picklable copies: ``ctx`` without ``camera`` and ``extras``.

Failures (exception, wrong return type, overrun, crash) are counted per plugin and
hook and logged with its name. Guardrail hooks fail closed (the slate is shown), the
others fail open. ``quarantine_after`` failures of one hook in a row quarantine the
plugin (a stall under thread isolation counts once; ``stall_limit_s`` bounds it);
after ``probation_after_s`` it is probed once per ``probation_every_s`` and comes back
after ``recover_after`` good probes (docs/plugins.md, "Probation and recovery").

Modules: :mod:`.config` (``[guardrails]``, ``[[plugins]]``), :mod:`.loading` (import
paths, entry points), :mod:`.runners` (the three isolations), :mod:`.controls` (what a
plugin may ask for), :mod:`.guardrails` (the slate, usable replacements), :mod:`.audit`
(the JSON-lines log), :mod:`.host` (:class:`PluginHost`: failure accounting, quarantine,
the frame hooks). The built-in plugins are a different package, :mod:`latentscape.plugins`.
"""

from latentscape.plugin_host.audit import AuditLog
from latentscape.plugin_host.config import ISOLATIONS, HostConfig, PluginSpec, parse_plugin_config
from latentscape.plugin_host.controls import PluginControls
from latentscape.plugin_host.guardrails import make_slate
from latentscape.plugin_host.host import PluginHost, PluginState
from latentscape.plugin_host.loading import ENTRY_POINT_GROUP, entry_point_refs, resolve_plugin_object
from latentscape.plugin_host.runners import CallFailed

__all__ = ["AuditLog", "CallFailed", "ENTRY_POINT_GROUP", "HostConfig", "ISOLATIONS", "PluginControls", "PluginHost",
           "PluginSpec", "PluginState", "entry_point_refs", "make_slate", "parse_plugin_config", "resolve_plugin_object"]
