"""Shared helpers for the engine-core tests: a tiny trained scene, CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TINY_FIELD = dict(n_levels=6, log2_hashmap_size=12, base_resolution=8, finest_resolution=64,
                  density_hidden=32, color_hidden=32, color_layers=1)


def run_cli(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "latentscape.tools.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout, env=env)


def train_tiny_scene(tmp: Path, steps: int = 20) -> Path:
    """Train a tiny sphere scene for a few steps and write it as a bundle (a trained field;
    :func:`latentscape.testing.make_tiny_scene` writes an untrained random one, faster)."""
    from latentscape.tools.recipes.synthetic import make_sphere_dataset
    from latentscape.tools.training_job import run_training

    data = make_sphere_dataset(tmp / "sphere_data", n_train=8, n_test=2, size=24)
    out = tmp / "tiny_scene"
    run_training(data=data, out=out, steps=steps, max_seconds=None, rays=256, levels=TINY_FIELD["n_levels"], features=2,
                 log2_hashmap_size=TINY_FIELD["log2_hashmap_size"], finest_resolution=TINY_FIELD["finest_resolution"],
                 steps_per_diagonal=64, occupancy_resolution=16, eval_every=0, downscale=1, name="tiny", device="cpu",
                 backend="torch", seed=0, orbit_frames=4, force=False)
    return out


def walk_in_rounds(march_next, o, d, tnear, tfar, dt, bits, aabb, k: int):
    """Every ray's sample distances when ``march_next`` walks in rounds of ``k`` samples (the
    renderer's loop), flattened ray by ray: equal to one unlimited walk if rounds continue
    on the same lattice."""
    import torch

    n = o.shape[0]
    per_ray = [[] for _ in range(n)]
    t_cur, alive = tnear.clone(), torch.arange(n)
    for _ in range(1000):
        if alive.numel() == 0:
            break
        off, t, t_next = march_next(o[alive], d[alive], t_cur[alive], tfar[alive], dt, bits, aabb, k)
        for j, r in enumerate(alive.tolist()):
            per_ray[r] += t[off[j]:off[j + 1]].tolist()
        t_cur[alive] = t_next
        alive = alive[t_next < tfar[alive]]
    return torch.tensor([v for r in per_ray for v in r])
