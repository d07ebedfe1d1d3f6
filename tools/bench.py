"""Fast-core benchmark: training to a held-out PSNR within a time budget, rendering speed,
the README demo and the viewer, side by side with nerfacto, in one run on this machine.

    python -m latentscape.tools.bench --data data/bench_truck data/bench_duck \\
        --nerfacto data/nerfacto_truck data/nerfacto_duck --out out/bench [--max-seconds 480]

For each dataset (a ``transforms.json`` folder with train/test lists):

1. ``latentscape train DATA --max-seconds S`` with no other flags, as a user runs it
   (a subprocess, timed start to end, the bundle's own metrics read back);
2. the held-out PSNR over every test view and the renderer's rays/s on those views
   (the views rendered once to warm up, then timed);
3. nerfacto side by side: given the folder that ``../shared/tools/nerfacto_baseline.sh
   DATA OUT`` wrote, its PSNR and training time are read from ``result.json`` and its
   evaluation is run again here (``ns-eval`` in ``$NS_VENV``, default /tmp/ns-venv), so
   its rays/s are measured in the same run as ours.

Then the README demo (``latentscape render --out demo.mp4 --frames 48``, timed as a
subprocess) and the viewer's headless core on the demo at ``--viewer-size``.
The numbers go to ``OUT/bench.json`` and a Markdown table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def _cli(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "latentscape.tools.cli", *args], capture_output=True, text=True)
    return time.perf_counter() - start, proc


def bench_training(data: Path, out: Path, max_seconds: float) -> dict:
    scene = out / f"{data.name}-scene"
    wall, proc = _cli("train", str(data), "--out", str(scene), "--max-seconds", str(max_seconds), "--force")
    if proc.returncode != 0:
        raise SystemExit(f"latentscape train failed on {data}:\n{proc.stdout}\n{proc.stderr}")
    metrics = json.loads((scene / "metrics.json").read_text())
    return {"scene": str(scene), "command_seconds": round(wall, 1), "steps": metrics["steps"],
            "train_seconds": metrics["seconds"], "reported_psnr": metrics.get("test_psnr"),
            "reported_views": metrics.get("test_views"), "samples_per_ray": metrics.get("samples_per_ray")}


def bench_render(scene: Path, data: Path) -> dict:
    """Held-out PSNR over every test view, and rays/s rendering them (second pass timed)."""
    from latentscape.dataset import load_dataset
    from latentscape.render.renderer import render_camera
    from latentscape.scene import load_scene
    from latentscape.training import evaluate

    sc = load_scene(scene)
    frames = load_dataset(data).split("test")
    ev = evaluate(sc.field, sc.grid, sc.render_config, frames, sc.center, sc.scale, sc.background)
    rays = sum(f.camera.width * f.camera.height for f in frames)
    start = time.perf_counter()
    for fr in frames:
        render_camera(sc.field, sc.grid, fr.camera, sc.render_config, sc.background, world_to_field=(sc.center, sc.scale))
    seconds = time.perf_counter() - start
    return {"psnr": round(ev["psnr"], 2), "views": ev["views"], "rays_per_s": round(rays / seconds),
            "backend": sc.backend}


def bench_nerfacto(run_dir: Path) -> dict | None:
    venv = Path(os.environ.get("NS_VENV", "/tmp/ns-venv"))
    config = run_dir / "runs" / "baseline" / "nerfacto" / "run" / "config.yml"
    if not (venv / "bin" / "python").exists() or not config.exists() or not (run_dir / "ns_offline.py").exists():
        return None
    base = json.loads((run_dir / "result.json").read_text()) if (run_dir / "result.json").exists() else {}
    out = run_dir / "eval_bench.json"
    env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    proc = subprocess.run([str(venv / "bin" / "python"), str(run_dir / "ns_offline.py"), "eval", "--load-config",
                           str(config), "--output-path", str(out)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    r = json.loads(out.read_text())["results"]
    return {"psnr": round(r["psnr"], 2), "rays_per_s": round(r["num_rays_per_sec"]), "steps": base.get("steps"),
            "train_seconds_baseline_run": base.get("train_seconds"), "psnr_baseline_run": base.get("psnr")}


def bench_demo(out: Path, frames: int) -> dict:
    wall, proc = _cli("render", "--out", str(out / "demo.mp4"), "--frames", str(frames), "--force")
    if proc.returncode != 0:
        raise SystemExit(f"demo render failed:\n{proc.stdout}\n{proc.stderr}")
    return {"frames": frames, "command_seconds": round(wall, 1)}


def bench_kernels(points: int = 1 << 16) -> dict:
    """The CPU kernels against their torch references, side by side (ratios; same process)."""
    import dataclasses

    import torch

    from latentscape.kernels.backend import select_ops
    from latentscape.kernels.cpu.hashgrid import hashgrid_encode as cpu_encode
    from latentscape.kernels.reference.hashgrid import GridLayout, hashgrid_encode, per_level_scale_for
    from latentscape.render.renderer import render_camera
    from latentscape.scene import load_scene

    def timed(fn, reps=3):
        fn()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - start) / reps

    out = {}
    g = torch.Generator().manual_seed(0)
    # Points along rays (coherent, as the renderer produces them), demo grid layout (L16 F2 2^16).
    layout = GridLayout(16, 2, 16, 16, per_level_scale_for(16, 512, 16))
    params = (torch.rand(layout.n_params, generator=g) * 2 - 1).requires_grad_()
    o = torch.rand(points // 32, 1, 3, generator=g) * 0.6 + 0.2
    d = torch.nn.functional.normalize(torch.randn(points // 32, 1, 3, generator=g), dim=-1)
    x = (o + torch.linspace(0, 0.2, 32)[None, :, None] * d).reshape(-1, 3).clamp(0, 1)
    for name, fn in (("torch", hashgrid_encode), ("cpu", cpu_encode)):
        def step(fn=fn):
            params.grad = None
            fn(x, params, layout).square().sum().backward()
        out[f"hashgrid_fwd_bwd_ms_{name}"] = round(1000 * timed(step), 1)
    out["hashgrid_speedup"] = round(out["hashgrid_fwd_bwd_ms_torch"] / out["hashgrid_fwd_bwd_ms_cpu"], 1)
    sc = load_scene(None)
    cam = sc.camera_path(width=256, height=256).cameras[0]
    for name in ("torch", "cpu"):
        sc.field.set_ops(select_ops(name, "cpu"))
        cfg = dataclasses.replace(sc.render_config)
        out[f"demo_frame_256_ms_{name}"] = round(1000 * timed(
            lambda: render_camera(sc.field, sc.grid, cam, cfg, sc.background, world_to_field=(sc.center, sc.scale)),
            reps=2))
    out["demo_frame_speedup"] = round(out["demo_frame_256_ms_torch"] / out["demo_frame_256_ms_cpu"], 1)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="*", type=Path, default=[], help="datasets to train and evaluate on")
    ap.add_argument("--nerfacto", nargs="*", type=Path, default=[], help="nerfacto_baseline.sh output folders, one per --data")
    ap.add_argument("--max-seconds", type=float, default=480.0)
    ap.add_argument("--demo-frames", type=int, default=48, help="0: skip the demo render")
    ap.add_argument("--viewer-size", type=int, default=128, help="0: skip the viewer")
    ap.add_argument("--viewer-stylizer", type=Path, default=None,
                    help="the viewer runs this stylizer instead of the demo's (e.g. an exported student.onnx)")
    ap.add_argument("--kernels", action="store_true", help="also time the CPU kernels against the torch references")
    ap.add_argument("--out", type=Path, default=Path("out/bench"))
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.processor() or platform.machine(),
                 "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(), "scenes": {}}
    for i, data in enumerate(args.data):
        row = {"latentscape": bench_training(data, args.out, args.max_seconds)}
        print(data.name, "train", json.dumps(row["latentscape"]), flush=True)
        row["latentscape"].update(bench_render(Path(row["latentscape"]["scene"]), data))
        print(data.name, "render", json.dumps(row["latentscape"]), flush=True)
        if i < len(args.nerfacto):
            row["nerfacto"] = bench_nerfacto(args.nerfacto[i])
            print(data.name, "nerfacto", json.dumps(row["nerfacto"]), flush=True)
        res["scenes"][data.name] = row
    if args.demo_frames:
        res["demo"] = bench_demo(args.out, args.demo_frames)
        print("demo", json.dumps(res["demo"]), flush=True)
    if args.viewer_size:
        from latentscape.tools.benchmarks.delivery import bench_viewer

        res["viewer"] = bench_viewer(args.viewer_size, 24, 30.0, 5.0, stylizer=args.viewer_stylizer)
        print("viewer", json.dumps(res["viewer"]), flush=True)
    if args.kernels:
        res["kernels"] = bench_kernels()
        print("kernels", json.dumps(res["kernels"]), flush=True)
    (args.out / "bench.json").write_text(json.dumps(res, indent=1))
    print("\n| scene | latentscape: PSNR (views), command s, rays/s | nerfacto: PSNR, rays/s |\n|---|---|---|")
    for name, row in res["scenes"].items():
        ls, nf = row["latentscape"], row.get("nerfacto") or {}
        print(f"| {name} | {ls['psnr']} dB ({ls['views']}), {ls['command_seconds']} s, {ls['rays_per_s']} | "
              f"{nf.get('psnr', '-')} dB, {nf.get('rays_per_s', '-')} |")
    return res


if __name__ == "__main__":
    main()
