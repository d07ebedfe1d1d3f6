"""StyleGAN3 generator: shapes, determinism, truncation, files, seeds, the generate CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latentscape.errors import ConfigError, WeightsError
from latentscape.texture.filters import lowpass_filter
from latentscape.texture.stylegan3 import (
    GENERATOR_CONFIG, GENERATOR_WEIGHTS, Generator, StyleGAN3Config, load_generator, save_generator,
)

TINY = dict(z_dim=16, w_dim=16, img_resolution=32, channel_base=256, channel_max=16, num_layers=6)


def tiny(preset: str = "T", **kw) -> Generator:
    torch.manual_seed(0)
    cfg = StyleGAN3Config.preset(preset, **{**TINY, **kw})
    if preset == "R":
        cfg.channel_base, cfg.channel_max = 512, 16
    G = Generator(cfg).eval()
    with torch.no_grad():  # non-trivial w_avg / input affine so truncation and transforms matter
        G.mapping.w_avg.normal_()
        G.synthesis.input.affine.weight.normal_(0, 0.3)
    return G


@pytest.mark.parametrize("preset", ["T", "R"])
def test_shapes_and_determinism(preset):
    G = tiny(preset)
    z = torch.randn(3, 16)
    with torch.no_grad():
        ws = G.mapping(z)
        img = G.synthesis(ws)
        img2 = G.synthesis(ws)
    assert ws.shape == (3, G.num_ws, 16) and G.num_ws == 8
    assert img.shape == (3, 3, 32, 32) and img.dtype == torch.float32
    assert torch.isfinite(img).all()
    assert torch.equal(img, img2)
    for mode in ("const", "random", "none"):  # SG3 has no noise inputs: every mode is identical
        with torch.no_grad():
            assert torch.equal(G.synthesis(ws, noise_mode=mode), img)
    with pytest.raises(ValueError):
        G.synthesis(ws, noise_mode="bogus")
    # one sample alone equals that sample in a batch (up to the demodulation epsilon)
    with torch.no_grad():
        one = G.synthesis(ws[1:2])
    assert torch.allclose(one, img[1:2], atol=1e-5)


def test_radial_filters_only_in_R():
    T, R = tiny("T"), tiny("R")
    t_dims = {getattr(T.synthesis, n).down_filter.ndim for n in T.synthesis.layer_names
              if getattr(T.synthesis, n).down_filter is not None}
    r_dims = {getattr(R.synthesis, n).down_filter.ndim for n in R.synthesis.layer_names
              if getattr(R.synthesis, n).down_filter is not None}
    assert t_dims == {1} and r_dims == {1, 2}  # critically sampled layers stay separable
    assert all(getattr(R.synthesis, n).conv_kernel == 1 for n in R.synthesis.layer_names)


def test_truncation():
    G = tiny()
    z = torch.randn(2, 16)
    with torch.no_grad():
        w1 = G.mapping(z)
        w0 = G.mapping(z, truncation_psi=0.0)
        wh = G.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    assert torch.allclose(w0, G.mapping.w_avg.expand_as(w0))
    assert torch.allclose(wh[:, :3], G.mapping.w_avg + 0.5 * (w1[:, :3] - G.mapping.w_avg), atol=1e-6)
    assert torch.equal(wh[:, 3:], w1[:, 3:])


def test_w_avg_and_magnitude_ema_update():
    G = tiny()
    before = G.mapping.w_avg.clone()
    G(torch.randn(2, 16), update_emas=True)
    assert not torch.equal(before, G.mapping.w_avg)
    assert G.synthesis.L0_36_16.magnitude_ema.item() != 1.0


def test_filter_design_matches_scipy_firwin():
    # scipy.signal.firwin(numtaps=12, cutoff=4.0, width=6.0, fs=32), scipy 1.17.1
    expected = [-0.0099154419, -0.0098776269, 0.0195697683, 0.088043898, 0.1751695337, 0.2370098688]
    f = lowpass_filter(12, 4.0, 6.0, 32)
    assert np.allclose(f.numpy()[:6], expected, atol=1e-9)
    assert lowpass_filter(1, 4.0, 6.0, 32) is None
    r = lowpass_filter(12, 4.0, 6.0, 32, radial=True)
    assert r.shape == (12, 12) and abs(r.sum().item() - 1) < 1e-5 and torch.allclose(r, r.T)


def test_save_load_round_trip(tmp_path):
    G = tiny("R")
    save_generator(G, tmp_path / "g")
    G2 = load_generator(tmp_path / "g")
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(G(z, truncation_psi=0.7), G2(z, truncation_psi=0.7))
    meta = json.loads((tmp_path / "g" / GENERATOR_CONFIG).read_text())
    assert meta["config"]["use_radial_filters"] is True


def test_load_errors_are_typed(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_generator(tmp_path / "missing")
    G = tiny()
    save_generator(G, tmp_path / "g")
    meta = json.loads((tmp_path / "g" / GENERATOR_CONFIG).read_text())
    meta["config"]["z_dim"] = 17
    (tmp_path / "g" / GENERATOR_CONFIG).write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="shape"):
        load_generator(tmp_path / "g")
    (tmp_path / "g" / GENERATOR_WEIGHTS).write_bytes(b"garbage")
    with pytest.raises(WeightsError):
        load_generator(tmp_path / "g")
    with pytest.raises(ConfigError):
        StyleGAN3Config.preset("X")
    with pytest.raises(ConfigError):
        StyleGAN3Config(img_resolution=48).validate()


def test_seed_to_z_is_numpy_randomstate():
    from latentscape.tools.commands.generate import parse_seeds, seed_to_z

    z = seed_to_z(7, 512)
    assert z.shape == (1, 512) and z.dtype == torch.float32
    assert np.array_equal(z.numpy(), np.random.RandomState(7).randn(1, 512).astype(np.float32))
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    with pytest.raises(ConfigError):
        parse_seeds("3-1")
    with pytest.raises(ConfigError):
        parse_seeds("x")


def test_generate_cli_end_to_end(tmp_path):
    from typer.testing import CliRunner

    from latentscape.tools.cli import app
    from latentscape.tools.commands.generate import seed_to_z

    G = tiny()
    save_generator(G, tmp_path / "g")
    res = CliRunner().invoke(app, ["generate", str(tmp_path / "g"), "--seeds", "0-1,5", "--psi", "0.7",
                                   "--out", str(tmp_path / "out"), "--raw", "--noise-mode", "const"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.name != ".latentscape-output") == [
        "seed0000.npy", "seed0000.png", "seed0001.npy", "seed0001.png", "seed0005.npy", "seed0005.png"]
    raw = np.load(tmp_path / "out" / "seed0005.npy")
    assert raw.shape == (1, 3, 32, 32) and raw.dtype == np.float32
    with torch.no_grad():
        ref = G.synthesis(G.mapping(seed_to_z(5, 16), truncation_psi=0.7), noise_mode="const")
    assert np.allclose(raw, ref.numpy(), atol=1e-6)
    from PIL import Image

    png = np.asarray(Image.open(tmp_path / "out" / "seed0005.png"))
    assert png.shape == (32, 32, 3)
    expect = np.clip(ref[0].permute(1, 2, 0).numpy() * 127.5 + 128, 0, 255).astype(np.uint8)
    assert np.abs(png.astype(int) - expect.astype(int)).max() <= 1
    bad = CliRunner().invoke(app, ["generate", str(tmp_path / "g"), "--noise-mode", "bogus", "--out",
                                   str(tmp_path / "o2")])
    assert bad.exit_code != 0
