"""The plugin hook API: every hook a plugin may implement, each docstring its contract.

A plugin is an object (a module, a class instance) whose methods carry
``@hookimpl`` and are named after a spec below. Plugins are found through the
entry-point group ``latentscape`` and the scene's ``[[plugins]]`` list; the host
(:mod:`latentscape.plugin_host`) calls them, one plugin at a time, each call
under a time budget. What the host does when a call goes wrong:

* guardrail hooks (``latentscape_check_frame``, ``latentscape_check_latents``)
  fail CLOSED: an exception, a wrong return type or an overrun replaces the frame
  by the scene's slate; the frame is never shown unchecked;
* every other hook fails OPEN: the failure is counted and logged, the frame goes on;
* a plugin failing ``quarantine_after`` calls of one hook in a row is quarantined
  (no longer called, except for probation probes that can bring it back). A
  quarantined guardrail keeps failing closed (every frame is the slate) unless its
  entry says ``on_quarantine = "skip"``;
* fail-open hooks return None (``latentscape_adapter_swap_requested``: a bool or
  None); any other return value is a failed call.

Hooks receive plain data (``FrameContext``, numpy frames, torch latents,
:class:`SceneInfo`): a plugin running in the host's subprocess mode gets pickled
copies, so a plugin must not rely on mutating what it is given. Everything a plugin
wants to change (adapters, parameters) it asks for through the :class:`Controls`
it received in ``latentscape_configure``.

Pure Python only: no compiled code in plugins (they must run wherever the engine
runs, in a subprocess too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import pluggy

PROJECT = "latentscape"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

GUARDRAIL_HOOKS = ("latentscape_check_frame", "latentscape_check_latents")


@dataclass(frozen=True)
class Verdict:
    """What a guardrail decides about one frame (or one latent batch).

    ``action``: ``"pass"`` (show it), ``"replace"`` (show ``value`` instead: a held
    or attenuated frame / projected latents, same shape and dtype), ``"block"``
    (show the slate). ``score`` is the guardrail's measure (written to the audit
    log); ``reason`` a short human-readable cause.
    """

    action: Literal["pass", "replace", "block"]
    score: float | None = None
    reason: str = ""
    value: Any = None

    @classmethod
    def ok(cls, score: float | None = None, reason: str = "") -> "Verdict":
        return cls("pass", score, reason)

    @classmethod
    def replace(cls, value: Any, score: float | None = None, reason: str = "") -> "Verdict":
        return cls("replace", score, reason, value)

    @classmethod
    def block(cls, score: float | None = None, reason: str = "") -> "Verdict":
        return cls("block", score, reason)


@dataclass(frozen=True)
class SceneInfo:
    """A picklable description of the loaded scene (what plugins may know of it)."""

    path: Path | None
    name: str
    version: str
    """The scene's version (hash of its scene.lock)."""
    config: dict
    """The parsed scene.toml (read only)."""
    fps: float = 24.0
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class SwapRequest:
    """A request to change the adapters of one target.

    ``mix`` maps adapter names to blend weights (``{}`` returns the target to its
    base weights); ``fade_s`` is the cross-fade length in frame-time seconds
    (0: the next frame boundary); ``source`` names who asked (a plugin, "osc", ...).
    """

    target: str
    mix: dict[str, float]
    fade_s: float = 0.0
    source: str = ""


@dataclass(frozen=True)
class ActivityEvent:
    """One viewer input event (the viewer, a kiosk sensor or a test calls
    :meth:`PluginHost.activity`). ``kind``: "mouse", "key", "scroll", "touch",
    "presence", ...; ``magnitude`` >= 0 how much happened (pixels moved, keys,
    1.0 for a discrete event); ``time`` seconds on the host's clock."""

    kind: str
    magnitude: float = 1.0
    time: float = 0.0
    data: dict[str, Any] = field(default_factory=dict)


class Controls(Protocol):
    """What a plugin may ask of the engine (handed over in ``latentscape_configure``).
    Every method is thread-safe and returns at once; requests take effect at the
    next frame boundary, never in the middle of a frame."""

    def request_adapter(self, target: str, mix: dict[str, float] | str | None, *, fade_s: float = 0.0) -> None:
        """Ask for adapters on ``target``: a name, a ``{name: weight}`` mix, or None for the base weights."""

    def set_param(self, key: str, value: Any) -> None:
        """Set a scene parameter; it appears in ``ctx.params`` from the next frame on."""

    def adapters(self) -> dict[str, list[str]]:
        """Loaded adapter names per target."""

    def log(self, message: str, **fields: Any) -> None:
        """Write a line to the engine log, tagged with the plugin's name."""


class LatentscapeSpecs:
    """The hook specifications (registered on the host's pluggy PluginManager)."""

    @hookspec
    def latentscape_configure(self, settings: dict, controls: Controls) -> None:
        """Called once, right after the plugin is registered, with its settings.

        ``settings``: the entry's ``settings`` table from scene.toml (``{}`` when
        none). Raise ``latentscape.errors.ConfigError`` for bad settings: a guardrail
        that cannot be configured makes the scene fail to load; a trigger is
        disabled with a logged error. Keep ``controls`` to request adapter swaps and
        parameter changes later. Must not start work that outlives
        ``latentscape_scene_unloaded`` (threads, sockets): stop it there.
        """

    @hookspec
    def latentscape_scene_loaded(self, scene: SceneInfo) -> None:
        """The scene is loaded and about to render. Read ``scene.config`` if needed,
        never modify it."""

    @hookspec
    def latentscape_scene_unloaded(self, scene: SceneInfo) -> None:
        """The scene is going away (end of a render, viewer closed): stop threads,
        close sockets and files. Called once; no other hook follows it."""

    @hookspec
    def latentscape_frame_begin(self, ctx) -> None:
        """A frame starts (``ctx``: ``latentscape.frame.FrameContext``; its
        ``adapters`` are the previous frame's). Triggers look at ``ctx.time`` (scene
        seconds) or ``ctx.now`` (the frame's date and time from the session's clock:
        wall time live, scene time offline; never read the system clock) and ask
        for swaps / parameters through their ``Controls``; they land at this frame's
        boundary. Return nothing. Must be quick (fails open when over budget)."""

    @hookspec
    def latentscape_check_latents(self, ctx, latents) -> Verdict | None:
        """Guardrail on generator latents before synthesis.

        ``latents``: a torch tensor ``[N, D]`` (or ``[N, num_ws, D]``) on the CPU or
        the scene's device; do not modify it in place. Return None or
        ``Verdict.ok()`` to pass, ``Verdict.replace(t)`` with a tensor of the same
        shape and dtype (e.g. projected into the allowed region), or
        ``Verdict.block()``: the frame is then the slate. Fails closed.
        """

    @hookspec
    def latentscape_check_frame(self, ctx, frame) -> Verdict | None:
        """Guardrail on the finished frame before any sink sees it.

        ``frame``: numpy uint8 ``[H, W, 3]`` RGB (read only: copy before changing).
        Return None / ``Verdict.ok(score)`` to pass, ``Verdict.replace(arr)`` with an
        array of the same shape and dtype (a held or attenuated frame), or
        ``Verdict.block(score, reason)`` for the slate. Guardrails run in their
        scene order, each seeing the previous one's output. Fails closed: raising,
        returning anything else or overrunning the budget shows the slate.
        """

    @hookspec
    def latentscape_frame_end(self, ctx, frame, stats) -> None:
        """The frame was written to the sinks. ``frame``: the uint8 RGB shown (read
        only); ``stats``: milliseconds per stage. For exporters and meters. Fails open."""

    @hookspec
    def latentscape_adapter_swap_requested(self, request: SwapRequest) -> bool | None:
        """Someone asked for an adapter swap (called in the requester's thread, before
        it is queued). Return False to veto it; None/True lets it through. Fails
        open (an error does not veto)."""

    @hookspec
    def latentscape_adapter_swap_committed(self, ctx, target: str, old: str, new: str) -> None:
        """A swap landed at the start of frame ``ctx.index`` (versions: sha256-based
        ids, "" for the base weights). For logs and exporters."""

    @hookspec
    def latentscape_activity(self, event: ActivityEvent) -> None:
        """A viewer input event (mouse, key, touch, presence sensor). Called from the
        viewer's thread: store what you need, return at once. Fails open."""


def make_plugin_manager() -> pluggy.PluginManager:
    """A PluginManager with every latentscape hook spec added."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(LatentscapeSpecs)
    return pm


HOOK_NAMES = tuple(n for n in dir(LatentscapeSpecs) if n.startswith("latentscape_"))

__all__ = ["hookimpl", "hookspec", "Verdict", "SceneInfo", "SwapRequest", "ActivityEvent", "Controls",
           "LatentscapeSpecs", "make_plugin_manager", "HOOK_NAMES", "GUARDRAIL_HOOKS", "PROJECT"]
