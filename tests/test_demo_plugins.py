"""The demo scene with its guardrails, triggers and adapters: it renders with every
verdict ok, a swap asked for over real OSC packets lands on a frame boundary, the
schedule rule fades the night look in, and make_adapter's looks go where they say."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time

import numpy as np
import pytest

from latentscape.errors import ConfigError, OutputError, SceneError
from latentscape.frame import FrameLoop
from latentscape.hooks import SceneInfo
from latentscape.lora.format import load_adapter
from latentscape.lora.manager import AdapterManager, build_adapters
from latentscape.lora.targets import resolve_target
from latentscape.plugins.schedule import ScheduleTrigger
from latentscape.plugin_host import PluginHost, parse_plugin_config
from latentscape.session import CameraSpec
from latentscape.scene.bundle import demo_scene_path, load_scene
from latentscape.scene.lock import bundle_files, verify_lock

DEMO = demo_scene_path()
TARGET = "nerf.color"


pytestmark = pytest.mark.usefixtures("one_thread")


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def colour_stats(rgb8: np.ndarray) -> tuple[float, float]:
    """(mean Rec. 709 luma, blue minus red) of a uint8 frame, 0..1."""
    x = rgb8.reshape(-1, 3).astype(np.float64) / 255.0
    return float((x @ [0.2126, 0.7152, 0.0722]).mean()), float((x[:, 2] - x[:, 0]).mean())


def host_for(sc, tmp_path, *, schedule_clock=None, schedule_settings=None, osc=None) -> PluginHost:
    """The scene's own [guardrails] and [[plugins]], with the schedule's clock injected and
    (optionally) the OSC entry switched on, on a free port."""
    hc, specs = parse_plugin_config(sc.config, path=sc.path / "scene.toml")
    for s in specs:
        if s.name == "schedule" and schedule_clock is not None:
            s.obj = ScheduleTrigger(clock=schedule_clock)
            s.settings.update(schedule_settings or {})
        if s.name == "osc" and osc is not None:
            s.enabled, s.obj = True, osc
            s.settings["port"] = 0
    info = SceneInfo(path=sc.path, name=sc.name, version=sc.version, config=sc.config, fps=sc.fps,
                     width=sc.width, height=sc.height)
    return PluginHost(specs, hc, scene=info, adapters=build_adapters(sc), audit_log=tmp_path / "audit.jsonl")


def audit(tmp_path) -> list[dict]:
    return [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]


# --------------------------------------------------------------------------- (a)

def test_demo_renders_with_its_plugins_and_adapters(tmp_path):
    from latentscape.clock import SceneClock
    from latentscape.session import Session

    before = {f: sha(DEMO / f) for f in bundle_files(DEMO)}
    sc = load_scene(DEMO)  # the lock covers the adapters and scene.toml
    hc, specs = parse_plugin_config(sc.config)
    assert hc.audit_log is None  # nothing is written into the package at render time
    assert {s.name: s.enabled for s in specs} == {"flash_guard": True, "brand_box": True, "schedule": True,
                                                  "osc": False, "nsfw_guard": False}
    frames = {}
    for start in (dt.datetime(2026, 6, 1, 12, 0), dt.datetime(2026, 6, 1, 23, 0)):
        log = tmp_path / f"audit{start.hour}.jsonl"
        with Session.open(sc, audit_log=log, clock=SceneClock(start), cameras=CameraSpec(width=32, height=32)) as s:
            assert s.adapters.names() == {TARGET: ["night", "sepia"]}
            assert [p.name for p in s.hooks.plugins] == ["flash_guard", "brand_box", "schedule"]
            assert s.loop.layers, "the demo's GAN layer is part of the loop"
            frames[start.hour] = [s.render(i) for i in range(2)]
        assert all("latentscape.slate" not in f.context.extras for f in frames[start.hour])
        recs = [json.loads(x) for x in log.read_text().splitlines() if "verdict" in x]
        assert sorted((r["frame"], r["plugin"]) for r in recs) == [(0, "brand_box"), (0, "flash_guard"),
                                                                 (1, "brand_box"), (1, "flash_guard")]
        assert {r["verdict"] for r in recs} == {"pass"}
    # The schedule trigger follows the session's clock: base look at noon, the night look
    # fading in over the demo's 2 s (weight 0 at the first frame) at 23:00.
    assert [f.context.adapters for f in frames[12]] == [{TARGET: ""}] * 2
    assert frames[23][1].context.adapters[TARGET].startswith("night@")
    assert {f: sha(DEMO / f) for f in bundle_files(DEMO)} == before
    verify_lock(DEMO)


# --------------------------------------------------------------------------- (b)

def wait_for(cond, timeout=5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.002)
    return False


def test_osc_swap_mid_render_lands_on_a_frame_boundary(tmp_path):
    pytest.importorskip("pythonosc")
    from pythonosc.udp_client import SimpleUDPClient

    from latentscape.plugins.osc import OscTrigger
    from latentscape.scene.assemble import build_layers

    sc = load_scene(DEMO)
    osc = OscTrigger()
    noon = dt.datetime(2026, 6, 1, 12, 0, 0)
    host = host_for(sc, tmp_path, schedule_clock=lambda: noon, osc=osc)
    mgr = host.adapters
    swaps = []
    mgr.add_listener(lambda ctx, t, old, new: swaps.append((getattr(ctx, "index", None), t, old, new)))
    layers = build_layers(sc, hooks=host)
    loop = FrameLoop(sc, hooks=host, adapters=mgr, **layers)
    cam = sc.camera_path(width=32, height=32).cameras[0]
    client = SimpleUDPClient("127.0.0.1", osc.port)
    frames = []
    try:
        for k in range(8):
            fr = loop.render(cam, index=k)  # same camera; time k / fps (the GAN texture moves on)
            host.frame_end(fr.context, fr)
            frames.append(fr)
            if k in (2, 5):
                n = osc.counts["adapter"]
                client.send_message("/latentscape/adapter", "night" if k == 2 else "sepia")
                assert wait_for(lambda: osc.counts["adapter"] == n + 1), osc.counts
        assert osc.counts["rejected"] == 0 and osc.counts["garbage"] == 0
    finally:
        host.close()
    night = f"night@{sha(DEMO / 'adapters/night.safetensors')}"
    sepia = f"sepia@{sha(DEMO / 'adapters/sepia.safetensors')}"
    versions = [f.context.adapters[TARGET] for f in frames]
    assert versions == [""] * 3 + [night] * 3 + [sepia] * 2
    assert swaps == [(3, TARGET, "", night), (6, TARGET, night, sepia)]
    swaps.clear()
    recs = [r for r in audit(tmp_path) if "verdict" in r]
    assert len(recs) == 16 and {r["verdict"] for r in recs} == {"pass"}
    assert [r["adapters"][TARGET] for r in recs if r["plugin"] == "flash_guard"] == versions
    # Every frame is exactly one version's picture: re-render each with that version alone.
    ref_loop = FrameLoop(sc, **build_layers(sc))
    for k, f in enumerate(frames):
        mgr.request(TARGET, {"": None, night: "night", sepia: "sepia"}[versions[k]])
        mgr.commit_pending()
        assert np.array_equal(f.rgb, ref_loop.render(cam, index=k).rgb), k
    # The swap changed the colours: the night frame is darker and bluer than the one before it.
    (l2, b2), (l3, b3) = colour_stats(frames[2].rgb), colour_stats(frames[3].rgb)
    assert l3 < l2 - 0.02 and b3 > b2 + 0.02, (l2, b2, l3, b3)
    assert not np.array_equal(frames[5].rgb, frames[6].rgb)


def test_schedule_fades_the_night_look_in_at_eight(tmp_path):
    sc = load_scene(DEMO)
    now = {"t": dt.datetime(2026, 6, 1, 19, 59, 0)}
    host = host_for(sc, tmp_path, schedule_clock=lambda: now["t"], schedule_settings={"check_every_s": 0.0})
    mgr = host.adapters
    loop = FrameLoop(sc, hooks=host, adapters=mgr)  # the field alone: the adapter's target
    cam = sc.camera_path(width=24, height=24).cameras[0]
    frames = []
    try:
        for k in range(7):
            if k == 2:
                now["t"] = dt.datetime(2026, 6, 1, 20, 0, 5)
            fr = loop.render(cam, index=k, t=k * 0.5)  # the demo's fade_s = 2.0: four frames
            host.frame_end(fr.context, fr)
            frames.append(fr)
    finally:
        host.close()
    night = f"night@{sha(DEMO / 'adapters/night.safetensors')}"
    versions = [f.context.adapters[TARGET] for f in frames]
    assert versions[:3] == ["", "", ""]  # the fade starts at frame 2 (weight 0)
    assert versions[3:6] == [f"{night}*{w:.4g}" for w in (0.25, 0.5, 0.75)]
    assert versions[6] == night
    assert {r["verdict"] for r in audit(tmp_path) if "verdict" in r} == {"pass"}  # a fade is no flash
    lum = [colour_stats(f.rgb)[0] for f in frames[2:]]
    assert all(a > b for a, b in zip(lum, lum[1:])), lum


# --------------------------------------------------------------------------- (c)

def render_means(sc, adapter_path, cams) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Per camera: (colour stats without, with the adapter), the field alone."""
    mgr = AdapterManager()
    mgr.add_target(TARGET, resolve_target(TARGET, sc))
    mgr.preload("look", adapter_path, TARGET)
    loop = FrameLoop(sc, adapters=mgr)
    out = []
    for i, cam in enumerate(cams):
        mgr.request(TARGET, None)
        base = loop.render(cam, index=i).rgb
        mgr.request(TARGET, "look")
        looked = loop.render(cam, index=i).rgb
        out.append((colour_stats(base), colour_stats(looked)))
    mgr.request(TARGET, None)
    mgr.commit_pending()
    return out


def test_make_adapter_trains_a_night_look(tmp_path, capsys):
    from latentscape.tools.recipes.make_adapter import main

    out = tmp_path / "night.safetensors"
    assert main([str(DEMO), "--name", "night", "--look", "night", "--out", str(out), "--steps", "60",
                 "--points", "8192", "--batch", "2048", "--no-progress"]) == 0
    assert "wrote" in capsys.readouterr().out
    ad = load_adapter(out)
    assert ad.rank == 4 and ad.alpha == 4.0
    assert sorted(ad.layers) == ["color_mlp.0", "color_mlp.2", "color_mlp.4"]
    from safetensors import safe_open

    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "latentscape-lora-1" and meta["look"] == "night" and meta["target"] == TARGET
    assert meta["base_weights_sha256"] == sha(DEMO / "field.safetensors")
    assert float(meta["loss"]) < 0.5 * float(meta["loss_identity"])
    sc = load_scene(DEMO)
    cams = sc.camera_path(width=24, height=24).cameras[::48][:2]
    for (l0, b0), (l1, b1) in render_means(sc, out, cams):
        assert l1 < l0 - 0.02, (l0, l1)  # darker
        assert b1 > b0 + 0.02, (b0, b1)  # bluer
    # The shipped looks go where they say too (trained with the default 400 steps).
    for (l0, b0), (l1, b1) in render_means(sc, DEMO / "adapters/night.safetensors", cams[:1]):
        assert l1 < l0 - 0.03 and b1 > b0 + 0.03
    for (l0, b0), (l1, b1) in render_means(sc, DEMO / "adapters/sepia.safetensors", cams[:1]):
        assert b1 < b0 - 0.01  # sepia: warmer (red over blue)


def test_make_adapter_refuses_bad_input(tmp_path, capsys):
    from latentscape.tools.recipes.make_adapter import main, train_adapter

    with pytest.raises(ConfigError, match="unknown look 'neon'"):
        train_adapter(DEMO, "neon", tmp_path / "a.safetensors")
    with pytest.raises(SceneError, match="not a scene bundle"):
        train_adapter(tmp_path / "nowhere", "night", tmp_path / "a.safetensors")
    with pytest.raises(ConfigError, match="--rank"):
        train_adapter(DEMO, "night", tmp_path / "a.safetensors", rank=0)
    (tmp_path / "taken.safetensors").write_bytes(b"x")
    with pytest.raises(OutputError, match="exists"):
        train_adapter(DEMO, "night", tmp_path / "taken.safetensors")
    assert main([str(DEMO), "--name", "x", "--look", "neon", "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "night" in err and "Traceback" not in err
    assert main([str(tmp_path / "nowhere"), "--name", "x", "--look", "night"]) == 2
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "nowhere").exists()
