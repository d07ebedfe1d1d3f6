"""Brand box: keeps frames inside a declared palette and luminance range.

Settings (``[plugins.settings]``, all optional):

* ``palette``: list of "#rrggbb" colours; with it, at least ``coverage`` (0.8) of the
  frame's pixels must lie within ``tolerance`` (0.15) of some palette colour
  (Euclidean distance in sRGB, scaled to 0..1 by sqrt(3));
* ``min_luminance`` / ``max_luminance``: bounds on the frame's mean relative
  luminance (Rec. 709 weights on linearised sRGB, 0..1; defaults 0 and 1);
* ``action``: ``"block"`` (default: the slate) or ``"clamp"`` (a luminance violation
  is fixed by scaling the frame's linear light into the range; an off-palette frame
  is still blocked).

Statistics are taken on a grid of at most ``max_side`` (64) samples per side.
The audit score is the off-palette fraction (or the mean luminance if no palette).
"""

from __future__ import annotations

import numpy as np

from latentscape.config import with_defaults
from latentscape.errors import ConfigError
from latentscape.hooks import Verdict, hookimpl

_S = np.arange(256, dtype=np.float64) / 255.0
_LINEAR = np.where(_S <= 0.04045, _S / 12.92, ((_S + 0.055) / 1.055) ** 2.4).astype(np.float32)
_W709 = np.array([0.2126, 0.7152, 0.0722], np.float32)

DEFAULTS = {"palette": None, "tolerance": 0.15, "coverage": 0.8, "min_luminance": 0.0, "max_luminance": 1.0,
            "action": "block", "max_side": 64}


def _parse_colour(c) -> list[float]:
    if not (isinstance(c, str) and len(c) == 7 and c.startswith("#")):
        raise ConfigError(f"palette: colours are '#rrggbb', got {c!r}")
    try:
        return [int(c[i:i + 2], 16) / 255.0 for i in (1, 3, 5)]
    except ValueError:
        raise ConfigError(f"palette: colours are '#rrggbb', got {c!r}") from None


def _encode(lin: np.ndarray) -> np.ndarray:
    lin = np.clip(lin, 0.0, 1.0)
    return np.where(lin <= 0.0031308, lin * 12.92, 1.055 * np.power(lin, 1 / 2.4) - 0.055)


class PaletteGuard:
    def __init__(self):
        self.cfg = dict(DEFAULTS)
        self.colours: np.ndarray | None = None

    @hookimpl
    def latentscape_configure(self, settings: dict) -> None:
        cfg = with_defaults(settings, DEFAULTS, where="palette settings")
        if cfg["palette"] is not None:
            if not isinstance(cfg["palette"], list) or not cfg["palette"]:
                raise ConfigError("palette: `palette` must be a non-empty list of '#rrggbb' colours")
            self.colours = np.array([_parse_colour(c) for c in cfg["palette"]], np.float32)
        for k in ("tolerance", "coverage", "min_luminance", "max_luminance"):
            if not (isinstance(cfg[k], (int, float)) and 0 <= cfg[k] <= 1):
                raise ConfigError(f"palette: {k} must be in [0, 1]")
        if cfg["min_luminance"] > cfg["max_luminance"]:
            raise ConfigError("palette: min_luminance is above max_luminance")
        if cfg["action"] not in ("block", "clamp"):
            raise ConfigError("palette: action must be 'block' or 'clamp'")
        self.cfg = cfg

    @hookimpl
    def latentscape_check_frame(self, frame):
        c = self.cfg
        step = max(1, -(-max(frame.shape[:2]) // c["max_side"]))
        small = frame[::step, ::step]
        lin = _LINEAR[small]
        mean_lum = float((lin @ _W709).mean())
        score = mean_lum
        if self.colours is not None:
            rgb = small.reshape(-1, 3).astype(np.float32) / 255.0
            d = np.sqrt(((rgb[:, None, :] - self.colours[None]) ** 2).sum(-1)).min(1) / np.sqrt(3.0)
            off = float((d > c["tolerance"]).mean())
            score = off
            if 1.0 - off < c["coverage"]:
                return Verdict.block(off, f"{off:.0%} of the frame is off-palette")
        if c["min_luminance"] <= mean_lum <= c["max_luminance"]:
            return Verdict.ok(score)
        if c["action"] == "block" or mean_lum == 0.0:
            return Verdict.block(score, f"mean luminance {mean_lum:.3f} outside [{c['min_luminance']}, {c['max_luminance']}]")
        # Aim 1 % inside the range: 8-bit rounding of the result must not land it outside again.
        target = min(max(mean_lum, c["min_luminance"] * 1.01), c["max_luminance"] * 0.99)
        out = _encode(_LINEAR[frame] * (target / mean_lum))
        return Verdict.replace((out * 255.0 + 0.5).astype(np.uint8), score, f"luminance {mean_lum:.3f} clamped to {target:.3f}")


latentscape_plugin = PaletteGuard
