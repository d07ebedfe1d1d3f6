"""Benchmark: StyleGAN3 synthesis images/s at 256x256 and 512x512 (small config).

Usage: ``nice python -m latentscape.tools.benchmarks.generator [--device cpu|cuda] [--impls torch,triton] [--full]``.
Random weights; mapping + synthesis, fp32, batch 1, no grad; the first call is a warm-up.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from latentscape.texture.stylegan3 import Generator, StyleGAN3Config


def bench(resolution: int, preset: str = "T", device: str = "cpu", iters: int = 3, batch: int = 1,
          channel_base: int = 4096, channel_max: int = 64) -> float:
    """Images per second for a small generator (channel_base/channel_max shrink it)."""
    torch.manual_seed(0)
    cfg = StyleGAN3Config.preset(preset, z_dim=64, w_dim=64, img_resolution=resolution,
                                 channel_base=channel_base * (2 if preset == "R" else 1), channel_max=channel_max)
    G = Generator(cfg).eval().requires_grad_(False).to(device)
    z = torch.randn(batch, cfg.z_dim, device=device)
    with torch.no_grad():
        G(z)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            G(z)
        if device == "cuda":
            torch.cuda.synchronize()
    return iters * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--presets", default="T,R")
    ap.add_argument("--resolutions", default="256,512")
    ap.add_argument("--impls", default="torch", help="filtered lrelu backends to time, e.g. torch,triton")
    ap.add_argument("--full", action="store_true", help="official channel widths (32768/512) instead of small")
    ap.add_argument("--batch", type=int, default=1)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    size = dict(channel_base=32768, channel_max=512) if args.full else {}
    for preset in args.presets.split(","):
        for res in map(int, args.resolutions.split(",")):
            outs = {}
            for impl in args.impls.split(","):
                os.environ["LATENTSCAPE_FILTERED_LRELU"] = impl
                ips = bench(res, preset, args.device, args.iters, args.batch, **size)
                torch.manual_seed(0)
                print(f"{preset} {res}x{res} {impl} batch {args.batch}: {ips:.3f} images/s "
                      f"({1000 * args.batch / ips:.1f} ms/batch)", flush=True)
                outs[impl] = _sample(res, preset, args.device, **size)
            if len(outs) > 1:
                a, *rest = outs.values()
                print(f"  parity max|diff| vs {args.impls.split(',')[0]}: "
                      f"{max((a - b).abs().max().item() for b in rest):.2e}")


def _sample(resolution: int, preset: str, device: str, channel_base: int = 4096, channel_max: int = 64):
    torch.manual_seed(0)
    cfg = StyleGAN3Config.preset(preset, z_dim=64, w_dim=64, img_resolution=resolution,
                                 channel_base=channel_base * (2 if preset == "R" else 1), channel_max=channel_max)
    G = Generator(cfg).eval().requires_grad_(False).to(device)
    with torch.no_grad():
        return G(torch.randn(2, 64, generator=torch.Generator().manual_seed(1)).to(device)).cpu()


if __name__ == "__main__":
    main()
