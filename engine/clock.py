"""Clocks: what "now" is for a frame (the wall clock for live shows, scene time offline).

A frame has a scene time ``t`` (seconds from the start of the camera path) and a date
and time of day, ``ctx.now``, that triggers such as the schedule read. A
:class:`WallClock` makes ``now`` the machine's local time, so an installation turns
to its night look at 20:00. A :class:`SceneClock` derives ``now`` from ``t`` alone
(``start + t``), so offline output (render, farm, distill) is the same bytes at any
hour of the day.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Callable, Protocol

SCENE_EPOCH = dt.datetime(2026, 1, 1, 12, 0, 0)
"""Where a :class:`SceneClock` starts by default: noon, so a day/night schedule shows the day look."""


class Clock(Protocol):
    """Decides what "now" is for the frame at scene time ``t``."""

    live: bool
    """True: frames follow real time (serve, viewer); False: offline, reproducible."""

    def now(self, t: float) -> dt.datetime:
        """The local date and time of the frame at scene time ``t`` (naive datetime)."""

    def monotonic(self) -> float:
        """Seconds on a monotonic clock, for stamping input events."""


class WallClock:
    """Live shows: ``now`` is the machine's local time, whatever ``t`` is.
    ``source`` (default ``datetime.now``) is what is read: tests inject one."""

    live = True

    def __init__(self, source: Callable[[], dt.datetime] | None = None):
        self.source = source

    def now(self, t: float) -> dt.datetime:
        return (self.source or dt.datetime.now)()

    def monotonic(self) -> float:
        return time.monotonic()

    def __repr__(self) -> str:
        return "WallClock()"


@dataclass(frozen=True)
class SceneClock:
    """Offline work: ``now = start + t``; the hour the job runs at plays no part."""

    start: dt.datetime = SCENE_EPOCH
    live = False

    def now(self, t: float) -> dt.datetime:
        return self.start + dt.timedelta(seconds=float(t))

    def monotonic(self) -> float:
        return time.monotonic()


__all__ = ["Clock", "WallClock", "SceneClock", "SCENE_EPOCH"]
