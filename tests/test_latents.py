"""Latent programs: parsing, fingerprints, seeds, interpolation, looping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentscape.errors import ConfigError
from latentscape.texture.latents import LatentProgram, seed_to_z, slerp


@pytest.fixture(scope="module")
def G(tiny_generator):
    G = tiny_generator()
    G.mapping.w_avg.normal_()
    return G


WALK = {"kind": "walk", "seeds": [1, 5, 9], "period": 8.0, "interp": "slerp", "space": "z", "psi": 0.7}


def test_fixed_seed_matches_mapping(G):
    p = LatentProgram.from_dict({"kind": "seed", "seed": 3, "psi": 0.5}).bind(G)
    z = torch.from_numpy(np.random.RandomState(3).randn(1, 8)).float()
    with torch.no_grad():
        expect = G.mapping(z, truncation_psi=0.5)[0]
    assert torch.equal(p.at(0.0), expect) and torch.equal(p.at(123.4), expect)
    assert p.at(0).shape == (G.num_ws, 8)


def test_walk_loops_and_hits_keyframes(G):
    p = LatentProgram.from_dict(WALK).bind(G)
    w5 = LatentProgram.from_dict({"kind": "seed", "seed": 5, "psi": 0.7}).bind(G).at(0)
    assert torch.allclose(p.at(8.0 / 3), w5, atol=1e-6)
    assert torch.allclose(p.at(1.3), p.at(1.3 + 8.0), atol=1e-6)
    assert torch.allclose(p.at(7.9999), p.at(0.0), atol=1e-3)  # continuous across the loop
    assert not torch.allclose(p.at(1.0), p.at(2.0))


def test_keyframes_and_spaces(G):
    base = {"kind": "keyframes", "seeds": [2, 4], "times": [1.0, 3.0]}
    zl = LatentProgram.from_dict({**base, "interp": "lerp"}).bind(G)
    wl = LatentProgram.from_dict({**base, "interp": "lerp", "space": "w"}).bind(G)
    w2, w4 = wl.at(-5.0), wl.at(10.0)  # clamped before / after
    assert torch.allclose(wl.at(2.0), (w2 + w4) / 2, atol=1e-6)
    z = (seed_to_z(2, 8) + seed_to_z(4, 8)) / 2
    with torch.no_grad():
        assert torch.allclose(zl.at(2.0), G.mapping(z[None])[0], atol=1e-6)


def test_slerp_properties():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    assert torch.allclose(slerp(a, b, 0.0), a) and torch.allclose(slerp(a, b, 1.0), b)
    mid = slerp(a, b, 0.5)
    assert torch.allclose(mid[0], mid[1] / 2, atol=1e-6) or mid[0] > 0
    assert torch.allclose(slerp(a, a, 0.3), a)


def test_fingerprint_canonical():
    p1 = LatentProgram.from_dict(WALK)
    p2 = LatentProgram.from_dict(dict(reversed(list(WALK.items()))))
    p3 = LatentProgram.from_dict({**WALK, "period": 9.0})
    assert p1.fingerprint() == p2.fingerprint() != p3.fingerprint()
    assert len(p1.fingerprint()) == 64
    # defaults filled in: an explicit default and an omitted one hash the same
    assert LatentProgram.from_dict({"kind": "seed", "seed": 1}).fingerprint() == \
        LatentProgram.from_dict({"kind": "seed", "seed": 1, "psi": 1.0}).fingerprint()


@pytest.mark.parametrize("bad", [
    {"kind": "spiral"},
    {"kind": "seed"},
    {"kind": "seed", "seed": -1},
    {"kind": "seed", "seed": 1.5},
    {"kind": "seed", "seed": 1, "colour": "red"},
    {"kind": "walk", "seeds": [1, 2], "period": 0},
    {"kind": "walk", "seeds": [], "period": 1},
    {"kind": "walk", "seeds": [1, 2], "period": 1, "interp": "cubic"},
    {"kind": "walk", "seeds": [1, 2], "period": 1, "space": "w"},  # slerp in w
    {"kind": "walk", "seeds": [1, 2], "period": 1, "psi": "high"},
    {"kind": "keyframes", "seeds": [1, 2], "times": [1.0]},
    {"kind": "keyframes", "seeds": [1, 2], "times": [2.0, 1.0]},
    "walk",
])
def test_bad_programs_raise_config_error(bad):
    with pytest.raises(ConfigError):
        LatentProgram.from_dict(bad)
