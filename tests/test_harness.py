"""The plugin-author harness, and a real plugin package installed with pip and found by entry point."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from latentscape.plugin_host import PluginHost, PluginSpec, entry_point_refs
from latentscape.testing import PluginHarness, make_tiny_scene

EXAMPLE = Path(__file__).parent / "example_plugin"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """pip-install the example package (no deps, no build isolation) into a folder put on sys.path."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources.
    import shutil

    src = build / "example_plugin"
    shutil.copytree(EXAMPLE, src)
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                          "--quiet", "--target", str(target), str(src)], capture_output=True, text=True, timeout=120)
    if res.returncode != 0:
        pytest.fail(f"pip install of the example plugin failed:\n{res.stdout}\n{res.stderr}")
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    yield target
    sys.path.remove(str(target))
    for mod in [m for m in sys.modules if m.startswith("latentscape_example_plugin")]:
        del sys.modules[mod]


@pytest.fixture(scope="module")
def scene(adapter_scene):
    return adapter_scene


def test_entry_points_are_discovered(installed, frame_ctx):
    refs = entry_point_refs()
    assert refs["example_dim"] == "latentscape_example_plugin:DimGuard"
    host = PluginHost([PluginSpec("example_dim", settings={"max_mean": 100})])  # no module: by entry point
    out = host.check_frame(frame_ctx(0), np.full((4, 4, 3), 200, np.uint8))
    assert int(out.mean()) == 100
    host.close()


def test_autoload_entry_points(installed):
    from latentscape.plugin_host import HostConfig

    host = PluginHost([], HostConfig(autoload_entry_points=True))
    assert {"example_dim", "example_counter"} <= {p.name for p in host.plugins}
    host.close()


def test_harness_runs_installed_plugins_against_a_scene(installed, scene):
    settings = {"example_dim": {"max_mean": 60, "block_mean": 250},
                "example_counter": {"every": 2, "adapters": ["warm", "cool"]}}
    with PluginHarness(scene, ["example_dim", "example_counter"], settings=settings) as h:
        run = h.run(frames=6)
        assert len(run.frames) == 6 and run.slated == []
        assert all(f.mean() <= 61 for f in run.frames)
        assert set(run.verdicts_of("example_dim")) <= {"pass", "replace"}
        names = [v["nerf.color"].split("@")[0] for v in run.versions]
        assert names == ["warm", "warm", "cool", "cool", "warm", "warm"]
        assert [s[0] for s in run.swaps] == [0, 2, 4]


def test_harness_subprocess_mode_with_installed_plugin(installed, scene):
    with PluginHarness(scene, [PluginSpec("example_dim", module="latentscape_example_plugin:DimGuard",
                                          isolation="subprocess", settings={"max_mean": 1, "block_mean": 2})]) as h:
        run = h.run(frames=2)
        assert run.slated == [0, 1] and run.verdicts_of("example_dim") == ["block", "block"]


def test_harness_feed_given_frames(scene):
    from latentscape.plugins.flash import FlashGuard

    with PluginHarness(scene, [("flash", FlashGuard())]) as h:
        frames = [np.full((8, 8, 3), 255 if i % 2 else 0, np.uint8) for i in range(24)]
        run = h.feed(frames, fps=24)
        assert "replace" in run.verdicts_of("flash") and len(run.frames) == 24
