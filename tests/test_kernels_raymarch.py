"""Triton marcher and compositor (under TRITON_INTERPRET=1 on the CPU) against the
torch references: rays that miss the box, start inside it, cross cascaded occupancy
levels, fully opaque and fully empty segments; compositing values and gradients."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")

from latentscape.kernels import raymarch as tri  # noqa: E402
from latentscape.kernels.reference import raymarch as ref  # noqa: E402

AABB = torch.tensor([-1.0, -0.5, -1.0, 1.0, 1.5, 0.5])


def _rays(n: int, seed: int, inside_fraction: float = 0.3):
    """Rays from outside the box (some missing it) and from inside it."""
    g = torch.Generator().manual_seed(seed)
    o = (torch.rand(n, 3, generator=g) * 2 - 1) * 3.0
    n_in = int(n * inside_fraction)
    o[:n_in] = AABB[:3] + torch.rand(n_in, 3, generator=g) * (AABB[3:] - AABB[:3])
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    tnear, tfar = ref.ray_aabb(o, d, AABB, 0.05)
    return o, d, tnear, tfar


@pytest.mark.parametrize("levels,res,fill", [(1, 16, 0.5), (3, 8, 0.3), (2, 32, 1.0), (1, 16, 0.0)])
@pytest.mark.parametrize("n,steps", [(1, 1), (7, 32), (1000, 16), (2**12 + 17, 8)])
def test_march_matches_reference(n, steps, levels, res, fill):
    o, d, tnear, tfar = _rays(n, seed=n + levels)
    g = torch.Generator().manual_seed(1)
    bits = torch.rand(levels, res, res, res, generator=g) < fill
    dt = 0.013 * (1 << (levels - 1))
    if levels > 1:  # cascades: march past the box so samples reach the outer levels
        tfar = torch.full_like(tfar, 1e9)
    want_t, want_valid = ref.march_segment(o, d, tnear, tfar, dt, steps, bits, AABB)
    got_t, got_valid = tri.march_segment(o, d, tnear, tfar, dt, steps, bits, AABB)
    assert got_valid.dtype == torch.bool and got_t.shape == (n, steps)
    torch.testing.assert_close(got_t, want_t, rtol=0, atol=0)
    assert torch.equal(got_valid, want_valid)
    if fill == 0.0:
        assert not got_valid.any()
    if levels > 1 and n > 100:
        pts = o[:, None] + got_t[..., None] * d[:, None]
        rel = ((pts - (AABB[:3] + AABB[3:]) / 2) / ((AABB[3:] - AABB[:3]) / 2)).abs().amax(-1)
        assert got_valid[rel > 1.0].any(), "no valid sample beyond level 0: the cascade went untested"


def test_march_rays_that_miss_and_start_inside():
    o = torch.tensor([[0.0, 0.5, -0.25], [5.0, 5.0, 5.0], [0.0, 3.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    tnear, tfar = ref.ray_aabb(o, d, AABB, 0.0)
    assert tnear[1] >= tfar[1]  # misses
    bits = torch.ones(1, 8, 8, 8, dtype=torch.bool)
    t, valid = tri.march_segment(o, d, tnear, tfar, 0.1, 40, bits, AABB)
    want_t, want_valid = ref.march_segment(o, d, tnear, tfar, 0.1, 40, bits, AABB)
    assert torch.equal(valid, want_valid) and torch.equal(t, want_t)
    assert valid[0, 0] and not valid[1].any() and valid[2].sum() == 20  # inside: from t=0; the third crosses 2 units


def _segment(n: int, steps: int, seed: int, kind: str):
    g = torch.Generator().manual_seed(seed)
    sigma = torch.rand(n, steps, generator=g) * 30.0
    sigma[torch.rand(n, steps, generator=g) < 0.4] = 0.0  # samples skipped by the marcher
    if kind == "opaque":
        sigma[:, :] = 1e4  # alpha == 1 from the first sample on
    elif kind == "empty":
        sigma.zero_()
    rgb = torch.rand(n, steps, 3, generator=g)
    t = 0.5 + torch.arange(steps, dtype=torch.float32)[None] * 0.02 + torch.rand(n, 1, generator=g)
    trans = torch.rand(n, generator=g) * 0.9 + 0.1
    return sigma, rgb, t, trans


@pytest.mark.parametrize("kind", ["mixed", "opaque", "empty"])
@pytest.mark.parametrize("n,steps", [(1, 1), (7, 32), (1000, 16), (2**12 + 17, 4)])
def test_composite_matches_reference(n, steps, kind):
    sigma, rgb, t, trans = _segment(n, steps, seed=n + steps, kind=kind)
    got = tri.composite_segment(sigma, rgb, t, 0.02, trans)
    want = ref.composite_segment(sigma, rgb, t, 0.02, trans)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if kind == "empty":
        assert torch.equal(got[3], trans) and not got[2].any()
    if kind == "opaque":
        assert not got[3].any()


@pytest.mark.parametrize("kind", ["mixed", "opaque", "empty"])
@pytest.mark.parametrize("n,steps", [(7, 32), (1000, 16)])
def test_composite_gradients_match_reference(n, steps, kind):
    sigma, rgb, t, trans = _segment(n, steps, seed=100 + n, kind=kind)
    a = [v.clone().requires_grad_() for v in (sigma, rgb, trans)]
    b = [v.clone().requires_grad_() for v in (sigma, rgb, trans)]
    out_a = tri.composite_segment(a[0], a[1], t, 0.02, a[2])
    out_b = ref.composite_segment(b[0], b[1], t, 0.02, b[2])
    g = torch.Generator().manual_seed(7)
    grads = [torch.randn(o.shape, generator=g) for o in out_b]
    got = torch.autograd.grad(out_a, a, grads)
    want = torch.autograd.grad(out_b, b, grads)
    for name, x, y in zip(("sigma", "rgb", "transmittance"), got, want):
        # The sigma gradient subtracts a running prefix from the ray's total (cancellation):
        # compare relative to the largest gradient.
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-4 * max(float(y.abs().max()), 1e-6), msg=name)


def test_composite_gradient_through_two_segments():
    """The transmittance carries the first segment's densities into the second's output."""
    sigma, rgb, t, trans = _segment(50, 8, seed=3, kind="mixed")
    leaves = {}
    for impl in (tri, ref):
        s = sigma.clone().requires_grad_()
        c1, _, _, t1 = impl.composite_segment(s[:, :4], rgb[:, :4], t[:, :4], 0.05, trans)
        c2, _, _, _ = impl.composite_segment(s[:, 4:], rgb[:, 4:], t[:, 4:], 0.05, t1)
        (c1 + c2).sum().backward()
        leaves[impl] = s.grad
    torch.testing.assert_close(leaves[tri], leaves[ref], rtol=1e-4, atol=1e-6)


def test_input_checks():
    sigma, rgb, t, trans = _segment(4, 3, seed=0, kind="mixed")
    with pytest.raises(ValueError, match="expected rgb"):
        tri.composite_segment(sigma, rgb[:, :2], t, 0.1, trans)
    with pytest.raises(ValueError, match="sigma must be"):
        tri.composite_segment(sigma[0], rgb, t, 0.1, trans)
    o, d, tnear, tfar = _rays(4, seed=0)
    bits = torch.ones(1, 4, 4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="o and d"):
        tri.march_segment(o[:, :2], d, tnear, tfar, 0.1, 4, bits, AABB)
    with pytest.raises(ValueError, match="bitfield"):
        tri.march_segment(o, d, tnear, tfar, 0.1, 4, bits[0], AABB)
    with pytest.raises(ValueError, match="n_steps"):
        tri.march_segment(o, d, tnear, tfar, 0.1, 0, bits, AABB)
