"""``latentscape generate``: images (and raw float arrays) from a generator folder and seeds."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from latentscape.errors import ConfigError


def parse_seeds(text: str) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]`` (ranges inclusive, as the official scripts read them)."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)-(\d+)", part)
        if m:
            lo, hi = int(m[1]), int(m[2])
            if hi < lo:
                raise ConfigError(f"seed range {part!r} is empty", hint="write LOW-HIGH with LOW <= HIGH")
            seeds.extend(range(lo, hi + 1))
        elif part.isdigit():
            seeds.append(int(part))
        else:
            raise ConfigError(f"bad seed {part!r}", hint="use e.g. --seeds 0-3,7")
    for s in seeds:
        if s >= 2**32:
            raise ConfigError(f"seed {s} is too large (numpy seeds are < 2**32)")
    return seeds


def seed_to_z(seed: int, z_dim: int):
    """z for a seed exactly as the official gen_images.py: ``RandomState(seed).randn(1, z_dim)``."""
    import numpy as np
    import torch

    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).to(torch.float32)


def register(app: typer.Typer) -> None:
    @app.command("generate")
    def generate(
        generator_dir: Path = typer.Argument(..., help="Folder with generator.safetensors + generator.json."),
        seeds: str = typer.Option("0-3", "--seeds", help="Seeds, e.g. 0-3,7."),
        psi: float = typer.Option(1.0, "--psi", help="Truncation psi (1 = none)."),
        trunc_cutoff: int = typer.Option(None, "--trunc-cutoff", help="Truncate only the first N ws."),
        out: Path = typer.Option(..., "--out", help="Output folder."),
        raw: bool = typer.Option(False, "--raw", help="Also write float32 .npy (NCHW, about [-1, 1])."),
        noise_mode: str = typer.Option("const", "--noise-mode", help="const | random | none (no effect in SG3)."),
        class_idx: int = typer.Option(None, "--class", help="Class label for conditional generators."),
        force: bool = typer.Option(False, "--force", help="Replace an --out folder an earlier generate wrote."),
    ) -> None:
        """Write seedNNNN.png (and seedNNNN.npy with --raw) for each seed (the folder appears when complete)."""
        import numpy as np
        import torch
        from PIL import Image

        from latentscape.outputs import check_output, staged
        from latentscape.texture.stylegan3 import NOISE_MODES, load_generator

        check_output(out, force=force, kind="dir")
        if noise_mode not in NOISE_MODES:
            raise ConfigError(f"--noise-mode must be one of {', '.join(NOISE_MODES)}, got {noise_mode!r}")
        seed_list = parse_seeds(seeds)
        G = load_generator(generator_dir)
        c = None
        if G.c_dim > 0:
            if class_idx is None or not 0 <= class_idx < G.c_dim:
                raise ConfigError(f"this generator is conditional: pass --class in [0, {G.c_dim})")
            c = torch.zeros(1, G.c_dim)
            c[0, class_idx] = 1
        with staged(out, kind="dir", force=force, command="generate") as tmp:
            for seed in seed_list:
                z = seed_to_z(seed, G.z_dim)
                with torch.no_grad():
                    ws = G.mapping(z, c, truncation_psi=psi, truncation_cutoff=trunc_cutoff)
                    img = G.synthesis(ws, noise_mode=noise_mode)  # [1, C, H, W]
                if raw:
                    np.save(tmp / f"seed{seed:04d}.npy", img.numpy().astype(np.float32))
                u8 = (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].numpy()
                Image.fromarray(u8[:, :, 0] if u8.shape[2] == 1 else u8, "L" if u8.shape[2] == 1 else "RGB").save(
                    tmp / f"seed{seed:04d}.png")
        for seed in seed_list:
            typer.echo(f"seed {seed} -> {out / f'seed{seed:04d}.png'}")
