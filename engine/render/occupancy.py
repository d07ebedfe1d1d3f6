"""Multi-level occupancy grid that lets the marcher skip empty space.

Level k covers the scene box scaled by 2^k about its centre (instant-ngp's cascades;
one level suffices for object scenes). Each cell keeps an exponential moving maximum
of the density seen at random points inside it; a cell is occupied when
``density * step`` passes a threshold (nerfacc's rule: the opacity one step would add).
During training the grid is refreshed every few steps: every cell during warm-up,
then a random quarter of the cells plus the occupied ones.

Before the first step, :meth:`OccupancyGrid.carve` can rule cells out for good from the
training views alone (no field evaluation): a cell that no training camera sees is
never sampled (instant-ngp marks such cells -1), and with RGBA images a cell that
projects onto a transparent pixel of any view lies outside the object's visual hull,
so it is empty too (space carving). Only the remaining cells are marched and updated,
which is what lets the first training steps spend their samples on the object.
"""

from __future__ import annotations

import math

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
        # Cells that may ever be occupied (carve() clears the rest); not saved: the
        # bitfield already excludes them.
        self.register_buffer("allowed", torch.ones(levels * resolution**3, dtype=torch.bool), persistent=False)

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
        dev = self.density.device
        candidates = self.allowed.nonzero().squeeze(-1)
        n = candidates.numel()
        if step < warmup_steps:
            cells = candidates
        else:
            uniform = candidates[torch.randint(0, n, (n // 4,), device=dev)]
            occupied = self.bitfield.reshape(-1).nonzero().squeeze(-1)
            if occupied.numel() > n // 4:
                occupied = occupied[torch.randint(0, occupied.numel(), (n // 4,), device=dev)]
            cells = torch.cat((uniform, occupied))
        values = torch.empty(cells.numel(), device=dev)
        for i in range(0, cells.numel(), chunk):
            values[i:i + chunk] = density_fn(self.cell_points(cells[i:i + chunk]))
        if step < warmup_steps:
            # Every allowed cell was just evaluated: take the new values as they are. The
            # decayed max (below) exists for partial refreshes; during warm-up it would pin
            # each cell to its untrained density for ~log(thr)/log(decay) updates (hundreds
            # of steps), so a CPU budget of a few hundred steps would never see empty space.
            self.density.index_copy_(0, cells, values)
        else:
            decayed = self.density * self.decay
            decayed.scatter_reduce_(0, cells, values, reduce="amax", include_self=True)
            self.density.copy_(decayed)
        # Keep cells whose density is above the threshold or above the mean (instant-ngp).
        thresh = min(self.threshold / step_size, self.density[candidates].mean().item() if n else 0.0)
        self.bitfield.copy_(((self.density > thresh) & self.allowed).reshape(self.bitfield.shape))

    @torch.no_grad()
    def carve(self, cameras, alphas=None, *, to_field=None, alpha_threshold: float = 0.01,
              chunk: int = 1 << 16) -> float:
        """Rule out cells from the training views; returns the fraction of cells left.

        cameras: pinhole :class:`~latentscape.render.cameras.Camera` s (world poses);
        alphas: optional [H, W] opacity per camera (None where unknown); to_field:
        (center, scale), the world -> field normalisation. A cell stays allowed if some
        camera sees it, and no camera with an alpha map sees it on a pixel whose alpha,
        dilated by the cell's projected size, is below ``alpha_threshold``.
        """
        dev = self.density.device
        n = self.levels * self.resolution**3
        pinhole = [i for i, c in enumerate(cameras) if c.model == "pinhole"]
        if not pinhole:
            return float(self.allowed.float().mean())
        center, scale = to_field if to_field is not None else (torch.zeros(3), 1.0)
        cell_size = float((self.aabb[3:] - self.aabb[:3]).max()) / self.resolution
        cells = torch.arange(n, device=dev)
        pts = self.cell_points(cells, jitter=False)
        half_diag = 0.5 * math.sqrt(3.0) * cell_size * torch.exp2((cells // self.resolution**3).float())
        seen = torch.zeros(n, dtype=torch.bool, device=dev)
        carved = torch.zeros(n, dtype=torch.bool, device=dev)
        # Cells still in play: each camera tests only those, so the work shrinks as cells are carved.
        live = cells
        for i in pinhole:
            cam = cameras[i]
            c2w = cam.c2w.to(dev, torch.float32)
            eye = (c2w[:3, 3] - center.to(dev)) * scale
            q = (pts[live] - eye) @ c2w[:3, :3]  # camera axes (OpenGL: looks down -z)
            z = -q[:, 2]
            front = z > 1e-6
            zc = z.clamp_min(1e-6)
            u = cam.fx * q[:, 0] / zc + cam.cx
            v = -cam.fy * q[:, 1] / zc + cam.cy
            rad = half_diag[live] * cam.fx / zc  # the cell's radius in pixels
            seen[live] |= front & (u + rad >= 0) & (u - rad < cam.width) & (v + rad >= 0) & (v - rad < cam.height)
            if alphas is None or alphas[i] is None:
                continue
            # Wholly inside the image: empty if the alpha, dilated by the footprint, is ~0 there.
            full = front & (u - rad >= 0) & (u + rad < cam.width) & (v - rad >= 0) & (v + rad < cam.height)
            idx = full.nonzero().squeeze(-1)
            if idx.numel() == 0:
                continue
            r = int(math.ceil(float(rad[idx].max()))) + 1
            dil = _dilate(alphas[i].to(dev, torch.float32), r)
            empty = dil[v[idx].long(), u[idx].long()] < alpha_threshold
            carved[live[idx[empty]]] = True
            live = live[~carved[live]]
        self.allowed.copy_(seen & ~carved)
        self.bitfield.copy_(self.bitfield & self.allowed.reshape(self.bitfield.shape))
        return float(self.allowed.float().mean())

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


def _dilate(alpha: torch.Tensor, radius: int) -> torch.Tensor:
    """Max of ``alpha`` [H, W] over a (2 radius + 1)^2 window."""
    return torch.nn.functional.max_pool2d(alpha[None, None], 2 * radius + 1, stride=1, padding=radius)[0, 0]
