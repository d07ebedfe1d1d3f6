"""Train a hash-grid NeRF from a posed-image dataset (instant-ngp's recipe, in torch).

Random rays from all training images per step, a random background behind RGBA
images (so the field learns empty space), Adam with instant-ngp's settings
(betas 0.9/0.99, eps 1e-15), an occupancy grid refreshed every 16 steps, and a
held-out PSNR on validation views at regular intervals.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from latentscape.dataset import Dataset, Frame, normalization
from latentscape.field.nerf import FieldConfig, NerfField
from latentscape.render.cameras import generate_rays
from latentscape.render.occupancy import OccupancyGrid
from latentscape.render.renderer import RenderConfig, render_camera, render_rays


@dataclass
class TrainConfig:
    """Training budget and optimiser settings (``latentscape train`` flags).

    The schedules run on *progress*, ``max(step / steps, elapsed / max_seconds)``, so a
    run cut short by its time budget still decays its learning rate and finishes its
    warm-up, instead of being stopped in the middle of a schedule it never reaches.
    """

    steps: int = 2000
    """Optimisation steps (the run also stops at max_seconds)."""
    max_seconds: float | None = None
    """Wall-clock budget of the training loop in seconds (None: no limit)."""
    rays_per_step: int = 2048
    """Rays in the first step; later steps aim at ``samples_per_step`` (packed backends)."""
    samples_per_step: int | None = None
    """Field samples aimed at per step: rays per step follow from the measured samples
    per ray (instant-ngp's rule). None: a fixed ``rays_per_step``."""
    lr: float = 1e-2
    """Adam learning rate, decayed x0.33 at 50%, 75% and 90% of progress (nerfacc's schedule)."""
    occupancy_resolution: int = 64
    """Cells per side of the occupancy grid."""
    occupancy_levels: int = 1
    """Cascades of the occupancy grid (each doubles the covered box)."""
    occupancy_every: int = 16
    """Refresh the occupancy grid every this many steps."""
    occupancy_warmup: int = 256
    """Steps during which every allowed cell is refreshed (then a quarter + the occupied ones)."""
    carve: bool = True
    """Rule out cells no training camera sees, and (RGBA images) cells outside the visual hull."""
    eval_every: int = 250
    """Held-out PSNR every this many steps (0: only at the end)."""
    eval_views: int = 2
    """Validation views used for the periodic PSNR."""
    seed: int = 0
    """Seed for ray sampling, backgrounds and initialisation."""
    camera_radius: float = 2.0
    """Cameras are normalised to sit this far from the scene centre on average."""


@dataclass
class TrainResult:
    field: NerfField
    grid: OccupancyGrid
    render: RenderConfig
    center: torch.Tensor
    scale: float
    steps: int
    seconds: float
    history: list[dict] = field(default_factory=list)
    occupancy_allowed: float = 1.0
    """Fraction of occupancy cells left after carving (1.0: nothing carved)."""


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def composite_on(image: torch.Tensor, background) -> torch.Tensor:
    """RGBA [.., 4] on a background colour -> RGB."""
    bg = torch.as_tensor(background, dtype=image.dtype, device=image.device)
    return image[..., :3] * image[..., 3:4] + bg * (1.0 - image[..., 3:4])


def evaluate(field: NerfField, grid: OccupancyGrid, render: RenderConfig, frames: list[Frame], center, scale,
             background=(1.0, 1.0, 1.0), *, max_seconds: float | None = None, progress: bool = False) -> dict:
    """Mean PSNR (on the given background) over ``frames``.

    ``max_seconds`` bounds the work: views are rendered in order until the budget is
    spent (at least one), and ``views`` / ``of`` in the result say how many were used.
    """
    was_training = field.training
    field.eval()
    values = []
    start = time.perf_counter()
    bar = tqdm(frames, desc="eval", unit="view", disable=not progress, dynamic_ncols=True, leave=False)
    for fr in bar:
        out = render_camera(field, grid, fr.camera, render, background, world_to_field=(center, scale))
        values.append(psnr(out.rgb, composite_on(fr.image, background).to(out.rgb.device)))
        bar.set_postfix(psnr=f"{sum(values) / len(values):.2f}")
        if max_seconds is not None and time.perf_counter() - start >= max_seconds:
            break
    bar.close()
    field.train(was_training)
    return {"psnr": sum(values) / len(values), "views": len(values), "of": len(frames),
            "seconds": time.perf_counter() - start}


def _all_rays(frames: list[Frame], center, scale, device):
    os, ds, cs = [], [], []
    for fr in frames:
        o, d, _ = generate_rays(fr.camera, device)
        os.append((o - center.to(device)) * scale)
        ds.append(d)
        cs.append(fr.image.reshape(-1, 4).to(device))
    return torch.cat(os), torch.cat(ds), torch.cat(cs)


def _lr_factor(progress: float) -> float:
    """nerfacc's schedule: x0.33 at 50%, 75% and 90% of the run."""
    return 0.33 ** sum(progress >= m for m in (0.5, 0.75, 0.9))


def carve_grid(grid: OccupancyGrid, frames: list[Frame], center, scale) -> float:
    """Space-carve the grid from the training views (alpha where the images have it)."""
    alphas = []
    for fr in frames:
        a = fr.image[..., 3]
        alphas.append(a if bool((a < 0.999).any()) else None)
    return grid.carve([f.camera for f in frames], alphas, to_field=(center, scale))


def train(dataset: Dataset, field_config: FieldConfig | None = None, cfg: TrainConfig | None = None,
          render: RenderConfig | None = None, *, device: str | torch.device = "cpu", progress: bool = True,
          ops=None) -> TrainResult:
    """Train a field; ``ops`` are the backend's hot ops (``select_ops``; torch by default)."""
    cfg = cfg or TrainConfig()
    render = render or RenderConfig()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    start = time.perf_counter()
    train_frames = dataset.split("train")
    center, scale = normalization([f.camera for f in train_frames], cfg.camera_radius)
    if field_config is None:
        ext = dataset.aabb_scale
        field_config = FieldConfig(aabb=[-ext, -ext, -ext, ext, ext, ext])
    fld = NerfField(field_config, ops=ops).to(device)
    grid = OccupancyGrid(field_config.aabb, cfg.occupancy_resolution, cfg.occupancy_levels).to(device)
    allowed = carve_grid(grid, train_frames, center, scale) if cfg.carve else 1.0
    o_all, d_all, c_all = _all_rays(train_frames, center, scale, device)
    n_rays = o_all.shape[0]
    opt = torch.optim.Adam(
        [
            {"params": [fld.grid], "weight_decay": 0.0},
            {"params": list(fld.density_mlp.parameters()) + list(fld.color_mlp.parameters()), "weight_decay": 1e-6},
        ],
        lr=cfg.lr, betas=(0.9, 0.99), eps=1e-15,
    )
    val_frames = (dataset.split("val") or dataset.split("test") or train_frames)[: max(1, cfg.eval_views)]
    history: list[dict] = []
    dt = render.step_size(field_config.aabb)
    budget = cfg.max_seconds
    timed = budget is not None
    bar = tqdm(total=round(budget) if timed else cfg.steps, desc="train", unit="s" if timed else "step",
               disable=not progress, dynamic_ncols=True, mininterval=1.0)
    shown = 0
    rays = cfg.rays_per_step
    samples_per_ray = None
    # The no-grad transmittance cut costs a density pass over every sample; it pays only
    # once surfaces are opaque. Measure what it keeps every 16 steps; skip it in between
    # while it keeps more than 80% (early in training it keeps ~100%).
    cull, kept = True, 1.0
    step = 0
    for step in range(1, cfg.steps + 1):
        elapsed = time.perf_counter() - start
        frac = max((step - 1) / cfg.steps, elapsed / budget if timed else 0.0)
        for g in opt.param_groups:
            g["lr"] = cfg.lr * _lr_factor(frac)
        if step == 1 or step % cfg.occupancy_every == 0:
            # The warm-up ends at occupancy_warmup steps or half the budget, whichever comes first.
            grid.update(fld.density, dt, step if frac < 0.5 else cfg.occupancy_warmup,
                        warmup_steps=cfg.occupancy_warmup)
        idx = torch.randint(0, n_rays, (rays,), generator=gen).to(device)
        bg = torch.rand(rays, 3, generator=gen).to(device)
        target = c_all[idx, :3] * c_all[idx, 3:4] + bg * (1.0 - c_all[idx, 3:4])
        probe = step % 16 == 1
        out = render_rays(fld, grid, o_all[idx], d_all[idx], render, bg, jitter=True, cull=cull or probe)
        if probe and out.marched:
            kept = out.samples / out.marched
            cull = kept < 0.8
        loss = torch.mean((out.rgb - target) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_v = loss.item()
        train_psnr = -10.0 * math.log10(max(loss_v, 1e-10))
        record = {"step": step, "loss": loss_v, "train_psnr": train_psnr, "samples": out.samples, "rays": rays,
                  "samples_per_ray": out.samples / rays, "cut_keeps": round(kept, 3),
                  "seconds": round(time.perf_counter() - start, 3)}
        if cfg.samples_per_step:
            # instant-ngp: rescale the ray batch so the samples per step stay near the target.
            spr = max(out.samples, 1) / rays
            samples_per_ray = spr if samples_per_ray is None else 0.8 * samples_per_ray + 0.2 * spr
            rays = int(min(max(cfg.samples_per_step / samples_per_ray, 256), 1 << 16))
        elapsed = time.perf_counter() - start
        out_of_time = timed and elapsed >= budget
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps or out_of_time):
            record.update(evaluate(fld, grid, render, val_frames, center, scale))
            bar.write(f"step {step}: held-out PSNR {record['psnr']:.2f} dB ({record['views']} views), "
                      f"occupancy {grid.occupancy_fraction():.3f}")
        history.append(record)
        bar.set_postfix(step=step, loss=f"{loss_v:.4f}", psnr=f"{train_psnr:.1f}", spr=f"{out.samples / rays:.1f}")
        if timed:
            now = min(round(elapsed), round(budget))
            bar.update(now - shown)
            shown = now
        else:
            bar.update(1)
        if out_of_time:
            break
    bar.close()
    fld.eval()
    return TrainResult(fld, grid, render, center, scale, step, time.perf_counter() - start, history, allowed)


@dataclass(frozen=True)
class TrainingProfile:
    """Defaults for ``latentscape train`` on one kind of device; every flag overrides its entry.

    The CPU profile is sized for a laptop-class CPU and a budget of minutes: a smaller
    hash table (cache-resident), a marching step suited to ~100-400 px images, and
    ~32k samples per step so a step takes a fraction of a second. The GPU profile is
    instant-ngp's: a 2^19 table, 2^18 samples per step, a 128^3 occupancy grid.
    Numbers behind the CPU choice: README, "Fast core".
    """

    name: str
    field: dict
    render: dict
    train: dict
    max_seconds: float
    """Budget used when ``--max-seconds`` is not given."""


PROFILES = {
    "cpu": TrainingProfile(
        "cpu",
        # instant-ngp's current layout (8 levels of 4 features) with a 2^15 table: the table
        # that stays in cache wins per second. Held-out PSNR / CPU seconds on the 100x100 truck
        # scene, one thread, 2026-12-01: at 400 steps L8 F4 2^15 26.14 dB / 122 s, L16 F2 2^15
        # 26.00 / 130 s, L16 F2 2^17 26.19 / 201 s; at 600 steps L8 F4 2^15 26.49 / 168 s,
        # L8 F4 2^16 26.67 / 243 s.
        field={"n_levels": 8, "n_features_per_level": 4, "log2_hashmap_size": 15, "finest_resolution": 512},
        render={"steps_per_diagonal": 256, "early_stop": 1e-2},
        train={"steps": 100_000, "rays_per_step": 1024, "samples_per_step": 1 << 15, "occupancy_resolution": 64,
               "eval_every": 0},
        max_seconds=480.0,
    ),
    "gpu": TrainingProfile(
        "gpu",
        field={"n_levels": 16, "n_features_per_level": 2, "log2_hashmap_size": 19, "finest_resolution": 2048},
        render={"steps_per_diagonal": 1024},
        train={"steps": 100_000, "rays_per_step": 4096, "samples_per_step": 1 << 18, "occupancy_resolution": 128,
               "eval_every": 1000},
        max_seconds=120.0,
    ),
}


def profile_for(device: str | torch.device, name: str = "auto") -> TrainingProfile:
    """The profile asked for, or (``auto``) the one that suits ``device``."""
    if name == "auto":
        name = "gpu" if torch.device(device).type == "cuda" else "cpu"
    if name not in PROFILES:
        from latentscape.errors import ConfigError

        raise ConfigError(f"unknown training profile {name!r}", hint=f"use auto, {', '.join(PROFILES)}")
    return PROFILES[name]
