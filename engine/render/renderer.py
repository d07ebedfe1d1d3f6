"""Volume renderer: rays -> occupancy-skipping march -> field -> composited rgb, depth, alpha.

Rays are processed in chunks so memory stays bounded at any resolution. Two
marchers share one contract (same sample lattice ``tnear + (k + 0.5) * dt``, same
occupancy test, same compositing):

* **packed** (backends whose ``Ops.packed`` is set, e.g. ``cpu``): only samples in
  occupied cells are stored, in one flat array (nerfacc's layout). Training marches
  each ray once, drops the samples behind an opaque surface with a no-grad density
  pass (nerfacc's ``early_stop_eps``), and back-propagates through the rest.
  Inference runs in rounds as instant-ngp's tracer does: each round every live ray
  proposes its next ``k`` occupied samples, ``k`` growing as rays finish
  (``samples_per_round / live rays``), one field batch per round; rays stop when
  their transmittance falls below ``early_stop`` or they leave the box.
* **segment** (torch, triton, tcnn): each chunk is marched segment by segment
  (``segment`` samples per ray per round, including empty ones), with the same early
  termination and a coarse empty-space skip first.

Fields that bring their own estimator (``field.estimator == "proposal"``: an imported
nerfacto, :class:`latentscape.field.nerfacto.NerfactoField`) are not marched through the
occupancy grid: :func:`render_camera` hands them the rays and they place their samples with
their proposal networks (the grid argument is then None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from latentscape.field.nerf import NerfField
from latentscape.kernels.reference.raymarch import composite_segment, march_segment, occupancy_lookup, ray_aabb
from latentscape.render.cameras import Camera, generate_rays, pixel_centres
from latentscape.render.occupancy import OccupancyGrid


@dataclass
class RenderConfig:
    """How rays are marched (stored in ``scene.toml`` under ``[render]``)."""

    steps_per_diagonal: int = 512
    """Marching step = box diagonal / this (instant-ngp uses 1024 on a sqrt(3) box)."""
    segment: int = 32
    """Samples proposed per ray per marching round (termination is checked between rounds)."""
    early_stop: float = 1e-3
    """Stop a ray when its transmittance falls below this."""
    near: float = 0.05
    """Ignore geometry closer than this to the camera (normalised units)."""
    chunk: int = 1 << 15
    """Rays per chunk: bounds memory at any resolution."""
    samples_per_round: int = 1 << 15
    """Packed marcher: field evaluations aimed at per round (k = this / live rays). 2^15 keeps a
    round's activations in cache: a 256x256 demo frame took 950 ms at 2^15 and 2^16, 1200 ms at
    2^17 (2-core CPU, 2026-12-01), with 25% fewer samples wasted past the stopping point."""
    max_samples_per_round: int = 64
    """Packed marcher: the most samples one ray proposes in a round."""
    min_samples_per_round: int = 4
    """Packed marcher: the fewest samples one ray proposes in a round."""
    train_early_stop: float = 1e-4
    """Packed training: samples behind a transmittance below this get no gradient pass."""
    gpu_chunk: int = 1 << 21
    """Rays per chunk on CUDA (at least ``chunk``): a 1080p frame in one chunk, so a frame
    costs one set of rounds. Not tuned on a GPU yet."""
    gpu_samples_per_round: int = 1 << 21
    """Packed marcher on CUDA: field evaluations aimed at per round. Not tuned on a GPU yet."""

    def validate(self, *, where: str = "[render]", path=None) -> "RenderConfig":
        """Every field a finite number in :data:`RENDER_RANGES` (a ConfigError naming it)."""
        from latentscape.config import check_number

        for name, (kind, low, high, low_open) in RENDER_RANGES.items():
            setattr(self, name, check_number(getattr(self, name), name=name, kind=kind, low=low, high=high,
                                             low_open=low_open, where=where, path=path))
        if self.min_samples_per_round > self.max_samples_per_round:
            from latentscape.errors import ConfigError

            raise ConfigError(f"{where} min_samples_per_round must be <= max_samples_per_round", path=path)
        return self

    def step_size(self, aabb) -> float:
        aabb = torch.as_tensor(aabb, dtype=torch.float32)
        return float(torch.linalg.norm(aabb[3:] - aabb[:3])) / self.steps_per_diagonal


MAX_IMAGE_SIDE = 16384
"""Largest width or height a scene, camera path or command line may ask for."""
"""Largest width or height a scene, camera path or command line may ask for."""
FRAME_BYTES_PER_PIXEL = 280
"""Memory one output pixel costs through the whole frame loop (rgb/depth/alpha, mesh layers,
compositing, the stylizer, the sink's copy). Measured 2026-12-01 on the 2-core CPU with the
demo scene (mesh layers and stylizer on): peak RSS of ``latentscape render --frames 1
--width S --height S --out DIR`` was 624 MiB at S=256 and 876 MiB at S=1024, i.e. 268 bytes
per extra pixel; rounded up. See :func:`frame_bytes`."""


def frame_bytes(width: int, height: int) -> int:
    """Estimated peak memory of one frame at ``width`` x ``height``, beyond the rays of one chunk."""
    return int(width) * int(height) * FRAME_BYTES_PER_PIXEL


def frame_budget() -> int:
    """Bytes one frame may take: half this machine's physical memory (``LATENTSCAPE_MAX_FRAME_GB`` overrides)."""
    import os

    env = os.environ.get("LATENTSCAPE_MAX_FRAME_GB")
    if env:
        try:
            gb = float(env)
            if math.isfinite(gb) and gb > 0:
                return int(gb * 2**30)
        except ValueError:
            pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
    except (ValueError, OSError, AttributeError):  # not Linux/macOS
        return 8 * 2**30


RENDER_RANGES: dict[str, tuple[type, float, float, bool]] = {
    # name: (type, low, high, low bound exclusive)
    "steps_per_diagonal": (int, 1, 1 << 16, False), "segment": (int, 1, 4096, False),
    "early_stop": (float, 0.0, 1.0, False), "near": (float, 0.0, 1e6, False),
    "chunk": (int, 1, 1 << 24, False), "samples_per_round": (int, 1, 1 << 26, False),
    "max_samples_per_round": (int, 1, 4096, False), "min_samples_per_round": (int, 1, 4096, False),
    "train_early_stop": (float, 0.0, 1.0, False),
}
"""Allowed range of each :class:`RenderConfig` field ([render] in scene.toml)."""


@dataclass
class RenderOutput:
    rgb: torch.Tensor  # [N, 3] (or [H, W, 3] for images)
    depth: torch.Tensor  # [N] distance along the ray, in the caller's units
    alpha: torch.Tensor  # [N] accumulated opacity
    samples: int = 0  # field evaluations
    rounds: int = 0  # marching rounds (one field batch each)
    marched: int = 0  # packed training: samples marched, before the transmittance cut


def render_rays(field: NerfField, grid: OccupancyGrid, o: torch.Tensor, d: torch.Tensor, cfg: RenderConfig,
                background: torch.Tensor, *, jitter: bool = False, tmax: torch.Tensor | None = None,
                cull: bool = True) -> RenderOutput:
    """Render a batch of rays (differentiable w.r.t. the field's parameters).

    background: [3] or [N, 3], seen through whatever the field leaves transparent.
    tmax: optional [N] distances where an opaque surface (a mesh layer) stops the ray;
    the background then stands for that surface, so occlusion is right both ways.
    cull: packed training only: run the no-grad transmittance cut before the gradient pass
    (the trainer turns it off while it would keep nearly every sample).
    """
    n = o.shape[0]
    dev = o.device
    aabb = field.aabb
    dt = cfg.step_size(aabb)
    # The field's backend (NerfField.ops, from kernels.backend.select_ops) marches and composites.
    ops = getattr(field, "ops", None)
    if ops is not None and ops.packed:
        return _render_packed(field, grid, o, d, cfg, background, ops, jitter=jitter, tmax=tmax, cull=cull)
    march, composite = (march_segment, composite_segment) if ops is None else (ops.march_segment, ops.composite_segment)
    tnear, tfar = ray_aabb(o, d, aabb, cfg.near)
    if tmax is not None:
        tfar = torch.minimum(tfar, tmax)
    if jitter:
        tnear = tnear + torch.rand_like(tnear) * dt
    tnear, tfar = _skip_empty(o, d, tnear, tfar, grid, aabb, dt)
    max_rounds = math.ceil(cfg.steps_per_diagonal / cfg.segment) + 1
    rgb = torch.zeros(n, 3, device=dev)
    depth = torch.zeros(n, device=dev)
    opacity = torch.zeros(n, device=dev)
    trans = torch.ones(n, device=dev)
    alive = (tnear < tfar).nonzero().squeeze(-1)
    t_start = tnear
    samples = 0
    rounds = 0
    for _ in range(max_rounds):
        if alive.numel() == 0:
            break
        rounds += 1
        oa, da = o[alive], d[alive]
        t, valid = march(oa, da, t_start[alive], tfar[alive], dt, cfg.segment, grid.bitfield, aabb)
        sigma = torch.zeros(t.shape, device=dev)
        col = torch.zeros(*t.shape, 3, device=dev)
        if bool(valid.any()):
            ray_i, step_i = valid.nonzero(as_tuple=True)
            pts = oa[ray_i] + t[ray_i, step_i, None] * da[ray_i]
            s, c = field(pts, da[ray_i])
            samples += int(ray_i.numel())
            sigma = sigma.index_put((ray_i, step_i), s)
            col = col.index_put((ray_i, step_i), c)
        seg_rgb, seg_depth, seg_op, trans_out = composite(sigma, col, t, dt, trans[alive])
        rgb = rgb.index_add(0, alive, seg_rgb)
        depth = depth.index_add(0, alive, seg_depth)
        opacity = opacity.index_add(0, alive, seg_op)
        trans = trans.index_copy(0, alive, trans_out)
        t_start = t_start.index_copy(0, alive, t[:, -1] + 0.5 * dt)
        keep = (trans_out.detach() > cfg.early_stop) & (t[:, -1] + 0.5 * dt < tfar[alive])
        alive = alive[keep]
    rgb = rgb + (1.0 - opacity)[:, None] * background.to(dev).expand(n, 3)
    # Depth as the expected distance over the visible part (0 where nothing was hit).
    depth = depth / opacity.clamp_min(1e-6)
    return RenderOutput(rgb, depth, opacity, samples, rounds)


def _render_packed(field: NerfField, grid: OccupancyGrid, o, d, cfg: RenderConfig, background, ops, *,
                   jitter: bool, tmax, cull: bool = True) -> RenderOutput:
    n = o.shape[0]
    aabb = field.aabb
    dt = cfg.step_size(aabb)
    tnear, tfar = ray_aabb(o, d, aabb, cfg.near)
    if tmax is not None:
        tfar = torch.minimum(tfar, tmax)
    if jitter:
        tnear = tnear + torch.rand_like(tnear) * dt
    bits = grid.bitfield
    max_steps = cfg.steps_per_diagonal + 1
    dev = o.device
    ones = torch.ones(n, device=dev)
    # Host synchronisations per round: the live-ray count and the marcher's sample total.
    # On CUDA a round aims at more samples (a GPU wants wide batches; CPU rounds stay in cache).
    per_round = cfg.samples_per_round if dev.type == "cpu" else max(cfg.samples_per_round, cfg.gpu_samples_per_round)
    if torch.is_grad_enabled():
        offsets, t, _ = ops.march_next(o, d, tnear, tfar, dt, bits, aabb, max_steps)
        marched = int(t.numel())
        if cull:
            offsets, t = _drop_occluded(field, o, d, t, offsets, dt, cfg.train_early_stop)
        sigma, col = field.forward_packed(o, d, t, offsets)
        rgb, depth, opacity, _ = ops.composite_packed(sigma, col, t, dt, offsets, ones)
        samples, rounds = int(t.numel()), 1
    else:
        rgb = torch.zeros(n, 3, device=dev)
        depth = torch.zeros(n, device=dev)
        opacity = torch.zeros(n, device=dev)
        trans = ones.clone()
        t_cur = tnear.clone()
        alive = (tnear < tfar).nonzero().squeeze(-1)
        samples = rounds = marched = 0
        while alive.numel():
            k = min(cfg.max_samples_per_round, max(cfg.min_samples_per_round, per_round // alive.numel()))
            oa, da, fa = o[alive], d[alive], tfar[alive]
            offsets, t, t_next = ops.march_next(oa, da, t_cur[alive], fa, dt, bits, aabb, k)
            t_cur[alive] = t_next
            rounds += 1
            trans_a = trans[alive]
            if t.numel():
                sigma, col = field.forward_packed(oa, da, t, offsets)
                seg_rgb, seg_depth, seg_op, trans_a = ops.composite_packed(sigma, col, t, dt, offsets, trans_a,
                                                                           max_count=k)
                rgb.index_add_(0, alive, seg_rgb)
                depth.index_add_(0, alive, seg_depth)
                opacity.index_add_(0, alive, seg_op)
                trans[alive] = trans_a
                samples += int(t.numel())
            alive = alive[(trans_a > cfg.early_stop) & (t_next < fa)]
    rgb = rgb + (1.0 - opacity)[:, None] * background.expand(n, 3)
    depth = depth / opacity.clamp_min(1e-6)
    return RenderOutput(rgb, depth, opacity, samples, rounds, marched)


@torch.no_grad()
def _drop_occluded(field: NerfField, o, d, t, offsets, dt: float, eps: float):
    """Keep the packed samples whose transmittance (from a no-grad density pass) is above ``eps``.

    Behind an opaque surface a sample's weight is below ``eps`` and its gradient nearly
    nil; instant-ngp and nerfacc skip them, which saves the expensive backward pass.
    """
    if t.numel() == 0 or eps <= 0:
        return offsets, t
    n = offsets.shape[0] - 1
    counts = offsets[1:] - offsets[:-1]
    ray = torch.repeat_interleave(torch.arange(n, device=t.device), counts, output_size=t.numel())
    sigma = field.density_packed(o, d, t, offsets)[0]
    tau = (sigma * dt).double()
    excl = torch.cumsum(tau, 0) - tau
    excl = excl - excl[offsets[:-1].clamp_max(t.numel() - 1)][ray]
    keep = torch.exp(-excl) > eps
    if bool(keep.all()):
        return offsets, t
    new_counts = torch.zeros(n, dtype=torch.int64, device=t.device).index_add_(0, ray, keep.long())
    new_offsets = torch.zeros(n + 1, dtype=torch.int64, device=t.device)
    torch.cumsum(new_counts, 0, out=new_offsets[1:])
    return new_offsets, t[keep]


def _skip_empty(o, d, tnear, tfar, grid: OccupancyGrid, aabb, dt: float, factor: int = 4):
    """Tighten [tnear, tfar] to the stretch of each ray that meets occupied coarse cells.

    The first fine sample stays on the ray's own grid (tnear + k * dt), so the samples
    kept are exactly those a full march would take there; rays that meet nothing
    come back with tnear >= tfar.
    """
    coarse = grid.coarse_bitfield(factor)
    cell = float((aabb[3:] - aabb[:3]).max()) / coarse.shape[1]
    dtc = 0.5 * cell
    span = float(torch.linalg.norm(aabb[3:] - aabb[:3]))
    k = int(math.ceil(span / dtc)) + 1
    # Coarse samples at tnear + j * dtc, the first and last nudged a quarter step (or half the
    # chord) inside the box: every point of the chord is within dtc / 2 of a sample that lies
    # in the box, so with the one-cell dilation a ray that clips a corner of the box (a chord
    # shorter than dtc, whose only regular sample sat on the boundary) is not dropped.
    chord = (tfar - tnear).clamp_min(0)
    nudge = torch.minimum(torch.full_like(chord, 0.25 * dtc), 0.5 * chord)
    tc = tnear[:, None] + torch.arange(k, device=o.device, dtype=o.dtype)[None] * dtc  # [N, K]
    tc = torch.cat((tc[:, :1] + nudge[:, None], tc[:, 1:], (tfar - nudge)[:, None]), 1)
    inside = tc < tfar[:, None]
    inside[:, 0] = chord > 0
    inside[:, -1] = chord > 0
    occ = inside & occupancy_lookup(o[:, None, :] + tc[..., None] * d[:, None, :], coarse, aabb)
    hit = occ.any(1)
    big = torch.finfo(o.dtype).max
    first_t = torch.where(occ, tc, big).amin(1)
    last_t = torch.where(occ, tc, -big).amax(1)
    # The first occupied fine sample lies within dtc / 2 of a hit sample: a step of margin.
    t_first = torch.where(hit, first_t - dtc, tnear)
    t_last = torch.where(hit, last_t + dtc, tnear)
    skip = torch.floor(((t_first - tnear) / dt).clamp_min(0))
    new_near = torch.where(hit, tnear + skip * dt, tfar)
    new_far = torch.where(hit, torch.minimum(tfar, t_last), tfar)
    return new_near, new_far


@torch.no_grad()
def render_camera(field: NerfField, grid: OccupancyGrid, cam: Camera, cfg: RenderConfig, background,
                  *, world_to_field: tuple[torch.Tensor, float] | None = None,
                  background_image: torch.Tensor | None = None, depth_limit: torch.Tensor | None = None) -> RenderOutput:
    """Render a whole image for ``cam`` (poses in world units), chunked.

    ``world_to_field`` = (center [3], scale): the normalisation training applied; a
    world point p maps to (p - center) * scale. Depth comes back in world units.
    ``background_image`` [H, W, 3] and ``depth_limit`` [H, W] (world units along the
    ray, inf where nothing) put an opaque layer behind/inside the field.
    Returns rgb [H, W, 3], depth [H, W], alpha [H, W].
    """
    dev = field.aabb.device
    check_size = cam.width * cam.height
    scale = 1.0
    if world_to_field is not None:
        center, scale = world_to_field
        center = center.to(dev)
    bg = torch.as_tensor(background, dtype=torch.float32, device=dev)
    bg_rays = background_image.reshape(-1, 3).to(dev) if background_image is not None else None
    tmax = depth_limit.reshape(-1).to(dev) * scale if depth_limit is not None else None
    outs = []
    valids = []
    samples = rounds = 0
    chunk = cfg.chunk if dev.type == "cpu" else max(cfg.chunk, cfg.gpu_chunk)
    proposal = getattr(field, "estimator", None) == "proposal"
    # Rays are generated one chunk at a time (an 8K frame's rays alone are 1.3 GB); the
    # values are the same as generating them all at once (tests/test_resolution_limits.py).
    for i in range(0, check_size, chunk):
        sl = slice(i, min(i + chunk, check_size))
        o, d, valid = generate_rays(cam, dev, pixels=pixel_centres(cam, sl.start, sl.stop, dev))
        if world_to_field is not None:
            o = (o - center) * scale
        bg_sl = bg if bg_rays is None else bg_rays[sl]
        tmax_sl = None if tmax is None else tmax[sl]
        if proposal:
            # Fields with their own estimator (nerfacto's proposal sampler) place their samples themselves.
            c_rgb, c_depth, c_alpha, c_samples, _ = field.render_rays(o, d, bg_sl, tmax_sl)
            r = RenderOutput(c_rgb, c_depth, c_alpha, c_samples, 1)
        else:
            r = render_rays(field, grid, o, d, cfg, bg_sl, tmax=tmax_sl)
        samples += r.samples
        rounds += r.rounds
        outs.append(r)
        valids.append(valid)
    valid = torch.cat(valids)
    rgb = torch.cat([r.rgb for r in outs])
    depth = torch.cat([r.depth for r in outs]) / scale
    alpha = torch.cat([r.alpha for r in outs])
    rgb = torch.where(valid[:, None], rgb, bg if bg_rays is None else bg_rays)
    alpha = torch.where(valid, alpha, torch.zeros_like(alpha))
    h, w = cam.height, cam.width
    return RenderOutput(rgb.reshape(h, w, 3).clamp(0, 1), depth.reshape(h, w), alpha.reshape(h, w), samples, rounds)
