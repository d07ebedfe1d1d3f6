"""The plugin host: loads a scene's plugins, calls their hooks in isolation, counts
their failures, quarantines repeat offenders, and never lets a frame through
unchecked (see the package docstring)."""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from latentscape.errors import AdapterError, ConfigError, PluginError
from latentscape.hooks import GUARDRAIL_HOOKS, ActivityEvent, SceneInfo, SwapRequest, Verdict, make_plugin_manager
from latentscape.plugin_host.audit import AuditLog
from latentscape.plugin_host.config import HostConfig, PluginSpec, _check_spec, parse_plugin_config
from latentscape.plugin_host.controls import PluginControls
from latentscape.plugin_host.guardrails import BLOCKED, SLATED, check_frame_like, check_tensor_like, make_slate
from latentscape.plugin_host.loading import entry_point_refs, impls_of, resolve_plugin_object
from latentscape.plugin_host.runners import CallFailed, InlineRunner, SubprocessRunner, ThreadRunner

log = logging.getLogger("latentscape.plugins")

MAX_PROBE_WAIT_S = 600.0
"""Longest wait between two failed probation probes."""
_OPEN_RETURNS: dict[str, tuple[type, ...]] = {"latentscape_adapter_swap_requested": (bool, type(None))}
"""What a fail-open hook may return (default: None only, as docs/plugins.md says);
anything else is a failed call (``bad_return``)."""
_PENDING = "latentscape.audit_pending"
"""``ctx.extras`` key: this frame's guardrail records, written once what is shown is known."""


@dataclass
class PluginState:
    """A loaded plugin and its record."""

    spec: PluginSpec
    runner: Any
    budget_s: float
    calls: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    """Failed calls by kind (error, timeout, busy, crash, bad_return), probes included."""
    consecutive: dict[str, int] = field(default_factory=dict)
    """Failed calls in a row, per hook: a working hook does not reset another's count."""
    quarantined: bool = False
    quarantined_at: float | None = None
    next_probe: float | None = None
    """Host-clock time of the next probation probe (None: no probation)."""
    probe_passes: int = 0
    probe_wait: float = 0.0
    """Seconds to the next probe after a failed one (doubles, up to :data:`MAX_PROBE_WAIT_S`)."""
    recoveries: int = 0
    stall_since: float | None = None
    """Host-clock time a thread-isolated call overran and kept running (None: no stall)."""

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def hooks(self) -> set[str]:
        return self.runner.hooks

    @property
    def is_guardrail(self) -> bool:
        return bool(self.hooks & set(GUARDRAIL_HOOKS))


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
        controls = PluginControls(self, spec.name)
        if spec.isolation == "subprocess":
            runner = SubprocessRunner(spec.module, spec.name, spec.settings, self.adapter_names(),
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
        impls, argnames = impls_of(self._pm, spec.name)
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
        runner_cls = InlineRunner if spec.isolation == "inline" else ThreadRunner
        runner = runner_cls(impls, argnames) if runner_cls is InlineRunner else ThreadRunner(impls, argnames, spec.name)
        return PluginState(spec, runner, budget)

    # ---- failure accounting
    def _failed(self, p: PluginState, hook: str, err: CallFailed) -> None:
        """Count a failed call. Failures count per hook; a stall (a thread-isolated call that
        overran and keeps running, making later calls ``busy``) counts once, and quarantines
        only when it lasts ``stall_limit_s``."""
        now = self.clock()
        with self._lock:
            p.failures[err.kind] = p.failures.get(err.kind, 0) + 1
            if err.kind == "busy":
                stalled = now - p.stall_since if p.stall_since is not None else 0.0
                count = p.consecutive.get(hook, 0)
                why = (f"a call still running after {stalled:.1f} s" if stalled >= self.config.stall_limit_s
                       else None)
            else:
                if err.kind == "timeout" and isinstance(p.runner, ThreadRunner):
                    p.stall_since = now
                count = p.consecutive[hook] = p.consecutive.get(hook, 0) + 1
                why = (f"{count} failed {hook.removeprefix('latentscape_')} calls in a row"
                       if count >= self.config.quarantine_after else None)
        log.warning("plugin %s: %s %s (%d in a row)", p.name, hook, err, count)
        if why is not None and not p.quarantined:
            self._quarantine(p, why)

    def _quarantine(self, p: PluginState, why: str) -> None:
        now = self.clock()
        p.quarantined = True
        p.quarantined_at = now
        p.probe_passes = 0
        p.probe_wait = self.config.probation_every_s
        after = self.config.probation_after_s
        p.next_probe = now + after if after > 0 else None
        msg = (f"plugin {p.name} quarantined: {why}"
               + (" (guardrail: every frame is now the slate)" if p.is_guardrail and p.spec.on_quarantine == "slate" else "")
               + (f"; probation in {after:g} s" if after > 0 else ""))
        log.error(msg)
        if self.audit is not None:
            self.audit.write({"event": "quarantine", "plugin": p.name, "wall": time.time(), "reason": why,
                              "failures": dict(p.failures), "scene_version": self.scene.version})
        try:
            p.runner.close()
        except Exception:  # noqa: BLE001
            pass

    def _ok(self, p: PluginState, hook: str) -> None:
        p.consecutive[hook] = 0
        p.stall_since = None

    def _probe_due(self, p: PluginState, hook: str) -> bool:
        """A quarantined plugin is probed once per ``probation_every_s`` after the cool-down;
        a guardrail only through its guardrail hooks (what it was quarantined for)."""
        if not p.quarantined or p.next_probe is None:
            return False
        if p.is_guardrail and hook not in GUARDRAIL_HOOKS:
            return False
        return self.clock() >= p.next_probe

    def _probed(self, p: PluginState, hook: str, err: CallFailed | None) -> None:
        """Account one probation probe: ``recover_after`` good answers in a row bring the plugin back."""
        now = self.clock()
        if err is None:
            p.probe_passes += 1
            p.probe_wait = self.config.probation_every_s
        else:
            p.failures[err.kind] = p.failures.get(err.kind, 0) + 1
            p.probe_passes = 0
            # failed probes back off: a plugin that stays broken (a subprocess worker is
            # restarted for each probe) costs less and less
            p.probe_wait = min(max(p.probe_wait, self.config.probation_every_s) * 2,
                               max(MAX_PROBE_WAIT_S, self.config.probation_every_s))
        p.next_probe = now + (self.config.probation_every_s if err is None else p.probe_wait)
        event = {"event": "probe", "plugin": p.name, "hook": hook.removeprefix("latentscape_"), "wall": time.time(),
                 "ok": err is None, "passes": p.probe_passes, "scene_version": self.scene.version}
        if err is not None:
            event["failure"] = err.kind
        if self.audit is not None:
            self.audit.write(event)
        if p.probe_passes >= self.config.recover_after:
            p.quarantined = False
            p.quarantined_at = p.next_probe = None
            p.consecutive.clear()
            p.stall_since = None
            p.probe_passes = 0
            p.recoveries += 1
            log.warning("plugin %s back from quarantine after %d good probes", p.name, self.config.recover_after)
            if self.audit is not None:
                self.audit.write({"event": "recovered", "plugin": p.name, "wall": time.time(),
                                  "scene_version": self.scene.version})

    def _invoke(self, p: PluginState, hook: str, **kwargs) -> Any:
        p.calls += 1
        return p.runner.call(hook, kwargs, p.budget_s)

    def _call_open(self, p: PluginState, hook: str, **kwargs) -> Any:
        """A fail-open call: errors and wrong return types are counted and logged, None is
        returned. A quarantined plugin is called only for a probation probe."""
        if hook not in p.hooks:
            return None
        probing = p.quarantined
        if probing and not self._probe_due(p, hook):
            return None
        try:
            out = self._invoke(p, hook, **kwargs)
            allowed = _OPEN_RETURNS.get(hook, (type(None),))
            if not isinstance(out, allowed):
                names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
                raise CallFailed("bad_return", f"returned {type(out).__name__}, not {names}")
        except CallFailed as err:
            self._probed(p, hook, err) if probing else self._failed(p, hook, err)
            return None
        if probing:
            self._probed(p, hook, None)
            return None  # a probe's answer is not acted on
        self._ok(p, hook)
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
                                                        lambda v, ref=current: check_tensor_like(v, ref))
            self._audit(ctx, p, "latentscape_check_latents", verdict, score, reason)
            if verdict == "replace":
                current = value
            elif verdict != "pass":
                ctx.extras[BLOCKED] = f"{p.name}: {verdict} {reason}".strip()
                return latents
        return current

    def check_frame(self, ctx, rgb: np.ndarray) -> np.ndarray:
        self.counters["frames"] += 1
        blocked = ctx.extras.get(BLOCKED)
        current = rgb
        for p in self.plugins:
            if blocked is not None:
                break
            if "latentscape_check_frame" not in p.hooks:
                continue
            frame_in = current.view()
            frame_in.flags.writeable = False
            verdict, value, score, reason = self._guard(p, "latentscape_check_frame", ctx, frame_in,
                                                        lambda v, ref=current: check_frame_like(v, ref))
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
            ctx.extras[SLATED] = blocked
            self.counters["slated"] += 1
            self._flush_audit(ctx, "slate", held=blocked == "slate hold")
            return self.slate(rgb.shape[0], rgb.shape[1])
        self._slate_until = None
        self._flush_audit(ctx, "frame")
        return current

    def frame_end(self, ctx, frame) -> None:
        rgb = getattr(frame, "rgb", frame)
        for p in self.plugins:
            self._call_open(p, "latentscape_frame_end", ctx=ctx, frame=rgb, stats=dict(ctx.stats))
        self._flush_audit(ctx, None)  # records of a frame that never reached check_frame
        if self.audit is not None:
            self.audit.flush()

    # ---- guardrail core
    def _guard(self, p: PluginState, hook: str, ctx, value, check: Callable[[Any], str | None]):
        """One fail-closed guardrail call -> (verdict, replacement, score, reason).
        verdict: pass, replace, block, or the failure kind (error, timeout, busy, crash,
        bad_return, quarantined): anything but pass/replace means the slate.

        A quarantined guardrail is not called, except for a probation probe; a probe's
        answer is recorded but not acted on (the frame stays as quarantine says)."""
        if p.quarantined:
            note = ""
            if self._probe_due(p, hook):
                verdict, _, _, reason, err = self._guard_call(p, hook, ctx, value, check)
                self._probed(p, hook, err)
                note = (f"; probation probe {'answered ' + verdict if err is None else 'failed: ' + verdict}"
                        + (", back from quarantine" if not p.quarantined else ""))
            if p.spec.on_quarantine == "skip":
                return "pass", None, None, "quarantined, skipped" + note
            return "quarantined", None, None, "guardrail is quarantined" + note
        verdict, out, score, reason, err = self._guard_call(p, hook, ctx, value, check)
        if err is not None:
            self._failed(p, hook, err)
        else:
            self._ok(p, hook)
        return verdict, out, score, reason

    def _guard_call(self, p: PluginState, hook: str, ctx, value, check: Callable[[Any], str | None]):
        """Call a guardrail hook and judge its answer -> (verdict, replacement, score, reason, failure)."""
        try:
            out = self._invoke(p, hook, ctx=ctx, **({"frame": value} if hook == "latentscape_check_frame" else {"latents": value}))
        except CallFailed as err:
            return err.kind, None, None, err.detail, err
        if out is None:
            return "pass", None, None, "", None
        if not isinstance(out, Verdict) or out.action not in ("pass", "replace", "block"):
            err = CallFailed("bad_return", f"returned {type(out).__name__}, not a Verdict or None")
            return "bad_return", None, None, f"returned {type(out).__name__}", err
        score = out.score
        if score is not None and not isinstance(score, (int, float)):
            score = None
        if out.action == "replace":
            problem = check(out.value)
            if problem is not None:
                return "bad_return", None, score, problem, CallFailed("bad_return", problem)
            value = out.value
            if isinstance(value, np.ndarray):
                value = value.copy()  # the plugin must not change it after the fact
            return "replace", value, score, out.reason, None
        return out.action, None, score, out.reason, None

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
        ctx.extras.setdefault(_PENDING, []).append(record)

    def _flush_audit(self, ctx, shown: str | None, *, held: bool = False) -> None:
        """Write this frame's guardrail records with what was shown (``shown``: "frame" or
        "slate"). On a frame the slate hold kept on the slate, each record's ``verdict`` is
        ``slate_hold`` and ``answer`` keeps what the plugin said: the log never says ``pass``
        for a frame nobody saw."""
        records = ctx.extras.pop(_PENDING, None)
        if not records:
            return
        for record in records:
            record["shown"] = shown
            if held:
                record["answer"] = record["verdict"]
                record["verdict"] = "slate_hold"
            self._emit(record)

    def _emit(self, record: dict) -> None:
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

    def _apply_requests(self, controls: PluginControls, requests: list) -> None:
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
        """Per plugin: calls, failures by kind, quarantined, recoveries (from quarantine), probe_passes."""
        return {p.name: {"calls": p.calls, "failures": dict(p.failures), "quarantined": p.quarantined,
                         "isolation": p.spec.isolation, "guardrail": p.is_guardrail, "recoveries": p.recoveries,
                         "probe_passes": p.probe_passes} for p in self.plugins}

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
