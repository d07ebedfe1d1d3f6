"""Plugins for tests/test_farm.py, imported by the Ray workers (the test puts this folder
on the cluster's PYTHONPATH). Neither changes a pixel."""

from __future__ import annotations

import time

from latentscape.hooks import hookimpl


class Slow:
    """Sleeps ``sleep_s`` at every frame: a job long enough to kill something mid-way."""

    def __init__(self):
        self.sleep_s = 0.0

    @hookimpl
    def latentscape_configure(self, settings):
        self.sleep_s = float(settings.get("sleep_s", 0.0))

    @hookimpl
    def latentscape_frame_begin(self, ctx):
        time.sleep(self.sleep_s)


class Poison:
    """Raises at the frames listed in ``frames``, on every worker, every time."""

    def __init__(self):
        self.frames: set[int] = set()

    @hookimpl
    def latentscape_configure(self, settings):
        self.frames = {int(i) for i in settings.get("frames", [])}

    @hookimpl
    def latentscape_frame_begin(self, ctx):
        if ctx.index in self.frames:
            raise RuntimeError(f"poisoned frame {ctx.index}")
