"""The plugin host: loads plugins, calls their hooks in isolation, and never lets a
frame through unchecked.

What the scene says (``scene.toml``)::

    [guardrails]
    slate = "#000000"            # colour ("#rrggbb" or [r, g, b] in 0..1) or an image file in the bundle
    audit_log = "audit.jsonl"    # JSON lines, one per guardrail decision (relative: to the bundle)
    budget_ms = 250.0            # default time budget of one hook call
    quarantine_after = 5         # consecutive failures before a plugin is quarantined
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
logged with its name. Guardrail hooks fail closed (the slate is shown), the others
fail open. ``quarantine_after`` failures in a row quarantine the plugin.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.metadata
import json
import logging
import multiprocessing
import os
import queue
import threading
import time
import types
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from latentscape.config import check_keys, config_from_dict
from latentscape.errors import AdapterError, ConfigError, PluginError
from latentscape.hooks import (GUARDRAIL_HOOKS, HOOK_NAMES, ActivityEvent, SceneInfo, SwapRequest, Verdict,
                               make_plugin_manager)

log = logging.getLogger("latentscape.plugins")

ENTRY_POINT_GROUP = "latentscape"
ISOLATIONS = ("inline", "thread", "subprocess")


# --------------------------------------------------------------------------- config

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
    """Consecutive failed calls before a plugin is quarantined."""
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


# --------------------------------------------------------------------------- slate, audit

def make_slate(slate: Any, height: int, width: int, *, root: Path | None = None) -> np.ndarray:
    """The slate as a uint8 [H, W, 3] image."""
    if isinstance(slate, str) and slate.startswith("#"):
        s = slate.lstrip("#")
        if len(s) != 6:
            raise ConfigError(f"slate colour {slate!r} must be #rrggbb")
        try:
            rgb = [int(s[i:i + 2], 16) for i in (0, 2, 4)]
        except ValueError:
            raise ConfigError(f"slate colour {slate!r} must be #rrggbb") from None
        return np.broadcast_to(np.array(rgb, np.uint8), (height, width, 3)).copy()
    if isinstance(slate, (list, tuple)):
        if len(slate) != 3 or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in slate):
            raise ConfigError(f"slate colour {slate!r} must be three numbers in 0..1")
        rgb = [int(round(float(v) * 255)) for v in slate]
        return np.broadcast_to(np.array(rgb, np.uint8), (height, width, 3)).copy()
    if isinstance(slate, str):
        from PIL import Image

        p = Path(slate)
        if not p.is_absolute() and root is not None:
            p = root / p
        try:
            img = Image.open(p).convert("RGB")
        except (OSError, ValueError) as err:
            raise ConfigError(f"slate image cannot be read: {err}", path=p,
                              hint="give a PNG/JPEG in the scene bundle, or a colour like \"#000000\"") from None
        return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8).copy()
    raise ConfigError(f"slate must be a colour or an image path, got {slate!r}")


class AuditLog:
    """Guardrail decisions as JSON lines, appended (one object per line, flushed per frame)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", encoding="utf-8")
        except OSError as err:
            raise ConfigError(f"audit log cannot be written: {err.strerror}", path=self.path,
                              hint="choose a writable --audit-log / [guardrails] audit_log") from None
        self._lock = threading.Lock()

    def write(self, record: dict) -> None:
        line = json.dumps(record, default=str, separators=(",", ":"))
        with self._lock:
            if not self._f.closed:
                self._f.write(line + "\n")

    def flush(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.flush()

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()


# --------------------------------------------------------------------------- runners

class CallFailed(Exception):
    """A hook call that did not give a usable answer: ``kind`` is error, timeout, busy, crash."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


class _InlineRunner:
    def __init__(self, impls: dict[str, Callable], argnames: dict[str, tuple[str, ...]]):
        self.impls, self.argnames = impls, argnames

    @property
    def hooks(self) -> set[str]:
        return set(self.impls)

    def call(self, hook: str, kwargs: dict, timeout: float) -> Any:
        fn = self.impls[hook]
        start = time.perf_counter()
        try:
            out = fn(**{a: kwargs[a] for a in self.argnames[hook]})
        except Exception as err:  # noqa: BLE001 - isolating foreign code is the point
            raise CallFailed("error", f"{type(err).__name__}: {err}") from err
        if time.perf_counter() - start > timeout:
            raise CallFailed("timeout", f"took {1000 * (time.perf_counter() - start):.1f} ms, budget {1000 * timeout:.1f} ms")
        return out

    def close(self) -> None:
        pass


class _Job:
    __slots__ = ("fn", "kwargs", "done", "result", "exc")

    def __init__(self, fn, kwargs):
        self.fn, self.kwargs = fn, kwargs
        self.done = threading.Event()
        self.result = None
        self.exc: BaseException | None = None


class _ThreadRunner(_InlineRunner):
    """One daemon worker thread per plugin (daemon: a plugin stuck forever cannot
    keep the process alive at exit, unlike concurrent.futures' joined workers)."""

    def __init__(self, impls, argnames, name: str):
        super().__init__(impls, argnames)
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: _Job | None = None
        self._call_lock = threading.Lock()
        self._thread = threading.Thread(target=self._work, name=f"plugin:{name}", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._q.get()
            if job is None:
                return
            try:
                job.result = job.fn(**job.kwargs)
            except BaseException as err:  # noqa: BLE001 - SystemExit from a plugin must not kill the worker silently
                job.exc = err
            job.done.set()

    def call(self, hook: str, kwargs: dict, timeout: float) -> Any:
        # Callers from several threads (the loop, the viewer's activity events) take turns.
        if not self._call_lock.acquire(timeout=timeout):
            raise CallFailed("busy", "another call to it did not finish within the budget")
        try:
            if self._pending is not None and not self._pending.done.is_set():
                raise CallFailed("busy", "its previous call is still running")
            job = _Job(self.impls[hook], {a: kwargs[a] for a in self.argnames[hook]})
            self._pending = job
            self._q.put(job)
            finished = job.done.wait(timeout)
        finally:
            self._call_lock.release()
        if not finished:
            raise CallFailed("timeout", f"no answer within {1000 * timeout:.1f} ms")
        if job.exc is not None:
            raise CallFailed("error", f"{type(job.exc).__name__}: {job.exc}") from job.exc
        return job.result

    def close(self) -> None:
        self._q.put(None)


def _slim_ctx(ctx) -> Any:
    """A picklable copy of a FrameContext for subprocess plugins (no camera, no extras)."""
    if ctx is None:
        return None
    return types.SimpleNamespace(index=ctx.index, time=ctx.time, deadline=ctx.deadline, scene_version=ctx.scene_version,
                                 adapters=dict(ctx.adapters), params=dict(ctx.params), stats=dict(ctx.stats),
                                 now=getattr(ctx, "now", None))


class _QueuedControls:
    """Controls inside a subprocess worker: requests travel back with each reply."""

    def __init__(self, adapters: dict):
        self.requests: list[tuple] = []
        self._adapters = adapters

    def request_adapter(self, target, mix, *, fade_s=0.0):
        self.requests.append(("adapter", target, mix, fade_s))

    def set_param(self, key, value):
        self.requests.append(("param", key, value))

    def adapters(self):
        return dict(self._adapters)

    def log(self, message, **fields):
        self.requests.append(("log", message, fields))


def _subprocess_main(conn, ref: str, name: str, settings: dict, adapters: dict) -> None:
    """Entry point of a subprocess worker: load the plugin, then answer calls until told to stop."""
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a plugin that aborts must not leave core files
    except (ImportError, ValueError, OSError):
        pass
    try:
        obj = resolve_plugin_object(ref, name=name)
        pm = make_plugin_manager()
        pm.register(obj, name=name)
        pm.check_pending()
        impls, argnames = _impls_of(pm, name)
        controls = _QueuedControls(adapters)
        if "latentscape_configure" in impls:
            impls["latentscape_configure"](**{a: {"settings": settings, "controls": controls}[a]
                                               for a in argnames["latentscape_configure"]})
        conn.send(("ready", sorted(impls), controls.requests))
        controls.requests = []
    except BaseException as err:  # noqa: BLE001
        conn.send(("failed", f"{type(err).__name__}: {err}", []))
        return
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        hook, kwargs = msg
        try:
            out = impls[hook](**{a: kwargs.get(a) for a in argnames[hook]})
            reply = ("ok", out, controls.requests)
        except BaseException as err:  # noqa: BLE001
            reply = ("err", f"{type(err).__name__}: {err}", controls.requests)
        controls.requests = []
        try:
            conn.send(reply)
        except Exception as err:  # noqa: BLE001 - e.g. an unpicklable result
            conn.send(("err", f"result cannot be sent back: {type(err).__name__}: {err}", []))


class _SubprocessRunner:
    """A plugin in a 'spawn' worker process; killed and restarted when a call fails hard."""

    def __init__(self, ref: str, name: str, settings: dict, adapters: dict, start_timeout: float,
                 on_requests: Callable[[list], None]):
        self.ref, self.name, self.settings, self.adapters_snapshot = ref, name, settings, adapters
        self.start_timeout = start_timeout
        self.on_requests = on_requests
        self._mp = multiprocessing.get_context("spawn")
        self._proc = None
        self._conn = None
        self.restarts = -1
        self._hooks: set[str] = set()
        self._start()

    @property
    def hooks(self) -> set[str]:
        return self._hooks

    def _start(self) -> None:
        parent, child = self._mp.Pipe()
        proc = self._mp.Process(target=_subprocess_main, args=(child, self.ref, self.name, self.settings, self.adapters_snapshot),
                                name=f"latentscape-plugin:{self.name}", daemon=True)
        proc.start()
        child.close()
        self.restarts += 1
        if not parent.poll(self.start_timeout):
            self._kill(proc, parent)
            raise PluginError(f"plugin {self.name!r}: subprocess worker did not start within {self.start_timeout:.0f} s")
        try:
            kind, info, requests = parent.recv()
        except (EOFError, OSError):
            self._kill(proc, parent)
            raise PluginError(f"plugin {self.name!r}: subprocess worker died while loading the plugin") from None
        if kind != "ready":
            self._kill(proc, parent)
            raise PluginError(f"plugin {self.name!r}: {info}")
        self._hooks = set(info)
        self._proc, self._conn = proc, parent
        if requests:
            self.on_requests(requests)

    @staticmethod
    def _kill(proc, conn) -> None:
        try:
            conn.close()
        except OSError:
            pass
        if proc.is_alive():
            proc.kill()
        proc.join(5)

    def call(self, hook: str, kwargs: dict, timeout: float) -> Any:
        if self._proc is None:
            try:
                self._start()
            except PluginError as err:
                raise CallFailed("crash", f"restart failed: {err.message}") from None
        if "ctx" in kwargs:
            kwargs = {**kwargs, "ctx": _slim_ctx(kwargs["ctx"])}
        try:
            self._conn.send((hook, kwargs))
            if not self._conn.poll(timeout):
                self._reset()
                raise CallFailed("timeout", f"no answer within {1000 * timeout:.1f} ms; worker killed")
            kind, out, requests = self._conn.recv()
        except (EOFError, OSError, BrokenPipeError):
            code = self._proc.exitcode if self._proc is not None else None
            self._reset()
            raise CallFailed("crash", f"worker died (exit code {code})") from None
        if requests:
            self.on_requests(requests)
        if kind == "err":
            raise CallFailed("error", out)
        return out

    def _reset(self) -> None:
        if self._proc is not None:
            self._kill(self._proc, self._conn)
        self._proc = self._conn = None

    def close(self) -> None:
        if self._proc is not None:
            try:
                self._conn.send(None)
            except (OSError, BrokenPipeError):
                pass
            self._proc.join(1)
            self._reset()


def _impls_of(pm, name: str) -> tuple[dict[str, Callable], dict[str, tuple[str, ...]]]:
    impls, argnames = {}, {}
    plugin = pm.get_plugin(name)
    for hook in HOOK_NAMES:
        for impl in getattr(pm.hook, hook).get_hookimpls():
            if impl.plugin is plugin:
                impls[hook] = impl.function
                argnames[hook] = tuple(impl.argnames)
    return impls, argnames


# --------------------------------------------------------------------------- host

@dataclass
class PluginState:
    """A loaded plugin and its record."""

    spec: PluginSpec
    runner: Any
    budget_s: float
    calls: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    consecutive: int = 0
    quarantined: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def hooks(self) -> set[str]:
        return self.runner.hooks

    @property
    def is_guardrail(self) -> bool:
        return bool(self.hooks & set(GUARDRAIL_HOOKS))


class _PluginControls:
    """The Controls a plugin gets: every request is tagged with the plugin's name."""

    def __init__(self, host: "PluginHost", name: str):
        self._host = weakref.proxy(host)
        self._name = name

    def request_adapter(self, target, mix, *, fade_s=0.0):
        self._host.request_adapter(target, mix, fade_s=fade_s, source=self._name)

    def set_param(self, key, value):
        self._host.set_param(key, value, source=self._name)

    def adapters(self):
        return self._host.adapter_names()

    def log(self, message, **fields):
        log.info("[%s] %s %s", self._name, message, fields or "")


_BLOCKED = "latentscape.blocked"


class PluginHost:
    """Runs a scene's plugins around the frame loop (implements ``FrameHooks``).

    ``adapters``: the scene's :class:`latentscape.lora.AdapterManager` (or None);
    swaps the plugins ask for go through it and land at frame boundaries.
    """

    def __init__(self, specs: Iterable[PluginSpec] = (), config: HostConfig | None = None, *,
                 scene: SceneInfo | None = None, adapters: Any = None, audit_log: str | Path | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.config = config or HostConfig()
        self.scene = scene or SceneInfo(path=None, name="", version="", config={})
        self.adapters = adapters
        self.clock = clock
        root = self.scene.path
        audit = audit_log if audit_log is not None else self.config.audit_log
        if audit is not None and root is not None and not Path(audit).is_absolute() and audit_log is None:
            audit = root / audit
        self.audit = AuditLog(audit) if audit is not None else None
        self.plugins: list[PluginState] = []
        self.params: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._pending_params: dict[str, Any] = {}
        self._slates: dict[tuple[int, int], np.ndarray] = {}
        self._slate_until: float | None = None
        self._closed = False
        self._verdict_listeners: list[Callable[[dict], None]] = []
        self.counters = {"frames": 0, "slated": 0, "swap_requests": 0, "swap_vetoes": 0}
        make_slate(self.config.slate, 1, 1, root=root)  # fail at load time for a bad slate
        if adapters is not None and hasattr(adapters, "add_listener"):
            adapters.add_listener(self._on_commit)
        self._load(list(specs))
        atexit.register(_close_weak, weakref.ref(self))

    # ---- construction
    @classmethod
    def from_scene(cls, scene, *, adapters: Any = None, audit_log: str | Path | None = None,
                   extra: Iterable[PluginSpec] = (), scene_plugins: bool = True,
                   clock: Callable[[], float] = time.monotonic) -> "PluginHost":
        """The host for a loaded :class:`latentscape.scene.bundle.Scene`: its ``[guardrails]``
        and (unless ``scene_plugins`` is False) its ``[[plugins]]``, then ``extra``."""
        toml = scene.path / "scene.toml" if scene.path is not None else None
        hc, specs = parse_plugin_config(scene.config, path=toml)
        info = SceneInfo(path=scene.path, name=scene.name, version=scene.version, config=scene.config,
                         fps=scene.fps, width=scene.width, height=scene.height)
        return cls([*(specs if scene_plugins else []), *extra], hc, scene=info, adapters=adapters,
                   audit_log=audit_log, clock=clock)

    def _load(self, specs: list[PluginSpec]) -> None:
        eps = None
        names = {s.name for s in specs}
        if self.config.autoload_entry_points:
            eps = entry_point_refs()
            specs = specs + [PluginSpec(name=n, module=ref) for n, ref in eps.items() if n not in names]
        self._pm = make_plugin_manager()
        for spec in specs:
            if not spec.enabled:
                continue
            _check_spec(spec)
            if spec.obj is None and spec.module is None:
                eps = eps if eps is not None else entry_point_refs()
                if spec.name not in eps:
                    known = ", ".join(sorted(eps)) or "none installed"
                    raise PluginError(f"no plugin called {spec.name!r} (entry points: {known})",
                                      path=self.scene.path / "scene.toml" if self.scene.path else None,
                                      hint="install it, or give `module` in its [[plugins]] entry")
                spec.module = eps[spec.name]
            try:
                state = self._start_plugin(spec)
            except PluginError:
                raise
            except ConfigError as err:
                raise PluginError(f"plugin {spec.name!r}: {err.message}", path=err.path, hint=err.hint) from None
            self.plugins.append(state)
        for p in self.plugins:
            self._call_open(p, "latentscape_scene_loaded", scene=self.scene)
        log.info("plugins: %s", ", ".join(f"{p.name} ({p.spec.isolation})" for p in self.plugins) or "none")

    def _start_plugin(self, spec: PluginSpec) -> PluginState:
        budget = (spec.budget_ms or self.config.budget_ms) / 1000.0
        controls = _PluginControls(self, spec.name)
        if spec.isolation == "subprocess":
            runner = _SubprocessRunner(spec.module, spec.name, spec.settings, self.adapter_names(),
                                       self.config.subprocess_start_s,
                                       lambda reqs, c=controls: self._apply_requests(c, reqs))
            return PluginState(spec, runner, budget)
        obj = spec.obj if spec.obj is not None else resolve_plugin_object(spec.module, name=spec.name)
        try:
            self._pm.register(obj, name=spec.name)
            self._pm.check_pending()
        except Exception as err:  # noqa: BLE001 - pluggy's validation errors
            raise PluginError(f"plugin {spec.name!r} is not a valid latentscape plugin: {err}",
                              hint="hook functions must be named after latentscape.hooks specs and take a subset of their arguments") from None
        impls, argnames = _impls_of(self._pm, spec.name)
        if not impls:
            log.warning("plugin %s implements no latentscape hook", spec.name)
        if "latentscape_configure" in impls:
            # Configuration runs inline: a plugin that cannot configure itself is a load error.
            fn = impls["latentscape_configure"]
            args = {"settings": dict(spec.settings), "controls": controls}
            try:
                fn(**{a: args[a] for a in argnames["latentscape_configure"]})
            except (ConfigError, PluginError) as err:
                raise PluginError(f"plugin {spec.name!r}: bad settings: {err.message}",
                                  path=self.scene.path / "scene.toml" if self.scene.path else err.path, hint=err.hint) from None
            except Exception as err:  # noqa: BLE001
                raise PluginError(f"plugin {spec.name!r}: configure raised {type(err).__name__}: {err}") from None
        runner_cls = _InlineRunner if spec.isolation == "inline" else _ThreadRunner
        runner = runner_cls(impls, argnames) if runner_cls is _InlineRunner else _ThreadRunner(impls, argnames, spec.name)
        return PluginState(spec, runner, budget)

    # ---- failure accounting
    def _failed(self, p: PluginState, hook: str, err: CallFailed) -> None:
        with self._lock:
            p.failures[err.kind] = p.failures.get(err.kind, 0) + 1
            p.consecutive += 1
        log.warning("plugin %s: %s %s (%d in a row)", p.name, hook, err, p.consecutive)
        if p.consecutive >= self.config.quarantine_after and not p.quarantined:
            p.quarantined = True
            msg = (f"plugin {p.name} quarantined after {p.consecutive} failed calls in a row"
                   + (" (guardrail: every frame is now the slate)" if p.is_guardrail and p.spec.on_quarantine == "slate" else ""))
            log.error(msg)
            if self.audit is not None:
                self.audit.write({"event": "quarantine", "plugin": p.name, "wall": time.time(), "failures": dict(p.failures),
                                  "scene_version": self.scene.version})
            try:
                p.runner.close()
            except Exception:  # noqa: BLE001
                pass

    def _ok(self, p: PluginState) -> None:
        p.consecutive = 0

    def _invoke(self, p: PluginState, hook: str, **kwargs) -> Any:
        p.calls += 1
        return p.runner.call(hook, kwargs, p.budget_s)

    def _call_open(self, p: PluginState, hook: str, **kwargs) -> Any:
        """A fail-open call: errors are counted and logged, None is returned."""
        if p.quarantined or hook not in p.hooks:
            return None
        try:
            out = self._invoke(p, hook, **kwargs)
        except CallFailed as err:
            self._failed(p, hook, err)
            return None
        self._ok(p)
        return out

    # ---- FrameHooks
    def frame_begin(self, ctx) -> None:
        for p in self.plugins:
            self._call_open(p, "latentscape_frame_begin", ctx=ctx)
        with self._lock:
            self.params.update(self._pending_params)
            self._pending_params.clear()
            ctx.params.update(self.params)

    def check_latents(self, ctx, latents):
        """Guardrails on latents: returns the latents to synthesise (possibly projected).
        A block or a failure marks the frame, and :meth:`check_frame` shows the slate."""
        current = latents
        for p in self.plugins:
            if "latentscape_check_latents" not in p.hooks:
                continue
            verdict, value, score, reason = self._guard(p, "latentscape_check_latents", ctx, current,
                                                        lambda v, ref=current: _check_tensor_like(v, ref))
            self._audit(ctx, p, "latentscape_check_latents", verdict, score, reason)
            if verdict == "replace":
                current = value
            elif verdict != "pass":
                ctx.extras[_BLOCKED] = f"{p.name}: {verdict} {reason}".strip()
                return latents
        return current

    def check_frame(self, ctx, rgb: np.ndarray) -> np.ndarray:
        self.counters["frames"] += 1
        blocked = ctx.extras.get(_BLOCKED)
        current = rgb
        for p in self.plugins:
            if blocked is not None:
                break
            if "latentscape_check_frame" not in p.hooks:
                continue
            frame_in = current.view()
            frame_in.flags.writeable = False
            verdict, value, score, reason = self._guard(p, "latentscape_check_frame", ctx, frame_in,
                                                        lambda v, ref=current: _check_frame_like(v, ref))
            self._audit(ctx, p, "latentscape_check_frame", verdict, score, reason)
            if verdict == "replace":
                current = value
            elif verdict != "pass":
                blocked = f"{p.name}: {verdict} {reason}".strip()
        if self._slate_until is not None and ctx.time < self._slate_until - self.config.slate_hold_s:
            self._slate_until = None  # time went backwards: a new run or a seek
        if blocked is None and self._slate_until is not None and ctx.time < self._slate_until:
            blocked = "slate hold"
        if blocked is not None:
            if blocked != "slate hold":
                self._slate_until = ctx.time + self.config.slate_hold_s
            ctx.extras["latentscape.slate"] = blocked
            self.counters["slated"] += 1
            return self.slate(rgb.shape[0], rgb.shape[1])
        self._slate_until = None
        return current

    def frame_end(self, ctx, frame) -> None:
        rgb = getattr(frame, "rgb", frame)
        for p in self.plugins:
            self._call_open(p, "latentscape_frame_end", ctx=ctx, frame=rgb, stats=dict(ctx.stats))
        if self.audit is not None:
            self.audit.flush()

    # ---- guardrail core
    def _guard(self, p: PluginState, hook: str, ctx, value, check: Callable[[Any], str | None]):
        """One fail-closed guardrail call -> (verdict, replacement, score, reason).
        verdict: pass, replace, block, or the failure kind (error, timeout, busy, crash,
        bad_return, quarantined): anything but pass/replace means the slate."""
        if p.quarantined:
            if p.spec.on_quarantine == "skip":
                return "pass", None, None, "quarantined, skipped"
            return "quarantined", None, None, "guardrail is quarantined"
        try:
            out = self._invoke(p, hook, ctx=ctx, **({"frame": value} if hook == "latentscape_check_frame" else {"latents": value}))
        except CallFailed as err:
            self._failed(p, hook, err)
            return err.kind, None, None, err.detail
        if out is None:
            self._ok(p)
            return "pass", None, None, ""
        if not isinstance(out, Verdict) or out.action not in ("pass", "replace", "block"):
            self._failed(p, hook, CallFailed("bad_return", f"returned {type(out).__name__}, not a Verdict or None"))
            return "bad_return", None, None, f"returned {type(out).__name__}"
        score = out.score
        if score is not None and not isinstance(score, (int, float)):
            score = None
        if out.action == "replace":
            problem = check(out.value)
            if problem is not None:
                self._failed(p, hook, CallFailed("bad_return", problem))
                return "bad_return", None, score, problem
            value = out.value
            if isinstance(value, np.ndarray):
                value = value.copy()  # the plugin must not change it after the fact
            self._ok(p)
            return "replace", value, score, out.reason
        self._ok(p)
        return out.action, None, score, out.reason

    def add_verdict_listener(self, fn: Callable[[dict], None]) -> None:
        """Call ``fn(record)`` for every guardrail decision (the audit record: frame, time,
        plugin, hook, verdict, score, reason, ...), whether or not an audit log is kept.
        Called in the frame loop's thread; an error in ``fn`` is logged, never raised."""
        self._verdict_listeners.append(fn)

    def _audit(self, ctx, p: PluginState, hook: str, verdict: str, score, reason: str) -> None:
        if self.audit is None and not self._verdict_listeners:
            return
        record = {"frame": ctx.index, "time": ctx.time, "wall": time.time(), "plugin": p.name,
                  "hook": hook.removeprefix("latentscape_"), "verdict": verdict,
                  "score": None if score is None else float(score), "reason": reason,
                  "scene_version": ctx.scene_version, "adapters": dict(ctx.adapters)}
        if self.audit is not None:
            self.audit.write(record)
        for fn in self._verdict_listeners:
            try:
                fn(record)
            except Exception:  # noqa: BLE001 - a meter must not break the guardrails
                log.exception("verdict listener %r failed", fn)

    def slate(self, height: int, width: int) -> np.ndarray:
        """The scene's slate at this size (cached; a fresh copy each time)."""
        key = (height, width)
        if key not in self._slates:
            self._slates[key] = make_slate(self.config.slate, height, width, root=self.scene.path)
        return self._slates[key].copy()

    # ---- controls (thread-safe)
    def request_adapter(self, target: str, mix: dict[str, float] | str | None, *, fade_s: float = 0.0,
                        source: str = "") -> bool:
        """Queue an adapter swap (any thread). Returns False if a plugin vetoed it.
        Raises AdapterError for an unknown target or adapter (nothing is queued)."""
        if self.adapters is None:
            raise AdapterError("this scene has no [adapters]", hint="declare adapters in scene.toml")
        if isinstance(mix, str):
            mix = {mix: 1.0}
        mix = dict(mix or {})
        if not (isinstance(fade_s, (int, float)) and fade_s >= 0 and fade_s == fade_s):
            raise AdapterError(f"fade_s must be a number >= 0, got {fade_s!r}")
        self.adapters.validate_request(target, mix)
        req = SwapRequest(target=target, mix=mix, fade_s=float(fade_s), source=source)
        with self._lock:
            self.counters["swap_requests"] += 1
        for p in self.plugins:
            if p.name == source:
                continue
            if self._call_open(p, "latentscape_adapter_swap_requested", request=req) is False:
                with self._lock:
                    self.counters["swap_vetoes"] += 1
                log.info("swap %s -> %s vetoed by %s", target, mix, p.name)
                return False
        self.adapters.request(target, mix, fade_s=req.fade_s)
        return True

    def set_param(self, key: str, value: Any, *, source: str = "") -> None:
        """Set a scene parameter from any thread; it lands in ``ctx.params`` at the next frame."""
        if not isinstance(key, str) or not key:
            raise ConfigError(f"parameter names are non-empty strings, got {key!r}")
        with self._lock:
            self._pending_params[key] = value

    def adapter_names(self) -> dict[str, list[str]]:
        if self.adapters is None:
            return {}
        return self.adapters.names()

    def activity(self, kind: str, magnitude: float = 1.0, **data) -> None:
        """Report a viewer input event (any thread): plugins see ``latentscape_activity``."""
        ev = ActivityEvent(kind=kind, magnitude=float(magnitude), time=self.clock(), data=data)
        for p in self.plugins:
            self._call_open(p, "latentscape_activity", event=ev)

    def _apply_requests(self, controls: _PluginControls, requests: list) -> None:
        for req in requests:
            try:
                if req[0] == "adapter":
                    controls.request_adapter(req[1], req[2], fade_s=req[3])
                elif req[0] == "param":
                    controls.set_param(req[1], req[2])
                elif req[0] == "log":
                    controls.log(req[1], **req[2])
            except Exception as err:  # noqa: BLE001 - fail open: a bad request is logged
                log.warning("request %r from a subprocess plugin failed: %s", req[:2], err)

    def _on_commit(self, ctx, target: str, old: str, new: str) -> None:
        for p in self.plugins:
            self._call_open(p, "latentscape_adapter_swap_committed", ctx=ctx, target=target, old=old, new=new)

    # ---- reporting, shutdown
    def report(self) -> dict[str, dict]:
        """Per plugin: calls, failures by kind, quarantined."""
        return {p.name: {"calls": p.calls, "failures": dict(p.failures), "quarantined": p.quarantined,
                         "isolation": p.spec.isolation, "guardrail": p.is_guardrail} for p in self.plugins}

    def plugin(self, name: str) -> PluginState:
        for p in self.plugins:
            if p.name == name:
                return p
        raise KeyError(name)

    def close(self) -> None:
        """Unload: ``latentscape_scene_unloaded`` to every plugin, stop workers, close the audit log."""
        if self._closed:
            return
        self._closed = True
        for p in self.plugins:
            self._call_open(p, "latentscape_scene_unloaded", scene=self.scene)
        for p in self.plugins:
            try:
                p.runner.close()
            except Exception:  # noqa: BLE001
                pass
        if self.audit is not None:
            self.audit.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _close_weak(ref) -> None:
    host = ref()
    if host is not None:
        try:
            host.close()
        except Exception:  # noqa: BLE001
            pass


def _check_frame_like(value, ref: np.ndarray) -> str | None:
    if not isinstance(value, np.ndarray):
        return f"replacement is {type(value).__name__}, not a numpy array"
    if value.shape != ref.shape or value.dtype != ref.dtype:
        return f"replacement has shape {value.shape} {value.dtype}, the frame is {ref.shape} {ref.dtype}"
    return None


def _check_tensor_like(value, ref) -> str | None:
    import torch

    if not isinstance(value, torch.Tensor):
        return f"replacement is {type(value).__name__}, not a tensor"
    if value.shape != ref.shape or value.dtype != ref.dtype:
        return f"replacement latents are {tuple(value.shape)} {value.dtype}, the input is {tuple(ref.shape)} {ref.dtype}"
    if not torch.isfinite(value).all():
        return "replacement latents hold NaN or Inf"
    return None
