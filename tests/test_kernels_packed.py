"""Triton packed marcher and compositor (kernels/packed.py, the GPU frame's hot loop) under
TRITON_INTERPRET=1 on the CPU, against the torch references of kernels/reference/packed.py:
irregular ray counts, cascaded levels, rays that miss the box or start inside it, round
sizes from 1 to unlimited, compositing values and gradients."""

from __future__ import annotations

import pytest
import torch

from helpers_core import walk_in_rounds

pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")

from latentscape.kernels import packed as tri  # noqa: E402
from latentscape.kernels.reference import packed as ref  # noqa: E402
from latentscape.kernels.reference.raymarch import ray_aabb  # noqa: E402
from latentscape.kernels.reference.sh import sh_encode  # noqa: E402

AABB = torch.tensor([-1.0, -0.5, -1.0, 1.0, 1.5, 0.5])


def _rays(n, seed, levels=1):
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g) * 3
    d = torch.nn.functional.normalize(-o + torch.randn(n, 3, generator=g) * 0.7, dim=-1)
    n_in = n // 5
    center, half = (AABB[:3] + AABB[3:]) / 2, (AABB[3:] - AABB[:3]) / 2
    o[:n_in] = center + (torch.rand(n_in, 3, generator=g) * 2 - 1) * half  # rays starting inside the box
    d[n_in:n_in + 1] = torch.tensor([0.0, 0.0, 1.0])  # axis-aligned: zero components
    big = torch.cat([center - half * 2 ** (levels - 1), center + half * 2 ** (levels - 1)])
    tnear, tfar = ray_aabb(o, d, big, 0.05)
    return o, d, tnear, tfar


# (levels, resolution, occupied fraction, rays, samples per round): cascades, empty and full
# grids, irregular ray counts, round sizes from 1 to unlimited. The interpreter runs a lane
# per ray through its whole walk, so the cases are chosen rather than crossed.
CASES = [(1, 13, 0.3, 0, 5), (1, 13, 0.3, 1, 1), (1, 13, 0.3, 1000, 10**6), (1, 13, 0.3, 2**11 + 17, 5),
         (2, 8, 0.5, 7, 10**6), (2, 8, 0.5, 1000, 1), (3, 16, 0.1, 400, 5), (3, 16, 0.1, 101, 10**6),
         (1, 16, 0.0, 1000, 10**6), (2, 8, 1.0, 277, 5), (2, 8, 1.0, 90, 10**6)]


@pytest.mark.parametrize("levels,res,fill,n,k", CASES)
def test_march_next_matches_reference(levels, res, fill, n, k):
    o, d, tnear, tfar = _rays(n, seed=n + levels, levels=levels)
    bits = torch.rand(levels, res, res, res, generator=torch.Generator().manual_seed(levels)) < fill
    # A coarse step keeps the interpreter's per-step cost down (a lane walks its whole ray).
    want = ref.march_next(o, d, tnear, tfar, 0.071, bits, AABB, k)
    got = tri.march_next(o, d, tnear, tfar, 0.071, bits, AABB, k)
    assert torch.equal(got[0], want[0])  # the same samples per ray ...
    assert torch.equal(got[1], want[1])  # ... at the same distances, bit for bit
    assert torch.equal(got[2], want[2])  # and the walks stop at the same place


def test_march_next_rounds_continue_on_the_same_lattice():
    """Rounds of k samples (the renderer's loop) give exactly the samples of one walk."""
    o, d, tnear, tfar = _rays(60, seed=3, levels=2)
    bits = torch.rand(2, 16, 16, 16, generator=torch.Generator().manual_seed(0)) < 0.4
    dt = 0.061
    _, t_all, _ = ref.march_next(o, d, tnear, tfar, dt, bits, AABB, 10**6)
    flat = walk_in_rounds(tri.march_next, o, d, tnear, tfar, dt, bits, AABB, 11)
    assert flat.numel() == t_all.numel()
    torch.testing.assert_close(flat, t_all, rtol=0, atol=2e-5)


@pytest.mark.parametrize("n,bound", [(1, None), (7, "exact"), (1000, None), (2**11 + 3, "exact")])
def test_composite_packed_matches_reference(n, bound):
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
    max_count = int(counts.max()) if bound else None
    results = []
    for impl in (ref, tri):
        sigma.grad = rgb.grad = None
        outs = impl.composite_packed(sigma, rgb, t, 0.023, offsets, trans, max_count=max_count)
        sum((o * gr).sum() for o, gr in zip(outs, grads)).backward()
        results.append([o.detach() for o in outs] + [sigma.grad.clone(), rgb.grad.clone()])
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert float(results[1][2][0]) == 0.0 and float(results[1][3][0]) == float(trans[0])


def test_composite_packed_checks_shapes():
    off = torch.tensor([0, 2, 3])
    with pytest.raises(ValueError, match="expected sigma"):
        tri.composite_packed(torch.rand(4), torch.rand(3, 3), torch.rand(3), 0.1, off, torch.ones(2))


@pytest.mark.parametrize("degree", [1, 4])
def test_sample_points_and_sh_match_the_field(degree):
    o, d, tnear, tfar = _rays(203, seed=5)
    bits = torch.ones(1, 8, 8, 8, dtype=torch.bool)
    off, t, _ = ref.march_next(o, d, tnear - 0.2, tfar + 0.2, 0.05, bits, AABB * 2, 10**6)
    ray = torch.repeat_interleave(torch.arange(203), off[1:] - off[:-1])
    want = (((o[ray] + t[:, None] * d[ray]) - AABB[:3]) / (AABB[3:] - AABB[:3])).clamp(0, 1)
    torch.testing.assert_close(tri.sample_points(o, d, t, off, AABB), want, rtol=1e-6, atol=1e-6)
    for n_samples in (None, t.numel()):
        torch.testing.assert_close(tri.sh_packed(d, off, degree, n_samples=n_samples), sh_encode(d[ray], degree),
                                   rtol=1e-5, atol=1e-6)
