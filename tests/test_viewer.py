"""The viewer: a real pyglet window under Xvfb shows the same pixels as a headless render
of the same camera; the headless core (cameras, adapters 1-9, camera-path cycling,
hot reload that keeps the old scene, activity events).

Needs ``apt-get install -y xvfb xauth libgl1-mesa-dri`` (skipped with the reason when absent).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pyglet")

from latentscape.testing import make_tiny_scene  # noqa: E402
from latentscape.viewer import CameraRig, ViewerCore  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def scene(tmp_path):
    return make_tiny_scene(tmp_path / "tiny", size=32, adapters=["warm", "cool"])


def _free_display() -> int:
    for n in range(90, 200):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display number")


@pytest.fixture
def xvfb():
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install -y xvfb xauth libgl1-mesa-dri)")
    n = _free_display()
    proc = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "320x240x24", "-nolisten", "tcp"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{n}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.skip(f"Xvfb did not start: {proc.stderr.read().decode()[-300:]}")
        time.sleep(0.05)
    yield f":{n}"
    proc.terminate()
    proc.wait(10)


_WINDOW_CHILD = textwrap.dedent("""
    import json, sys, numpy as np
    from latentscape.viewer import Viewer, ViewerCore
    scene, out = sys.argv[1], sys.argv[2]
    core = ViewerCore(scene, width=32, height=32, dynamic=False)
    viewer = Viewer(core, hud=False)
    cam = core.rig.camera(32, 32)
    shot = viewer.render_once(cam)
    shot = viewer.render_once(cam)  # the second draw: the window is mapped and sized by now
    np.save(out, shot)
    viewer.core.activity("key", 1.0)
    print(json.dumps({"window": viewer.window.get_framebuffer_size()}))
    viewer.window.close()
    core.close()
""")


def test_window_matches_headless_render(xvfb, scene, tmp_path):
    out = tmp_path / "shot.npy"
    env = dict(os.environ, DISPLAY=xvfb, PYTHONUNBUFFERED="1")
    r = subprocess.run([sys.executable, "-c", _WINDOW_CHILD, str(scene), str(out)], env=env, capture_output=True,
                       text=True, timeout=120)
    if r.returncode != 0 and ("GLX" in r.stderr or "NoSuchConfigException" in r.stderr or "OpenGL" in r.stderr):
        pytest.skip(f"no usable OpenGL under Xvfb here: {r.stderr.strip().splitlines()[-1]}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["window"] == [32, 32]
    shot = np.load(out)
    core = ViewerCore(scene, width=32, height=32, dynamic=False)  # headless: the same camera
    ref = core.step(core.rig.camera(32, 32)).rgb
    core.close()
    assert shot.shape == ref.shape == (32, 32, 3)
    diff = np.abs(shot.astype(int) - ref.astype(int))
    assert diff.max() <= 2, f"max diff {diff.max()}, mean {diff.mean():.3f}"
    assert ref.std() > 1  # not a blank frame matching a blank window


def test_rig_orbit_and_fly():
    rig = CameraRig(radius=3.0)
    eye0 = rig.c2w()[:3, 3].clone()
    rig.drag(50, 0)
    assert not np.allclose(rig.c2w()[:3, 3], eye0)
    assert np.isclose(float(np.linalg.norm(rig.c2w()[:3, 3])), 3.0, atol=1e-4)  # orbit keeps the distance
    rig.zoom(2)
    assert rig.radius < 3.0
    assert rig.toggle_mode() == "fly"
    p0 = rig.position.copy()
    rig.move(1, 0, 0, 0.5)
    assert np.linalg.norm(rig.position) < np.linalg.norm(p0)  # forward goes towards the centre
    cam = rig.camera(16, 8)
    assert (cam.width, cam.height) == (16, 8)
    assert rig.toggle_mode() == "orbit"


def test_core_adapters_paths_activity(scene):
    events = []
    core = ViewerCore(scene, width=16, height=16, target_fps=1000.0)
    core.hooks.activity = lambda kind, magnitude=1.0, **d: events.append(kind)
    assert [n for _, n in core.adapter_slots()] == ["cool", "warm"]
    assert core.toggle_adapter(1) == "nerf.color -> warm"
    f = core.step()
    assert f.context.adapters["nerf.color"].startswith("warm")
    assert core.toggle_adapter(1) == "nerf.color -> base"
    assert core.toggle_adapter(7) is None
    assert core.cycle_path() == "orbit" and core.camera().width == 16
    assert core.cycle_path().startswith("interactive")
    core.activity("mouse", 3.0)
    assert events == ["mouse"]
    for _ in range(3):
        core.step()
    assert core.dynres.factor < 1.0  # a 1000 fps target shrinks the render
    assert any("fps" in line for line in core.hud_lines())
    core.close()


def test_core_runs_the_stylizer_it_is_given(scene, tmp_path):
    """``latentscape view --stylizer`` (a student, or its ONNX export run by onnxruntime) and
    ``--no-stylize``: the frames are the stylizer's, and a reload keeps the choice."""
    import torch

    from latentscape.stylize.student import StudentConfig, StudentNet, save_student

    torch.manual_seed(0)
    net = StudentNet(StudentConfig(base_channels=4, num_residual=1, stem_kernel=3))
    student = tmp_path / "student"
    save_student(net, student / "student")
    plain = ViewerCore(scene, width=16, height=16, dynamic=False, stylize=False)
    cam = plain.rig.camera(16, 16)
    raw = plain.step(cam).rgb
    assert plain.loop.stylizer is None
    plain.close()

    core = ViewerCore(scene, width=16, height=16, dynamic=False, stylizer=student)
    styled = core.step(cam).rgb
    with torch.no_grad():
        want = net(torch.from_numpy(raw).permute(2, 0, 1)[None].float() / 255)[0].permute(1, 2, 0).numpy()
    assert np.abs(styled.astype(float) - want * 255).max() <= 3  # raw was quantised to 8 bits before
    assert core.reload() and core.loop.stylizer.name.startswith("student")
    core.close()

    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from latentscape.export import export_student

    onnx_path = tmp_path / "student.onnx"
    export_student(net, onnx_path, multiple=4, sample=torch.rand(1, 3, 16, 16))
    core = ViewerCore(scene, width=16, height=16, dynamic=False, stylizer=onnx_path)
    assert np.abs(core.step(cam).rgb.astype(int) - styled.astype(int)).max() <= 1
    core.close()


def test_view_refuses_a_stylizer_with_no_stylize(scene, tmp_path):
    from typer.testing import CliRunner

    from latentscape.tools.cli import app

    r = CliRunner().invoke(app, ["view", str(scene), "--no-stylize", "--stylizer", str(tmp_path / "s.onnx")])
    assert r.exit_code != 0
    assert "contradict" in str(r.exception) + r.output

def test_hot_reload_keeps_old_scene_on_failure(scene):
    core = ViewerCore(scene, width=16, height=16, dynamic=False)
    version = core.scene.version
    assert core.poll_reload() is None
    lock = scene / "scene.lock"
    good = lock.read_text()
    time.sleep(0.01)
    lock.write_text("garbage\n")
    assert core.poll_reload() is False
    assert core.scene.version == version and "kept the old scene" in core.error
    assert core.step().rgb.shape == (16, 16, 3)  # still rendering
    lock.write_text(good)
    os.utime(lock, (time.time() + 1, time.time() + 1))
    assert core.poll_reload() is True and core.error is None
    core.close()
