"""Fused Triton MLP (under TRITON_INTERPRET=1 on the CPU) against the torch reference:
NerfField's shapes and the width range 16..128, irregular row counts, each precision,
gradients (recomputed through torch) w.r.t. inputs and weights."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")

from latentscape.field.nerf import FieldConfig, NerfField  # noqa: E402
from latentscape.kernels.mlp import fused_mlp  # noqa: E402
from latentscape.kernels.reference.mlp import mlp_reference  # noqa: E402

SHAPES = {
    "density": [32, 64, 16],  # L*F -> hidden -> 1 + geo_features
    "color": [32, 64, 64, 3],  # SH(16) + 16 -> hidden x2 -> rgb (output padded to 16)
    "narrow": [16, 16],
    "wide": [24, 128, 128, 7],
    "odd": [5, 48, 33, 1],
}
SIZES = [1, 7, 1000, 2**12 + 17]
# Relative to the reference's largest output: ieee is float32 rounding; tf32 keeps a
# 10-bit mantissa and fp16 11 bits per operand (float32 accumulation both).
TOL = {"ieee": 1e-5, "tf32": 5e-3, "fp16": 5e-3}


def _weights(dims, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(o, i, generator=g) / i**0.5).to(dtype) for i, o in zip(dims[:-1], dims[1:])]


def _close(a, b, rel):
    torch.testing.assert_close(a, b, rtol=rel, atol=rel * max(float(b.abs().max()), 1e-6))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("shape", list(SHAPES))
def test_forward_matches_reference(shape, n):
    dims = SHAPES[shape]
    ws = _weights(dims)
    x = torch.randn(n, dims[0], generator=torch.Generator().manual_seed(1))
    out = fused_mlp(x, ws)
    assert out.shape == (n, dims[-1]) and out.dtype == torch.float32
    _close(out, mlp_reference(x, ws), TOL["ieee"])


@pytest.mark.parametrize("precision", ["tf32", "fp16"])
@pytest.mark.parametrize("shape", ["density", "color"])
def test_forward_reduced_precision(shape, precision):
    dims = SHAPES[shape]
    ws = _weights(dims, seed=2)
    x = torch.randn(1000, dims[0], generator=torch.Generator().manual_seed(3))
    _close(fused_mlp(x, ws, precision=precision), mlp_reference(x, ws), TOL[precision])


def test_float16_weights_and_inputs():
    dims = SHAPES["color"]
    ws = _weights(dims, seed=4, dtype=torch.float16)
    x = torch.randn(1000, dims[0], generator=torch.Generator().manual_seed(5)).half()
    ref = mlp_reference(x.float(), [w.float() for w in ws])
    _close(fused_mlp(x, ws), ref, TOL["fp16"])


def test_strided_input():
    """A column slice (as NerfField passes) is read through its row stride."""
    ws = _weights(SHAPES["density"], seed=6)
    big = torch.randn(100, 40, generator=torch.Generator().manual_seed(7))
    x = big[:, 3:35]
    _close(fused_mlp(x, ws), mlp_reference(x, ws), TOL["ieee"])


@pytest.mark.parametrize("n", [7, 1000])
@pytest.mark.parametrize("shape", ["density", "color", "odd"])
def test_gradients_match_reference(shape, n):
    dims = SHAPES[shape]
    ws = _weights(dims, seed=8)
    x = torch.randn(n, dims[0], generator=torch.Generator().manual_seed(9))
    g = torch.randn(n, dims[-1], generator=torch.Generator().manual_seed(10))
    xa, wa = x.clone().requires_grad_(), [w.clone().requires_grad_() for w in ws]
    xb, wb = x.clone().requires_grad_(), [w.clone().requires_grad_() for w in ws]
    got = torch.autograd.grad(fused_mlp(xa, wa), [xa, *wa], g)
    want = torch.autograd.grad(mlp_reference(xb, wb), [xb, *wb], g)
    for a, b in zip(got, want):
        _close(a, b, 1e-5)


def test_gradients_weights_only():
    ws = [w.requires_grad_() for w in _weights(SHAPES["density"], seed=11)]
    x = torch.randn(50, 32, generator=torch.Generator().manual_seed(12))
    fused_mlp(x, ws).sum().backward()
    assert all(w.grad is not None and w.grad.shape == w.shape for w in ws)


def test_nerf_field_mlps():
    """The fused kernel computes NerfField's own MLPs."""
    torch.manual_seed(0)
    fld = NerfField(FieldConfig(n_levels=4, log2_hashmap_size=10, finest_resolution=64))
    for seq, n_in in ((fld.density_mlp, 8), (fld.color_mlp, 32)):
        ws = [m.weight for m in seq if isinstance(m, torch.nn.Linear)]
        x = torch.randn(333, n_in)
        _close(fused_mlp(x, ws), seq(x).detach(), TOL["ieee"])


def test_empty_batch():
    ws = _weights(SHAPES["density"])
    assert fused_mlp(torch.zeros(0, 32), ws).shape == (0, 16)


def test_input_checks():
    ws = _weights(SHAPES["density"])
    x = torch.randn(4, 32)
    with pytest.raises(ValueError, match="at least one"):
        fused_mlp(x, [])
    with pytest.raises(ValueError, match="weight 1 must be"):
        fused_mlp(x, [ws[0], ws[0]])
    with pytest.raises(ValueError, match="x must be"):
        fused_mlp(x[0], ws)
    with pytest.raises(ValueError, match="up to 128"):
        fused_mlp(torch.randn(4, 200), _weights([200, 16]))
    with pytest.raises(TypeError, match="float32 or float16"):
        fused_mlp(x.double(), ws)
    with pytest.raises(ValueError, match="precision"):
        fused_mlp(x, ws, precision="bf16")
