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
    """Training budget and optimiser settings (``latentscape train`` flags)."""

    steps: int = 2000
    """Optimisation steps (the run also stops at max_seconds)."""
    max_seconds: float | None = None
    """Wall-clock budget in seconds (None: no limit)."""
    rays_per_step: int = 2048
    """Rays per optimisation step."""
    lr: float = 1e-2
    """Adam learning rate (decayed by 10x over the run)."""
    occupancy_resolution: int = 64
    """Cells per side of the occupancy grid."""
    occupancy_levels: int = 1
    """Cascades of the occupancy grid (each doubles the covered box)."""
    occupancy_every: int = 16
    """Refresh the occupancy grid every this many steps."""
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


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.float() - b.float()) ** 2).item()
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def composite_on(image: torch.Tensor, background) -> torch.Tensor:
    """RGBA [.., 4] on a background colour -> RGB."""
    bg = torch.as_tensor(background, dtype=image.dtype, device=image.device)
    return image[..., :3] * image[..., 3:4] + bg * (1.0 - image[..., 3:4])


def evaluate(field: NerfField, grid: OccupancyGrid, render: RenderConfig, frames: list[Frame], center, scale,
             background=(1.0, 1.0, 1.0)) -> dict:
    """Mean PSNR (on the given background) over ``frames``."""
    field.eval()
    values = []
    for fr in frames:
        out = render_camera(field, grid, fr.camera, render, background, world_to_field=(center, scale))
        values.append(psnr(out.rgb, composite_on(fr.image, background).to(out.rgb.device)))
    field.train()
    return {"psnr": sum(values) / len(values), "views": len(values)}


def _all_rays(frames: list[Frame], center, scale, device):
    os, ds, cs = [], [], []
    for fr in frames:
        o, d, _ = generate_rays(fr.camera, device)
        os.append((o - center.to(device)) * scale)
        ds.append(d)
        cs.append(fr.image.reshape(-1, 4).to(device))
    return torch.cat(os), torch.cat(ds), torch.cat(cs)


def train(dataset: Dataset, field_config: FieldConfig | None = None, cfg: TrainConfig | None = None,
          render: RenderConfig | None = None, *, device: str | torch.device = "cpu", progress: bool = True,
          ops=None) -> TrainResult:
    """Train a field; ``ops`` are the backend's hot ops (``select_ops``; torch by default)."""
    cfg = cfg or TrainConfig()
    render = render or RenderConfig()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    train_frames = dataset.split("train")
    center, scale = normalization([f.camera for f in train_frames], cfg.camera_radius)
    if field_config is None:
        ext = dataset.aabb_scale
        field_config = FieldConfig(aabb=[-ext, -ext, -ext, ext, ext, ext])
    fld = NerfField(field_config, ops=ops).to(device)
    grid = OccupancyGrid(field_config.aabb, cfg.occupancy_resolution, cfg.occupancy_levels).to(device)
    o_all, d_all, c_all = _all_rays(train_frames, center, scale, device)
    n_rays = o_all.shape[0]
    opt = torch.optim.Adam(
        [
            {"params": [fld.grid], "weight_decay": 0.0},
            {"params": list(fld.density_mlp.parameters()) + list(fld.color_mlp.parameters()), "weight_decay": 1e-6},
        ],
        lr=cfg.lr, betas=(0.9, 0.99), eps=1e-15,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.1 ** min(1.0, s / max(1, cfg.steps)))
    val_frames = (dataset.split("val") or dataset.split("test") or train_frames)[: max(1, cfg.eval_views)]
    history: list[dict] = []
    dt = render.step_size(field_config.aabb)
    start = time.perf_counter()
    bar = tqdm(total=cfg.steps, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
    step = 0
    for step in range(1, cfg.steps + 1):
        if step == 1 or step % cfg.occupancy_every == 0:
            grid.update(fld.density, dt, step)
        idx = torch.randint(0, n_rays, (cfg.rays_per_step,), generator=gen).to(device)
        bg = torch.rand(cfg.rays_per_step, 3, generator=gen).to(device)
        target = c_all[idx, :3] * c_all[idx, 3:4] + bg * (1.0 - c_all[idx, 3:4])
        out = render_rays(fld, grid, o_all[idx], d_all[idx], render, bg, jitter=True)
        loss = torch.mean((out.rgb - target) ** 2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        train_psnr = -10.0 * math.log10(max(loss.item(), 1e-10))
        record = {"step": step, "loss": loss.item(), "train_psnr": train_psnr, "samples": out.samples}
        elapsed = time.perf_counter() - start
        out_of_time = cfg.max_seconds is not None and elapsed >= cfg.max_seconds
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps or out_of_time:
            record.update(evaluate(fld, grid, render, val_frames, center, scale))
            bar.write(f"step {step}: held-out PSNR {record['psnr']:.2f} dB ({record['views']} views), "
                      f"occupancy {grid.occupancy_fraction():.3f}")
        history.append(record)
        bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{train_psnr:.1f}", samples=out.samples)
        bar.update(1)
        if out_of_time:
            break
    bar.close()
    fld.eval()
    return TrainResult(fld, grid, render, center, scale, step, time.perf_counter() - start, history)
