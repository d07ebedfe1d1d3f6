"""Triton SH encoding (under TRITON_INTERPRET=1 on the CPU) against the torch reference:
values and gradients, degrees 1-4, float32 and float16 directions, irregular counts."""

from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed: the Triton kernels cannot be tested")

from latentscape.kernels.reference.sh import sh_encode as reference  # noqa: E402
from latentscape.kernels.sh import sh_encode  # noqa: E402

SIZES = [1, 17, 1823, 2**12 + 17]
# Both sides evaluate the same polynomials in float32 without fused multiply-adds.
TOL = {torch.float32: dict(rtol=1e-6, atol=1e-6), torch.float16: dict(rtol=1e-6, atol=1e-6)}


def directions(n: int, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, 3, generator=g)
    return torch.nn.functional.normalize(d, dim=-1).to(dtype)


@pytest.mark.parametrize("degree", [1, 2, 3, 4])
@pytest.mark.parametrize("n", SIZES)
def test_values_match_the_reference(degree, n):
    d = directions(n, seed=n)
    got = sh_encode(d, degree)
    assert got.shape == (n, degree**2) and got.dtype == torch.float32
    torch.testing.assert_close(got, reference(d, degree), **TOL[torch.float32])


def test_float16_directions_are_computed_in_float32():
    d = directions(1000, torch.float16)
    torch.testing.assert_close(sh_encode(d, 4), reference(d.float(), 4), **TOL[torch.float16])


@pytest.mark.parametrize("degree", [2, 4])
def test_gradients_match_the_reference(degree):
    d = directions(2**7 + 17, seed=3).requires_grad_(True)
    g = torch.randn(d.shape[0], degree**2, generator=torch.Generator().manual_seed(1))
    (ours,) = torch.autograd.grad(sh_encode(d, degree), d, g)
    (ref,) = torch.autograd.grad(reference(d, degree), d, g)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_empty_and_bad_inputs():
    assert sh_encode(torch.zeros(0, 3), 3).shape == (0, 9)
    with pytest.raises(ValueError, match="degree"):
        sh_encode(directions(4), 5)
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        sh_encode(torch.zeros(4, 2))
    with pytest.raises(TypeError, match="floating point"):
        sh_encode(torch.zeros(4, 3, dtype=torch.int32))
