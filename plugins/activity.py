"""Activity trigger: viewer interaction intensity drives adapters and a scene parameter.

The viewer (or a kiosk sensor) reports input through ``PluginHost.activity(kind,
magnitude)``, which calls ``latentscape_activity``. Intensity is the sum of event
magnitudes decaying exponentially with ``half_life_s``; it is published each frame
as ``ctx.params[param]`` (default "activity") and picks an adapter from ``levels``
(the highest ``above`` it exceeds), with ``hysteresis`` (fraction) against flicker
at a boundary.

Settings::

    [plugins.settings]
    target = "nerf.color"
    half_life_s = 2.0
    param = "activity"
    fade_s = 1.0
    hysteresis = 0.2
    levels = [{ above = 0.0, adapter = "calm" }, { above = 5.0, adapter = "lively" }]
    weights = { mouse = 0.01, key = 1.0, touch = 1.0, presence = 3.0 }   # per event kind (default 1.0)

``clock`` (constructor): seconds, monotonic; tests inject one (use the same clock for
the host, which stamps events).
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable

from latentscape.config import with_defaults
from latentscape.errors import ConfigError
from latentscape.hooks import hookimpl

DEFAULTS = {"target": "nerf.color", "half_life_s": 2.0, "param": "activity", "fade_s": 0.0, "hysteresis": 0.2,
            "levels": [], "weights": {}}


class ActivityTrigger:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.cfg = dict(DEFAULTS)
        self.levels: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._value = 0.0
        self._t = None
        self.level: int | None = None
        self.controls = None

    @hookimpl
    def latentscape_configure(self, settings: dict, controls) -> None:
        cfg = with_defaults(settings, DEFAULTS, where="activity settings")
        if not (isinstance(cfg["half_life_s"], (int, float)) and cfg["half_life_s"] > 0):
            raise ConfigError("activity: half_life_s must be positive")
        levels = []
        for lv in cfg["levels"]:
            if not (isinstance(lv, dict) and isinstance(lv.get("above"), (int, float)) and "adapter" in lv):
                raise ConfigError("activity: each level is { above = number, adapter = name }")
            levels.append((float(lv["above"]), str(lv["adapter"])))
        self.levels = sorted(levels)
        self.cfg, self.controls = cfg, controls

    def intensity(self, now: float | None = None) -> float:
        now = self.clock() if now is None else now
        with self._lock:
            return self._decayed(now)

    def _decayed(self, now: float) -> float:
        """The decayed value at ``now``; the caller holds ``self._lock``."""
        if self._t is None:
            return 0.0
        return self._value * math.exp(-math.log(2) * max(0.0, now - self._t) / self.cfg["half_life_s"])

    @hookimpl
    def latentscape_activity(self, event) -> None:
        w = float(self.cfg["weights"].get(event.kind, 1.0))
        with self._lock:
            # Read, decay and add under one lock: events from several threads are never lost.
            now = self.clock()
            self._value = self._decayed(now) + w * max(0.0, float(event.magnitude))
            self._t = now

    def _pick(self, x: float) -> int | None:
        idx = None
        for i, (above, _) in enumerate(self.levels):
            if x >= above:
                idx = i
        if self.level is not None and idx is not None and idx != self.level:
            h = self.cfg["hysteresis"]
            lo = self.levels[self.level][0]
            if idx < self.level and x >= lo * (1 - h):
                return self.level  # not far enough below the current level's floor
            if idx > self.level and x < self.levels[idx][0] * (1 + h):
                return self.level
        return idx

    @hookimpl
    def latentscape_frame_begin(self, ctx) -> None:
        x = self.intensity()
        if self.cfg["param"]:
            self.controls.set_param(self.cfg["param"], x)
        if not self.levels:
            return
        idx = self._pick(x)
        if idx != self.level:
            self.level = idx
            self.controls.request_adapter(self.cfg["target"], self.levels[idx][1] if idx is not None else None,
                                          fade_s=self.cfg["fade_s"])


latentscape_plugin = ActivityTrigger
