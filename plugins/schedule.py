"""Schedule trigger: adapters by time of day and date (an installation's day/night looks).

Settings::

    [plugins.settings]
    target = "nerf.color"      # adapter target
    fade_s = 2.0               # cross-fade on each change (frame time)
    default = "night"          # when no rule matches ("" or absent: base weights)
    [[plugins.settings.rules]] # first matching rule wins
    from = "08:00"             # local time of the frame (ctx.now), HH:MM or HH:MM:SS
    to = "20:00"               # exclusive; to < from spans midnight
    adapter = "day"
    [[plugins.settings.rules]]
    dates = ["12-24", "2026-12-31"]  # optional: only on these dates (MM-DD yearly, or YYYY-MM-DD)
    from = "00:00"
    to = "23:59:59"
    adapter = "festive"

An impossible time ("25:00", "12:60") or date ("02-30") is a ConfigError at load.
The rules are checked at each frame begin, at most every ``check_every_s`` (1.0)
seconds of the frame's clock; a swap is asked for only when the wanted adapter changes.

"Now" is the frame's ``ctx.now``, set by the session's clock
(:mod:`latentscape.clock`): the wall clock in live shows (serve, view), scene time
offline (render, farm, distill), so an offline render is the same at any hour.
``clock`` (constructor) returns a ``datetime`` and overrides ``ctx.now``: tests inject one.
"""

from __future__ import annotations

import datetime as dt
from typing import Callable

from latentscape.config import check_keys, with_defaults
from latentscape.errors import ConfigError
from latentscape.hooks import hookimpl

DEFAULTS = {"target": "nerf.color", "fade_s": 0.0, "default": "", "rules": [], "check_every_s": 1.0}


def parse_time(text, where: str) -> dt.time:
    if not isinstance(text, str):
        raise ConfigError(f"schedule: {where} must be a time 'HH:MM' or 'HH:MM:SS', got {text!r}")
    parts = text.split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise ConfigError(f"schedule: {where} must be 'HH:MM' or 'HH:MM:SS', got {text!r}")
    h, m, s = (int(p) for p in (parts + ["00"])[:3])
    if not (0 <= h <= 23 and 0 <= m <= 59 and 0 <= s <= 59):
        raise ConfigError(f"schedule: {where} {text!r} is not a time of day", hint="hours 00-23, minutes and seconds 00-59")
    return dt.time(h, m, s)


def parse_date(text, where: str) -> tuple[int | None, int, int]:
    if not isinstance(text, str):
        raise ConfigError(f"schedule: {where} must be a date 'MM-DD' or 'YYYY-MM-DD', got {text!r}")
    parts = text.split("-")
    try:
        if len(parts) == 2:
            m, d = int(parts[0]), int(parts[1])
            dt.date(2024, m, d)  # a leap year: 02-29 is a valid yearly date
            return None, m, d
        if len(parts) == 3:
            y, m, d = (int(p) for p in parts)
            dt.date(y, m, d)
            return y, m, d
    except ValueError:
        raise ConfigError(f"schedule: {where} {text!r} is not a date") from None
    raise ConfigError(f"schedule: {where} must be 'MM-DD' or 'YYYY-MM-DD', got {text!r}")


class ScheduleTrigger:
    def __init__(self, clock: Callable[[], dt.datetime] | None = None):
        self.clock = clock
        self.cfg = dict(DEFAULTS)
        self.rules: list[tuple[dt.time, dt.time, set | None, str]] = []
        self.controls = None
        self.wanted: str | None = None
        self._last_check: dt.datetime | None = None
        self.requests = 0

    @hookimpl
    def latentscape_configure(self, settings: dict, controls) -> None:
        cfg = with_defaults(settings, DEFAULTS, where="schedule settings")
        if not isinstance(cfg["rules"], list):
            raise ConfigError("schedule: rules must be a list of tables")
        rules = []
        for i, r in enumerate(cfg["rules"]):
            if not isinstance(r, dict) or "adapter" not in r:
                raise ConfigError(f"schedule: rule {i} needs an adapter")
            check_keys(r, ("from", "to", "dates", "adapter"), where=f"schedule rule {i}")
            start = parse_time(r.get("from", "00:00"), f"rule {i} from")
            end = parse_time(r.get("to", "23:59:59"), f"rule {i} to")
            dates = None
            if "dates" in r:
                if not isinstance(r["dates"], list) or not r["dates"]:
                    raise ConfigError(f"schedule: rule {i} dates must be a non-empty list")
                dates = {parse_date(d, f"rule {i} date") for d in r["dates"]}
            rules.append((start, end, dates, str(r["adapter"])))
        if not (isinstance(cfg["fade_s"], (int, float)) and cfg["fade_s"] >= 0):
            raise ConfigError("schedule: fade_s must be >= 0")
        self.cfg, self.rules, self.controls = cfg, rules, controls

    def adapter_at(self, now: dt.datetime) -> str:
        """The adapter the rules want at ``now`` ("" = base weights)."""
        t = now.time().replace(microsecond=0)
        for start, end, dates, adapter in self.rules:
            if start <= end:
                inside, day = start <= t < end or (end == dt.time(23, 59, 59) and t == end), now.date()
            else:  # spans midnight: the part after midnight belongs to the previous day's rule
                inside = t >= start or t < end
                day = now.date() if t >= start else now.date() - dt.timedelta(days=1)
            if not inside:
                continue
            if dates is not None and (None, day.month, day.day) not in dates and (day.year, day.month, day.day) not in dates:
                continue
            return adapter
        return self.cfg["default"] or ""

    def _now(self, ctx) -> dt.datetime:
        if self.clock is not None:
            return self.clock()
        now = getattr(ctx, "now", None)
        return now if now is not None else dt.datetime.now()  # a context made by hand, without a clock

    @hookimpl
    def latentscape_frame_begin(self, ctx) -> None:
        now = self._now(ctx)
        if self.wanted is not None and self._last_check is not None:
            since = (now - self._last_check).total_seconds()
            if 0.0 <= since < self.cfg["check_every_s"]:
                return  # checked recently (a clock that went back, a new run, checks at once)
        self._last_check = now
        wanted = self.adapter_at(now)
        if wanted != self.wanted:
            self.controls.request_adapter(self.cfg["target"], wanted or None, fade_s=self.cfg["fade_s"])
            self.wanted = wanted
            self.requests += 1


latentscape_plugin = ScheduleTrigger
