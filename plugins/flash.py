"""Photosensitivity guard: holds back (or attenuates) frames that would make the picture
flash beyond the ITU-R BT.1702 / Harding limits.

The criteria (Rec. ITU-R BT.1702, "Guidance for the reduction of photosensitive
epileptic seizures caused by television", 2005; the Ofcom / Harding test uses the
same numbers):

* a **general flash** is a pair of opposing changes in luminance (up then down, or
  down then up) of **20 cd/m2 or more**, where the luminance of the darker state is
  **below 160 cd/m2**;
* flashes matter when the flashing area is **more than 25 % of the screen**;
* **more than three flashes within any one-second period** fails. Three flashes are at
  most six opposing transitions, so the guard refuses the seventh transition that
  would fall inside one second of frame time;
* a **red flash** is any pair of opposing transitions involving a saturated red; the
  working definition (Harding & Binnie 2002, as quoted by W3C WCAG 2.x): for either
  state of a transition ``R / (R + G + B) >= 0.8``, and the change in
  ``max(0, R - G - B) * 320`` is more than 20 (linear R, G, B in 0..1). It is counted
  like the general flash, with its own budget of three per second.

Regular patterns (stripes, checkerboards), BT.1702's third case, are not checked.

Assumptions, stated because BT.1702 measures light off the screen and we only have
pixel values: frames are sRGB (IEC 61966-2-1 transfer curve, Rec. 709 primaries) on
a display whose white is **200 cd/m2** (``display_white_cd``), the usual SDR
assumption of PSE tools; luminance = 200 * (0.2126 R + 0.7152 G + 0.0722 B) with R, G,
B linearised. Time is the frame's time (``ctx.time``), so an offline render is judged
at the rate it will be played back.

How it counts: per pixel (on a grid of at most ``max_side`` x ``max_side`` samples)
the guard keeps the luminance at the last extreme; a move of >= 20 cd/m2 away from
it, with the darker end below 160 cd/m2, opposite to the pixel's previous
transition, is a transition (a move in the same direction only extends the extreme).
A frame is a transition of the whole picture when more than 25 % of the samples make
one in the same direction. The guard tracks what is *shown* (its own output), so a
held frame does not count.

Modes: ``hold`` (default) repeats the last safe frame; ``attenuate`` shows the
strongest blend ``last + a * (new - last)`` (a in 1, 1/2, 1/4, 1/8) that is not a
transition, or holds when none is.

Settings (``[plugins.settings]``): ``mode``, ``display_white_cd`` (200),
``delta_cd`` (20), ``dark_cd`` (160), ``area`` (0.25), ``max_flashes`` (3),
``window_s`` (1.0), ``red`` (true), ``max_side`` (96).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from latentscape.config import with_defaults
from latentscape.errors import ConfigError
from latentscape.hooks import Verdict, hookimpl

_S = np.arange(256, dtype=np.float64) / 255.0
_LINEAR = np.where(_S <= 0.04045, _S / 12.92, ((_S + 0.055) / 1.055) ** 2.4).astype(np.float32)  # sRGB -> linear

DEFAULTS = {"mode": "hold", "display_white_cd": 200.0, "delta_cd": 20.0, "dark_cd": 160.0, "area": 0.25,
            "max_flashes": 3, "window_s": 1.0, "red": True, "max_side": 96}


class _Tracker:
    """Per-sample extreme tracking for one quantity (luminance or redness)."""

    def __init__(self, first: np.ndarray):
        self.anchor = first.copy()
        self.last_sign = np.zeros(first.shape, np.int8)
        self.events: deque[tuple[float, int]] = deque()  # (time, sign) of whole-picture transitions

    def step(self, value: np.ndarray, qualifies: np.ndarray, delta: float, area: float):
        """-> (frame sign 0/+1/-1, new anchor, new last_sign) without committing."""
        d = value - self.anchor
        up = (d >= delta) & qualifies
        down = (d <= -delta) & qualifies
        sign = np.where(up, 1, np.where(down, -1, 0)).astype(np.int8)
        counted = (sign != 0) & (sign != self.last_sign)
        n = value.size
        frac_up = float(np.count_nonzero(counted & (sign > 0))) / n
        frac_down = float(np.count_nonzero(counted & (sign < 0))) / n
        frame_sign = 0
        if max(frac_up, frac_down) > area:
            frame_sign = 1 if frac_up >= frac_down else -1
        # Extend extremes: a same-direction move (or a new transition) moves the anchor.
        extend = ((self.last_sign >= 0) & (d > 0)) | ((self.last_sign <= 0) & (d < 0))
        moved = (sign != 0) | (extend & (self.last_sign != 0))
        anchor = np.where(moved, value, self.anchor)
        last_sign = np.where(sign != 0, sign, self.last_sign).astype(np.int8)
        return frame_sign, anchor, last_sign, max(frac_up, frac_down)

    def count(self, now: float, window: float, frame_sign: int) -> int:
        """Opposing picture transitions within (now - window, now], including a candidate."""
        while self.events and self.events[0][0] <= now - window + 1e-6:  # half-open (now - window, now]; float slack
            self.events.popleft()
        n = len(self.events)
        if frame_sign != 0 and (not self.events or self.events[-1][1] != frame_sign):
            n += 1
        return n

    def commit(self, now: float, frame_sign: int, anchor, last_sign) -> None:
        if frame_sign != 0 and (not self.events or self.events[-1][1] != frame_sign):
            self.events.append((now, frame_sign))
        self.anchor, self.last_sign = anchor, last_sign


class FlashGuard:
    """BT.1702 general- and red-flash guard (see the module docstring)."""

    def __init__(self):
        self.cfg = dict(DEFAULTS)
        self._lum: _Tracker | None = None
        self._red: _Tracker | None = None
        self._shown: np.ndarray | None = None
        self.held = 0

    @hookimpl
    def latentscape_configure(self, settings: dict) -> None:
        cfg = with_defaults(settings, DEFAULTS, where="flash guard settings")
        if cfg["mode"] not in ("hold", "attenuate"):
            raise ConfigError("flash guard: mode must be 'hold' or 'attenuate'")
        for k in ("display_white_cd", "delta_cd", "dark_cd", "window_s"):
            if not (isinstance(cfg[k], (int, float)) and cfg[k] > 0):
                raise ConfigError(f"flash guard: {k} must be a positive number")
        if not 0 < cfg["area"] <= 1:
            raise ConfigError("flash guard: area must be in (0, 1]")
        if not (isinstance(cfg["max_flashes"], int) and cfg["max_flashes"] >= 0):
            raise ConfigError("flash guard: max_flashes must be an integer >= 0")
        if not (isinstance(cfg["max_side"], int) and cfg["max_side"] >= 4):
            raise ConfigError("flash guard: max_side must be an integer >= 4")
        self.cfg = cfg

    # ---- measurements
    def _sample(self, rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        step = max(1, -(-max(h, w) // self.cfg["max_side"]))
        return rgb[::step, ::step]

    def _measure(self, rgb8: np.ndarray):
        lin = _LINEAR[self._sample(rgb8)]  # [h, w, 3] linear
        lum = self.cfg["display_white_cd"] * (lin @ np.array([0.2126, 0.7152, 0.0722], np.float32))
        s = lin.sum(-1)
        sat_red = lin[..., 0] >= 0.8 * np.maximum(s, 1e-6)
        sat_red &= s > 0
        redness = np.maximum(0.0, lin[..., 0] - lin[..., 1] - lin[..., 2]) * 320.0
        return lum, sat_red, redness

    def _evaluate(self, t: float, rgb8: np.ndarray):
        """-> (ok, score, pending commit state)"""
        c = self.cfg
        if self._lum is not None and self._lum.events and t < self._lum.events[-1][0]:
            self._lum = self._red = None  # time went backwards (a new run, a seek): start afresh
        lum, sat, red = self._measure(rgb8)
        if self._lum is None or self._lum.anchor.shape != lum.shape:
            return True, 0.0, ("init", lum, sat, red)
        limit = 2 * c["max_flashes"]
        dark = np.minimum(lum, self._lum.anchor) < c["dark_cd"]
        fs, anchor, last, frac = self._lum.step(lum, dark, c["delta_cd"], c["area"])
        n = self._lum.count(t, c["window_s"], fs)
        ok = n <= limit
        rstate = None
        nr = 0
        if c["red"]:
            either = sat | self._red_sat
            rfs, ranchor, rlast, _ = self._red.step(red, either, 20.0 + 1e-6, c["area"])
            nr = self._red.count(t, c["window_s"], rfs)
            ok = ok and nr <= limit
            rstate = (rfs, ranchor, rlast)
        return ok, max(n, nr) / 2.0, ("step", (fs, anchor, last), rstate, sat)

    def _commit(self, t: float, state, rgb8: np.ndarray) -> None:
        if state[0] == "init":
            _, lum, sat, red = state
            self._lum, self._red, self._red_sat = _Tracker(lum), _Tracker(red), sat
        else:
            _, lstate, rstate, sat = state
            self._lum.commit(t, *lstate)
            if rstate is not None:
                self._red.commit(t, *rstate)
                self._red_sat = sat
        self._shown = rgb8

    # ---- the hook
    @hookimpl
    def latentscape_check_frame(self, ctx, frame):
        t = float(ctx.time)
        ok, score, state = self._evaluate(t, frame)
        if ok:
            self._commit(t, state, frame.copy())
            return Verdict.ok(score)
        last = self._shown
        if self.cfg["mode"] == "attenuate":
            diff = frame.astype(np.float32) - last.astype(np.float32)
            for a in (0.5, 0.25, 0.125):
                cand = np.clip(last + a * diff + 0.5, 0, 255).astype(np.uint8)
                ok_a, score_a, state_a = self._evaluate(t, cand)
                if ok_a:
                    self._commit(t, state_a, cand)
                    return Verdict.replace(cand, score, f"flash attenuated to {a:g}")
        self.held += 1
        _, _, state_h = self._evaluate(t, last)
        self._commit(t, state_h, last)
        return Verdict.replace(last.copy(), score, "flash held: last safe frame repeated")


latentscape_plugin = FlashGuard
