"""Bias-free ReLU MLP in pure torch: the reference for the fused Triton MLP.

The network is tiny-cuda-nn's FullyFusedMLP shape (and :func:`latentscape.field.nerf.make_mlp`'s):
``h = x; h = relu(h @ W_i^T)`` for every layer but the last, which is linear.

The torch twin of the Triton kernel :func:`latentscape.kernels.mlp.fused_mlp`
(``_fused_mlp_fwd_kernel``); ``tests/test_kernels_mlp.py`` checks that the two agree.
"""

from __future__ import annotations

import torch


def mlp_reference(x: torch.Tensor, weights: list[torch.Tensor]) -> torch.Tensor:
    """x: [N, in]; weights: [out_i, in_i] per layer (nn.Linear layout) -> [N, out_last]."""
    h = x
    for i, w in enumerate(weights):
        h = torch.nn.functional.linear(h, w)
        if i < len(weights) - 1:
            h = h.relu_()  # in place: the fresh linear output is not needed by autograd
    return h
