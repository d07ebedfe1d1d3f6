"""The numba CPU kernels against their torch references: values and gradients, irregular sizes."""

import math

import pytest

from helpers_core import walk_in_rounds
import torch

pytest.importorskip("numba")

from latentscape.kernels.cpu import hashgrid as cpu_hashgrid  # noqa: E402
from latentscape.kernels.cpu import raymarch as cpu_raymarch  # noqa: E402
from latentscape.kernels.cpu.sh import sh_packed  # noqa: E402
from latentscape.kernels.reference import packed as ref_packed  # noqa: E402
from latentscape.kernels.reference.hashgrid import GridLayout, hashgrid_encode, per_level_scale_for  # noqa: E402
from latentscape.kernels.reference.raymarch import ray_aabb  # noqa: E402
from latentscape.kernels.reference.sh import sh_encode  # noqa: E402

SIZES = (1, 7, 1000, 2**12 + 17)
# (levels, F, log2 T, finest): dense-only, dense prefix + hashed, many hashed levels, F = 1/4/8
CONFIGS = [(3, 2, 14, 24), (16, 2, 12, 512), (8, 4, 13, 300), (5, 1, 10, 64), (4, 8, 11, 128)]


def _layout(levels, F, T, finest):
    return GridLayout(levels, F, T, 16, per_level_scale_for(16, finest, levels))


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "L{}F{}T{}R{}".format(*c))
@pytest.mark.parametrize("n", SIZES)
def test_hashgrid_matches_reference(cfg, n):
    layout = _layout(*cfg)
    g = torch.Generator().manual_seed(n)
    params = (torch.rand(layout.n_params, generator=g) * 2 - 1).requires_grad_()
    x = torch.rand(n, 3, generator=g)
    x[0] = torch.tensor([0.0, 1.0, 0.5])  # the faces of the box (dense levels wrap there)
    x.requires_grad_()
    grad_out = torch.randn(n, layout.n_output_dims, generator=g)
    results = []
    for fn in (hashgrid_encode, cpu_hashgrid.hashgrid_encode):
        params.grad = x.grad = None
        out = fn(x, params, layout)
        (out * grad_out).sum().backward()
        results.append((out.detach(), params.grad.clone(), x.grad.clone()))
    (ref, ref_gp, ref_gx), (got, got_gp, got_gx) = results
    # Same corners, same weights: values agree to float32 rounding of the 8-term sums.
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_gp, ref_gp, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_gx, ref_gx, rtol=1e-4, atol=1e-3 * max(1.0, float(ref_gx.abs().max())) * 1e-2)


def test_hashgrid_fp16_params_and_bad_shapes():
    layout = _layout(6, 2, 12, 64)
    params = (torch.rand(layout.n_params) * 2 - 1).half()
    x = torch.rand(333, 3)
    torch.testing.assert_close(cpu_hashgrid.hashgrid_encode(x, params, layout), hashgrid_encode(x, params, layout),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="x must be"):
        cpu_hashgrid.hashgrid_encode(torch.rand(3, 2), params, layout)
    with pytest.raises(ValueError, match="params must be"):
        cpu_hashgrid.hashgrid_encode(x, params[:-1], layout)


def test_hashgrid_gradients_are_deterministic():
    layout = _layout(16, 2, 12, 512)
    params = (torch.rand(layout.n_params) * 2 - 1).requires_grad_()
    x = torch.rand(5000, 3)
    grads = []
    for _ in range(2):
        params.grad = None
        cpu_hashgrid.hashgrid_encode(x, params, layout).square().sum().backward()
        grads.append(params.grad.clone())
    assert torch.equal(grads[0], grads[1])


def _rays(n, seed, levels=1):
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g) * 3
    d = torch.nn.functional.normalize(-o + torch.randn(n, 3, generator=g) * 0.7, dim=-1)
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    tnear, tfar = ray_aabb(o, d, aabb * 2 ** (levels - 1), 0.05)
    return o, d, tnear, tfar, aabb


@pytest.mark.parametrize("levels", [1, 2])
@pytest.mark.parametrize("n", [0, 1, 7, 1000])
@pytest.mark.parametrize("k", [1, 5, 10**6])
def test_march_next_matches_reference(levels, n, k):
    o, d, tnear, tfar, aabb = _rays(n, seed=n + levels, levels=levels)
    bits = torch.rand(levels, 13, 13, 13, generator=torch.Generator().manual_seed(levels)) < 0.3
    ref = ref_packed.march_next(o, d, tnear, tfar, 0.031, bits, aabb, k)
    got = cpu_raymarch.march_next(o, d, tnear, tfar, 0.031, bits, aabb, k)
    assert torch.equal(got[0], ref[0])  # the same samples per ray ...
    assert torch.equal(got[1], ref[1])  # ... at the same distances
    assert torch.equal(got[2], ref[2])  # and the walks stop at the same place
    if n and k == 10**6:
        # Every ray's walk is finished, and no kept sample is past tfar.
        assert bool((got[2] >= tfar).all())
        ray = torch.repeat_interleave(torch.arange(n), got[0][1:] - got[0][:-1])
        assert bool((got[1] < tfar[ray]).all())


def test_march_next_continues_on_the_same_lattice():
    """Rounds of k samples give exactly the samples of one walk (the renderer's rounds)."""
    o, d, tnear, tfar, aabb = _rays(300, seed=3)
    bits = torch.rand(1, 16, 16, 16, generator=torch.Generator().manual_seed(0)) < 0.4
    dt = 0.017
    _, t_all, _ = ref_packed.march_next(o, d, tnear, tfar, dt, bits, aabb, 10**6)
    flat = walk_in_rounds(cpu_raymarch.march_next, o, d, tnear, tfar, dt, bits, aabb, 3)
    assert flat.numel() == t_all.numel()
    torch.testing.assert_close(flat, t_all, rtol=0, atol=2e-5)  # a few ulps: t restarts each round


@pytest.mark.parametrize("n", [1, 7, 1000])
def test_composite_packed_matches_reference(n):
    g = torch.Generator().manual_seed(n)
    counts = torch.randint(0, 40, (n,), generator=g)
    counts[0] = 0  # an empty ray
    offsets = torch.zeros(n + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(counts, 0)
    s = int(offsets[-1])
    sigma = (torch.rand(s, generator=g) * 30).requires_grad_()
    rgb = torch.rand(s, 3, generator=g).requires_grad_()
    t = torch.rand(s, generator=g) * 4
    trans = torch.rand(n, generator=g)
    grads = [torch.randn(n, 3, generator=g), torch.randn(n, generator=g), torch.randn(n, generator=g),
             torch.randn(n, generator=g)]
    results = []
    for impl in (ref_packed, cpu_raymarch):
        sigma.grad = rgb.grad = None
        outs = impl.composite_packed(sigma, rgb, t, 0.023, offsets, trans)
        sum((o * gr).sum() for o, gr in zip(outs, grads)).backward()
        results.append([o.detach() for o in outs] + [sigma.grad.clone(), rgb.grad.clone()])
    for got, ref in zip(results[1], results[0]):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    # Empty ray: nothing added, transmittance unchanged.
    assert float(results[1][2][0]) == 0.0 and float(results[1][3][0]) == float(trans[0])


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
def test_sh_packed_matches_reference(degree):
    g = torch.Generator().manual_seed(degree)
    d = torch.nn.functional.normalize(torch.randn(57, 3, generator=g), dim=-1)
    counts = torch.randint(0, 5, (57,), generator=g)
    offsets = torch.zeros(58, dtype=torch.int64)
    offsets[1:] = torch.cumsum(counts, 0)
    ray = torch.repeat_interleave(torch.arange(57), counts)
    torch.testing.assert_close(sh_packed(d, offsets, degree), sh_encode(d[ray], degree), rtol=1e-5, atol=1e-6)


def test_sample_points_matches_field_normalisation():
    o, d, tnear, tfar, aabb = _rays(200, seed=5)
    bits = torch.ones(1, 8, 8, 8, dtype=torch.bool)
    off, t, _ = ref_packed.march_next(o, d, tnear - 0.2, tfar + 0.2, 0.05, bits, aabb * 2, 10**6)
    ray = torch.repeat_interleave(torch.arange(200), off[1:] - off[:-1])
    ref = (((o[ray] + t[:, None] * d[ray]) - aabb[:3]) / (aabb[3:] - aabb[:3])).clamp(0, 1)
    got = cpu_raymarch.sample_points(o, d, t, off, aabb)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    assert math.isclose(float(got.min()), 0.0) and math.isclose(float(got.max()), 1.0)  # clamped outside the box
