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
