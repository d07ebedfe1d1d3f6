"""Pure-torch filtered leaky ReLU: the reference that defines what the fast paths compute.

The torch twin of :func:`latentscape.kernels.filtered_lrelu.filtered_lrelu_triton`
(its pointwise ``_filtered_lrelu_fwd_kernel`` / ``_bwd_kernel``); ``tests/test_filtered_lrelu.py``
checks that the two agree.

The op is the activation of an alias-free (StyleGAN3) synthesis layer. Per channel:

1. add the bias ``b`` (before anything else, so zero padding stays zero);
2. upsample by ``up`` (insert ``up - 1`` zeros after each sample);
3. pad / crop by ``padding = [x0, x1, y0, y1]`` (negative crops), relative to the
   upsampled image;
4. convolve with the upsampling FIR ``fu`` scaled by ``up**2`` in total (so the
   upsampled signal keeps its DC level), keeping only fully-covered outputs;
5. leaky ReLU with ``slope``, times ``gain``, clamp to ``[-clamp, clamp]``;
6. convolve with the downsampling FIR ``fd`` and keep every ``down``-th sample.

Filters are ``None`` (identity), ``[taps]`` (separable, applied along x then y) or
``[h, w]`` (non-separable, e.g. radial). They are *convolved*, i.e. flipped before
the correlation torch performs (the filters StyleGAN3 designs are symmetric, so this
only matters for odd user-supplied filters).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["filtered_lrelu_ref", "upfirdn2d_ref", "parse_padding", "output_size"]


def parse_padding(padding: int | list[int] | tuple[int, ...]) -> tuple[int, int, int, int]:
    """``p`` | ``[px, py]`` | ``[x0, x1, y0, y1]`` -> ``(x0, x1, y0, y1)``."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    if len(padding) != 4:
        raise ValueError(f"padding must have 1, 2 or 4 entries, got {padding}")
    return padding[0], padding[1], padding[2], padding[3]


def _taps(f: torch.Tensor | None) -> tuple[int, int]:
    if f is None:
        return 1, 1
    return int(f.shape[-1]), int(f.shape[0])  # width, height


def output_size(in_h: int, in_w: int, fu, fd, up: int, down: int, padding) -> tuple[int, int]:
    """Spatial output size ``(h, w)`` of :func:`filtered_lrelu_ref` for these settings."""
    x0, x1, y0, y1 = parse_padding(padding)
    fu_w, fu_h = _taps(fu)
    fd_w, fd_h = _taps(fd)
    out_w = (in_w * up + x0 + x1 - (fu_w - 1) - (fd_w - 1) + (down - 1)) // down
    out_h = (in_h * up + y0 + y1 - (fu_h - 1) - (fd_h - 1) + (down - 1)) // down
    return out_h, out_w


def upfirdn2d_ref(
    x: torch.Tensor,  # [N, C, H, W]
    f: torch.Tensor | None,  # None | [taps] | [fh, fw]
    up: int = 1,
    down: int = 1,
    padding=0,
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample (zero insertion), pad, FIR-filter (times ``gain``), downsample."""
    n, c, h, w = x.shape
    x0, x1, y0, y1 = parse_padding(padding)
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])
    x = x[:, :, max(-y0, 0) : x.shape[2] - max(-y1, 0), max(-x0, 0) : x.shape[3] - max(-x1, 0)]
    if f is None:
        if gain != 1:
            x = x * gain
    else:
        # A separable filter carries sqrt(gain) per axis, a 2-D one all of it.
        f = (f * gain ** (f.ndim / 2)).to(x.dtype).flip(list(range(f.ndim)))
        if f.ndim == 1:
            k = f.numel()
            x = F.conv2d(x, f.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
            x = F.conv2d(x, f.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
        else:
            x = F.conv2d(x, f[None, None].expand(c, 1, *f.shape), groups=c)
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


def filtered_lrelu_ref(
    x: torch.Tensor,  # [N, C, H, W]
    fu: torch.Tensor | None = None,  # None | [taps] | [fh, fw]
    fd: torch.Tensor | None = None,  # None | [taps] | [fh, fw]
    b: torch.Tensor | None = None,  # [C]
    up: int = 1,
    down: int = 1,
    padding=0,
    gain: float = math.sqrt(2),
    slope: float = 0.2,
    clamp: float | None = None,
) -> torch.Tensor:
    """Reference filtered leaky ReLU (see the module docstring); differentiable by autograd."""
    if x.ndim != 4:
        raise ValueError(f"x must be [N, C, H, W], got {tuple(x.shape)}")
    if b is not None:
        x = x + b.to(x.dtype).view(1, -1, 1, 1)
    x = upfirdn2d_ref(x, fu, up=up, padding=padding, gain=up**2)
    x = F.leaky_relu(x, slope) if slope != 1 else x
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return upfirdn2d_ref(x, fd, down=down)
