"""Distil a slow stylizer (ONNX style network, diffusion img2img) into a real-time student.

The teacher runs once per training frame (outputs cached in the checkpoint folder);
the student then trains on random crops of (frame, teacher output) pairs.

Loss, per crop pair (weights in :class:`DistillConfig`):

- ``l1``: pixel L1 between student and teacher;
- ``feature``: L1 between the activations of a *fixed random* conv net (3 stages,
  16/32/64 channels, Kaiming init from a fixed seed, never trained) on student and
  teacher output. Random conv features work as a texture/edge-sensitive perceptual
  term without downloading VGG weights;
- ``ssim``: ``1 - SSIM`` (11x11 Gaussian window, sigma 1.5);
- ``temporal``: the student's change between two consecutive frames must match the
  teacher's: ``L1((S(a) - S(b)) - (T(a) - T(b)))``. With ``sequence=True`` the frames
  are a camera path and (a, b) are frames k and k+1 at the same crop; otherwise b is
  a shifted crop of the same frame (a camera pan of up to ``max_shift`` pixels);
- ``warp`` (needs ``warps``: exact depth warps between frames of a rendered camera
  path, :mod:`latentscape.stylize.temporal`): ``|S(b) - warp(S(a))|`` over the pixels
  visible in both, the output temporal loss of video style transfer (ReCoNet). Unlike
  ``temporal`` it does not copy the teacher's flicker: a stylizer that paints strokes
  which do not move with the scene pays for it. The pair's two frames also count in the
  image terms (alone, the warp term is cheapest for a blur: a 2000-step run at weight 2
  without them blurred the demo student to 16.6 dB).

Students with ``norm="bottleneck"`` (and every ``init="teacher"`` student) train on
whole frames, one per batch item: their instance norms see the whole frame's
statistics at render time, so a crop's would teach them the wrong ones. ``temporal``
applies to crop training only.

``init="teacher"`` (multistyle26 teachers) starts the student from the teacher's own
weights (:mod:`latentscape.stylize.inherit`) instead of a random init.

Checkpoints (student, Adam state, step) are written every ``checkpoint_every`` steps
as safetensors + json; a rerun with the same settings resumes from the last one.
Every step draws its crops from a generator seeded by ``(seed, step)``, so an
interrupted-and-resumed run ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from latentscape.errors import ConfigError, DatasetError, LatentscapeError
from latentscape.outputs import open_resumable
from latentscape.stylize.base import Stylizer
from latentscape.stylize.student import StudentConfig, StudentNet, save_student

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
# RGB photos and textures in scikit-image's data folder (grey and synthetic images are left out).
SKIMAGE_IMAGES = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
                  "hubble_deep_field.jpg", "immunohistochemistry.png", "ihc.png", "retina.jpg", "color.png")


class DistillError(LatentscapeError):
    """Distillation cannot go on: the loss diverged, or a checkpoint does not fit this run."""


class TeacherError(DistillError):
    """The teacher's output cannot be a training target (wrong shape, NaN, out of range)."""


@dataclass
class DistillConfig:
    """Settings of one distillation run (also the CLI's options)."""

    steps: int = 2000
    """Optimiser steps in total (a resumed run continues up to this number)."""
    batch_size: int = 8
    """Crop pairs per step."""
    crop: int = 128
    """Side of the square training crops (shrunk to fit the smallest frame)."""
    lr: float = 2e-3
    """Adam learning rate."""
    lr_schedule: str = "constant"
    """``constant``, or ``cosine``: decays from ``lr`` to 0 over ``steps``."""
    seed: int = 0
    """Seeds the student's init and every step's crops."""
    train_size: int = 256
    """Frames are resized so their longer side is this many pixels before the teacher sees them."""
    holdout: float = 0.15
    """Fraction of frames kept out of training for metrics.json (at least one when there are 2+ frames)."""
    sequence: bool = False
    """Frames are consecutive (a camera path): temporal pairs are (k, k+1) instead of shifted crops."""
    max_shift: int = 8
    """Largest pan, in pixels, between the two crops of a synthetic temporal pair."""
    w_l1: float = 1.0
    """Weight of the pixel L1 term."""
    w_feature: float = 0.5
    """Weight of the fixed-random-conv feature term."""
    w_ssim: float = 0.2
    """Weight of the 1 - SSIM term."""
    w_temporal: float = 0.5
    """Weight of the temporal-consistency term (crop training)."""
    w_warp: float = 0.0
    """Weight of the depth-warped temporal loss (used when ``distill`` gets ``warps``)."""
    init: str = "random"
    """``random``, or ``teacher``: inherit a multistyle26 teacher's weights (the student's shape follows)."""
    inherit_blocks: int = 6
    """With ``init="teacher"``: residual blocks kept of the teacher's six."""
    inherit_kernel: int = 9
    """With ``init="teacher"``: side of the stem and head convs (the teacher's 9x9 cropped to its centre)."""
    checkpoint_every: int = 100
    """Steps between checkpoints."""
    time_budget_s: float | None = None
    """Stop (and save) after this many seconds of training; None trains all ``steps``."""
    device: str = "cpu"
    """Where the student trains (the teacher picks its own device)."""
    student: StudentConfig = field(default_factory=StudentConfig)
    """Shape of the student network."""

    def validate(self) -> "DistillConfig":
        checks = [
            (self.steps >= 1, "steps must be >= 1"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.crop >= 16, "crop must be >= 16"),
            (math.isfinite(self.lr) and self.lr > 0, "lr must be a positive number"),
            (self.train_size >= 16, "train_size must be >= 16"),
            (0 <= self.holdout < 1, "holdout must be in [0, 1)"),
            (self.max_shift >= 0, "max_shift must be >= 0"),
            (self.checkpoint_every >= 1, "checkpoint_every must be >= 1"),
            (min(self.w_l1, self.w_feature, self.w_ssim, self.w_temporal, self.w_warp) >= 0, "loss weights must be >= 0"),
            (self.lr_schedule in ("constant", "cosine"), f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}"),
            (self.init in ("random", "teacher"), f"init must be 'random' or 'teacher', got {self.init!r}"),
            (1 <= self.inherit_blocks <= 6, "inherit_blocks must be in 1..6"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(f"distill config: {msg}")
        if self.init == "teacher":
            from latentscape.stylize.inherit import multistyle26_config

            self.student = multistyle26_config(self.inherit_blocks, self.inherit_kernel)
        self.student.validate()
        return self

    @property
    def full_frames(self) -> bool:
        """Whole frames per batch item (students whose norms need a whole frame's statistics)."""
        return self.student.norm != "none"

    def fingerprint(self) -> dict:
        """Settings a checkpoint must share with the run that resumes it."""
        d = dataclasses.asdict(self)
        for k in ("steps", "checkpoint_every", "time_budget_s", "device"):
            d.pop(k)
        return d


# -- frames ------------------------------------------------------------------


def skimage_data_dir() -> Path | None:
    """scikit-image's bundled data folder, if scikit-image is installed (it is optional)."""
    import importlib.util

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    return folder if folder.is_dir() else None


def _read_image(path: Path) -> Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            data = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            return data.view(im.height, im.width, 3).permute(2, 0, 1).float() / 255.0
    except (OSError, UnidentifiedImageError) as err:
        raise DatasetError(f"cannot read image: {err}", path=path) from None


def _fit(frame: Tensor, size: int) -> Tensor:
    h, w = frame.shape[-2:]
    s = size / max(h, w)
    if abs(s - 1) < 1e-6:
        return frame
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    return F.interpolate(frame[None], size=(nh, nw), mode="bilinear", antialias=s < 1, align_corners=False)[0].clamp(0, 1)


def load_frames(folders: Iterable[str | Path] = (), tensors: Iterable[Tensor] = (), *,
                include_skimage: bool = False, size: int = 256) -> list[Tensor]:
    """Collect training frames, each ``[3, H, W]`` float in [0, 1] with its longer side = ``size``.

    Sources, in this order: image files in each folder (sorted by name, so a rendered
    camera path stays in order), tensors (``[3,H,W]`` or ``[N,3,H,W]``), and the RGB
    photos shipped in scikit-image's data folder when ``include_skimage`` and it is
    installed.
    """
    frames: list[Tensor] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError("frames folder does not exist", path=folder)
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DatasetError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in frames folder", path=folder)
        frames += [_read_image(p) for p in files]
    for t in tensors:
        t = torch.as_tensor(t)
        batch = t[None] if t.ndim == 3 else t
        if batch.ndim != 4 or batch.shape[1] != 3 or not batch.is_floating_point():
            raise DatasetError(f"frame tensors must be float [3,H,W] or [N,3,H,W], got {tuple(t.shape)} {t.dtype}")
        frames += [f.detach().float().cpu().clamp(0, 1) for f in batch]
    if include_skimage:
        folder = skimage_data_dir()
        if folder is not None:
            frames += [_read_image(folder / n) for n in SKIMAGE_IMAGES if (folder / n).is_file()]
    for i, f in enumerate(frames):
        if not torch.isfinite(f).all():
            raise DatasetError(f"frame {i} holds NaN or inf")
    return [_fit(f, size).contiguous() for f in frames]


# -- losses ------------------------------------------------------------------


class RandomFeatures(nn.Module):
    """A fixed, never-trained conv net whose activations serve as a perceptual feature space."""

    def __init__(self, seed: int = 1234):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.convs = nn.ModuleList()
        for cin, cout, stride in ((3, 16, 1), (16, 32, 2), (32, 64, 2)):
            conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * math.sqrt(2.0 / (cin * 9)))
                conv.bias.zero_()
            self.convs.append(conv)
        self.requires_grad_(False)

    def forward(self, x: Tensor) -> list[Tensor]:
        feats, y = [], x * 2 - 1
        for conv in self.convs:
            y = torch.relu(conv(y))
            feats.append(y)
        return feats


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None, dtype=None) -> Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g


def ssim(a: Tensor, b: Tensor) -> Tensor:
    """Mean SSIM of ``[N,3,H,W]`` images in [0, 1] (Gaussian 11x11, sigma 1.5; per image ``[N]``)."""
    c = a.shape[1]
    size = min(11, a.shape[-1], a.shape[-2])
    size -= (size + 1) % 2
    g = _gaussian_window(size, 1.5, a.device, a.dtype)
    wx = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    wy = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(x):
        return F.conv2d(F.conv2d(x, wx, groups=c), wy, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return s.flatten(1).mean(1)


def psnr(a: Tensor, b: Tensor) -> Tensor:
    """PSNR in dB of ``[N,3,H,W]`` images in [0, 1] (per image ``[N]``)."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return -10 * torch.log10(mse)


# -- training ----------------------------------------------------------------


@dataclass
class DistillResult:
    """What :func:`distill` wrote and measured."""

    student_path: Path
    metrics: dict
    step: int
    resumed_from: int
    losses: list[float]


def _digest(frames: Sequence[Tensor]) -> str:
    h = hashlib.sha256()
    for f in frames:
        h.update(str(tuple(f.shape)).encode())
        h.update((f * 255).round().to(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _run_teacher(teacher: Callable[[Tensor], Tensor], frames: Sequence[Tensor], name: str) -> list[Tensor]:
    from tqdm.auto import tqdm

    outs = []
    for i, f in enumerate(tqdm(frames, desc=f"teacher {name}", unit="frame", leave=False)):
        with torch.no_grad():
            y = teacher(f.clone())
        if not isinstance(y, Tensor):
            raise TeacherError(f"teacher {name} returned {type(y).__name__}, not a tensor")
        if tuple(y.shape) != tuple(f.shape):
            raise TeacherError(f"teacher {name} returned shape {tuple(y.shape)} for frame {i} of shape {tuple(f.shape)}",
                               hint="a teacher must return a frame of the same shape as its input")
        y = y.detach().float().cpu()
        if not torch.isfinite(y).all():
            raise TeacherError(f"teacher {name} returned NaN or inf for frame {i}")
        if y.min() < -0.02 or y.max() > 1.02:
            raise TeacherError(f"teacher {name} returned values in [{y.min():.3f}, {y.max():.3f}] for frame {i}",
                               hint="a teacher must return RGB in [0, 1]")
        outs.append(y.clamp(0, 1).contiguous())
    return outs


def _split(n: int, holdout: float) -> tuple[list[int], list[int]]:
    if n == 0:
        raise DatasetError("no training frames", hint="pass a frames folder or tensors (or install scikit-image)")
    k = 0 if n < 2 or holdout == 0 else max(1, round(n * holdout))
    # every k-th frame held out: spreads held-out frames along a camera path
    held = sorted(set(round(i * n / k + n / (2 * k)) % n for i in range(k))) if k else []
    train = [i for i in range(n) if i not in held]
    return train, held


def _atomic_save(tensors: dict, meta: dict, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "state.safetensors.tmp"
    save_file(tensors, str(tmp))
    os.replace(tmp, folder / "state.safetensors")
    tmpj = folder / "state.json.tmp"
    tmpj.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmpj, folder / "state.json")


def _save_checkpoint(folder: Path, step: int, net: StudentNet, opt: torch.optim.Optimizer, meta: dict) -> None:
    tensors = {f"student.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    sd = opt.state_dict()
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"optim.{idx}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    _atomic_save(tensors, {**meta, "step": step, "param_groups": sd["param_groups"]}, folder)


def _load_checkpoint(folder: Path, net: StudentNet, opt: torch.optim.Optimizer, fingerprint: dict) -> int:
    from safetensors.torch import load_file

    meta_path, state_path = folder / "state.json", folder / "state.safetensors"
    try:
        meta = json.loads(meta_path.read_text())
        tensors = load_file(str(state_path))
    except (OSError, ValueError) as err:
        raise DistillError(f"cannot read checkpoint: {err}", path=folder,
                           hint="delete the checkpoint folder or pass --no-resume") from None
    if meta.get("fingerprint") != fingerprint:
        raise DistillError("checkpoint was written by a run with other settings, frames or teacher", path=meta_path,
                           hint="rerun with the same options, use another --out, or pass --no-resume to start over")
    net.load_state_dict({k[len("student."):]: v for k, v in tensors.items() if k.startswith("student.")})
    state: dict = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["step"])


def _crops(g: torch.Generator, frames: list[Tensor], targets: list[Tensor], train: list[int], cfg: DistillConfig,
           crop: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(a, b, teacher(a), teacher(b)) batches of ``[B,3,crop,crop]``: b is a's next frame or a pan of it."""
    xa, xb, ta, tb = [], [], [], []
    for _ in range(cfg.batch_size):
        j = int(torch.randint(len(train), (1,), generator=g))
        i = train[j]
        if cfg.sequence and len(train) > 1:
            i2 = train[j + 1] if j + 1 < len(train) else train[j - 1]
            if frames[i2].shape != frames[i].shape:
                i2 = i
            dy = dx = 0
        else:
            i2 = i
            dy, dx = (int(v) for v in torch.randint(-cfg.max_shift, cfg.max_shift + 1, (2,), generator=g))
        h, w = frames[i].shape[-2:]
        s = cfg.max_shift if not cfg.sequence else 0
        y = int(torch.randint(s, h - crop - s + 1, (1,), generator=g))
        x = int(torch.randint(s, w - crop - s + 1, (1,), generator=g))
        sl = (slice(None), slice(y, y + crop), slice(x, x + crop))
        sl2 = (slice(None), slice(y + dy, y + dy + crop), slice(x + dx, x + dx + crop))
        xa.append(frames[i][sl]); ta.append(targets[i][sl])
        xb.append(frames[i2][sl2]); tb.append(targets[i2][sl2])
    return torch.stack(xa), torch.stack(xb), torch.stack(ta), torch.stack(tb)


def _image_loss(s: Tensor, t: Tensor, cfg: DistillConfig, feats: nn.Module) -> Tensor:
    loss = cfg.w_l1 * (s - t).abs().mean()
    if cfg.w_feature:
        loss = loss + cfg.w_feature * sum((fs - ft).abs().mean() for fs, ft in zip(feats(s), feats(t)))
    if cfg.w_ssim:
        loss = loss + cfg.w_ssim * (1 - ssim(s, t).mean())
    return loss


def evaluate(student: Callable[[Tensor], Tensor], frames: Sequence[Tensor], targets: Sequence[Tensor]) -> dict:
    """PSNR/SSIM of ``student(frame)`` against the teacher's output, full frame, plus the identity baseline."""
    rows = []
    with torch.no_grad():
        for f, t in zip(frames, targets):
            y = student(f[None]).float().cpu().clamp(0, 1)
            rows.append((float(psnr(y, t[None])), float(ssim(y, t[None])),
                         float(psnr(f[None], t[None])), float(ssim(f[None], t[None]))))
    if not rows:
        return {"frames": 0}
    n = len(rows)
    return {"frames": n,
            "psnr_db": sum(r[0] for r in rows) / n, "ssim": sum(r[1] for r in rows) / n,
            "identity_psnr_db": sum(r[2] for r in rows) / n, "identity_ssim": sum(r[3] for r in rows) / n}


OUTPUT_ENTRIES = ["checkpoint", "metrics.json", "scene_frames", "student.json", "student.safetensors"]
"""What ``distill`` (and the CLI, for ``scene_frames``) writes into its ``out`` folder."""


def distill(teacher: Stylizer | Callable[[Tensor], Tensor], frames: Sequence[Tensor], out: str | Path,
            config: DistillConfig | None = None, *, resume: bool = True, progress: bool = True,
            on_step: Callable[[int, float], None] | None = None,
            warps: Sequence[tuple[int, int, Tensor, Tensor]] = ()) -> DistillResult:
    """Train a student to imitate ``teacher`` on ``frames``; write ``out/student.{safetensors,json}``
    and ``out/metrics.json``; checkpoints go to ``out/checkpoint/``.

    ``on_step(step, loss)`` runs after every optimiser step (``step`` counts from 1).
    ``warps``: ``(a, b, grid, valid)`` per pair of frame indices, ``grid``/``valid`` from
    :func:`latentscape.stylize.temporal.depth_warp` (frame b's pixels in frame a); pairs
    touching a held-out frame are not used; they feed the ``w_warp`` loss.
    """
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    cfg = (config or DistillConfig()).validate()
    out = Path(out)
    open_resumable(out, command="distill", entries=OUTPUT_ENTRIES)  # never fills (or resumes in) a stranger's folder
    ckpt = out / "checkpoint"
    name = getattr(teacher, "name", type(teacher).__name__)
    version = getattr(teacher, "version", "unversioned")

    frames = [f.detach().float().cpu().contiguous() for f in frames]
    train, held = _split(len(frames), cfg.holdout)
    digest = _digest(frames)
    fingerprint = {"config": cfg.fingerprint(), "teacher": name, "teacher_version": version, "frames": digest}

    # teacher outputs: the expensive part, cached beside the checkpoint
    cache = ckpt / "teacher.safetensors"
    targets = None
    if resume and cache.is_file():
        try:
            data = load_file(str(cache))
            if data.get("_key") is not None and bytes(data["_key"].tolist()).decode() == f"{name}|{version}|{digest}":
                targets = [data[f"t{i}"] for i in range(len(frames))]
        except (OSError, ValueError, KeyError):
            targets = None
    if targets is None:
        targets = _run_teacher(teacher, frames, name)
        ckpt.mkdir(parents=True, exist_ok=True)
        key = torch.tensor(list(f"{name}|{version}|{digest}".encode()), dtype=torch.uint8)
        save_file({"_key": key, **{f"t{i}": t for i, t in enumerate(targets)}}, str(cache))

    if not train:
        raise DatasetError("no frames left for training after the hold-out split", hint="add frames or lower holdout")
    smallest = min(min(frames[i].shape[-2:]) for i in train)
    margin = 0 if cfg.sequence else 2 * cfg.max_shift
    crop = min(cfg.crop, smallest - margin)
    held_set = set(held)
    pairs = []
    for a, b, grid, valid in warps:
        if not (0 <= a < len(frames) and 0 <= b < len(frames)):
            raise DatasetError(f"warp pair ({a}, {b}) names a frame that does not exist ({len(frames)} frames)")
        if tuple(grid.shape) != (*frames[b].shape[-2:], 2) or tuple(valid.shape) != tuple(frames[b].shape[-2:]) \
                or frames[a].shape != frames[b].shape:
            raise DatasetError(f"warp pair ({a}, {b}) does not fit its frames: grid {tuple(grid.shape)}, "
                               f"frames {tuple(frames[a].shape)} / {tuple(frames[b].shape)}")
        if a not in held_set and b not in held_set and bool(valid.any()):
            pairs.append((a, b, grid.float(), valid.bool()))
    fingerprint["warps"] = hashlib.sha256(repr([(a, b, int(v.sum())) for a, b, _, v in pairs]).encode()).hexdigest()[:16]
    if cfg.full_frames:
        crop = smallest  # only checked below: whole frames are used
    if crop < 16:
        raise DatasetError(f"frames are too small: the smallest is {smallest}px, crops need >= {16 + margin}px",
                           hint="use larger frames or a larger train_size")

    device = torch.device(cfg.device)
    if cfg.init == "teacher":
        weights = getattr(teacher, "weights", None)
        if not str(name).startswith("multistyle26") or weights is None:
            raise ConfigError(f"init='teacher' inherits a multistyle26 teacher's weights; {name} is not one",
                              hint="use --init random with this teacher")
        from latentscape.stylize.inherit import student_from_multistyle26

        net = student_from_multistyle26(weights, [frames[i] for i in train], blocks=cfg.inherit_blocks,
                                        kernel=cfg.inherit_kernel).to(device)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            net = StudentNet(cfg.student).to(device)
    feats = RandomFeatures().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)

    step = 0
    if resume and (ckpt / "state.json").is_file():
        step = _load_checkpoint(ckpt, net, opt, fingerprint)
    start = step
    meta = {"fingerprint": fingerprint}
    losses: list[float] = []
    t0 = time.monotonic()
    bar = tqdm(total=cfg.steps, initial=step, desc="distill", unit="step", disable=not progress)
    net.train()
    try:
        while step < cfg.steps:
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
            if cfg.lr_schedule == "cosine":
                for group in opt.param_groups:
                    group["lr"] = cfg.lr * 0.5 * (1 + math.cos(math.pi * step / cfg.steps))
            if cfg.full_frames:
                loss = 0.0
                for _ in range(cfg.batch_size):
                    i = train[int(torch.randint(len(train), (1,), generator=g))]
                    loss = loss + _image_loss(net(frames[i][None].to(device)), targets[i][None].to(device), cfg, feats)
                loss = loss / cfg.batch_size
            else:
                xa, xb, ta, tb = (t.to(device) for t in _crops(g, frames, targets, train, cfg, crop))
                s = net(torch.cat([xa, xb]))
                t = torch.cat([ta, tb])
                sa, sb = s.chunk(2)
                loss = _image_loss(s, t, cfg, feats)
                if cfg.w_temporal:
                    loss = loss + cfg.w_temporal * ((sa - sb) - (ta - tb)).abs().mean()
            if cfg.w_warp and pairs:
                from latentscape.stylize.temporal import warped_error

                a, b, grid, valid = pairs[int(torch.randint(len(pairs), (1,), generator=g))]
                sab = net(torch.stack([frames[a], frames[b]]).to(device))
                # the pair's own fidelity counts too: the warp term alone is cheapest for a blur
                loss = loss + _image_loss(sab, torch.stack([targets[a], targets[b]]).to(device), cfg, feats)
                loss = loss + cfg.w_warp * warped_error(sab[0], sab[1], grid.to(device), valid.to(device))
            value = float(loss.detach())
            if not math.isfinite(value):
                raise DistillError(f"loss became {value} at step {step + 1}", path=ckpt,
                                   hint=f"lower the learning rate (now {cfg.lr}); the run resumes from the last "
                                        "checkpoint, or pass --no-resume")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{value:.4f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                _save_checkpoint(ckpt, step, net, opt, meta)
            if on_step is not None:
                on_step(step, value)
            if cfg.time_budget_s is not None and time.monotonic() - t0 > cfg.time_budget_s:
                if step % cfg.checkpoint_every:
                    _save_checkpoint(ckpt, step, net, opt, meta)
                break
    finally:
        bar.close()

    net.eval()
    metrics = {"teacher": name, "teacher_version": version, "steps": step, "held_out": held,
               "train_seconds": round(time.monotonic() - t0, 2), "resumed_from": start,
               "loss_first": losses[0] if losses else None, "loss_last": losses[-1] if losses else None,
               **{f"heldout_{k}": v for k, v in evaluate(lambda x: net(x.to(device)),
                                                          [frames[i] for i in held], [targets[i] for i in held]).items()}}
    path, _ = save_student(net, out / "student", metadata={
        "teacher": name, "teacher_version": version, "steps": step, "frames": digest,
        "init": cfg.init, "full_frames": cfg.full_frames,
        "loss": {"l1": cfg.w_l1, "random_conv_feature": cfg.w_feature, "ssim": cfg.w_ssim, "temporal": cfg.w_temporal,
                 "warp": cfg.w_warp}})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return DistillResult(student_path=path, metrics=metrics, step=step, resumed_from=start, losses=losses)
