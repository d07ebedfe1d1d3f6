"""Multi-level occupancy grid that lets the marcher skip empty space.

Level k covers the scene box scaled by 2^k about its centre (instant-ngp's cascades;
one level suffices for object scenes). Each cell keeps an exponential moving maximum
of the density seen at random points inside it; a cell is occupied when
``density * step`` passes a threshold (nerfacc's rule: the opacity one step would add).
During training the grid is refreshed every few steps: every cell during warm-up,
then a random quarter of the cells plus the occupied ones.
"""

from __future__ import annotations

import torch
from torch import nn

from latentscape.kernels.reference.raymarch import occupancy_lookup


class OccupancyGrid(nn.Module):
    def __init__(self, aabb, resolution: int = 64, levels: int = 1, threshold: float = 0.01, decay: float = 0.95):
        super().__init__()
        if resolution < 2 or levels < 1:
            raise ValueError("occupancy grid needs resolution >= 2 and levels >= 1")
        self.resolution = resolution
        self.levels = levels
        self.threshold = threshold
        self.decay = decay
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32).clone())
        n = levels * resolution**3
        self.register_buffer("density", torch.zeros(n))
        # Everything occupied until the first update: nothing is skipped by mistake.
        self.register_buffer("bitfield", torch.ones(levels, resolution, resolution, resolution, dtype=torch.bool))

    def occupied(self, pts: torch.Tensor) -> torch.Tensor:
        return occupancy_lookup(pts, self.bitfield, self.aabb)

    def cell_points(self, cells: torch.Tensor, jitter: bool = True) -> torch.Tensor:
        """Scene-space points inside the given flat cell indices (random or centre)."""
        r = self.resolution
        level = cells // r**3
        rem = cells % r**3
        ijk = torch.stack((rem // (r * r), (rem // r) % r, rem % r), -1).float()
        off = torch.rand_like(ijk) if jitter else torch.full_like(ijk, 0.5)
        u = (ijk + off) / r * 2.0 - 1.0  # [-1, 1] in the level
        center = (self.aabb[:3] + self.aabb[3:]) * 0.5
        half = (self.aabb[3:] - self.aabb[:3]) * 0.5
        return center + u * half * torch.exp2(level.float())[:, None]

    @torch.no_grad()
    def update(self, density_fn, step_size: float, step: int, warmup_steps: int = 256, chunk: int = 1 << 16) -> None:
        """Refresh cell densities with ``density_fn(points [N, 3]) -> [N]``."""
        n = self.density.numel()
        dev = self.density.device
        if step < warmup_steps:
            cells = torch.arange(n, device=dev)
        else:
            uniform = torch.randint(0, n, (n // 4,), device=dev)
            occupied = self.bitfield.reshape(-1).nonzero().squeeze(-1)
            if occupied.numel() > n // 4:
                occupied = occupied[torch.randint(0, occupied.numel(), (n // 4,), device=dev)]
            cells = torch.cat((uniform, occupied))
        values = torch.empty(cells.numel(), device=dev)
        for i in range(0, cells.numel(), chunk):
            values[i:i + chunk] = density_fn(self.cell_points(cells[i:i + chunk]))
        decayed = self.density * self.decay
        decayed.scatter_reduce_(0, cells, values, reduce="amax", include_self=True)
        self.density.copy_(decayed)
        # Keep cells whose density is above the threshold or above the mean (instant-ngp).
        thresh = min(self.threshold / step_size, self.density.mean().item())
        self.bitfield.copy_((self.density > thresh).reshape(self.bitfield.shape))

    def coarse_bitfield(self, factor: int = 4) -> torch.Tensor:
        """A coarser grid (``factor`` cells per side pooled) dilated by one cell.

        The marcher first walks this grid at half its cell size to find where along
        each ray anything can be occupied; the dilation makes that walk conservative
        (a ray through an occupied fine cell crosses at least one whole dilated coarse
        cell, so half-cell steps cannot miss it).
        """
        key = (self.bitfield.data_ptr(), self.bitfield._version, factor)
        if getattr(self, "_coarse_key", None) != key:
            b = self.bitfield.float()[:, None]
            pooled = torch.nn.functional.max_pool3d(b, factor, ceil_mode=True)
            dilated = torch.nn.functional.max_pool3d(pooled, 3, stride=1, padding=1)
            self._coarse = dilated[:, 0] > 0
            self._coarse_key = key
        return self._coarse

    def occupancy_fraction(self) -> float:
        return self.bitfield.float().mean().item()
