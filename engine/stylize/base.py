"""The ``Stylizer`` contract shared by the distilled student and the diffusion stage.

A stylizer maps a frame to a frame of the same shape: ``[3, H, W]`` or
``[N, 3, H, W]``, float RGB in ``[0, 1]``. ``name`` and ``version`` identify it in the
scene lock (``version`` changes whenever the weights or settings that shape the
output change).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from latentscape.errors import ConfigError


@runtime_checkable
class Stylizer(Protocol):
    """Anything the frame loop can call as ``frame = stylizer(frame)``."""

    name: str
    version: str

    def __call__(self, frame: Tensor) -> Tensor:  # [3,H,W] or [N,3,H,W] in [0,1] -> same shape
        ...


def as_batch(frame: Tensor, *, what: str = "frame") -> tuple[Tensor, bool]:
    """Check a frame and return it as ``[N, 3, H, W]`` plus whether it was unbatched."""
    if not isinstance(frame, Tensor):
        raise ConfigError(f"{what} must be a torch.Tensor, got {type(frame).__name__}",
                          hint="pass float RGB in [0, 1], shaped [3, H, W] or [N, 3, H, W]")
    if frame.ndim == 3:
        frame, single = frame.unsqueeze(0), True
    elif frame.ndim == 4:
        single = False
    else:
        raise ConfigError(f"{what} must be [3, H, W] or [N, 3, H, W], got shape {tuple(frame.shape)}")
    if frame.shape[1] != 3:
        raise ConfigError(f"{what} must have 3 (RGB) channels, got shape {tuple(frame.shape)}",
                          hint="drop alpha before stylizing; channels come first (NCHW)")
    if not frame.is_floating_point():
        raise ConfigError(f"{what} must be a float tensor in [0, 1], got {frame.dtype}",
                          hint="convert uint8 frames with frame.float() / 255")
    return frame, single


def pad_to_multiple(x: Tensor, multiple: int) -> tuple[Tensor, int, int]:
    """Reflect-pad ``[N, C, H, W]`` on the bottom/right to a multiple; returns it and the old H, W."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if (ph < h and pw < w) else "replicate"
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w
