"""What the Triton ops share: the interpreter switch, the input checks their Python
APIs run once before a launch, and the ``@triton.jit`` helpers of the hash grid.

Importing this module does not import Triton; :func:`jit_helpers` does, on first use.
"""

from __future__ import annotations

import os
from typing import Iterable

import torch

from latentscape.kernels.layout import GridLayout

__all__ = ["interpret", "block_size", "check_floating", "check_dtype", "check_same_device", "check_points",
           "check_encoding_inputs", "jit_helpers"]

_TRUE = ("1", "true", "on", "yes")


def interpret() -> bool:
    """True when ``TRITON_INTERPRET`` asks for Triton's CPU interpreter.

    Parsed as Triton 3.x parses it (``1``, ``true``, ``on``, ``yes``, any case), so the
    block sizes picked here agree with how the kernels actually run."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in _TRUE


def block_size(gpu: int, interpreted: int) -> int:
    """``interpreted`` under the CPU interpreter (it pays Python overhead per program,
    so fewer, larger programs are faster), else ``gpu``."""
    return interpreted if interpret() else gpu


# --------------------------------------------------------------------------- input checks
# Raised once at an op's Python API, before any launch (the gsplat habit): a wrong
# shape, dtype or device is a clear TypeError/ValueError, never a kernel fault.

def check_floating(name: str, t: torch.Tensor) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {t.dtype}")


def check_dtype(name: str, t: torch.Tensor, dtypes: Iterable[torch.dtype] = (torch.float32, torch.float16)) -> None:
    dtypes = tuple(dtypes)
    if t.dtype not in dtypes:
        names = " or ".join(str(d).removeprefix("torch.") for d in dtypes)
        raise TypeError(f"{name} must be {names}, got {t.dtype}")


def check_same_device(**tensors: torch.Tensor) -> None:
    """All tensors on one device (named in the message when they are not)."""
    items = list(tensors.items())
    first, ref = items[0]
    for name, t in items[1:]:
        if t.device != ref.device:
            raise ValueError(f"{name} is on {t.device} but {first} on {ref.device}")


def check_points(name: str, x: torch.Tensor, dims: int = 3) -> None:
    """``x`` is ``[N, dims]``."""
    if x.ndim != 2 or x.shape[1] != dims:
        raise ValueError(f"{name} must be [N, {dims}], got {tuple(x.shape)}")


def check_encoding_inputs(x: torch.Tensor, params: torch.Tensor, layout: GridLayout) -> None:
    """The hash-grid op's contract, checked once before a launch (every backend but the
    reference runs it): layout, shapes, dtypes, one device."""
    if not isinstance(layout, GridLayout):
        raise TypeError(f"layout must be a GridLayout, got {type(layout).__name__}")
    check_points("x", x, layout.n_dims)
    if params.shape != (layout.n_params,):
        raise ValueError(f"params must be [{layout.n_params}], got {tuple(params.shape)}")
    check_floating("x", x)
    check_dtype("params", params)
    check_same_device(x=x, params=params)


# --------------------------------------------------------------------------- @triton.jit helpers

_JIT: dict[bool, dict[str, object]] = {}
tl = None  # triton.language, bound by jit_helpers()


def jit_helpers() -> dict[str, object]:
    """The shared ``@triton.jit`` helpers, defined on first call (so that importing this
    module needs no Triton) and cached per interpreter mode (Triton reads the switch when
    a function is decorated; a kernel and its helpers must agree):

    ``grid_cell(x_ptr, rows64, mask, scale)`` -> ``(cx, cy, cz, tx, ty, tz)``: a point's
    cell (int32) and position in it, ``pos = x * scale + 0.5`` as the reference rounds it;
    ``grid_corner(cx, cy, cz, bx, by, bz, res, size, IS_DENSE)`` -> the entry index (int32,
    within its level) of corner ``cell + (bx, by, bz)``: dense ``x + y*res + z*res^2``
    wrapped once at the level size, or the CoherentPrime hash masked to the table size.
    """
    global tl
    mode = interpret()
    if mode in _JIT:
        return _JIT[mode]
    import triton
    import triton.language as tl  # a module global: Triton resolves ``tl`` in the helpers' globals

    @triton.jit
    def grid_cell(x_ptr, rows64, mask, scale):
        px = tl.load(x_ptr + rows64 * 3 + 0, mask=mask, other=0.0).to(tl.float32) * scale + 0.5
        py = tl.load(x_ptr + rows64 * 3 + 1, mask=mask, other=0.0).to(tl.float32) * scale + 0.5
        pz = tl.load(x_ptr + rows64 * 3 + 2, mask=mask, other=0.0).to(tl.float32) * scale + 0.5
        fx = tl.floor(px)
        fy = tl.floor(py)
        fz = tl.floor(pz)
        return fx.to(tl.int32), fy.to(tl.int32), fz.to(tl.int32), px - fx, py - fy, pz - fz

    @triton.jit
    def grid_corner(cx, cy, cz, bx: tl.constexpr, by: tl.constexpr, bz: tl.constexpr, res, size,
                    IS_DENSE: tl.constexpr):
        x = (cx + bx).to(tl.uint32)
        y = (cy + by).to(tl.uint32)
        z = (cz + bz).to(tl.uint32)
        if IS_DENSE:
            r = res.to(tl.uint32)
            idx = x + y * r + z * (r * r)
            # Past the far edge the dense index exceeds the level size by less than one size.
            idx = tl.where(idx >= size.to(tl.uint32), idx - size.to(tl.uint32), idx)
        else:
            idx = (x ^ (y * 2654435761) ^ (z * 805459861)) & (size - 1).to(tl.uint32)
        return idx.to(tl.int32)

    _JIT[mode] = {"grid_cell": grid_cell, "grid_corner": grid_corner}
    return _JIT[mode]
