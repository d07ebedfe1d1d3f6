"""Benchmark: mesh layer rasterization + texturing + compositing per frame, and the
trimesh ray caster it was chosen over, at the demo size (256x256).

Usage: ``nice python -m latentscape.tools.benchmarks.layers [--device cpu|cuda] [--threads 1] [--size 256]
[--no-raycast]``. Meshes: an icosphere of 5120 triangles (radius 0.8, filling about a
third of the frame) and, when Debian's assimp-testmodels is installed, the real
``spider.obj`` (1368 triangles, its own UVs). Median of ``--iters`` runs after a
warm-up. Generator images/s: ``tools/benchmarks/generator.py``.

Measured 2026-11-26 on this team's CPU machine (2 shared cores, another job training on
the other; torch 2.13 CPU; ``--threads 1``), 256x256, median of 7:
``nice python -m latentscape.tools.benchmarks.layers``

=====================  ==========  ==========  ==========  =======  ================  ===================
mesh                   tile 4      tile 8      tile 16     texture  layer+composite   trimesh ray casting
=====================  ==========  ==========  ==========  =======  ================  ===================
icosphere 5120 tris    22.0 ms     24.1 ms     54.7 ms     10.2 ms  27.3 ms           54 872 ms (1 run)
spider.obj 1368 tris   9.8 ms      9.6 ms      13.7 ms     2.5 ms   12.9 ms           13 819 ms (1 run)
=====================  ==========  ==========  ==========  =======  ================  ===================

Coverage masks agreed on every pixel and depths within 1.6e-5 (world units).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch

SPIDER = Path("/usr/share/assimp/models/OBJ/spider.obj")


def _median_ms(fn, iters: int, device: str) -> float:
    fn()
    times = []
    for _ in range(iters):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _meshes(device: str):
    import trimesh

    from latentscape.render.mesh import MeshData, load_mesh, project_uv

    ico = trimesh.creation.icosphere(subdivisions=4, radius=0.8)
    v = torch.tensor(ico.vertices, dtype=torch.float32)
    out = [("icosphere-5120", MeshData(v, torch.tensor(ico.faces), project_uv(v, "spherical")))]
    if SPIDER.is_file():
        m = load_mesh(SPIDER)
        lo, hi = m.vertices.min(0).values, m.vertices.max(0).values
        s = 1.6 / float((hi - lo).max())
        m.vertices = (m.vertices - (lo + hi) / 2) * s  # a similarity: centred, 1.6 across
        out.append((f"spider-{m.faces.shape[0]}", m))
    return [(n, m.to(device)) for n, m in out]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="mesh layer benchmark")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable on shared machines)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--iters", type=int, default=7)
    ap.add_argument("--no-raycast", action="store_true", help="skip trimesh ray casting (about a minute at 256x256)")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from latentscape.frame import FrameContext, FrameLoop
    from latentscape.render.cameras import Camera, look_at
    from latentscape.render.mesh import MeshLayer, rasterize, raycast, shade

    dev = a.device
    cam = Camera.from_fov(look_at((1.5, 1.0, 2.5)), a.size, a.size, 45.0)
    tex = torch.rand(256, 256, 3, device=dev)
    print(f"device {dev}, threads {torch.get_num_threads()}, {a.size}x{a.size}, torch {torch.__version__}")
    for name, mesh in _meshes(dev):
        v, f = mesh.vertices, mesh.faces
        row = {}
        for tile in (4, 8, 16):
            row[f"raster tile {tile}"] = _median_ms(lambda: rasterize(v, f, cam, tile=tile), a.iters, dev)
        frags = rasterize(v, f, cam)
        row["texture (bilinear)"] = _median_ms(lambda: shade(frags, mesh, tex), a.iters, dev)
        layer = MeshLayer(mesh, tex, device=dev)
        loop = FrameLoop(SimpleNamespace(device=torch.device(dev), background=(1.0, 1.0, 1.0)), layers=[layer])
        ctx = FrameContext(index=0, time=0.0, camera=cam, deadline=None, scene_version="bench")
        row["layer + composite (frame loop)"] = _median_ms(lambda: loop._layers(ctx), a.iters, dev)
        covered = int(frags.mask.sum())
        print(f"\n{name}: {covered} pixels covered ({100 * covered / a.size ** 2:.0f}%)")
        for k, ms in row.items():
            print(f"  {k:32s} {ms:9.1f} ms")
        if not a.no_raycast:
            t = time.perf_counter()
            ref = raycast(v.cpu(), f.cpu(), cam)
            ms = (time.perf_counter() - t) * 1000
            agree = float((ref.mask == frags.mask.cpu()).float().mean())
            both = ref.mask & frags.mask.cpu()
            derr = float((ref.depth[both] - frags.depth.cpu()[both]).abs().max()) if both.any() else 0.0
            print(f"  {'trimesh ray casting (rtree)':32s} {ms:9.1f} ms  (one run; coverage agreement {agree:.4f},"
                  f" max depth difference {derr:.1e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
