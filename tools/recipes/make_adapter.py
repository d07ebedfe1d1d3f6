"""Train a LoRA adapter that gives a scene's NeRF colours a look (night, sepia, ...).

Usage::

    python -m latentscape.tools.recipes.make_adapter SCENE --name NAME --look {night,sepia,warm,cool,mono}
        [--out SCENE/adapters/NAME.safetensors] [--rank 4] [--alpha RANK] [--steps 400]
        [--lr 0.01] [--batch 4096] [--points 32768] [--seed 0] [--force]

What it trains: a rank-``r`` LoRA on every ``nn.Linear`` of the scene's colour MLP
(adapter target ``nerf.color``: modules ``color_mlp.0``, ``color_mlp.2``, ...), the
base field frozen. Training data come from the scene itself:

* points: jittered points in the occupied cells of the scene's occupancy grid
  (where the picture is), with random unit view directions;
* teacher: the look's colour transform applied to the **frozen base field's own
  colour** at the same point and direction (e.g. ``night``: desaturated, about half
  as bright, tinted blue), so the adapter moves colours, never geometry (the density
  MLP and the hash grid are not touched);
* loss: MSE on the colour, each point weighted by the opacity one march step at its
  density would add (plus a small floor), so visible surfaces count most; Adam.

``B`` starts at zero (the adapter starts as the identity) and ``A`` random, as LoRA
does. The file is written in the latentscape adapter format
(:mod:`latentscape.lora.format`: ``<module>.lora_A [r, in]``, ``<module>.lora_B
[out, r]``, metadata ``format``/``rank``/``alpha``) with extra metadata: the look,
the target, the sha256 of the field weights it was trained on, steps and final loss.
Declare it in the scene's ``[adapters]`` section and run ``latentscape scene lock``.

A few hundred steps take seconds on a CPU. Errors are typed (``SceneError`` for a
missing scene, ``ConfigError`` for a bad look or option, ``OutputError`` for an
existing output without ``--force``) and exit non-zero with one line.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from latentscape.errors import ConfigError, LatentscapeError, OutputError, SceneError

TARGET = "nerf.color"
_W709 = (0.2126, 0.7152, 0.0722)


def _lum(rgb: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(_W709, dtype=rgb.dtype, device=rgb.device)
    return (rgb * w).sum(-1, keepdim=True)


def _night(rgb: torch.Tensor) -> torch.Tensor:
    """Moonlight: mostly desaturated, about half as bright, tinted blue."""
    grey = 0.3 * rgb + 0.7 * _lum(rgb)
    tint = torch.tensor([0.55, 0.72, 1.15], dtype=rgb.dtype, device=rgb.device)
    lift = torch.tensor([0.0, 0.01, 0.05], dtype=rgb.dtype, device=rgb.device)
    return 0.55 * grey * tint + lift


def _sepia(rgb: torch.Tensor) -> torch.Tensor:
    """The classic sepia matrix (as in CSS filter: sepia(1))."""
    m = torch.tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]],
                     dtype=rgb.dtype, device=rgb.device)
    return rgb @ m.T


def _warm(rgb: torch.Tensor) -> torch.Tensor:
    """Tungsten: reds up, blues down, a little brighter."""
    return rgb * torch.tensor([1.12, 1.0, 0.75], dtype=rgb.dtype, device=rgb.device) + 0.02


def _cool(rgb: torch.Tensor) -> torch.Tensor:
    """Overcast daylight: blues up, reds down, same brightness."""
    return rgb * torch.tensor([0.82, 0.97, 1.18], dtype=rgb.dtype, device=rgb.device)


def _mono(rgb: torch.Tensor) -> torch.Tensor:
    """Black and white (Rec. 709 luma)."""
    return _lum(rgb).expand_as(rgb)


LOOKS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "night": _night, "sepia": _sepia, "warm": _warm, "cool": _cool, "mono": _mono,
}


def look_target(look: str, rgb: torch.Tensor) -> torch.Tensor:
    """The teacher colour for base colours ``rgb`` [N, 3] in 0..1 (kept inside the sigmoid's reach)."""
    if look not in LOOKS:
        raise ConfigError(f"unknown look {look!r}", hint=f"choose one of: {', '.join(sorted(LOOKS))}")
    return LOOKS[look](rgb).clamp(0.005, 0.995)


@dataclass
class AdapterReport:
    path: Path
    look: str
    rank: int
    alpha: float
    steps: int
    loss_start: float
    loss_end: float
    seconds: float
    points: int


def _sample_training_set(scene, n_points: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (colour-MLP inputs [N, in], base colours [N, 3], weights [N]) from the occupied cells."""
    from latentscape.kernels.reference.sh import sh_encode

    fld, grid = scene.field, scene.grid
    cells = grid.bitfield.reshape(-1).nonzero().squeeze(-1)
    if cells.numel() == 0:
        raise SceneError("the scene's occupancy grid has no occupied cell: nothing to adapt", path=scene.path / "field.safetensors",
                         hint="retrain the scene (`latentscape train`)")
    pick = cells[torch.randint(0, cells.numel(), (n_points,), generator=gen)]
    r = grid.resolution
    level = pick // r**3
    rem = pick % r**3
    ijk = torch.stack((rem // (r * r), (rem // r) % r, rem % r), -1).float()
    u = (ijk + torch.rand(ijk.shape, generator=gen)) / r * 2.0 - 1.0
    center = (grid.aabb[:3] + grid.aabb[3:]) * 0.5
    half = (grid.aabb[3:] - grid.aabb[:3]) * 0.5
    x = center + u * half * torch.exp2(level.float())[:, None]
    d = torch.randn(n_points, 3, generator=gen)
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    with torch.no_grad():
        sig, feats, rgbs = [], [], []
        for i in range(0, n_points, 8192):
            s, f = fld.density_and_features(x[i:i + 8192])
            inp = torch.cat((sh_encode(d[i:i + 8192], fld.config.sh_degree), f), -1)
            sig.append(s)
            feats.append(inp)
            rgbs.append(torch.sigmoid(fld.color_mlp(inp)))
        sigma, inputs, base = torch.cat(sig), torch.cat(feats), torch.cat(rgbs)
    # The opacity one march step adds at this density: visible surfaces count most, empty air a little.
    aabb = torch.tensor(fld.config.aabb)
    step = float((aabb[3:] - aabb[:3]).norm()) / scene.render_config.steps_per_diagonal
    w = (1.0 - torch.exp(-sigma * step)).clamp(0.0, 1.0) + 0.05
    return inputs, base, w / w.mean()


def train_adapter(scene_dir: str | Path, look: str, out: str | Path, *, rank: int = 4, alpha: float | None = None,
                  steps: int = 400, lr: float = 1e-2, batch: int = 4096, points: int = 32768, seed: int = 0,
                  force: bool = False, progress: bool = True) -> AdapterReport:
    """Train and write the adapter (see the module docstring); returns what happened."""
    from tqdm.auto import tqdm

    from latentscape.lora.format import save_adapter
    from latentscape.lora.targets import resolve_target
    from latentscape.outputs import check_output, staged
    from latentscape.scene.bundle import load_scene
    from latentscape.scene.lock import sha256_file

    if look not in LOOKS:
        raise ConfigError(f"unknown look {look!r}", hint=f"choose one of: {', '.join(sorted(LOOKS))}")
    if not (isinstance(rank, int) and rank >= 1):
        raise ConfigError(f"--rank must be an integer >= 1, got {rank!r}")
    if alpha is not None and not (math.isfinite(alpha) and alpha > 0):
        raise ConfigError(f"--alpha must be a positive number, got {alpha!r}")
    for flag, v in (("--steps", steps), ("--batch", batch), ("--points", points)):
        if not (isinstance(v, int) and v >= 1):
            raise ConfigError(f"{flag} must be a positive integer, got {v!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"--lr must be a positive number, got {lr!r}")
    scene_dir = Path(scene_dir)
    if not scene_dir.is_dir() or not (scene_dir / "scene.toml").is_file():
        raise SceneError("not a scene bundle (no scene.toml here)", path=scene_dir,
                         hint="give a scene folder, e.g. scenes/demo")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise OutputError("adapters are .safetensors files", path=out, hint="name the output NAME.safetensors")
    check_output(out, force=force, kind="file")  # --force replaces a regular file only (never a link or device)

    # The lock is not verified: adding adapters to a bundle changes it until `scene lock` runs.
    # The field weights this adapter belongs to are recorded by their sha256 instead.
    scene = load_scene(scene_dir, device="cpu", backend="torch", verify=False)
    weights = scene_dir / scene.config.get("field", {}).get("weights", "field.safetensors")
    modules: dict[str, nn.Linear] = resolve_target(TARGET, scene)
    for p in scene.field.parameters():
        p.requires_grad_(False)

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    inputs, base, weight = _sample_training_set(scene, points, gen)
    teacher = look_target(look, base)

    alpha = float(rank) if alpha is None else float(alpha)
    scale = alpha / rank
    lora: dict[str, tuple[nn.Parameter, nn.Parameter]] = {}
    for name, lin in modules.items():
        out_f, in_f = lin.weight.shape
        a = nn.Parameter(torch.empty(rank, in_f))
        nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=gen)
        b = nn.Parameter(torch.zeros(out_f, rank))
        lora[name] = (a, b)
    params = [p for ab in lora.values() for p in ab]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=lr * 0.05)
    seq = scene.field.color_mlp
    names = {id(m): n for n, m in modules.items()}

    def forward(x: torch.Tensor) -> torch.Tensor:
        for m in seq:
            if isinstance(m, nn.Linear):
                a, b = lora[names[id(m)]]
                x = x @ m.weight.T + (x @ a.T) @ b.T * scale
            else:
                x = m(x)
        return torch.sigmoid(x)

    def loss_on(idx: torch.Tensor | None) -> torch.Tensor:
        x, t, w = (inputs, teacher, weight) if idx is None else (inputs[idx], teacher[idx], weight[idx])
        return (((forward(x) - t) ** 2).sum(-1) * w).mean()

    n = inputs.shape[0]
    t0 = time.perf_counter()
    with torch.no_grad():
        loss_start = float(loss_on(None))
    bar = tqdm(range(steps), desc=f"adapter {look}", unit="step", disable=not progress, dynamic_ncols=True)
    for _ in bar:
        idx = torch.randint(0, n, (min(batch, n),), generator=gen)
        loss = loss_on(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.5f}")
    bar.close()
    with torch.no_grad():
        loss_end = float(loss_on(None))
    if not math.isfinite(loss_end):
        raise ConfigError(f"training diverged (loss {loss_end})", hint="lower --lr")
    layers = {name: (a.detach().clone(), b.detach().clone()) for name, (a, b) in lora.items()}
    with staged(out, kind="file", force=force, command="make_adapter", suffix=".safetensors") as tmp:
        save_adapter(tmp, layers, alpha=alpha)
        _add_metadata(tmp, {"look": look, "target": TARGET, "base_weights_sha256": sha256_file(weights),
                        "steps": str(steps), "loss": f"{loss_end:.6g}", "loss_identity": f"{loss_start:.6g}",
                        "tool": "latentscape.tools.recipes.make_adapter"})
    return AdapterReport(out, look, rank, alpha, steps, loss_start, loss_end, time.perf_counter() - t0, n)


def track_adapter(run, scene_dir: Path, rep: AdapterReport, views: int = 4) -> None:
    """Loss, the adapter's digest and a before/after sheet of ``views`` orbit views (base | with the adapter)."""
    from latentscape import tracking
    from latentscape.lora.format import load_adapter
    from latentscape.lora.targets import resolve_target
    from latentscape.render.renderer import render_camera
    from latentscape.scene.bundle import load_scene
    from latentscape.scene.lock import sha256_file

    run.metrics({"loss_identity": rep.loss_start, "loss": rep.loss_end, "seconds": rep.seconds})
    run.tags({f"sha256:adapter/{rep.path.name}": sha256_file(rep.path)})
    scene = load_scene(scene_dir, device="cpu", backend="torch", verify=False)
    cams = scene.orbit(views, min(scene.width, 128), min(scene.height, 128)).cameras
    adapter = load_adapter(rep.path)
    modules = resolve_target(TARGET, scene)

    def shots():
        with torch.no_grad():
            return [render_camera(scene.field, scene.grid, c, scene.render_config, scene.background,
                                  world_to_field=(scene.center, scene.scale)).rgb for c in cams]

    before = shots()
    with torch.no_grad():
        for name, lin in modules.items():
            if name in adapter.layers:
                lin.weight += adapter.delta(name).to(lin.weight)
    after = shots()
    run.image(tracking.contact_sheet([[b, a] for b, a in zip(before, after)], [f"orbit view {i}" for i in range(views)],
                                     header=["base", f"+ {rep.path.stem} ({rep.look})"]), "before_after.png")


def _add_metadata(path: Path, extra: dict[str, str]) -> None:
    """Rewrite ``path`` with ``extra`` metadata next to what save_adapter wrote."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    meta.update(extra)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m latentscape.tools.recipes.make_adapter",
                                 description="Train a LoRA adapter (target nerf.color) that gives a scene's colours a look.")
    ap.add_argument("scene", type=Path, help="scene bundle folder")
    ap.add_argument("--name", required=True, help="adapter name (the file stem; the [adapters.NAME] entry)")
    ap.add_argument("--look", required=True, help=f"one of: {', '.join(sorted(LOOKS))}")
    ap.add_argument("--out", type=Path, default=None, help="output file (default SCENE/adapters/NAME.safetensors)")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: the rank, i.e. scale 1)")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--points", type=int, default=32768, help="training points sampled in occupied cells")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="replace an existing output file")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--track", action="store_true",
                    help="log an MLflow run (params, loss, digests, before/after sheet); also LATENTSCAPE_TRACK=1")
    a = ap.parse_args(argv)
    from latentscape import tracking

    try:
        tracked = tracking.wanted(a.track)
        if tracked:
            tracking.client()
        if not a.name or "/" in a.name or a.name.startswith("."):
            raise ConfigError(f"--name must be a plain name, got {a.name!r}")
        out = a.out if a.out is not None else a.scene / "adapters" / f"{a.name}.safetensors"
        params = {k: v for k, v in vars(a).items() if k not in ("no_progress", "track")}
        tags = tracking.scene_tags(a.scene) if tracked and a.scene.is_dir() else {}
        with tracking.run("make_adapter", tracked, params=params, tags=tags) as run:
            rep = train_adapter(a.scene, a.look, out, rank=a.rank, alpha=a.alpha, steps=a.steps, lr=a.lr, batch=a.batch,
                                points=a.points, seed=a.seed, force=a.force, progress=not a.no_progress)
            if run:
                track_adapter(run, a.scene, rep)
                print(f"tracked: run {run.id} at {tracking.tracking_uri()}")
    except LatentscapeError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"wrote {rep.path}: look {rep.look}, rank {rep.rank}, alpha {rep.alpha:g}, {rep.steps} steps in "
          f"{rep.seconds:.1f} s, loss {rep.loss_start:.5f} (identity) -> {rep.loss_end:.5f}")
    try:
        rel = rep.path.resolve().relative_to(a.scene.resolve()).as_posix()
    except ValueError:
        rel = str(rep.path)
    print(f"declare it in {a.scene / 'scene.toml'}:\n  [adapters.{a.name}]\n  file = \"{rel}\"\n  target = \"{TARGET}\"\n"
          f"then run: latentscape scene lock {a.scene}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
