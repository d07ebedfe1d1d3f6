"""The distilled student: a slim feed-forward residual conv net that stylizes in real time.

Johnson et al. (2016) shape, slimmed: a stem conv, ``downsample`` stride-2 convs,
``num_residual`` residual blocks at the lowest resolution, nearest-upsample + conv
back up (no transposed convs: they leave checkerboards), and a sigmoid head so the
output is RGB in ``[0, 1]``.

Normalisation (``norm``): ``"none"`` has none (the output at a pixel depends only on
its receptive field). ``"bottleneck"`` puts an instance norm with a learned affine
after every conv at the lowest resolution (the last stride-2 conv and both convs of
each residual block), as the multistyle26 teacher does at every layer: the teacher's
look depends on each frame's statistics, and a student without them cannot follow it
(inherited from the teacher before any training: 27.6 dB on the demo with the
bottleneck norms live, 16.6 dB with them frozen too; ``tools/benchmarks/student_design.py``;
see :mod:`latentscape.stylize.inherit`). At the bottleneck the reductions run on 1/16 of
the pixels, so they stay cheap.

Weights live in ``<stem>.safetensors`` beside ``<stem>.json`` (the config plus
metadata). :func:`load_student` checks both and raises :class:`WeightsError` (or
:class:`ConfigError` for a bad config) naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from latentscape.config import config_from_dict
from latentscape.errors import ConfigError, WeightsError
from latentscape.stylize.base import as_batch, pad_to_multiple

FORMAT = "latentscape.stylize.student/1"


@dataclass
class StudentConfig:
    """Shape of the student network.

    Defaults: 49,795 parameters; 256x256 at 58 frames/s on 2 CPU threads (teacher
    multistyle26.onnx: 30), 512x512 at 15; on an H200, 1,643 (256) and 1,445 (512)
    frames/s fp32 at batch 1. Measured with ``python tools/benchmarks/stylize.py --threads 2``
    on the H200 machine's CPU/GPU (2026-11-26); fp16 is not faster at batch 1 (launch-bound).
    """

    base_channels: int = 8
    """Channels after the stem; each downsample stage multiplies them by ``growth``."""
    growth: float = 2.0
    """Channel multiplier per stride-2 stage (8 -> 16 -> 32 with the defaults)."""
    downsample: int = 2
    """Number of stride-2 stages: 1 halves the resolution, 2 quarters it (x4)."""
    num_residual: int = 2
    """Residual blocks (two 3x3 convs each) at the lowest resolution."""
    stem_kernel: int = 5
    """Kernel size of the first and last conv (odd)."""
    padding: str = "reflect"
    """Padding mode of every conv: ``reflect`` (no dark borders) or ``zeros``."""
    norm: str = "none"
    """``none``, or ``bottleneck``: instance norm (learned affine) after every conv at the lowest resolution."""
    up_channels: list[int] = field(default_factory=list)
    """Channels of the upsampling convs, lowest resolution first (one per downsample stage);
    empty mirrors the down path."""

    def validate(self) -> "StudentConfig":
        if self.base_channels < 1 or self.num_residual < 0 or not 0 <= self.downsample <= 4:
            raise ConfigError(f"student config out of range: {self}",
                              hint="base_channels >= 1, num_residual >= 0, 0 <= downsample <= 4")
        if self.growth <= 0:
            raise ConfigError(f"student growth must be > 0, got {self.growth}")
        if self.stem_kernel % 2 == 0 or self.stem_kernel < 1:
            raise ConfigError(f"student stem_kernel must be odd, got {self.stem_kernel}")
        if self.padding not in ("reflect", "zeros"):
            raise ConfigError(f"student padding must be 'reflect' or 'zeros', got {self.padding!r}")
        if self.norm not in ("none", "bottleneck"):
            raise ConfigError(f"student norm must be 'none' or 'bottleneck', got {self.norm!r}")
        ups = list(self.up_channels)
        if ups and (len(ups) != self.downsample or not all(isinstance(c, int) and c >= 1 for c in ups)):
            raise ConfigError(f"student up_channels must be {self.downsample} positive integers (one per "
                              f"downsample stage), got {self.up_channels!r}", hint="or leave it empty to mirror the down path")
        return self

    def channels(self) -> list[int]:
        return [max(1, round(self.base_channels * self.growth**i)) for i in range(self.downsample + 1)]

    def up_path(self) -> list[int]:
        """Channels after each upsampling conv, lowest resolution first."""
        return list(self.up_channels) if self.up_channels else self.channels()[:-1][::-1]

    @classmethod
    def from_dict(cls, data: dict, *, path: str | Path | None = None) -> "StudentConfig":
        cfg = config_from_dict(cls, data, where="the student config", path=path)
        try:
            return cfg.validate()
        except ConfigError as err:
            raise ConfigError(f"bad student config: {err.message}", path=path, hint=err.hint) from None


def _conv(cin: int, cout: int, k: int, stride: int, padding: str) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, padding_mode=padding)


def _norm(ch: int, on: bool) -> nn.Module:
    return nn.InstanceNorm2d(ch, affine=True) if on else nn.Identity()


class _Residual(nn.Module):
    def __init__(self, ch: int, padding: str, norm: bool = False):
        super().__init__()
        self.conv1 = _conv(ch, ch, 3, 1, padding)
        self.conv2 = _conv(ch, ch, 3, 1, padding)
        self.norm1 = _norm(ch, norm)
        self.norm2 = _norm(ch, norm)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.norm2(self.conv2(torch.relu(self.norm1(self.conv1(x)))))


class StudentNet(nn.Module):
    """``[N, 3, H, W]`` in ``[0, 1]`` -> same shape. H and W need not be multiples of 2**downsample."""

    def __init__(self, config: StudentConfig | None = None):
        super().__init__()
        self.config = (config or StudentConfig()).validate()
        c, p = self.config.channels(), self.config.padding
        k, n = self.config.stem_kernel, self.config.downsample
        bottleneck = self.config.norm == "bottleneck"
        self.stem = _conv(3, c[0], k, 1, p)
        self.down = nn.ModuleList(_conv(c[i], c[i + 1], 3, 2, p) for i in range(n))
        # the norm after the last stride-2 conv (or after the stem when nothing downsamples)
        self.down_norm = _norm(c[-1], bottleneck)
        self.res = nn.Sequential(*(_Residual(c[-1], p, bottleneck) for _ in range(self.config.num_residual)))
        ups = [c[-1]] + self.config.up_path()
        self.up = nn.ModuleList(_conv(ups[i], ups[i + 1], 3, 1, p) for i in range(n))
        self.head = _conv(ups[-1], 3, k, 1, p)

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: Tensor) -> Tensor:  # [N,3,H,W] -> [N,3,H,W]
        x, h, w = pad_to_multiple(x, 2**self.config.downsample)
        y = self.stem(x)
        for conv in self.down:
            y = conv(torch.relu(y))
        y = self.res(torch.relu(self.down_norm(y)))
        for conv in self.up:
            y = torch.relu(conv(nn.functional.interpolate(y, scale_factor=2.0, mode="nearest")))
        return torch.sigmoid(self.head(y))[..., :h, :w]


# -- files -------------------------------------------------------------------


def student_paths(path: str | Path) -> tuple[Path, Path]:
    """``x``, ``x.safetensors`` or ``x.json`` -> (weights, config); a folder means ``folder/student``."""
    path = Path(path)
    if path.is_dir():
        path = path / "student"
    if path.suffix in (".safetensors", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".safetensors"), path.with_name(path.name + ".json")


def save_student(net: StudentNet, path: str | Path, *, metadata: dict | None = None) -> tuple[Path, Path]:
    """Write ``<path>.safetensors`` and ``<path>.json``; returns both paths."""
    from safetensors.torch import save_file

    weights, cfg = student_paths(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, str(weights), metadata={"format": FORMAT})
    doc = {"format": FORMAT, "config": dataclasses.asdict(net.config), "metadata": metadata or {}}
    cfg.write_text(json.dumps(doc, indent=2) + "\n")
    return weights, cfg


def load_student(path: str | Path, *, device: str | torch.device = "cpu") -> StudentNet:
    """Read a student written by :func:`save_student`; a bad config is a :class:`ConfigError`,
    every other problem a :class:`WeightsError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights, cfg = student_paths(path)
    if not cfg.is_file():
        raise WeightsError("student config is missing", path=cfg,
                           hint="a student is a .safetensors file with a .json config beside it "
                                "(written by `latentscape distill`)")
    if not weights.is_file():
        raise WeightsError("student weights are missing", path=weights,
                           hint=f"expected beside {cfg.name}; rerun `latentscape distill`")
    try:
        doc = json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WeightsError(f"student config is not valid JSON: {err}", path=cfg) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("config"), dict):
        raise WeightsError(f"not a student config (expected format {FORMAT!r})", path=cfg)
    net = StudentNet(StudentConfig.from_dict(doc["config"], path=cfg))
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"cannot read student weights: {err}", path=weights) from None
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if expected != got:
        missing = sorted(set(expected) - set(got))
        extra = sorted(set(got) - set(expected))
        wrong = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
        detail = "; ".join(s for s in (
            f"missing {missing[:4]}" if missing else "",
            f"unexpected {extra[:4]}" if extra else "",
            "wrong shape " + ", ".join(f"{k} {got[k]} (config wants {expected[k]})" for k in wrong[:4]) if wrong else "",
        ) if s)
        raise WeightsError(f"student weights do not match {cfg.name}: {detail}", path=weights,
                           hint="the .safetensors and .json must come from the same distill run")
    for k, v in state.items():
        if not torch.isfinite(v).all():
            raise WeightsError(f"student weight {k} holds NaN or inf", path=weights)
    net.load_state_dict(state)
    return net.to(device).eval()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class StudentStylizer:
    """A :class:`~latentscape.stylize.base.Stylizer` around a :class:`StudentNet`.

    ``half=True`` runs in fp16 (CUDA only; on the CPU it is refused, since CPU fp16
    convs are slower and less exact than fp32).
    """

    net: StudentNet
    version: str = "unversioned"
    name: str = "student"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    half: bool = False

    def __post_init__(self) -> None:
        self.device = torch.device(self.device)
        if self.half and self.device.type != "cuda":
            raise ConfigError("fp16 student needs a CUDA device", hint="drop half=True on the CPU")
        self.net = self.net.to(self.device, torch.float16 if self.half else torch.float32).eval()

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu", half: bool = False) -> "StudentStylizer":
        weights, _ = student_paths(path)
        net = load_student(path)
        return cls(net=net, version=file_sha256(weights)[:16], name=f"student:{weights.stem}",
                   device=torch.device(device), half=half)

    @torch.inference_mode()
    def __call__(self, frame: Tensor) -> Tensor:  # [3,H,W] or [N,3,H,W] -> same
        x, single = as_batch(frame)
        dtype = torch.float16 if self.half else torch.float32
        y = self.net(x.to(self.device, dtype)).to(frame.device, frame.dtype)
        return y[0] if single else y
