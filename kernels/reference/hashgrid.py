"""Multiresolution hash-grid encoding in pure torch, with tiny-cuda-nn's exact semantics.

This is the reference every other backend (Triton, tinycudann) is checked against.
The facts it follows are tiny-cuda-nn's ``encodings/grid.h`` (our own code):

* level ``l`` has ``scale = exp2(l * log2(per_level_scale)) * base_resolution - 1``
  (float32) and ``resolution = ceil(scale) + 1`` vertices per side;
* a coordinate ``x`` in [0, 1] is looked up at ``pos = scale * x + 0.5``, split into
  ``cell = floor(pos)`` and ``frac = pos - cell``;
* level ``l`` holds ``min(next_multiple(resolution^3, 8), 2^log2_hashmap_size)`` entries;
  levels are laid out one after another in one flat buffer, entry ``e`` of level ``l``
  at ``(offset[l] + e) * F`` with its ``F`` features adjacent;
* a corner's index is dense (``x + y*res + z*res^2``) when ``resolution^3`` fits in the
  level, otherwise the CoherentPrime hash ``x ^ y*2654435761 ^ z*805459861`` in uint32;
  either way taken modulo the level's entry count;
* trilinear weights are products of ``frac`` / ``1 - frac``; output is the levels'
  ``F`` features concatenated (``n_levels * F`` values per point).
"""

from __future__ import annotations

import torch

from latentscape.kernels.layout import GridLayout, per_level_scale_for  # noqa: F401  (moved; old imports keep working)

PRIMES = (1, 2654435761, 805459861)
UINT32 = 0xFFFFFFFF


def init_params(layout: GridLayout, generator: torch.Generator | None = None) -> torch.Tensor:
    """tiny-cuda-nn's initialisation: uniform in [-1e-4, 1e-4]."""
    p = torch.empty(layout.n_params, dtype=torch.float32)
    p.uniform_(-1e-4, 1e-4, generator=generator)
    return p


def corner_indices(cell: torch.Tensor, tables: dict[str, torch.Tensor]) -> torch.Tensor:
    """Global entry index of the 8 corners of each cell.

    cell: [N, L, 3] int64 (lower corner per level) -> [N, L, 8] int entry indices,
    corner ``i`` taking ``cell + ((i >> 0) & 1, (i >> 1) & 1, (i >> 2) & 1)``.

    Per dimension the two candidate coordinates (cell, cell + 1) are turned into their
    contribution to the index ([N, L, 2] each); the 8 corners are then one broadcast
    ([N, L, z, y, x], x varying fastest). Dense levels add contributions and wrap at
    the level size; hashed levels XOR them (their size is the table size, a power of
    two, so ``% size`` is a mask that distributes over XOR). Full-size arithmetic runs
    in int32, which holds every index (at most 2^31 entries).
    """
    n, levels = cell.shape[:2]
    step = torch.arange(2, device=cell.device)
    c = [(cell[..., k:k + 1] + step) & UINT32 for k in range(3)]  # uint32 wrap as tiny-cuda-nn
    res = tables["res"][None, :, None]
    dense = tables["dense"][None, :, None]
    mask = tables["size"][None, :, None] - 1
    offset = tables["offset"][None, :, None, None, None].to(torch.int32)
    size = tables["size"][None, :, None, None, None].to(torch.int32)
    ax = torch.where(dense, c[0], (c[0] * PRIMES[0]) & mask).to(torch.int32)
    ay = torch.where(dense, c[1] * res, (c[1] * PRIMES[1]) & mask).to(torch.int32)
    az = torch.where(dense, c[2] * res * res, (c[2] * PRIMES[2]) & mask).to(torch.int32)
    ax, ay, az = ax[:, :, None, None, :], ay[:, :, None, :, None], az[:, :, :, None, None]
    n_dense = tables["n_dense"]
    parts = []
    if n_dense:
        s = slice(0, n_dense)
        idx = ax[:, s] + ay[:, s] + az[:, s]
        # Dense indices exceed the level size only past the far edge, by less than one size.
        idx = torch.where(idx >= size[:, s], idx - size[:, s], idx)
        parts.append(idx + offset[:, s])
    if n_dense < levels:
        s = slice(n_dense, levels)
        parts.append((ax[:, s] ^ ay[:, s] ^ az[:, s]) + offset[:, s])
    idx = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
    return idx.reshape(n, levels, 8)


def corner_weights(frac: torch.Tensor) -> torch.Tensor:
    """Trilinear weights of the 8 corners, in the order of :func:`corner_indices`.

    frac: [N, L, 3] -> [N, L, 8]
    """
    wx = torch.stack((1.0 - frac[..., 0], frac[..., 0]), -1)
    wy = torch.stack((1.0 - frac[..., 1], frac[..., 1]), -1)
    wz = torch.stack((1.0 - frac[..., 2], frac[..., 2]), -1)
    w = wz[:, :, :, None, None] * wy[:, :, None, :, None] * wx[:, :, None, None, :]
    return w.reshape(*frac.shape[:2], 8)


def hashgrid_encode(x: torch.Tensor, params: torch.Tensor, layout: GridLayout) -> torch.Tensor:
    """Encode points with the hash grid.

    x:      [N, 3] float32 positions, expected in [0, 1]
    params: [n_params] flat parameter buffer (float32 or float16)
    returns [N, n_levels * F] float32
    Differentiable w.r.t. ``params`` and ``x``.
    """
    if x.ndim != 2 or x.shape[1] != layout.n_dims:
        raise ValueError(f"x must be [N, {layout.n_dims}], got {tuple(x.shape)}")
    if params.shape != (layout.n_params,):
        raise ValueError(f"params must be [{layout.n_params}], got {tuple(params.shape)}")
    tables = _tables(layout, x.device)
    F = layout.n_features_per_level
    x = x.float()
    pos = x[:, None, :] * tables["scale"][None, :, None] + 0.5  # [N, L, 3]
    cell = torch.floor(pos).detach()
    frac = pos - cell
    idx = corner_indices(cell.long(), tables)  # [N, L, 8]
    w = corner_weights(frac)  # [N, L, 8]
    vals = _gather_rows(params.view(-1, F), idx.reshape(-1)).view(*idx.shape, F).float()  # [N, L, 8, F]
    out = torch.einsum("nlc,nlcf->nlf", w, vals)
    return out.reshape(x.shape[0], layout.n_output_dims)


class _GatherRows(torch.autograd.Function):
    """``table[idx]`` whose backward is a plain scatter-add (``index_add_``).

    torch's embedding backward sorts the indices first, which on the CPU cost 40% of a
    field evaluation (profiled, 50k points, 12 levels); a scatter-add does not.
    """

    @staticmethod
    def forward(ctx, table, idx):
        ctx.save_for_backward(idx)
        ctx.shape = table.shape
        ctx.dtype = table.dtype
        return table.index_select(0, idx)

    @staticmethod
    def backward(ctx, grad):
        (idx,) = ctx.saved_tensors
        out = torch.zeros(ctx.shape, dtype=grad.dtype, device=grad.device)
        out.index_add_(0, idx, grad)
        return out.to(ctx.dtype), None


def _gather_rows(table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    if not table.requires_grad:
        return table.index_select(0, idx)
    return _GatherRows.apply(table, idx)


_TABLE_CACHE: dict[tuple[GridLayout, str], dict[str, torch.Tensor]] = {}


def _tables(layout: GridLayout, device: torch.device) -> dict[str, torch.Tensor]:
    key = (layout, str(device))
    if key not in _TABLE_CACHE:
        _TABLE_CACHE[key] = layout.tensors(device)
    return _TABLE_CACHE[key]
