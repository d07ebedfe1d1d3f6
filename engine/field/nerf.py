"""The NeRF field: hash grid -> density MLP -> (density, geometry features);
spherical harmonics of the view direction + features -> colour MLP -> rgb.

The layout follows instant-ngp's NeRF network: MLPs without biases (tiny-cuda-nn's
FullyFusedMLP has none), the density MLP's whole 16-wide output (raw density first)
feeds the colour MLP, density = exp(raw) with a clamped gradient.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from latentscape.errors import ConfigError
from latentscape.kernels.reference.hashgrid import GridLayout, per_level_scale_for
from latentscape.kernels.reference.sh import sh_encode


FIELD_RANGES: dict[str, tuple[int, int]] = {
    # Generous bounds (instant-ngp's big scenes use 16 levels, 2^19..2^22 entries, 2048..8192
    # finest resolution) that keep a grid allocatable: 2^24 entries x 32 levels x 8 features
    # x 4 bytes = 16 GiB is the largest accepted.
    "n_levels": (1, 32), "n_features_per_level": (1, 8), "log2_hashmap_size": (1, 24),
    "base_resolution": (1, 1 << 16), "finest_resolution": (1, 1 << 20),
    "density_hidden": (1, 1024), "density_layers": (0, 16), "geo_features": (0, 256),
    "color_hidden": (1, 1024), "color_layers": (0, 16), "sh_degree": (1, 4),
}
"""Allowed range of each integer :class:`FieldConfig` field ([field.config] in scene.toml)."""


@dataclass
class FieldConfig:
    """Hyper-parameters of the NeRF field (stored in ``scene.toml`` under ``[field.config]``)."""

    n_levels: int = 16
    """Hash-grid levels L."""
    n_features_per_level: int = 2
    """Features per level F (1, 2, 4 or 8)."""
    log2_hashmap_size: int = 19
    """log2 of the maximum entries per level T."""
    base_resolution: int = 16
    """Vertices per side of the coarsest level."""
    finest_resolution: int = 2048
    """Vertices per side wanted at the finest level; sets per_level_scale."""
    density_hidden: int = 64
    """Width of the density MLP's hidden layers."""
    density_layers: int = 1
    """Hidden layers of the density MLP."""
    geo_features: int = 15
    """Geometry features passed to the colour MLP besides the raw density."""
    color_hidden: int = 64
    """Width of the colour MLP's hidden layers."""
    color_layers: int = 2
    """Hidden layers of the colour MLP."""
    sh_degree: int = 4
    """Spherical-harmonics degree of the view-direction encoding (degree**2 values)."""
    aabb: list[float] = field(default_factory=lambda: [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    """Axis-aligned box (min xyz, max xyz) in normalised scene units that the grid covers."""

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "field config", path=None) -> "FieldConfig":
        from latentscape.config import config_from_dict

        cfg = config_from_dict(cls, data, where=source, path=path)
        try:
            cfg.validate()
        except ConfigError as err:
            raise ConfigError(f"invalid {source}: {err.message}", path=path, hint=err.hint) from None
        except (ValueError, TypeError, OverflowError) as err:
            raise ConfigError(f"invalid {source}: {err}", path=path) from None
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        from latentscape.config import check_number, check_vector

        for name, (low, high) in FIELD_RANGES.items():
            setattr(self, name, check_number(getattr(self, name), name=name, kind=int, low=low, high=high))
        self.aabb = check_vector(self.aabb, name="aabb", length=6, low=-1e6, high=1e6)
        if any(self.aabb[i] >= self.aabb[i + 3] for i in range(3)):
            raise ValueError("aabb must be [xmin, ymin, zmin, xmax, ymax, zmax] with min < max")
        if self.finest_resolution < self.base_resolution:
            raise ValueError("finest_resolution must be >= base_resolution")
        self.layout()  # checks the grid parameters

    def layout(self) -> GridLayout:
        return GridLayout(
            n_levels=self.n_levels,
            n_features_per_level=self.n_features_per_level,
            log2_hashmap_size=self.log2_hashmap_size,
            base_resolution=self.base_resolution,
            per_level_scale=per_level_scale_for(self.base_resolution, self.finest_resolution, self.n_levels),
        )


class _TruncExp(torch.autograd.Function):
    """exp with its gradient clamped (as torch-ngp / nerfstudio) to keep training stable."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(-15, 15))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


def make_mlp(n_in: int, hidden: int, layers: int, n_out: int) -> nn.Sequential:
    """Bias-free ReLU MLP, as tiny-cuda-nn's FullyFusedMLP."""
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden, bias=False), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, n_out, bias=False))
    return nn.Sequential(*mods)


class NerfField(nn.Module):
    """Density and colour of points in the normalised scene box.

    ``encoding`` is the hash-grid op (a backend from :mod:`latentscape.kernels`); it reads
    the flat buffer ``grid`` laid out exactly as tiny-cuda-nn lays it out.
    """

    def __init__(self, config: FieldConfig, encoding=None, *, ops=None):
        super().__init__()
        self.config = config
        self.layout = config.layout()
        self.grid = nn.Parameter(torch.empty(self.layout.n_params).uniform_(-1e-4, 1e-4))
        self.density_mlp = make_mlp(self.layout.n_output_dims, config.density_hidden, config.density_layers, 1 + config.geo_features)
        self.color_mlp = make_mlp(config.sh_degree**2 + 1 + config.geo_features, config.color_hidden, config.color_layers, 3)
        aabb = torch.tensor(config.aabb, dtype=torch.float32)
        self.register_buffer("aabb", aabb, persistent=False)
        if encoding is None:
            from latentscape.kernels.backend import select_encoding

            encoding = select_encoding("torch")
        self.encoding = encoding
        self.mlp = None  # fused MLP op mlp(x, weights), or None: run the modules
        self.ops = None  # the backend's ops (latentscape.kernels.backend.Ops); render_rays reads it
        if ops is not None:
            self.set_ops(ops)

    def set_ops(self, ops) -> None:
        """Run on a backend's ops (``select_ops``): its encoding, MLP, marcher, compositor."""
        self.ops = ops
        self.encoding = ops.encoding
        self.mlp = ops.mlp

    def _run_mlp(self, seq: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
        if self.mlp is None:
            return seq(x)
        return self.mlp(x, [m.weight for m in seq if isinstance(m, nn.Linear)])

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Scene points -> [0, 1]^3 grid coordinates (clamped)."""
        lo, hi = self.aabb[:3], self.aabb[3:]
        return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)

    def density_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [N, 3] scene points -> (sigma [N], features [N, 1 + geo_features])."""
        h = self.encoding(self.normalize(x), self.grid, self.layout)
        out = self._run_mlp(self.density_mlp, h)
        return trunc_exp(out[:, 0]), out

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self.density_and_features(x)[0]

    def _packed_inputs(self, o, d, t, offsets):
        """Grid coordinates of packed samples (and each sample's ray index where computed)."""
        ops = self.ops
        if ops is not None and ops.sample_points is not None:
            return ops.sample_points(o, d, t, offsets, self.aabb), None
        ray = torch.repeat_interleave(torch.arange(offsets.shape[0] - 1, device=o.device), offsets[1:] - offsets[:-1])
        return self.normalize(o[ray] + t[:, None] * d[ray]), ray

    def density_packed(self, o: torch.Tensor, d: torch.Tensor, t: torch.Tensor,
                       offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed samples -> (sigma [S], density-MLP output [S, 1 + geo_features]).

        Ray ``r`` (``o[r]``, ``d[r]``) owns ``t[offsets[r]:offsets[r+1]]``.
        """
        xn, _ = self._packed_inputs(o, d, t, offsets)
        out = self._run_mlp(self.density_mlp, self.encoding(xn, self.grid, self.layout))
        return trunc_exp(out[:, 0]), out

    def color_packed(self, d: torch.Tensor, offsets: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Colour of packed samples from their rays' directions and density features."""
        ops = self.ops
        if ops is not None and ops.sh_packed is not None:
            sh = ops.sh_packed(d, offsets, self.config.sh_degree, n_samples=feats.shape[0])
        else:
            ray = torch.repeat_interleave(torch.arange(offsets.shape[0] - 1, device=d.device), offsets[1:] - offsets[:-1])
            sh = sh_encode(d[ray], self.config.sh_degree)
        return torch.sigmoid(self._run_mlp(self.color_mlp, torch.cat((sh, feats), -1)))

    def forward_packed(self, o: torch.Tensor, d: torch.Tensor, t: torch.Tensor,
                       offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward`` for packed samples, without materialising per-sample origins and directions.

        o, d: [R, 3] rays; t: [S] distances; offsets: [R+1]. Returns (sigma [S], rgb [S, 3]).
        """
        sigma, out = self.density_packed(o, d, t, offsets)
        return sigma, self.color_packed(d, offsets, out)

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [N, 3] points, d: [N, 3] unit directions -> (sigma [N], rgb [N, 3])."""
        sigma, feats = self.density_and_features(x)
        rgb = torch.sigmoid(self._run_mlp(self.color_mlp, torch.cat((sh_encode(d, self.config.sh_degree), feats), -1)))
        return sigma, rgb
