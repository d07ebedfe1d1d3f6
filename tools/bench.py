"""Engine-core benchmark: renderer rays/s on a scene at 256x256, and held-out PSNR
after a fixed training budget, on this machine (CPU unless --device says otherwise).

    python -m latentscape.tools.bench [--scene DIR] [--data DIR] [--train-seconds 300]

If nerfstudio is importable it also times nerfacto (torch implementation, CPU) on the
same dataset for the same budget; it is optional and never required.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch


def render_rays_per_second(scene_dir, device: str, size: int = 256, frames: int = 3) -> dict:
    from latentscape.frame import FrameLoop
    from latentscape.scene import load_scene

    sc = load_scene(scene_dir, device=device)
    loop = FrameLoop(sc)
    path = sc.camera_path(width=size, height=size) if sc.camera_paths else sc.orbit(frames, size, size)
    cams = path.cameras[:: max(1, len(path.cameras) // frames)][:frames]
    loop.render(cams[0])  # warm-up
    start = time.perf_counter()
    for cam in cams:
        loop.render(cam)
    seconds = time.perf_counter() - start
    return {"scene": str(sc.path), "size": size, "frames": len(cams), "seconds": seconds,
            "rays_per_second": len(cams) * size * size / seconds, "backend": sc.backend}


def train_psnr(data_dir, device: str, seconds: float) -> dict:
    from latentscape.dataset import load_dataset
    from latentscape.field.nerf import FieldConfig
    from latentscape.kernels.backend import select_ops
    from latentscape.render.renderer import RenderConfig
    from latentscape.training import TrainConfig, evaluate, train

    ds = load_dataset(data_dir)
    fc = FieldConfig(n_levels=16, log2_hashmap_size=16, finest_resolution=512)
    rc = RenderConfig(steps_per_diagonal=256)
    res = train(ds, fc, TrainConfig(steps=10**6, max_seconds=seconds, rays_per_step=1024, eval_every=0), rc,
                device=device, ops=select_ops("auto", device), progress=False)
    test = ds.split("test") or ds.split("val")
    ev = evaluate(res.field, res.grid, rc, test, res.center, res.scale)
    return {"train_seconds": res.seconds, "steps": res.steps, "test_psnr": ev["psnr"], "test_views": ev["views"]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scene", default=None, help="scene bundle (default: demo)")
    ap.add_argument("--data", default=None, help="dataset for the training budget (skip training if absent)")
    ap.add_argument("--train-seconds", type=float, default=300.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="write the numbers as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(torch.get_num_threads())
    out = {"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
           "torch": torch.__version__, "device": args.device}
    out["render"] = render_rays_per_second(args.scene, args.device)
    print(f"render: {out['render']['rays_per_second']:.0f} rays/s at 256x256 ({out['render']['backend']})", flush=True)
    if args.data:
        out["train"] = train_psnr(args.data, args.device, args.train_seconds)
        print(f"train: {out['train']['steps']} steps in {out['train']['train_seconds']:.0f} s -> "
              f"held-out PSNR {out['train']['test_psnr']:.2f} dB", flush=True)
        try:
            import nerfstudio  # noqa: F401
        except ImportError:
            out["nerfacto"] = "nerfstudio not installed: not measured"
            print("nerfacto: nerfstudio is not installed, not measured", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
