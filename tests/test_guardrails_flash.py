"""Flash guard (BT.1702): flashing sequences are held back, smooth ones pass untouched."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latentscape.errors import PluginError
from latentscape.plugins.flash import FlashGuard
from latentscape.plugin_host import HostConfig, PluginHost, PluginSpec
from latentscape.frame import FrameContext

FPS = 24.0


def lum_cd(rgb: np.ndarray) -> float:
    """Mean screen luminance of a uniform frame, 200 cd/m2 white (independent of the plugin's code)."""
    c = rgb.reshape(-1, 3).mean(0) / 255.0
    lin = [x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4 for x in c]
    return 200.0 * (0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2])


def max_transitions_per_second(frames, fps=FPS) -> int:
    """Opposing >= 20 cd/m2 luminance transitions (darker < 160) in any 1-s window of uniform frames."""
    lum = [lum_cd(f) for f in frames]
    times, anchor, last = [], lum[0], 0
    for i, v in enumerate(lum[1:], 1):
        d = v - anchor
        s = 1 if d >= 20 else -1 if d <= -20 else 0
        if s and min(v, anchor) < 160 and s != last:
            times.append(i / fps)
            last, anchor = s, v
        elif (last > 0 and v > anchor) or (last < 0 and v < anchor):
            anchor = v
    return max((sum(1 for u in times if t - 1.0 + 1e-6 < u <= t) for t in times), default=0)


def run(frames, settings=None, fps=FPS):
    host = PluginHost([PluginSpec("flash", module="latentscape.plugins.flash", isolation="inline", settings=settings or {})],
                      HostConfig(slate_hold_s=0.0))
    shown, verdicts = [], []
    for i, f in enumerate(frames):
        ctx = FrameContext(index=i, time=i / fps, camera=None, deadline=None, scene_version="v")
        shown.append(host.check_frame(ctx, f))
    host.close()
    return shown, host


def uniform(v, size=16):
    return np.full((size, size, 3), v, np.uint8)


def test_black_white_flashing_is_held_to_the_limit():
    frames = [uniform(255 if i % 2 else 0) for i in range(72)]  # 12 flashes/s for 3 s
    assert max_transitions_per_second(frames) > 6
    shown, host = run(frames)
    assert max_transitions_per_second(shown) <= 6  # <= 3 flashes in any second
    assert sum(not np.array_equal(a, b) for a, b in zip(frames, shown)) > 20
    assert all(s.shape == f.shape for s, f in zip(frames, shown))
    assert host.counters["slated"] == 0  # held, not slated


def test_smooth_sequence_passes_untouched():
    # A slow full-range pulse (0.5 Hz) and a camera-like drift: never more than one transition a second.
    frames = [uniform(int(127.5 + 127.5 * math.sin(2 * math.pi * 0.5 * i / FPS))) for i in range(96)]
    shown, _ = run(frames)
    assert all(np.array_equal(a, b) for a, b in zip(frames, shown))


def test_three_flashes_a_second_is_allowed():
    frames = [uniform(255 if (i // 4) % 2 else 0) for i in range(72)]  # a transition every 4 frames: 6/s
    shown, _ = run(frames)
    assert all(np.array_equal(a, b) for a, b in zip(frames, shown))


def test_bright_flicker_above_160_cd_and_small_areas_pass():
    bright = [uniform(255 if i % 2 else 236) for i in range(48)]  # darker state ~165 cd/m2
    assert lum_cd(uniform(236)) > 160
    shown, _ = run(bright)
    assert all(np.array_equal(a, b) for a, b in zip(bright, shown))
    small = []
    for i in range(48):
        f = uniform(0)
        if i % 2:
            f[:5, :5] = 255  # 25/256 < 25 % of the screen
        small.append(f)
    shown, _ = run(small)
    assert all(np.array_equal(a, b) for a, b in zip(small, shown))


def test_red_flash_is_caught_separately():
    red, grey = np.array([255, 0, 0], np.uint8), np.array([127, 127, 127], np.uint8)
    assert abs(lum_cd(np.full((1, 1, 3), red)) - lum_cd(np.full((1, 1, 3), grey))) < 20  # not a general flash
    frames = [np.broadcast_to(red if i % 2 else grey, (16, 16, 3)).copy() for i in range(48)]
    shown, _ = run(frames)
    changes = sum(not np.array_equal(shown[i], shown[i - 1]) for i in range(1, 48))
    assert changes <= 12  # at most six opposing red transitions a second
    shown, _ = run(frames, {"red": False})
    assert all(np.array_equal(a, b) for a, b in zip(frames, shown))


def test_attenuate_mode_softens_instead_of_holding():
    frames = [uniform(255 if i % 2 else 0) for i in range(48)]
    shown, _ = run(frames, {"mode": "attenuate"})
    assert max_transitions_per_second(shown) <= 6
    levels = {int(s[0, 0, 0]) for s in shown}
    assert levels - {0, 255}  # some frames were blended, not just repeated


def test_large_frames_are_sampled():
    frames = [np.full((720, 1280, 3), 255 if i % 2 else 0, np.uint8) for i in range(16)]
    shown, _ = run(frames)
    assert max_transitions_per_second(shown) <= 6


@pytest.mark.parametrize("settings", [{"mode": "blur"}, {"area": 0}, {"max_flashes": -1}, {"treshold": 3}, {"max_side": 2}])
def test_bad_settings_refused(settings):
    with pytest.raises(PluginError, match="flash guard"):
        PluginHost([PluginSpec("flash", obj=FlashGuard(), settings=settings)])
