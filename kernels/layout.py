"""The hash grid's static layout (:class:`GridLayout`): per-level scales, resolutions,
entry counts and offsets in tiny-cuda-nn's flat parameter buffer.

Shared by every backend of the hash-grid op (:mod:`latentscape.kernels.reference.hashgrid`,
:mod:`latentscape.kernels.hashgrid`, :mod:`latentscape.kernels.tcnn`) and by the field;
the semantics are listed in the reference's docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

__all__ = ["GridLayout", "per_level_scale_for"]


@dataclass(frozen=True)
class GridLayout:
    """Static description of a hash grid: per-level scales, resolutions and offsets."""

    n_levels: int
    n_features_per_level: int
    log2_hashmap_size: int
    base_resolution: int
    per_level_scale: float
    n_dims: int = 3

    def __post_init__(self) -> None:
        if self.n_features_per_level not in (1, 2, 4, 8):
            raise ValueError("n_features_per_level must be 1, 2, 4 or 8 (as tiny-cuda-nn)")
        if self.n_levels < 1 or self.log2_hashmap_size < 1 or self.base_resolution < 1:
            raise ValueError("n_levels, log2_hashmap_size and base_resolution must be positive")
        if self.per_level_scale < 1.0:
            raise ValueError("per_level_scale must be >= 1")
        if self.n_dims != 3:
            raise ValueError("only 3-D grids are implemented")

    @cached_property
    def scales(self) -> tuple[float, ...]:
        """Per-level ``scale`` in float32 arithmetic, as tiny-cuda-nn computes it."""
        log2_pls = np.float32(np.log2(np.float32(self.per_level_scale)))
        out = []
        for level in range(self.n_levels):
            s = np.exp2(np.float32(level) * log2_pls, dtype=np.float32)
            out.append(float(np.float32(s * np.float32(self.base_resolution) - np.float32(1.0))))
        return tuple(out)

    @cached_property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(int(math.ceil(s)) + 1 for s in self.scales)

    @cached_property
    def level_sizes(self) -> tuple[int, ...]:
        """Entries per level: dense size rounded up to 8, capped at the table size."""
        cap = 1 << self.log2_hashmap_size
        sizes = []
        for res in self.resolutions:
            dense = min(res**self.n_dims, (1 << 31) - 1)
            dense = (dense + 7) // 8 * 8
            sizes.append(min(dense, cap))
        return tuple(sizes)

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """Start entry of each level, and the total entry count last."""
        out = [0]
        for size in self.level_sizes:
            out.append(out[-1] + size)
        return tuple(out)

    @cached_property
    def dense(self) -> tuple[bool, ...]:
        """Whether each level is indexed densely (resolution^3 fits in its entries)."""
        return tuple(res**self.n_dims <= size for res, size in zip(self.resolutions, self.level_sizes))

    @property
    def n_params(self) -> int:
        return self.offsets[-1] * self.n_features_per_level

    @property
    def n_output_dims(self) -> int:
        return self.n_levels * self.n_features_per_level

    def tensors(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        """Per-level tables as tensors (cached per device by callers)."""
        return {
            "scale": torch.tensor(self.scales, dtype=torch.float32, device=device),
            "res": torch.tensor(self.resolutions, dtype=torch.int64, device=device),
            "size": torch.tensor(self.level_sizes, dtype=torch.int64, device=device),
            "offset": torch.tensor(self.offsets[:-1], dtype=torch.int64, device=device),
            "dense": torch.tensor(self.dense, dtype=torch.bool, device=device),
            # Resolutions grow with the level, so the dense levels are a prefix.
            "n_dense": sum(self.dense),
        }


def per_level_scale_for(base_resolution: int, finest_resolution: int, n_levels: int) -> float:
    """The growth factor that takes ``base_resolution`` to ``finest_resolution`` in ``n_levels``."""
    if n_levels == 1:
        return 1.0
    return math.exp((math.log(finest_resolution) - math.log(base_resolution)) / (n_levels - 1))
