"""StyleGAN3 generator (alias-free GAN, Karras et al. 2021): config, modules, save/load.

Written from the paper; parameter names, shapes and the order of operations follow
the official ``networks_stylegan3.py`` so that official weights imported by
:mod:`latentscape.texture.pickle_import` reproduce the official images (parity with
the official code on the same weights: see that module's docstring for the
measured difference and the command).

Shapes: ``z [N, z_dim]``, ``ws [N, num_ws, w_dim]`` with ``num_ws = num_layers + 2``,
images ``[N, img_channels, img_resolution, img_resolution]`` in about [-1, 1].

StyleGAN3 has no per-pixel noise inputs; ``noise_mode`` (``const``/``random``/``none``)
is accepted and validated for API compatibility with StyleGAN2 and has no effect.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentscape.errors import ConfigError, WeightsError, safe_repr
from latentscape.kernels.filtered_lrelu import filtered_lrelu
from latentscape.texture.filters import lowpass_filter

__all__ = [
    "StyleGAN3Config",
    "Generator",
    "MappingNetwork",
    "SynthesisNetwork",
    "NOISE_MODES",
    "save_generator",
    "load_generator",
    "GENERATOR_WEIGHTS",
    "GENERATOR_CONFIG",
]

NOISE_MODES = ("const", "random", "none")
GENERATOR_WEIGHTS = "generator.safetensors"
GENERATOR_CONFIG = "generator.json"
_FORMAT = "latentscape.stylegan3"
_FORMAT_VERSION = 1


CONFIG_RANGES: dict[str, tuple[type, float, float]] = {
    # name: (type, low, high). Upper bounds are far above every published config (T/R at
    # 1024 px: channel_base 32768/65536, channel_max 512/1024, 14 layers, filter_size 6) and
    # low enough that a generator built from them fits in memory.
    "z_dim": (int, 1, 8192), "c_dim": (int, 0, 65536), "w_dim": (int, 1, 8192),
    "img_resolution": (int, 1, 4096), "img_channels": (int, 1, 4),
    "channel_base": (int, 1, 1 << 20), "channel_max": (int, 1, 4096),
    "num_layers": (int, 1, 64), "num_critical": (int, 0, 64),
    "first_cutoff": (float, 1e-3, 1e4), "first_stopband": (float, 1e-3, 1e4), "last_stopband_rel": (float, 1e-3, 1e2),
    "margin_size": (int, 0, 256), "output_scale": (float, -1e6, 1e6),
    "conv_kernel": (int, 1, 7), "filter_size": (int, 1, 32), "lrelu_upsampling": (int, 1, 8),
    "conv_clamp": (float, 0, 1e9), "magnitude_ema_beta": (float, 0, 1),
    "mapping_layers": (int, 1, 32), "mapping_lr_multiplier": (float, 1e-9, 1e3), "w_avg_beta": (float, 0, 1),
}
"""Allowed range of every :class:`StyleGAN3Config` field (checked by ``validate``)."""


@dataclass
class StyleGAN3Config:
    """Hyper-parameters of a StyleGAN3 generator (defaults: the official T config)."""

    z_dim: int = 512
    """Input latent (Z) dimensionality."""
    c_dim: int = 0
    """Conditioning label dimensionality; 0 = unconditional."""
    w_dim: int = 512
    """Intermediate latent (W) dimensionality."""
    img_resolution: int = 256
    """Output resolution (square images)."""
    img_channels: int = 3
    """Output colour channels."""
    channel_base: int = 32768
    """Overall channel multiplier: channels of layer i = min(channel_base / 2 / cutoff_i, channel_max)."""
    channel_max: int = 512
    """Maximum channels in any layer."""
    num_layers: int = 14
    """Synthesis layers, excluding the Fourier input and ToRGB."""
    num_critical: int = 2
    """Critically sampled layers at the end."""
    first_cutoff: float = 2.0
    """Cutoff frequency of the first layer (f_c,0)."""
    first_stopband: float = 2**2.1
    """Minimum stop-band of the first layer (f_t,0)."""
    last_stopband_rel: float = 2**0.3
    """Minimum stop-band of the last layer relative to its cutoff."""
    margin_size: int = 10
    """Extra pixels computed outside the image on each side."""
    output_scale: float = 0.25
    """Scale applied to the ToRGB output."""
    conv_kernel: int = 3
    """Convolution kernel size (3 for T, 1 for R); ToRGB is always 1x1."""
    filter_size: int = 6
    """Low-pass taps relative to the lower resolution when resampling."""
    lrelu_upsampling: int = 2
    """Relative sampling rate at which the leaky ReLU is evaluated."""
    use_radial_filters: bool = False
    """Radially symmetric downsampling filters (R config) in non-critical layers."""
    conv_clamp: float | None = 256
    """Clamp layer outputs to [-conv_clamp, conv_clamp]; None disables."""
    magnitude_ema_beta: float = 0.999
    """Decay of the moving average of input magnitudes (training only)."""
    mapping_layers: int = 2
    """Fully connected layers of the mapping network (2 for StyleGAN3)."""
    mapping_lr_multiplier: float = 0.01
    """Learning-rate multiplier (equalised lr) of the mapping layers."""
    w_avg_beta: float = 0.998
    """Decay of the tracked average W used for truncation."""

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "StyleGAN3Config":
        """The paper's ``T`` (translation-equivariant) or ``R`` (rotation) config."""
        key = name.upper().removeprefix("STYLEGAN3-")
        if key == "T":
            base: dict[str, Any] = {}
        elif key == "R":
            base = dict(channel_base=65536, channel_max=1024, conv_kernel=1, use_radial_filters=True)
        else:
            raise ConfigError(f"unknown StyleGAN3 preset {safe_repr(name, 80)}", hint="use 'T' or 'R'")
        base.update(overrides)
        return cls(**base)

    @property
    def num_ws(self) -> int:
        return self.num_layers + 2

    def validate(self) -> "StyleGAN3Config":
        """Check every field against :data:`CONFIG_RANGES` (types, finite, in range) before
        anything is allocated: a pickle or sidecar saying ``num_layers = 1e6`` or
        ``filter_size = 1e9`` is a ConfigError, not an endless allocation."""
        from latentscape.config import check_number

        for name, (kind, low, high) in CONFIG_RANGES.items():
            v = getattr(self, name)
            if name == "conv_clamp" and v is None:
                continue
            setattr(self, name, check_number(v, name=name, kind=kind, low=low, high=high, where="StyleGAN3 config"))
        if not isinstance(self.use_radial_filters, (bool, np.bool_)):
            raise ConfigError(f"StyleGAN3 config: use_radial_filters must be true or false, "
                              f"got {safe_repr(self.use_radial_filters, 40)}")
        if self.img_resolution & (self.img_resolution - 1):
            raise ConfigError(f"StyleGAN3 config: img_resolution must be a power of two, got {self.img_resolution}")
        if not 0 <= self.num_critical < self.num_layers:
            raise ConfigError(f"StyleGAN3 config: num_critical must be in [0, num_layers), got {self.num_critical}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, path: str | Path | None = None) -> "StyleGAN3Config":
        from latentscape.config import config_from_dict

        return config_from_dict(cls, data, where="the StyleGAN3 config", path=path).validate()


# --------------------------------------------------------------------------- layers


class FullyConnected(nn.Module):
    """Dense layer with equalised learning rate; optional leaky ReLU (gain sqrt 2)."""

    def __init__(self, in_features: int, out_features: int, lrelu: bool = False,
                 lr_multiplier: float = 1.0, weight_init: float = 1.0, bias_init: Any = 0.0):
        super().__init__()
        self.lrelu = lrelu
        self.weight = nn.Parameter(torch.randn(out_features, in_features) * (weight_init / lr_multiplier))
        bias = torch.as_tensor(np.broadcast_to(np.asarray(bias_init, dtype=np.float32), [out_features]).copy())
        self.bias = nn.Parameter(bias / lr_multiplier)
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, in] -> [N, out]
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype)
        if self.bias_gain != 1:
            b = b * self.bias_gain
        if not self.lrelu:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return F.leaky_relu(x.matmul(w.t()) + b, 0.2) * math.sqrt(2)


class MappingNetwork(nn.Module):
    """z (+ optional label c) -> ws, with w_avg tracking and truncation."""

    def __init__(self, cfg: StyleGAN3Config):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = cfg.z_dim, cfg.c_dim, cfg.w_dim
        self.num_ws = cfg.num_ws
        self.num_layers = cfg.mapping_layers
        self.w_avg_beta = cfg.w_avg_beta
        self.embed = FullyConnected(cfg.c_dim, cfg.w_dim) if cfg.c_dim > 0 else None
        dims = [cfg.z_dim + (cfg.w_dim if cfg.c_dim > 0 else 0)] + [cfg.w_dim] * cfg.mapping_layers
        for i in range(cfg.mapping_layers):
            setattr(self, f"fc{i}", FullyConnected(dims[i], dims[i + 1], lrelu=True,
                                                   lr_multiplier=cfg.mapping_lr_multiplier))
        self.register_buffer("w_avg", torch.zeros(cfg.w_dim))

    @staticmethod
    def _normalize(x: torch.Tensor) -> torch.Tensor:
        return x * (x.square().mean(1, keepdim=True) + 1e-8).rsqrt()

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_emas: bool = False) -> torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [N, {self.z_dim}], got {tuple(z.shape)}")
        x = self._normalize(z.to(torch.float32))
        if self.c_dim > 0:
            if c is None or c.shape != (z.shape[0], self.c_dim):
                raise ValueError(f"this generator is conditional: c must be [N, {self.c_dim}]")
            y = self._normalize(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_emas:
            self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)  # [N, num_ws, w_dim]
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws[:, :cut] = self.w_avg.lerp(ws[:, :cut], truncation_psi)
        return ws


class SynthesisInput(nn.Module):
    """Fourier features on a sampling grid, rotated/translated by an affine of w."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        super().__init__()
        self.channels, self.size = channels, int(size)
        self.sampling_rate, self.bandwidth = float(sampling_rate), float(bandwidth)
        # Frequencies drawn from a 2-D disc of radius `bandwidth` (paper, appendix F).
        freqs = torch.randn(channels, 2)
        radii = freqs.square().sum(1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = FullyConnected(w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])
        self.register_buffer("transform", torch.eye(3))  # user inverse transform of the image
        self.register_buffer("freqs", freqs)  # [C, 2]
        self.register_buffer("phases", torch.rand(channels) - 0.5)  # [C]

    def forward(self, w: torch.Tensor) -> torch.Tensor:  # [N, w_dim] -> [N, C, size, size]
        n = w.shape[0]
        t = self.affine(w)  # (r_cos, r_sin, t_x, t_y)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        rot = torch.eye(3, device=w.device).repeat(n, 1, 1)
        rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1] = t[:, 0], -t[:, 1], t[:, 1], t[:, 0]
        tra = torch.eye(3, device=w.device).repeat(n, 1, 1)
        tra[:, 0, 2], tra[:, 1, 2] = -t[:, 2], -t[:, 3]
        m = rot @ tra @ self.transform.unsqueeze(0)  # [N, 3, 3]
        freqs = self.freqs.unsqueeze(0)  # [1, C, 2]
        phases = self.phases.unsqueeze(0) + (freqs @ m[:, :2, 2:]).squeeze(2)  # [N, C]
        freqs = freqs @ m[:, :2, :2]  # [N, C, 2]
        # Fade out frequencies the user transform pushed past the band limit.
        amp = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)
        theta = torch.eye(2, 3, device=w.device)
        theta[0, 0] = theta[1, 1] = 0.5 * self.size / self.sampling_rate
        grid = F.affine_grid(theta.unsqueeze(0), [1, 1, self.size, self.size], align_corners=False)  # [1, H, W, 2]
        x = (grid.unsqueeze(3) @ freqs.permute(0, 2, 1).unsqueeze(1).unsqueeze(2)).squeeze(3)  # [N, H, W, C]
        x = torch.sin((x + phases[:, None, None, :]) * (2 * math.pi)) * amp[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                     padding: int, input_gain: torch.Tensor | None) -> torch.Tensor:
    """Per-sample style-modulated convolution as one grouped conv.

    x ``[N, I, H, W]``, weight ``[O, I, k, k]``, styles ``[N, I]``.
    """
    n, i = styles.shape
    o, _, kh, kw = weight.shape
    if demodulate:  # pre-normalise for fp16 headroom; cancels out exactly up to the 1e-8
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean().rsqrt()
    wm = weight.unsqueeze(0) * styles[:, None, :, None, None]  # [N, O, I, k, k]
    if demodulate:
        wm = wm * (wm.square().sum([2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    if input_gain is not None:
        wm = wm * input_gain.expand(n, i)[:, None, :, None, None]
    out = F.conv2d(x.reshape(1, n * i, *x.shape[2:]), wm.reshape(n * o, i, kh, kw).to(x.dtype),
                   padding=padding, groups=n)
    return out.reshape(n, o, *out.shape[2:])


class SynthesisLayer(nn.Module):
    """Modulated conv -> filtered leaky ReLU (up, FIR, bias/lrelu/clamp, FIR, down)."""

    def __init__(self, cfg: StyleGAN3Config, spec: dict[str, Any]):
        super().__init__()
        self.is_torgb = spec["is_torgb"]
        self.in_channels, self.out_channels = spec["in_channels"], spec["out_channels"]
        self.in_size, self.out_size = spec["in_size"], spec["out_size"]
        self.conv_kernel = 1 if self.is_torgb else cfg.conv_kernel
        self.conv_clamp = cfg.conv_clamp
        self.magnitude_ema_beta = cfg.magnitude_ema_beta
        tmp_rate = max(spec["in_rate"], spec["out_rate"]) * (1 if self.is_torgb else cfg.lrelu_upsampling)
        self.up_factor = int(round(tmp_rate / spec["in_rate"]))
        self.down_factor = int(round(tmp_rate / spec["out_rate"]))
        if spec["in_rate"] * self.up_factor != tmp_rate or spec["out_rate"] * self.down_factor != tmp_rate:
            raise ConfigError("StyleGAN3 config: sampling rates are not integer multiples of each other")
        up_taps = cfg.filter_size * self.up_factor if self.up_factor > 1 and not self.is_torgb else 1
        down_taps = cfg.filter_size * self.down_factor if self.down_factor > 1 and not self.is_torgb else 1
        radial = cfg.use_radial_filters and not spec["is_critical"]
        self.affine = FullyConnected(cfg.w_dim, self.in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(self.out_channels, self.in_channels, self.conv_kernel, self.conv_kernel))
        self.bias = nn.Parameter(torch.zeros(self.out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.register_buffer("up_filter", lowpass_filter(up_taps, spec["in_cutoff"], spec["in_half_width"] * 2, tmp_rate))
        self.register_buffer("down_filter", lowpass_filter(down_taps, spec["out_cutoff"], spec["out_half_width"] * 2,
                                                           tmp_rate, radial=radial))
        # Padding so that sample positions follow the symmetric interpretation (paper, C.3).
        total = (self.out_size - 1) * self.down_factor + 1
        total -= (self.in_size + self.conv_kernel - 1) * self.up_factor
        total += up_taps + down_taps - 2
        lo = (total + self.up_factor) // 2
        self.padding = [int(lo), int(total - lo), int(lo), int(total - lo)]

    def forward(self, x: torch.Tensor, w: torch.Tensor, update_emas: bool = False) -> torch.Tensor:
        if update_emas:
            cur = x.detach().to(torch.float32).square().mean()
            self.magnitude_ema.copy_(cur.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / math.sqrt(self.in_channels * self.conv_kernel**2))
        x = modulated_conv2d(x, self.weight, styles, demodulate=not self.is_torgb,
                             padding=self.conv_kernel - 1, input_gain=self.magnitude_ema.rsqrt())
        return filtered_lrelu(
            x, self.up_filter, self.down_filter, self.bias.to(x.dtype), up=self.up_factor, down=self.down_factor,
            padding=self.padding, gain=1.0 if self.is_torgb else math.sqrt(2),
            slope=1.0 if self.is_torgb else 0.2, clamp=self.conv_clamp)


def layer_specs(cfg: StyleGAN3Config) -> list[dict[str, Any]]:
    """Per-layer geometry: cutoffs and stop-bands in a geometric progression (paper, sec. 3.2)."""
    last_cutoff = cfg.img_resolution / 2
    last_stopband = last_cutoff * cfg.last_stopband_rel
    e = np.minimum(np.arange(cfg.num_layers + 1) / (cfg.num_layers - cfg.num_critical), 1)
    cutoffs = cfg.first_cutoff * (last_cutoff / cfg.first_cutoff) ** e
    stopbands = cfg.first_stopband * (last_stopband / cfg.first_stopband) ** e
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, cfg.img_resolution))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + cfg.margin_size * 2
    sizes[-2:] = cfg.img_resolution
    channels = np.rint(np.minimum((cfg.channel_base / 2) / cutoffs, cfg.channel_max))
    channels[-1] = cfg.img_channels
    specs = []
    for i in range(cfg.num_layers + 1):
        p = max(i - 1, 0)
        specs.append(dict(
            index=i, is_torgb=i == cfg.num_layers, is_critical=i >= cfg.num_layers - cfg.num_critical,
            in_channels=int(channels[p]), out_channels=int(channels[i]),
            in_size=int(sizes[p]), out_size=int(sizes[i]),
            in_rate=int(rates[p]), out_rate=int(rates[i]),
            in_cutoff=float(cutoffs[p]), out_cutoff=float(cutoffs[i]),
            in_half_width=float(half_widths[p]), out_half_width=float(half_widths[i]),
        ))
    specs[0]["input"] = dict(channels=int(channels[0]), size=int(sizes[0]), rate=float(rates[0]),
                             bandwidth=float(cutoffs[0]))
    return specs


class SynthesisNetwork(nn.Module):
    """ws ``[N, num_ws, w_dim]`` -> image ``[N, C, R, R]``."""

    def __init__(self, cfg: StyleGAN3Config):
        super().__init__()
        self.num_ws, self.w_dim = cfg.num_ws, cfg.w_dim
        self.img_resolution, self.img_channels = cfg.img_resolution, cfg.img_channels
        self.output_scale = cfg.output_scale
        specs = layer_specs(cfg)
        inp = specs[0]["input"]
        self.input = SynthesisInput(cfg.w_dim, inp["channels"], inp["size"], inp["rate"], inp["bandwidth"])
        self.layer_names: list[str] = []
        for spec in specs:
            # Named as the official code names them, so state dicts line up one to one.
            name = f"L{spec['index']}_{spec['out_size']}_{spec['out_channels']}"
            setattr(self, name, SynthesisLayer(cfg, spec))
            self.layer_names.append(name)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", update_emas: bool = False) -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {safe_repr(noise_mode, 80)}")
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {tuple(ws.shape)}")
        ws = ws.to(torch.float32).unbind(1)
        x = self.input(ws[0])
        for name, w in zip(self.layer_names, ws[1:]):
            x = getattr(self, name)(x, w, update_emas=update_emas)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x.to(torch.float32)


class Generator(nn.Module):
    """StyleGAN3 generator: ``mapping`` (z -> ws) then ``synthesis`` (ws -> image)."""

    def __init__(self, cfg: StyleGAN3Config | None = None):
        super().__init__()
        self.cfg = (cfg or StyleGAN3Config()).validate()
        self.z_dim, self.c_dim, self.w_dim = self.cfg.z_dim, self.cfg.c_dim, self.cfg.w_dim
        self.img_resolution, self.img_channels = self.cfg.img_resolution, self.cfg.img_channels
        self.synthesis = SynthesisNetwork(self.cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(self.cfg)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "const",
                update_emas: bool = False) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff, update_emas=update_emas)
        return self.synthesis(ws, noise_mode=noise_mode, update_emas=update_emas)


# --------------------------------------------------------------------------- files


def save_generator(G: Generator, out_dir: str | Path, source: dict[str, Any] | None = None) -> Path:
    """Write ``generator.safetensors`` (weights) and ``generator.json`` (config) into ``out_dir``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in G.state_dict().items()}
    save_file(tensors, str(out / GENERATOR_WEIGHTS), metadata={"format": _FORMAT})
    meta = {"format": _FORMAT, "version": _FORMAT_VERSION, "config": G.cfg.to_dict()}
    if source:
        meta["source"] = source
    (out / GENERATOR_CONFIG).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def load_config(gen_dir: str | Path) -> StyleGAN3Config:
    path = Path(gen_dir) / GENERATOR_CONFIG
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsError("generator config not found", path=path,
                           hint="point at a folder written by `latentscape import stylegan3`") from None
    except (OSError, ValueError, RecursionError) as err:
        raise WeightsError(f"cannot read generator config: {safe_repr(str(err), 160)[1:-1]}", path=path) from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT or not isinstance(meta.get("config"), dict):
        raise WeightsError(f"not a {_FORMAT} config", path=path)
    if meta.get("version") != _FORMAT_VERSION:
        raise WeightsError(f"unsupported generator format version {safe_repr(meta.get('version'), 40)}", path=path)
    try:
        return StyleGAN3Config.from_dict(meta["config"], path=path)
    except ConfigError as err:
        if err.path is not None:
            raise
        raise ConfigError(f"bad generator config: {err.message}", path=path, hint=err.hint) from None


def load_generator(gen_dir: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Load a generator folder (config + safetensors); every tensor must match in name and shape."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    cfg = load_config(gen_dir)
    path = Path(gen_dir) / GENERATOR_WEIGHTS
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise WeightsError("generator weights not found", path=path) from None
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"cannot read generator weights: {err}", path=path) from None
    with torch.device("meta"):
        G = Generator(cfg)
    expected = G.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise WeightsError(f"weights do not match the config: missing {missing[:5]}, unexpected {extra[:5]}",
                           path=path, hint="re-run the importer for this generator")
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise WeightsError(f"{k}: shape {tuple(tensors[k].shape)} != expected {tuple(v.shape)}", path=path)
    G.load_state_dict(tensors, strict=True, assign=True)
    return G.to(device).eval().requires_grad_(False)
