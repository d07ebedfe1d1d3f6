"""nerfacto (nerfstudio's default NeRF) as a latentscape field, with its proposal sampler.

Written from the published method (Tancik et al. 2023, "Nerfstudio", sec. 3.1; Mip-NeRF 360's
proposal sampling and scene contraction; instant-ngp's hash grid) and from the tensors a
nerfstudio 1.1.5 checkpoint holds; used by :mod:`latentscape.scene.nerfstudio` to render
imported nerfstudio scenes. Eval-mode only (no jitter, no camera optimiser); everything a
render needs is deterministic, so ``ns-render`` and :meth:`NerfactoField.render_rays` agree
to float rounding on the same weights and rays.

Per ray (units: nerfstudio's dataparser space, what its viewer and camera_path.json use):

* **near/far**: 0 and ``far_plane`` (nerfstudio's collider resets the near plane to 0 at eval);
* **initial samples**: ``num_proposal_samples_per_ray[0]`` bins uniform in the piecewise
  spacing ``s(t) = t/2 (t < 1), 1 - 1/(2t)`` (linear then disparity), or uniform in t;
* **proposal rounds**: each proposal network's density gives weights
  ``w_i = (1 - exp(-sigma_i delta_i)) exp(-sum_{j<i} sigma_j delta_j)``; the next bins are the
  inverse CDF of ``w + 0.01`` (histogram padding) at the ``n+1`` midpoints
  ``(k + 0.5) / (n + 1)``, interpolated in spacing space; the last round gives
  ``num_nerf_samples_per_ray`` bins for the main field;
* **field** at each bin's midpoint: L-inf scene contraction (``x`` inside the unit cube,
  ``(2 - 1/|x|) x/|x|`` outside), mapped to [0, 1] by ``(x + 2) / 4``; points outside get density 0;
  hash grid -> MLP -> ``density = average_init_density * exp(raw)`` and 15 geometry features;
  colour MLP of (SH of the direction, features, appearance embedding) -> sigmoid;
* **compositing**: ``sum w_i rgb_i + background (1 - sum w_i)``, clamped to [0, 1].

Two hash-grid implementations, each kept exact (they are different functions):
``implementation = "torch"`` (nerfstudio's own: every level hashed, level scale
``floor(base * growth^l)``, corners at ``floor``/``ceil`` of ``x * scale``, tables of
``2^log2_hashmap_size`` rows per level, MLPs with biases, SH of ``(d + 1) / 2`` taken as if it
were a unit vector) and ``implementation = "tcnn"`` (tiny-cuda-nn's HashGrid, our
:mod:`latentscape.kernels` encoding with its ``GridLayout``; FullyFusedMLP without biases; tcnn's
SphericalHarmonics). The tcnn variant runs on the scene's backend ops (torch, Triton, cpu,
tcnn) for the encoding and the MLPs; the torch variant runs in torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from latentscape.errors import ConfigError
from latentscape.kernels.layout import GridLayout
from latentscape.kernels.reference.sh import sh_encode

IMPLEMENTATIONS = ("torch", "tcnn")
BACKGROUNDS = ("white", "black", "random", "last_sample")
INITIAL_SAMPLERS = ("piecewise", "uniform")


@dataclass
class ProposalNetConfig:
    """One proposal network (nerfstudio's ``HashMLPDensityField``)."""

    hidden_dim: int = 16
    log2_hashmap_size: int = 17
    num_levels: int = 5
    max_res: int = 128
    base_res: int = 16
    features_per_level: int = 2
    use_linear: bool = False
    num_layers: int = 2


@dataclass
class NerfactoConfig:
    """What an imported nerfacto scene needs to render (``[field.config]`` when ``[field] kind = "nerfacto"``)."""

    implementation: str = "torch"
    """Hash-grid/MLP layout the checkpoint was trained with: "torch" or "tcnn"."""
    num_levels: int = 16
    base_res: int = 16
    max_res: int = 2048
    log2_hashmap_size: int = 19
    features_per_level: int = 2
    hidden_dim: int = 64
    num_layers: int = 2
    geo_feat_dim: int = 15
    hidden_dim_color: int = 64
    num_layers_color: int = 3
    appearance_embed_dim: int = 32
    """0: the model was trained without appearance embeddings."""
    num_images: int = 0
    """Rows of the appearance embedding (training images)."""
    appearance: str = "mean"
    """Which appearance embedding to render with: "mean" (nerfstudio's eval default), "zeros", or a
    training-image index as a string ("3")."""
    average_init_density: float = 1.0
    scene_contraction: bool = True
    """False: positions are normalised by ``aabb`` instead (nerfstudio's disable_scene_contraction)."""
    aabb: list[float] = field(default_factory=lambda: [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0])
    proposal_nets: list[ProposalNetConfig] = field(default_factory=lambda: [ProposalNetConfig(), ProposalNetConfig(max_res=256)])
    use_same_proposal_network: bool = False
    num_proposal_iterations: int = 2
    num_proposal_samples_per_ray: list[int] = field(default_factory=lambda: [256, 96])
    num_nerf_samples_per_ray: int = 48
    proposal_initial_sampler: str = "piecewise"
    histogram_padding: float = 0.01
    near_plane: float = 0.0
    """Eval-time near plane (nerfstudio's collider resets it to 0 outside training)."""
    far_plane: float = 1000.0
    background_color: str = "white"
    """nerfstudio's background: "white"/"black"/"random" become the scene's ``[render] background``
    (white, black, black: "random" composites nothing at eval); "last_sample" takes each ray's last sample."""
    chunk: int = 1 << 12
    """Rays per batch when rendering (bounds memory: each ray holds a few hundred samples)."""

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "[field.config]", path=None) -> "NerfactoConfig":
        from latentscape.config import check_keys

        if not isinstance(data, dict):
            raise ConfigError(f"{source} must be a table", path=path)
        check_keys(data, [f.name for f in dataclasses.fields(cls)], where=source, path=path)
        kw = dict(data)
        nets = kw.pop("proposal_nets", None)
        try:
            cfg = cls(**kw)
            if nets is not None:
                if not isinstance(nets, list) or not all(isinstance(n, dict) for n in nets):
                    raise ValueError("proposal_nets must be a list of tables")
                for i, n in enumerate(nets):
                    check_keys(n, [f.name for f in dataclasses.fields(ProposalNetConfig)], where=f"{source} proposal_nets[{i}]", path=path)
                cfg.proposal_nets = [ProposalNetConfig(**n) for n in nets]
            cfg.validate()
        except (TypeError, ValueError) as err:
            raise ConfigError(f"invalid {source}: {err}", path=path) from None
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {self.implementation!r}")
        if self.background_color not in BACKGROUNDS:
            raise ValueError(f"background_color must be one of {BACKGROUNDS}, got {self.background_color!r}")
        if self.proposal_initial_sampler not in INITIAL_SAMPLERS:
            raise ValueError(f"proposal_initial_sampler must be one of {INITIAL_SAMPLERS}")
        if self.num_proposal_iterations < 1 or len(self.num_proposal_samples_per_ray) < self.num_proposal_iterations:
            raise ValueError("num_proposal_samples_per_ray needs one count per proposal iteration")
        if not self.proposal_nets:
            raise ValueError("proposal_nets is empty")
        if self.use_same_proposal_network and len(self.proposal_nets) != 1:
            raise ValueError("use_same_proposal_network needs exactly one proposal net")
        if len(self.aabb) != 6:
            raise ValueError("aabb must be 6 numbers")
        appearance_index(self.appearance, self.num_images if self.appearance_embed_dim > 0 else 0)

    def proposal_net(self, i: int) -> ProposalNetConfig:
        """The config of the network used at proposal iteration ``i`` (nerfstudio reuses the last)."""
        return self.proposal_nets[min(i, len(self.proposal_nets) - 1)]

    def n_proposal_networks(self) -> int:
        return 1 if self.use_same_proposal_network else self.num_proposal_iterations


def appearance_index(choice: str, num_images: int) -> int | None:
    """"mean" -> -1, "zeros" -> None, "3" -> 3 (checked against ``num_images``)."""
    choice = str(choice)
    if choice == "mean":
        return -1
    if choice == "zeros":
        return None
    if not choice.isdigit():
        raise ValueError(f"appearance must be 'mean', 'zeros' or a training-image index, got {choice!r}")
    idx = int(choice)
    if idx >= num_images:
        raise ValueError(f"appearance index {idx} is out of range: the model has {num_images} training-image embeddings")
    return idx


# ---------------------------------------------------------------------------------------------
# encodings


def growth_factor(min_res: int, max_res: int, num_levels: int) -> float:
    return float(np.exp((np.log(max_res) - np.log(min_res)) / (num_levels - 1))) if num_levels > 1 else 1.0


class TorchHashEncoding(nn.Module):
    """nerfstudio's ``HashEncoding(implementation="torch")``: every level hashed into its own table.

    Table ``l`` is rows ``[l * T, (l + 1) * T)`` of ``hash_table`` ([L * T, F]); level scale
    ``floor(base * growth^l)`` (computed in float32 as nerfstudio does); a point ``x`` in [0, 1]^3
    is looked up at the corners ``floor``/``ceil`` of ``x * scale`` with weights ``frac`` /
    ``1 - frac`` where ``frac = x * scale - floor``; index ``(x ^ y*2654435761 ^ z*805459861) mod T``.
    """

    def __init__(self, num_levels: int, min_res: int, max_res: int, log2_hashmap_size: int, features_per_level: int):
        super().__init__()
        self.num_levels = num_levels
        self.table_size = 2**log2_hashmap_size
        self.features = features_per_level
        levels = torch.arange(num_levels)
        growth = np.exp((np.log(max_res) - np.log(min_res)) / (num_levels - 1)) if num_levels > 1 else 1
        # Same expression as nerfstudio (np.float64 ** int64 tensor -> float32 tensor), so the floor agrees.
        self.register_buffer("scalings", torch.floor(min_res * growth**levels).to(torch.float32), persistent=False)
        self.register_buffer("offsets", levels * self.table_size, persistent=False)
        self.register_buffer("primes", torch.tensor([1, 2654435761, 805459861], dtype=torch.int64), persistent=False)
        self.hash_table = nn.Parameter(torch.zeros(self.table_size * num_levels, features_per_level))

        self.kernel = None  # the cpu backend's numba twin (kernels/cpu/ns_hashgrid.py), used without autograd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel is not None and not torch.is_grad_enabled() and x.device.type == "cpu":
            return self.kernel(x, self.hash_table, self.scalings, self.table_size)
        scaled = x[..., None, :] * self.scalings.view(-1, 1)  # [N, L, 3]
        sf = torch.floor(scaled)
        off = scaled - sf
        fi = sf.to(torch.int64)
        ci = torch.ceil(scaled).to(torch.int64)
        # (cx*p0 ^ cy*p1 ^ cz*p2) mod T with T a power of two: mask each term first (the mask
        # distributes over XOR; coordinates are >= 0), then XOR the 8 corners in int32.
        mask = self.table_size - 1
        h = [[((v[..., k] * int(self.primes[k])) & mask).to(torch.int32) for v in (ci, fi)] for k in range(3)]
        (xc, xf), (yc, yf), (zc, zf) = h
        base = self.offsets.to(torch.int32)
        idx = torch.stack([xc ^ yc ^ zc, xc ^ yf ^ zc, xf ^ yf ^ zc, xf ^ yc ^ zc,
                           xc ^ yc ^ zf, xc ^ yf ^ zf, xf ^ yf ^ zf, xf ^ yc ^ zf], -1) + base[:, None]
        f = self.hash_table[idx]  # [N, L, 8, F]; corners in nerfstudio's order f_0 .. f_7
        f0, f1, f2, f3, f4, f5, f6, f7 = f.unbind(-2)
        ox, oy, oz = off[..., 0:1], off[..., 1:2], off[..., 2:3]
        f03 = f0 * ox + f3 * (1 - ox)
        f12 = f1 * ox + f2 * (1 - ox)
        f56 = f5 * ox + f6 * (1 - ox)
        f47 = f4 * ox + f7 * (1 - ox)
        f0312 = f03 * oy + f12 * (1 - oy)
        f4756 = f47 * oy + f56 * (1 - oy)
        return torch.flatten(f0312 * oz + f4756 * (1 - oz), start_dim=-2)


def nerfstudio_torch_sh(d01: torch.Tensor) -> torch.Tensor:
    """nerfstudio's torch ``SHEncoding(levels=4)``: applied to the [0, 1]-mapped direction as is."""
    x, y, z = d01.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    return torch.stack([
        torch.full_like(x, 0.28209479177387814),
        0.4886025119029199 * y, 0.4886025119029199 * z, 0.4886025119029199 * x,
        1.0925484305920792 * x * y, 1.0925484305920792 * y * z, 0.9461746957575601 * zz - 0.31539156525251999,
        1.0925484305920792 * x * z, 0.5462742152960396 * (xx - yy),
        0.5900435899266435 * y * (3 * xx - yy), 2.890611442640554 * x * y * z, 0.4570457994644658 * y * (5 * zz - 1),
        0.3731763325901154 * z * (5 * zz - 3), 0.4570457994644658 * x * (5 * zz - 1), 1.445305721320277 * z * (xx - yy),
        0.5900435899266435 * x * (xx - 3 * yy),
    ], -1)


def torch_mlp(n_in: int, hidden: int, layers: int, n_out: int) -> nn.ModuleList:
    """nerfstudio's torch ``MLP``: ``layers`` Linear layers with biases (ReLU between)."""
    if layers == 1:
        return nn.ModuleList([nn.Linear(n_in, n_out)])
    mods = [nn.Linear(n_in, hidden)] + [nn.Linear(hidden, hidden) for _ in range(layers - 2)] + [nn.Linear(hidden, n_out)]
    return nn.ModuleList(mods)


def run_torch_mlp(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    for i, lin in enumerate(layers):
        x = lin(x)
        if i < len(layers) - 1:
            x = torch.relu(x)
    return x


class TcnnMLP(nn.Module):
    """tiny-cuda-nn FullyFusedMLP weights as bias-free matrices (``weights.i`` [out, in]).

    tiny-cuda-nn pads a network's input to a multiple of 16 with ones (its Identity and grid
    encodings write 1 there), so the first layer's padded columns act as a bias; the importer
    sums them into one extra column, fed a constant 1 here (``pad_column``). Padded output rows
    are dropped. No other biases exist.
    """

    def __init__(self, n_in: int, hidden: int, layers: int, n_out: int):
        super().__init__()
        self.pad_column = n_in % 16 != 0
        dims = [n_in + int(self.pad_column)] + [hidden] * (layers - 1) + [n_out]
        self.weights = nn.ParameterList([nn.Parameter(torch.zeros(dims[i + 1], dims[i])) for i in range(len(dims) - 1)])
        self.mlp_op = None  # backend's fused MLP op (x, [W]) -> y, or None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad_column:
            x = torch.cat([x, torch.ones_like(x[..., :1])], -1)
        ws = list(self.weights)
        if self.mlp_op is not None:
            return self.mlp_op(x, ws)
        for i, w in enumerate(ws):
            x = x @ w.T
            if i < len(ws) - 1:
                x = torch.relu(x)
        return x


class _Grid(nn.Module):
    """A hash grid + MLP as one of the two implementations; ``__call__(x01) -> raw outputs``."""

    def __init__(self, impl: str, num_levels, base_res, max_res, log2, feats, hidden, layers, n_out, use_linear=False):
        super().__init__()
        self.impl = impl
        self.use_linear = use_linear
        n_enc = num_levels * feats
        if impl == "torch":
            self.encoding = TorchHashEncoding(num_levels, base_res, max_res, log2, feats)
            self.net = nn.ModuleList([nn.Linear(n_enc, n_out)]) if use_linear else torch_mlp(n_enc, hidden, layers, n_out)
        else:
            self.layout = GridLayout(n_levels=num_levels, n_features_per_level=feats, log2_hashmap_size=log2,
                                     base_resolution=base_res, per_level_scale=growth_factor(base_res, max_res, num_levels))
            self.params = nn.Parameter(torch.zeros(self.layout.n_params))
            if use_linear:
                self.net = nn.ModuleList([nn.Linear(n_enc, n_out)])
            else:
                self.net = TcnnMLP(n_enc, hidden, layers, n_out)
            self.encode_op = None

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        if self.impl == "torch":
            h = self.encoding(x01)
        else:
            if self.encode_op is None:
                from latentscape.kernels.backend import select_encoding

                self.encode_op = select_encoding("torch")
            h = self.encode_op(x01.contiguous(), self.params, self.layout)
        if isinstance(self.net, TcnnMLP):
            return self.net(h)
        return run_torch_mlp(self.net, h)


# ---------------------------------------------------------------------------------------------
# the field


def contract(x: torch.Tensor) -> torch.Tensor:
    """Mip-NeRF 360 contraction with the L-inf norm: the unit cube stays, the rest folds into [-2, 2]^3."""
    mag = torch.linalg.norm(x, ord=float("inf"), dim=-1)[..., None]
    return torch.where(mag < 1, x, (2 - (1 / mag)) * (x / mag))


class NerfactoField(nn.Module):
    """The main nerfacto field and its proposal density networks, rendering with proposal sampling.

    It keeps latentscape's field interface where it applies (``forward(x, d) -> (sigma, rgb)``,
    ``density(x)``, ``aabb``, ``set_ops``) and brings its own estimator: :meth:`render_rays`
    (the renderer calls it instead of the occupancy-grid marcher; see docs/architecture.md).
    """

    estimator = "proposal"

    def __init__(self, config: NerfactoConfig, *, ops=None):
        super().__init__()
        c = config
        self.config = c
        impl = c.implementation
        self.mlp_base = _Grid(impl, c.num_levels, c.base_res, c.max_res, c.log2_hashmap_size, c.features_per_level,
                              c.hidden_dim, c.num_layers, 1 + c.geo_feat_dim)
        n_color_in = 16 + c.geo_feat_dim + c.appearance_embed_dim
        self.mlp_head = torch_mlp(n_color_in, c.hidden_dim_color, c.num_layers_color, 3) if impl == "torch" else \
            TcnnMLP(n_color_in, c.hidden_dim_color, c.num_layers_color, 3)
        if c.appearance_embed_dim > 0:
            self.appearance_embedding = nn.Parameter(torch.zeros(c.num_images, c.appearance_embed_dim))
        else:
            self.register_parameter("appearance_embedding", None)
        self.proposal_networks = nn.ModuleList()
        for i in range(c.n_proposal_networks()):
            p = c.proposal_net(i)
            self.proposal_networks.append(_Grid(impl, p.num_levels, p.base_res, p.max_res, p.log2_hashmap_size,
                                                p.features_per_level, p.hidden_dim, p.num_layers, 1, p.use_linear))
        # The renderer's contract: ``aabb`` is the box where the field lives (contracted space spans all of it).
        self.register_buffer("aabb", torch.tensor(c.aabb, dtype=torch.float32), persistent=False)
        self.ops = None
        if ops is not None:
            self.set_ops(ops)

    # -- backends --------------------------------------------------------------------------
    def set_ops(self, ops) -> None:
        """tcnn layout: the backend's hash-grid encoding and fused MLP serve this field too; torch layout:
        the ``cpu`` backend runs nerfstudio's hash encoding as a numba kernel (torch elsewhere)."""
        self.ops = ops
        if self.config.implementation != "tcnn":
            kernel = None
            if getattr(ops, "name", None) == "cpu":
                from latentscape.kernels.cpu.ns_hashgrid import ns_hash_encode as kernel
            for g in [self.mlp_base, *self.proposal_networks]:
                g.encoding.kernel = kernel
            return
        for g in [self.mlp_base, *self.proposal_networks]:
            g.encode_op = ops.encoding
            if isinstance(g.net, TcnnMLP):
                g.net.mlp_op = ops.mlp
        self.mlp_head.mlp_op = ops.mlp

    # -- field queries -----------------------------------------------------------------------
    def _normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.config.scene_contraction:
            p = (contract(x) + 2.0) / 4.0
        else:
            lo, hi = self.aabb[:3], self.aabb[3:]
            p = (x - lo) / (hi - lo)
        sel = ((p > 0.0) & (p < 1.0)).all(dim=-1)
        return p * sel[..., None], sel

    def _density(self, grid: _Grid, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p, sel = self._normalize(x)
        h = grid(p.reshape(-1, 3)).reshape(*x.shape[:-1], -1)
        sigma = self.config.average_init_density * torch.exp(h[..., :1]) * sel[..., None]
        return sigma[..., 0], h[..., 1:]

    def proposal_density(self, i: int, x: torch.Tensor) -> torch.Tensor:
        net = self.proposal_networks[0 if self.config.use_same_proposal_network else i]
        return self._density(net, x)[0]

    def density(self, x: torch.Tensor) -> torch.Tensor:
        return self._density(self.mlp_base, x)[0]

    def appearance(self) -> torch.Tensor | None:
        c = self.config
        if c.appearance_embed_dim == 0:
            return None
        idx = appearance_index(c.appearance, c.num_images)
        if idx is None:
            return torch.zeros(c.appearance_embed_dim, device=self.aabb.device)
        if idx < 0:
            return self.appearance_embedding.mean(dim=0)
        return self.appearance_embedding[idx]

    def color(self, d: torch.Tensor, geo: torch.Tensor) -> torch.Tensor:
        d01 = (d + 1.0) / 2.0
        sh = nerfstudio_torch_sh(d01) if self.config.implementation == "torch" else sh_encode(d01 * 2.0 - 1.0, 4)
        parts = [sh, geo]
        emb = self.appearance()
        if emb is not None:
            parts.append(emb.expand(*d.shape[:-1], emb.shape[-1]))
        h = torch.cat(parts, -1)
        out = run_torch_mlp(self.mlp_head, h) if isinstance(self.mlp_head, nn.ModuleList) else self.mlp_head(h)
        return torch.sigmoid(out)

    def forward(self, x: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [N, 3] points, d: [N, 3] unit directions -> (sigma [N], rgb [N, 3])."""
        sigma, geo = self._density(self.mlp_base, x)
        return sigma, self.color(d, geo)

    # -- the estimator -----------------------------------------------------------------------
    def _spacing(self, near: torch.Tensor, far: torch.Tensor):
        if self.config.proposal_initial_sampler == "uniform":
            fn, inv = (lambda x: x), (lambda x: x)
        else:
            def fn(x):
                return torch.where(x < 1, x / 2, 1 - 1 / (2 * x))

            def inv(x):
                return torch.where(x < 0.5, 2 * x, 1 / (2 - 2 * x))
        s_near, s_far = fn(near), fn(far)
        return lambda s: inv(s * s_far + (1 - s) * s_near)

    @staticmethod
    def _weights(sigma: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        dd = deltas * sigma
        alphas = 1 - torch.exp(-dd)
        trans = torch.cumsum(dd[..., :-1], dim=-1)
        trans = torch.cat([torch.zeros_like(trans[..., :1]), trans], dim=-1)
        return torch.nan_to_num(alphas * torch.exp(-trans))

    def _pdf_bins(self, bins: torch.Tensor, weights: torch.Tensor, n: int, eps: float = 1e-5) -> torch.Tensor:
        num_bins = n + 1
        w = weights + self.config.histogram_padding
        wsum = torch.sum(w, dim=-1, keepdim=True)
        pad = torch.relu(eps - wsum)
        w = w + pad / w.shape[-1]
        wsum = wsum + pad
        pdf = w / wsum
        cdf = torch.min(torch.ones_like(pdf), torch.cumsum(pdf, dim=-1))
        cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], dim=-1)
        u = torch.linspace(0.0, 1.0 - (1.0 / num_bins), steps=num_bins, device=cdf.device)
        u = (u + 1.0 / (2 * num_bins)).expand(*cdf.shape[:-1], num_bins).contiguous()
        inds = torch.searchsorted(cdf, u, side="right")
        below = torch.clamp(inds - 1, 0, bins.shape[-1] - 1)
        above = torch.clamp(inds, 0, bins.shape[-1] - 1)
        cdf_g0, bins_g0 = torch.gather(cdf, -1, below), torch.gather(bins, -1, below)
        cdf_g1, bins_g1 = torch.gather(cdf, -1, above), torch.gather(bins, -1, above)
        t = torch.clip(torch.nan_to_num((u - cdf_g0) / (cdf_g1 - cdf_g0), 0), 0, 1)
        return bins_g0 + t * (bins_g1 - bins_g0)

    def sample(self, o: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Proposal sampling: rays [R, 3] -> the main field's bin edges [R, n + 1] along each ray, and
        the proposal-network evaluations spent."""
        c = self.config
        r = o.shape[0]
        near = torch.full((r, 1), c.near_plane, device=o.device)
        far = torch.full((r, 1), c.far_plane, device=o.device)
        to_t = self._spacing(near, far)
        n0 = c.num_proposal_samples_per_ray[0]
        s = torch.linspace(0.0, 1.0, n0 + 1, device=o.device)[None].expand(r, n0 + 1)
        evals = 0
        for i in range(c.num_proposal_iterations + 1):
            if i > 0:
                n = c.num_proposal_samples_per_ray[i] if i < c.num_proposal_iterations else c.num_nerf_samples_per_ray
                s = self._pdf_bins(s, weights, n)
            t = to_t(s)
            if i == c.num_proposal_iterations:
                return t, evals
            mid = (t[:, :-1] + t[:, 1:]) / 2
            pts = o[:, None, :] + d[:, None, :] * mid[..., None]
            sigma = self.proposal_density(i, pts)
            evals += sigma.numel()
            weights = self._weights(sigma, t[:, 1:] - t[:, :-1])
        raise AssertionError("unreachable")

    def render_rays(self, o: torch.Tensor, d: torch.Tensor, background: torch.Tensor,
                    tmax: torch.Tensor | None = None):
        """Render rays (o, d [N, 3], d unit) in chunks of ``config.chunk``; returns
        (rgb [N, 3], depth [N], alpha [N], field samples, proposal samples)."""
        outs = []
        samples = prop = 0
        bg = background.expand(o.shape[0], 3) if background.dim() == 1 else background
        for i in range(0, o.shape[0], self.config.chunk):
            sl = slice(i, i + self.config.chunk)
            out = self._render_chunk(o[sl], d[sl], bg[sl], None if tmax is None else tmax[sl])
            samples += out[3]
            prop += out[4]
            outs.append(out)
        return (torch.cat([x[0] for x in outs]), torch.cat([x[1] for x in outs]), torch.cat([x[2] for x in outs]),
                samples, prop)

    def _render_chunk(self, o, d, bg, tmax):
        t, prop = self.sample(o, d)
        mid = (t[:, :-1] + t[:, 1:]) / 2
        pts = o[:, None, :] + d[:, None, :] * mid[..., None]
        sigma, geo = self._density(self.mlp_base, pts)
        if tmax is not None:  # an opaque layer in front: nothing behind it counts
            sigma = torch.where(mid < tmax[:, None], sigma, torch.zeros_like(sigma))
        rgb = self.color(d[:, None, :].expand_as(pts), geo)
        w = self._weights(sigma, t[:, 1:] - t[:, :-1])
        rgb = torch.nan_to_num(rgb)
        comp = torch.sum(w[..., None] * rgb, dim=-2)
        acc = torch.sum(w, dim=-1)
        c = self.config
        if c.background_color == "last_sample" and tmax is None:
            bg = rgb[:, -1, :]
        comp = torch.clamp(comp + bg * (1.0 - acc[:, None]), 0.0, 1.0)
        depth = torch.sum(w * mid, dim=-1) / acc.clamp_min(1e-6)
        return comp, depth, acc, sigma.numel(), prop
