"""Guardrail policy: the slate a blocked frame becomes, and what counts as a usable
replacement (same shape and dtype, finite latents). Anything else fails closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from latentscape.errors import ConfigError

BLOCKED = "latentscape.blocked"
"""``ctx.extras`` key: a latent guardrail blocked this frame, so :meth:`check_frame` shows the slate."""
SLATED = "latentscape.slate"
"""``ctx.extras`` key: this frame was replaced by the slate (the value says why)."""


def make_slate(slate: Any, height: int, width: int, *, root: Path | None = None) -> np.ndarray:
    """The slate as a uint8 [H, W, 3] image."""
    if isinstance(slate, str) and slate.startswith("#"):
        s = slate.lstrip("#")
        if len(s) != 6:
            raise ConfigError(f"slate colour {slate!r} must be #rrggbb")
        try:
            rgb = [int(s[i:i + 2], 16) for i in (0, 2, 4)]
        except ValueError:
            raise ConfigError(f"slate colour {slate!r} must be #rrggbb") from None
        return np.broadcast_to(np.array(rgb, np.uint8), (height, width, 3)).copy()
    if isinstance(slate, (list, tuple)):
        if len(slate) != 3 or not all(isinstance(v, (int, float)) and 0 <= v <= 1 for v in slate):
            raise ConfigError(f"slate colour {slate!r} must be three numbers in 0..1")
        rgb = [int(round(float(v) * 255)) for v in slate]
        return np.broadcast_to(np.array(rgb, np.uint8), (height, width, 3)).copy()
    if isinstance(slate, str):
        from PIL import Image

        p = Path(slate)
        if not p.is_absolute() and root is not None:
            p = root / p
        try:
            img = Image.open(p).convert("RGB")
        except (OSError, ValueError) as err:
            raise ConfigError(f"slate image cannot be read: {err}", path=p,
                              hint="give a PNG/JPEG in the scene bundle, or a colour like \"#000000\"") from None
        return np.asarray(img.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8).copy()
    raise ConfigError(f"slate must be a colour or an image path, got {slate!r}")


def check_frame_like(value, ref: np.ndarray) -> str | None:
    if not isinstance(value, np.ndarray):
        return f"replacement is {type(value).__name__}, not a numpy array"
    if value.shape != ref.shape or value.dtype != ref.dtype:
        return f"replacement has shape {value.shape} {value.dtype}, the frame is {ref.shape} {ref.dtype}"
    return None


def check_tensor_like(value, ref) -> str | None:
    import torch

    if not isinstance(value, torch.Tensor):
        return f"replacement is {type(value).__name__}, not a tensor"
    if value.shape != ref.shape or value.dtype != ref.dtype:
        return f"replacement latents are {tuple(value.shape)} {value.dtype}, the input is {tuple(ref.shape)} {ref.dtype}"
    if not torch.isfinite(value).all():
        return "replacement latents hold NaN or Inf"
    return None
