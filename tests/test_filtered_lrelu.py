"""Filtered leaky ReLU: the Triton kernel (under TRITON_INTERPRET=1 on the CPU) against
the torch reference, forward and backward, at irregular sizes.

The kernels are defined lazily on first use and cached per interpreter mode
(``latentscape.kernels.filtered_lrelu._kernels``), so setting the variable in a fixture
before the first launch is enough; no subprocess is needed.
"""

from __future__ import annotations

import math

import pytest
import torch

from latentscape.kernels.filtered_lrelu import filtered_lrelu
from latentscape.kernels.reference.filtered_lrelu import filtered_lrelu_ref, output_size
from latentscape.texture.filters import lowpass_filter

pytest.importorskip("triton")


@pytest.fixture
def interpret(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


CASES = [
    # (N, C, H, W, up, down, taps_up, taps_down, radial, padding, slope, gain, clamp)
    (1, 3, 7, 9, 2, 2, 12, 12, False, [7, 6, 7, 6], 0.2, math.sqrt(2), 0.5),
    (2, 5, 13, 11, 2, 1, 12, 1, False, [5, 4, 5, 4], 0.2, math.sqrt(2), None),
    (1, 4, 10, 10, 1, 2, 1, 12, True, [6, 5, 6, 5], 0.2, math.sqrt(2), 256.0),
    (2, 3, 17, 6, 1, 1, 1, 1, False, 0, 1.0, 1.0, 0.3),  # ToRGB-like: linear, clamp only
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_triton_matches_reference(interpret, case):
    n, c, h, w, up, down, tu, td, radial, pad, slope, gain, clamp = case
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=g, dtype=torch.float64).float()
    b = torch.randn(c, generator=g) * 0.5
    fu = lowpass_filter(tu, 4.0, 6.0, 32)
    fd = lowpass_filter(td, 4.0, 6.0, 32, radial=radial)
    ys, grads = [], []
    for impl in ("torch", "triton"):
        xi, bi = x.clone().requires_grad_(True), b.clone().requires_grad_(True)
        y = filtered_lrelu(xi, fu, fd, bi, up=up, down=down, padding=pad, gain=gain, slope=slope,
                           clamp=clamp, impl=impl)
        dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1))
        (y * dy).sum().backward()
        ys.append(y.detach())
        grads.append((xi.grad, bi.grad))
    assert ys[0].shape == ys[1].shape == (n, c, *output_size(h, w, fu, fd, up, down, pad))
    torch.testing.assert_close(ys[1], ys[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[1][1], grads[0][1], atol=1e-4, rtol=1e-5)


def test_reference_identity_case():
    x = torch.randn(2, 3, 5, 7)
    b = torch.randn(3)
    y = filtered_lrelu_ref(x, None, None, b, gain=2.0, slope=0.1, clamp=0.8)
    expect = (torch.nn.functional.leaky_relu(x + b.view(1, 3, 1, 1), 0.1) * 2.0).clamp(-0.8, 0.8)
    torch.testing.assert_close(y, expect)


def test_generator_with_triton_backend(interpret, monkeypatch, tiny_generator):
    G = tiny_generator()
    z = torch.randn(1, 8)
    with torch.no_grad():
        ref = G(z)
        monkeypatch.setenv("LATENTSCAPE_FILTERED_LRELU", "triton")
        tri = G(z)
    torch.testing.assert_close(tri, ref, atol=1e-5, rtol=1e-5)
