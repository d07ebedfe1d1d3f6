"""Fused small MLP (bias-free, ReLU hidden layers, linear output) as one Triton kernel,
shaped for NerfField's density and colour MLPs (widths 16..128, a few layers).

One program takes ``BLOCK_M`` rows and runs every layer on chip: the activations stay
in registers between layers and each layer is one ``tl.dot`` of the ``[BLOCK_M, D]``
activations with that layer's ``[D, D]`` transposed weight. Every width is padded to
one ``D`` (the largest width rounded up to a power of two, at least 16, which is
``tl.dot``'s minimum), with zero rows/columns, so padding never changes a value.
Weights are packed into that padded ``[n_layers, D, D]`` buffer on each call (a few
KiB; training changes them every step).

Precision (``precision=``): ``"ieee"`` (float32 products, the default for float32
weights; matches torch to float rounding), ``"tf32"`` (tensor cores, ~1e-3 relative),
``"fp16"`` (float16 operands, float32 accumulation, as tiny-cuda-nn; the default for
float16 weights). The output is always float32.

Backward: through torch, by recomputation. ``backward`` re-runs the reference MLP on
the saved input and weights and differentiates it. The forward kernel is the hot path
(rendering); training steps are dominated by the hash grid's scattered gradient, so a
fused backward was not worth writing yet (tools/benchmarks/gpu.py times the forward).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from latentscape.kernels._common import check_dtype, check_same_device, interpret
from latentscape.kernels.reference.mlp import mlp_reference

__all__ = ["fused_mlp", "fused_mlp_fwd", "FusedMLPFunction", "MAX_WIDTH"]

MAX_WIDTH = 128
_PRECISIONS = ("ieee", "tf32", "fp16")


@triton.jit
def _fused_mlp_fwd_kernel(x_ptr, w_ptr, out_ptr, N, K_IN, N_OUT, stride_x,
                          D: tl.constexpr, N_LAYERS: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr):
    pid = tl.program_id(0)
    rows = (pid * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    cols = tl.arange(0, D)
    rmask = rows < N
    h = tl.load(x_ptr + rows[:, None] * stride_x + cols[None, :], mask=rmask[:, None] & (cols[None, :] < K_IN),
                other=0.0).to(tl.float32)
    for layer in tl.static_range(N_LAYERS):
        w = tl.load(w_ptr + layer * D * D + cols[:, None] * D + cols[None, :])
        if PRECISION == 2:
            h = tl.dot(h.to(tl.float16), w.to(tl.float16))
        elif PRECISION == 1:
            h = tl.dot(h, w.to(tl.float32), input_precision="tf32")
        else:
            h = tl.dot(h, w.to(tl.float32), input_precision="ieee")
        if layer < N_LAYERS - 1:
            h = tl.maximum(h, 0.0)
    tl.store(out_ptr + rows[:, None] * N_OUT + cols[None, :], h, mask=rmask[:, None] & (cols[None, :] < N_OUT))


def _padded_width(weights: list[torch.Tensor]) -> int:
    widest = max(max(w.shape) for w in weights)
    return max(16, triton.next_power_of_2(widest))


def pack_weights(weights: list[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
    """[out_i, in_i] per layer -> [n_layers, D, D] transposed (in, out), zero padded."""
    d = _padded_width(weights)
    packed = torch.zeros(len(weights), d, d, dtype=dtype, device=weights[0].device)
    for i, w in enumerate(weights):
        packed[i, : w.shape[1], : w.shape[0]] = w.detach().t().to(dtype)
    return packed


def _block_m(d: int) -> int:
    if interpret():
        return 512  # fewer programs: the CPU interpreter pays per program (tests only)
    # 64 rows keep a [64, 128] float32 activation tile in registers; not tuned on a GPU yet.
    return 128 if d <= 64 else 64


def fused_mlp_fwd(x: torch.Tensor, weights: list[torch.Tensor], precision: str) -> torch.Tensor:
    """Launch the kernel: x [N, in] (last dim contiguous) -> [N, out_last] float32."""
    n = x.shape[0]
    out = torch.empty(n, weights[-1].shape[0], dtype=torch.float32, device=x.device)
    if n == 0:
        return out
    d = _padded_width(weights)
    packed = pack_weights(weights, torch.float16 if precision == "fp16" else torch.float32)
    block_m = _block_m(d)
    _fused_mlp_fwd_kernel[(triton.cdiv(n, block_m),)](
        x, packed, out, n, x.shape[1], out.shape[1], x.stride(0),
        D=d, N_LAYERS=len(weights), PRECISION=_PRECISIONS.index(precision), BLOCK_M=block_m,
        num_warps=4 if d <= 64 else 8)
    return out


class FusedMLPFunction(torch.autograd.Function):
    """Forward in the fused kernel; backward by recomputing the torch reference."""

    @staticmethod
    def forward(ctx, x, precision, *weights):
        ctx.save_for_backward(x, *weights)
        return fused_mlp_fwd(x, list(weights), precision)

    @staticmethod
    def backward(ctx, grad_out):
        x, *weights = ctx.saved_tensors
        needs = ctx.needs_input_grad
        inputs = [t.detach().requires_grad_(need) for t, need in zip([x, *weights], [needs[0], *needs[2:]])]
        with torch.enable_grad():
            out = mlp_reference(inputs[0].float(), [w.float() for w in inputs[1:]])
        wanted = [t for t in inputs if t.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad_out)) if wanted else iter(())
        result = [next(grads) if t.requires_grad else None for t in inputs]
        return result[0], None, *result[1:]


def fused_mlp(x: torch.Tensor, weights: list[torch.Tensor], *, precision: str | None = None) -> torch.Tensor:
    """Bias-free ReLU MLP in one kernel; same contract as :func:`mlp_reference`.

    x:       [N, in] float32 or float16
    weights: [out_i, in_i] per layer (nn.Linear layout); widths up to 128
    returns  [N, out_last] float32; differentiable w.r.t. x and the weights.
    """
    weights = list(weights)
    if not weights:
        raise ValueError("fused_mlp needs at least one weight matrix")
    if x.ndim != 2:
        raise ValueError(f"x must be [N, in], got {tuple(x.shape)}")
    width = x.shape[1]
    for i, w in enumerate(weights):
        if w.ndim != 2 or w.shape[1] != width:
            raise ValueError(f"weight {i} must be [out, {width}], got {tuple(w.shape)}")
        check_same_device(**{f"weight {i}": w, "x": x})
        check_dtype(f"weight {i}", w)
        width = w.shape[0]
    check_dtype("x", x)
    if max(max(w.shape) for w in weights) > MAX_WIDTH:
        raise ValueError(f"fused_mlp handles widths up to {MAX_WIDTH}; use mlp_reference for wider layers")
    if precision is None:
        precision = "fp16" if weights[0].dtype == torch.float16 else "ieee"
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    if x.stride(-1) != 1:
        x = x.contiguous()
    return FusedMLPFunction.apply(x, precision, *weights)
