"""Triton hash-grid kernels (under TRITON_INTERPRET=1 on the CPU) against the torch
reference: values and gradients, dense and hashed levels, F = 2 and 4, float32 and
float16 parameters, irregular point counts."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")

from latentscape.kernels.hashgrid import hashgrid_encode  # noqa: E402
from latentscape.kernels.layout import GridLayout  # noqa: E402
from latentscape.kernels.reference.hashgrid import hashgrid_encode as reference  # noqa: E402

CONFIGS = {
    # name: (levels, F, log2_T, base, per_level_scale); each mixes dense and hashed levels
    "L6F2": (6, 2, 10, 4, 1.8),
    "L4F4": (4, 4, 11, 8, 1.5),
    "L3F2-wide": (3, 2, 12, 2, 3.0),
}
SIZES = [1, 7, 1000, 2**12 + 17]
# Forward: both sides gather the same values and sum 8 products in float32.
FWD_TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float16: dict(rtol=1e-5, atol=1e-6)}
# Parameter gradients: float32 atomics in another order. For float16 parameters the
# reference accumulates in float16 (embedding backward) and we in float32, so ours is
# compared with the float32 reference's gradient rounded to float16 (one float16 ulp).
GRAD_P_TOL = {torch.float32: dict(rtol=1e-4, atol=1e-5), torch.float16: dict(rtol=1e-3, atol=1e-4)}


def _layout(name: str) -> GridLayout:
    levels, F, log2_t, base, pls = CONFIGS[name]
    layout = GridLayout(levels, F, log2_t, base, pls)
    assert any(layout.dense) and not all(layout.dense), "each config must mix dense and hashed levels"
    return layout


def _inputs(layout: GridLayout, n: int, dtype: torch.dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    params = torch.randn(layout.n_params, generator=g).to(dtype)
    x = torch.rand(n, 3, generator=g)
    if n >= 8:  # the box's corners: cell boundaries and the dense levels' far-edge wrap
        x[:8] = torch.tensor([[(i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1] for i in range(8)], dtype=torch.float32)
    return x, params


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_forward_matches_reference(config, n):
    layout = _layout(config)
    x, params = _inputs(layout, n, torch.float32)
    out = hashgrid_encode(x, params, layout)
    assert out.shape == (n, layout.n_output_dims) and out.dtype == torch.float32
    torch.testing.assert_close(out, reference(x, params, layout), **FWD_TOL[torch.float32])


@pytest.mark.parametrize("config", ["L6F2", "L4F4"])
def test_forward_float16_params(config):
    layout = _layout(config)
    x, params = _inputs(layout, 1000, torch.float16, seed=1)
    torch.testing.assert_close(hashgrid_encode(x, params, layout), reference(x, params, layout), **FWD_TOL[torch.float16])


def test_lattice_points_index_exactly():
    """Points on every level's cell boundaries: one-hot parameters expose the indices."""
    layout = _layout("L3F2-wide")
    s = layout.scales[1]
    ticks = (torch.arange(0, int(s) + 1, dtype=torch.float32) - 0.5).clamp_min(0) / s
    x = torch.cartesian_prod(ticks, ticks.flip(0), ticks).clamp(0, 1)
    for level_entry in (0, 5, layout.offsets[1] + 3, layout.offsets[2] + 17):
        params = torch.zeros(layout.n_params)
        params[level_entry * layout.n_features_per_level] = 1.0
        torch.testing.assert_close(hashgrid_encode(x, params, layout), reference(x, params, layout), rtol=0, atol=0)


@pytest.mark.parametrize("n", [7, 1000])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_gradients_match_reference(config, n):
    layout = _layout(config)
    x, params = _inputs(layout, n, torch.float32, seed=2)
    grad_out = torch.randn(n, layout.n_output_dims, generator=torch.Generator().manual_seed(3))
    xa, pa = x.clone().requires_grad_(), params.clone().requires_grad_()
    xb, pb = x.clone().requires_grad_(), params.clone().requires_grad_()
    gx, gp = torch.autograd.grad(hashgrid_encode(xa, pa, layout), (xa, pa), grad_out)
    rx, rp = torch.autograd.grad(reference(xb, pb, layout), (xb, pb), grad_out)
    torch.testing.assert_close(gp, rp, **GRAD_P_TOL[torch.float32])
    # Input gradients are sums of large terms (scale * parameter differences): compare
    # relative to their magnitude.
    torch.testing.assert_close(gx, rx, rtol=1e-4, atol=1e-5 * float(rx.abs().max()))


def test_gradients_large_batch_params_only():
    layout = _layout("L4F4")
    n = 2**12 + 17
    x, params = _inputs(layout, n, torch.float32, seed=4)
    grad_out = torch.randn(n, layout.n_output_dims, generator=torch.Generator().manual_seed(5))
    pa, pb = params.clone().requires_grad_(), params.clone().requires_grad_()
    (gp,) = torch.autograd.grad(hashgrid_encode(x, pa, layout), pa, grad_out)
    (rp,) = torch.autograd.grad(reference(x, pb, layout), pb, grad_out)
    torch.testing.assert_close(gp, rp, **GRAD_P_TOL[torch.float32])


def test_gradients_float16_params():
    layout = _layout("L6F2")
    x, params = _inputs(layout, 1000, torch.float16, seed=6)
    grad_out = torch.randn(1000, layout.n_output_dims, generator=torch.Generator().manual_seed(7))
    pa, pb = params.clone().requires_grad_(), params.float().requires_grad_()
    (gp,) = torch.autograd.grad(hashgrid_encode(x, pa, layout), pa, grad_out)
    (rp,) = torch.autograd.grad(reference(x, pb, layout), pb, grad_out)
    assert gp.dtype == torch.float16
    torch.testing.assert_close(gp.float(), rp.half().float(), **GRAD_P_TOL[torch.float16])


def test_empty_batch():
    layout = _layout("L6F2")
    x, params = _inputs(layout, 0, torch.float32)
    assert hashgrid_encode(x, params, layout).shape == (0, layout.n_output_dims)


def test_input_checks():
    layout = _layout("L6F2")
    x, params = _inputs(layout, 4, torch.float32)
    with pytest.raises(ValueError, match="x must be"):
        hashgrid_encode(x[:, :2], params, layout)
    with pytest.raises(ValueError, match="params must be"):
        hashgrid_encode(x, params[:-1], layout)
    with pytest.raises(TypeError, match="float32 or float16"):
        hashgrid_encode(x, params.double(), layout)
    with pytest.raises(TypeError, match="floating point"):
        hashgrid_encode(x.long(), params, layout)
    with pytest.raises(TypeError, match="GridLayout"):
        hashgrid_encode(x, params, dict(n_levels=6))
