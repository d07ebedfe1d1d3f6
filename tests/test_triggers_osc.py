"""OSC trigger: real packets over loopback UDP land swaps on frame boundaries; junk is counted, never fatal."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest

pytest.importorskip("pythonosc")
from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402
from pythonosc.udp_client import SimpleUDPClient  # noqa: E402

from latentscape.plugins.osc import OscTrigger  # noqa: E402
from latentscape.testing import PluginHarness, make_tiny_scene  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def harness(tmp_path):
    osc = OscTrigger()
    h = PluginHarness(make_tiny_scene(tmp_path / "scene", adapters=("warm", "cool")), [("osc", osc)],
                      settings={"osc": {"port": 0, "max_packet": 512, "params": ["speed", "mood"]}}, isolation="thread")
    yield h, osc, SimpleUDPClient("127.0.0.1", osc.port)
    h.close()
    assert osc.server is None  # scene_unloaded stopped the server


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.002)
    return False


def test_osc_swap_lands_on_a_frame_boundary(harness):
    h, osc, client = harness
    cam = h.scene.camera_path().cameras[0]
    refs = {}
    for mix in (None, "warm", "cool"):
        h.adapters.request("nerf.color", mix)
        fr = h.loop.render(cam)
        refs[fr.context.adapters["nerf.color"]] = fr.rgb
    h.adapters.request("nerf.color", "warm")
    frames = []
    for k in range(12):
        fr = h.loop.render(cam, index=k)
        frames.append(fr)
        if k in (3, 7):
            n = osc.counts["adapter"]
            client.send_message("/latentscape/adapter", "cool" if k == 3 else "none")
            assert wait_for(lambda: osc.counts["adapter"] == n + 1)
    versions = [f.context.adapters["nerf.color"] for f in frames]
    assert all(v.startswith("warm@") for v in versions[:4])
    assert all(v.startswith("cool@") for v in versions[4:8])
    assert all(v == "" for v in versions[8:])
    for f in frames:  # every frame is exactly one version's picture
        assert np.array_equal(f.rgb, refs[f.context.adapters["nerf.color"]])


def test_osc_params_and_blend(harness):
    h, osc, client = harness
    client.send_message("/latentscape/param", ["speed", 2.5])
    client.send_message("/latentscape/blend", ["nerf.color", "warm", 0.5, "cool", 0.5, 0.0])
    assert wait_for(lambda: osc.counts["param"] == 1 and osc.counts["blend"] == 1)
    run = h.run(frames=1)
    assert run.contexts[0].params["speed"] == 2.5
    assert "*0.5" in run.versions[0]["nerf.color"]


def test_garbage_and_oversized_packets_are_counted_not_fatal(harness):
    h, osc, client = harness
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    addr = ("127.0.0.1", osc.port)
    rng = np.random.default_rng(0)
    junk = [b"", b"hello", b"/latentscape/adapter", b"#bundle\x00garbage", b"/x\x00\x00,i\x00\x00\x00",
            bytes(rng.integers(0, 256, 200, dtype=np.uint8))]
    for j in junk:
        raw.sendto(j, addr)
    big = OscMessageBuilder("/latentscape/param")
    big.add_arg("speed")
    big.add_arg("x" * 2000)
    raw.sendto(big.build().dgram, addr)
    client.send_message("/latentscape/adapter", ["no_such_adapter"])
    client.send_message("/latentscape/adapter", [42])
    client.send_message("/latentscape/adapter", ["warm", -1.0])
    client.send_message("/latentscape/param", ["forbidden", 1])
    client.send_message("/latentscape/param", ["speed", b"\x00\x01"])
    client.send_message("/latentscape/nope", [1])
    assert wait_for(lambda: osc.counts["oversized"] == 1 and osc.counts["rejected"] >= 5 and osc.counts["unknown"] == 1)
    assert osc.counts["garbage"] >= 4
    raw.close()
    client.send_message("/latentscape/adapter", ["cool"])  # still alive and serving
    assert wait_for(lambda: osc.counts["adapter"] == 1)
    run = h.run(frames=1)
    assert run.versions[0]["nerf.color"].startswith("cool@") and run.slated == []
    assert h.host.report()["osc"]["failures"] == {}


def test_osc_port_in_use_is_a_config_error(harness):
    from latentscape.errors import PluginError
    from latentscape.plugin_host import PluginHost, PluginSpec

    _, osc, _ = harness
    with pytest.raises(PluginError, match="cannot listen"):
        PluginHost([PluginSpec("osc2", obj=OscTrigger(), settings={"port": osc.port})])
