"""The torch hash grid against a deliberately plain per-point implementation written
from tiny-cuda-nn's facts (scalar loops, numpy float32), values and gradients."""

import math

import numpy as np
import pytest
import torch

from latentscape.kernels.layout import GridLayout
from latentscape.kernels.reference.hashgrid import hashgrid_encode, init_params


def plain_encode(x: np.ndarray, params: np.ndarray, n_levels, F, log2_T, base, pls):
    """One point at a time, one level at a time, straight from the facts."""
    out = np.zeros((x.shape[0], n_levels * F), dtype=np.float64)
    offset = 0
    for level in range(n_levels):
        scale = np.float32(np.exp2(np.float32(level) * np.float32(np.log2(np.float32(pls))), dtype=np.float32) * np.float32(base) - np.float32(1))
        res = int(math.ceil(float(scale))) + 1
        entries = min(((res**3 + 7) // 8) * 8, 2**log2_T)
        for n in range(x.shape[0]):
            pos = [np.float32(np.float32(scale) * np.float32(x[n, d]) + np.float32(0.5)) for d in range(3)]
            cell = [int(math.floor(p)) for p in pos]
            frac = [float(p) - c for p, c in zip(pos, cell)]
            for corner in range(8):
                w = 1.0
                g = []
                for d in range(3):
                    bit = (corner >> d) & 1
                    w *= frac[d] if bit else 1.0 - frac[d]
                    g.append((cell[d] + bit) & 0xFFFFFFFF)
                if res**3 <= entries:
                    idx = g[0] + g[1] * res + g[2] * res * res
                else:
                    idx = (g[0] * 1 ^ g[1] * 2654435761 ^ g[2] * 805459861) & 0xFFFFFFFF
                idx %= entries
                for f in range(F):
                    out[n, level * F + f] += w * params[(offset + idx) * F + f]
        offset += entries
    return out


CONFIGS = [
    # (levels, F, log2_T, base, per_level_scale): each has dense and hashed levels
    (8, 2, 12, 4, 1.6),
    (6, 4, 11, 8, 1.5),
    (5, 2, 10, 3, 2.0),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_layout_matches_facts(cfg):
    L, F, T, base, pls = cfg
    layout = GridLayout(L, F, T, base, pls)
    assert any(layout.dense) and not all(layout.dense), "config must mix dense and hashed levels"
    for level, (res, size) in enumerate(zip(layout.resolutions, layout.level_sizes)):
        scale = base * pls**level - 1
        assert res == math.ceil(scale) + 1 or abs(scale - round(scale)) < 1e-4
        assert size % 8 == 0 or size == 2**T
        assert size <= 2**T
        assert layout.dense[level] == (res**3 <= size)
    assert layout.offsets[-1] == sum(layout.level_sizes)
    assert layout.n_params == layout.offsets[-1] * F


def test_default_layout_counts():
    # instant-ngp's paper config: L=16, F=2, T=2^19, base 16, growth to 2048.
    from latentscape.kernels.layout import per_level_scale_for

    layout = GridLayout(16, 2, 19, 16, per_level_scale_for(16, 2048, 16))
    assert layout.resolutions[0] == 16
    assert layout.level_sizes[0] == 16**3
    assert layout.dense[:5] == (True,) * 5 and not any(layout.dense[5:])
    assert all(s == 2**19 for s in layout.level_sizes[5:])


@pytest.mark.parametrize("cfg", CONFIGS)
def test_values_match_plain(cfg):
    L, F, T, base, pls = cfg
    layout = GridLayout(L, F, T, base, pls)
    g = torch.Generator().manual_seed(0)
    params = torch.randn(layout.n_params, generator=g)
    x = torch.rand(37, 3, generator=g)
    x[0] = torch.tensor([0.0, 0.0, 0.0])
    x[1] = torch.tensor([1.0, 1.0, 1.0])  # the far edge: dense levels wrap
    x[2] = torch.tensor([0.999, 0.5, 0.001])
    got = hashgrid_encode(x, params, layout).double().numpy()
    want = plain_encode(x.numpy(), params.numpy(), L, F, T, base, pls)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cfg", CONFIGS[:2])
def test_param_gradient_matches_plain(cfg):
    L, F, T, base, pls = cfg
    layout = GridLayout(L, F, T, base, pls)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(13, 3, generator=g)
    cot = torch.randn(13, L * F, generator=g)
    params = torch.randn(layout.n_params, generator=g).requires_grad_()
    (hashgrid_encode(x, params, layout) * cot).sum().backward()
    # The encoding is linear in params: d<cot, enc(p)>/dp_j = <cot, enc(e_j)>; check on
    # every parameter the points touch plus a few they do not.
    touched = params.grad.nonzero().squeeze(-1)
    assert touched.numel() > 0
    check = torch.cat((touched[:40], torch.tensor([0, layout.n_params - 1])))
    for j in check.tolist():
        e = np.zeros(layout.n_params)
        e[j] = 1.0
        want = (plain_encode(x.numpy(), e, L, F, T, base, pls) * cot.double().numpy()).sum()
        assert abs(params.grad[j].item() - want) < 1e-4, j


def test_input_gradient_is_finite_difference():
    layout = GridLayout(4, 2, 10, 4, 1.5)
    params = torch.randn(layout.n_params, dtype=torch.float32, generator=torch.Generator().manual_seed(2))
    x = (torch.rand(5, 3, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.1).requires_grad_()
    hashgrid_encode(x, params, layout).sum().backward()
    eps = 1e-3
    for n in range(5):
        for d in range(3):
            xp, xm = x.detach().clone(), x.detach().clone()
            xp[n, d] += eps
            xm[n, d] -= eps
            fd = (hashgrid_encode(xp, params, layout).sum() - hashgrid_encode(xm, params, layout).sum()) / (2 * eps)
            # Within one cell the encoding is smooth; a cell boundary makes FD inexact.
            assert abs(fd.item() - x.grad[n, d].item()) < 5e-2 * max(1.0, abs(fd.item()))


def test_fp16_params_read_as_float():
    layout = GridLayout(6, 2, 11, 4, 1.5)
    p32 = init_params(layout) * 1e3
    x = torch.rand(9, 3)
    a = hashgrid_encode(x, p32, layout)
    b = hashgrid_encode(x, p32.half(), layout)
    assert b.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-3)


def test_shape_errors():
    layout = GridLayout(2, 2, 8, 4, 1.5)
    with pytest.raises(ValueError, match="x must be"):
        hashgrid_encode(torch.rand(3, 2), init_params(layout), layout)
    with pytest.raises(ValueError, match="params must be"):
        hashgrid_encode(torch.rand(3, 3), torch.zeros(5), layout)
    with pytest.raises(ValueError):
        GridLayout(2, 3, 8, 4, 1.5)
