"""The Session: one owner for a running scene (open, render, run, reload, close) and
its clock (offline output does not depend on the hour)."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from PIL import Image

from latentscape.clock import SceneClock, WallClock
from latentscape.errors import LatentscapeError
from latentscape.session import CameraSpec, Session
from latentscape.sinks import PngSequenceSink
from latentscape.testing import make_tiny_scene

pytestmark = pytest.mark.usefixtures("one_thread")

NIGHT = {"name": "schedule", "module": "latentscape.plugins.schedule", "isolation": "inline",
         "settings": {"target": "nerf.color", "rules": [{"from": "20:00", "to": "06:00", "adapter": "warm"}]}}


def scheduled_scene(tmp_path, name="scene"):
    """A tiny scene whose schedule trigger puts the ``warm`` adapter on from 20:00 to 06:00."""
    return make_tiny_scene(tmp_path / name, size=12, frames=4, adapters=("warm",), extra_config={"plugins": [NIGHT]})


def pngs(folder) -> list[bytes]:
    return [np.asarray(Image.open(p)).tobytes() for p in sorted(folder.glob("*.png"))]


def fake_wall(monkeypatch, hour: int) -> None:
    """The system clock says ``hour``:30 (``datetime.datetime.now`` everywhere)."""
    real = dt.datetime

    class At(real):
        @classmethod
        def now(cls, tz=None):
            return real(2026, 6, 1, hour, 30)

    monkeypatch.setattr(dt, "datetime", At)


def test_offline_render_is_the_same_at_any_hour(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from latentscape.tools.cli import app

    scene = scheduled_scene(tmp_path)
    got = {}
    for hour in (12, 23):
        fake_wall(monkeypatch, hour)
        out = tmp_path / f"frames{hour}"
        res = CliRunner().invoke(app, ["render", str(scene), "--out", str(out), "--frames", "3"])
        assert res.exit_code == 0, res.output
        got[hour] = pngs(out)
    assert len(got[12]) == 3 and got[12] == got[23]
    # ... while a live session follows the wall clock: the night adapter is on at 23:30.
    for hour, want in ((12, ""), (23, "warm@")):
        fake_wall(monkeypatch, hour)
        with Session.open(scene, clock=WallClock()) as s:
            version = s.render(0).context.adapters["nerf.color"]
        assert version.startswith(want) and bool(version) == bool(want), (hour, version)


def test_scene_clock_starts_at_noon_and_follows_scene_time(tmp_path):
    scene = scheduled_scene(tmp_path)
    with Session.open(scene) as s:
        ctx = s.render(2).context
        assert ctx.now == dt.datetime(2026, 1, 1, 12, 0) + dt.timedelta(seconds=2 / s.path.fps)
        assert ctx.adapters["nerf.color"] == ""
    with Session.open(scene, clock=SceneClock(dt.datetime(2026, 1, 1, 21, 0))) as s:
        assert s.render(0).context.adapters["nerf.color"].startswith("warm@")


def test_run_writes_the_frames_render_makes(tmp_path):
    with Session.open(make_tiny_scene(tmp_path / "scene", size=12, frames=4)) as s:
        stats = s.run(sinks=PngSequenceSink(tmp_path / "out"), progress=False)
        assert stats.frames == 4
        single = [s.render(i).rgb.tobytes() for i in range(4)]
        cam = s.path.cameras[1]
        assert s.render(cam, index=1).rgb.tobytes() == single[1]
    assert pngs(tmp_path / "out") == single


def test_reload_is_atomic(tmp_path):
    scene = make_tiny_scene(tmp_path / "scene", size=12, frames=4)
    other = make_tiny_scene(tmp_path / "other", size=12, frames=4, seed=3)
    s = Session.open(scene, audit_log=tmp_path / "audit.jsonl")
    first = s.render(0).rgb
    old_hooks, version = s.hooks, s.scene.version
    (scene / "scene.toml").write_text((scene / "scene.toml").read_text() + "\n# changed, not relocked\n")
    with pytest.raises(LatentscapeError):
        s.reload()
    assert s.scene.version == version and s.hooks is old_hooks and not old_hooks._closed
    assert np.array_equal(s.render(0).rgb, first)  # the old scene keeps rendering
    s.reload(other)
    assert s.scene.version != version and old_hooks._closed and not s.hooks._closed
    assert not np.array_equal(s.render(0).rgb, first)
    s.close()
    s.close()  # idempotent
    assert s.closed and s.hooks._closed
    with pytest.raises(RuntimeError, match="closed"):
        s.reload()


def test_verdict_and_swap_listeners_survive_a_reload(tmp_path):
    cfg = {"plugins": [{"name": "flash_guard", "module": "latentscape.plugins.flash", "isolation": "inline"}]}
    scene = make_tiny_scene(tmp_path / "scene", size=12, frames=4, adapters=("warm",), extra_config=cfg)
    verdicts, swaps = [], []
    with Session.open(scene, verdict_listeners=[verdicts.append]) as s:
        s.on_swap(lambda ctx, target, old, new: swaps.append((ctx.index, new.split("@")[0])))
        s.render(0)
        s.reload()
        s.request_adapter("nerf.color", "warm")
        s.render(1)
    assert [(v["frame"], v["plugin"], v["verdict"]) for v in verdicts] == [(0, "flash_guard", "pass"),
                                                                          (1, "flash_guard", "pass")]
    assert swaps == [(1, "warm")]
    json.dumps(verdicts)  # records are plain data


def test_camera_spec_orbit_and_size(tmp_path):
    with Session.open(make_tiny_scene(tmp_path / "scene", size=12, frames=4),
                      cameras=CameraSpec(orbit=5, width=6, height=4)) as s:
        assert len(s.path.cameras) == 5
        assert s.render(7).rgb.shape == (4, 6, 3)  # indices wrap around the path
