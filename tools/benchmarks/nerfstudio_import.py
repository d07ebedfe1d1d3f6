"""Benchmark: an imported nerfstudio nerfacto scene in latentscape vs the same run in nerfstudio.

    python -m latentscape.tools.benchmarks.nerfstudio_import [--run RUN] [--camera-path P.json]
        [--ns-venv /tmp/ns-venv] [--repeat 2] [--json OUT.json]

Defaults: the committed fixture (tests/data/nerfstudio/nerfacto_torch: run/ and camera_path.json).
Imports RUN into a temporary bundle, renders every view of the camera path with latentscape
(``--backend``, default auto = ``cpu`` on a CPU; after one warm-up view) and, when the nerfstudio venv exists, with nerfstudio itself
in a subprocess (``eval_setup`` + ``get_outputs_for_camera``, exactly what ``ns-render camera-path``
calls, its float output kept). Prints rays/s for each side (best of ``--repeat`` passes over the path)
and the parity PSNR per view (latentscape vs nerfstudio, float images). Both sides use torch's default
CPU threads on the same machine, one after the other. nerfstudio needs the run's dataset folder
(config.yml's ``data``) to exist, as ns-render does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

_FIXTURE = Path(__file__).resolve().parents[2] / "tests" / "data" / "nerfstudio" / "nerfacto_torch"

_NS_SCRIPT = r'''
import json, sys, time
import numpy as np, torch
import torchmetrics.image.lpip as L
class _NoLPIPS(torch.nn.Module):  # LPIPS needs hub weights (offline machine); never used here
    def __init__(self, *a, **k): super().__init__()
    def forward(self, a, b): return torch.zeros(())
L.LearnedPerceptualImagePatchSimilarity = _NoLPIPS
from pathlib import Path
from nerfstudio.cameras.camera_paths import get_path_from_json
from nerfstudio.utils.eval_utils import eval_setup
config, path, out, repeat = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
_, pipeline, _, _ = eval_setup(config, eval_num_rays_per_chunk=None, test_mode="inference")
cams = get_path_from_json(json.loads(path.read_text()))
times = []
with torch.no_grad():
    pipeline.model.get_outputs_for_camera(cams[0:1])  # warm-up
    for r in range(repeat):
        t0 = time.perf_counter()
        for i in range(len(cams)):
            rgb = pipeline.model.get_outputs_for_camera(cams[i:i + 1])["rgb"]
            if r == 0:
                np.save(out / f"{i:05d}.npy", rgb.cpu().numpy().astype(np.float32))
        times.append(time.perf_counter() - t0)
rays = int(sum(int(cams[i:i+1].height) * int(cams[i:i+1].width) for i in range(len(cams))))
print(json.dumps({"seconds": min(times), "rays": rays, "torch": torch.__version__, "threads": torch.get_num_threads()}))
'''


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(1.0 / max(mse, 1e-20))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=_FIXTURE / "run")
    ap.add_argument("--camera-path", type=Path, default=_FIXTURE / "camera_path.json")
    ap.add_argument("--ns-venv", type=Path, default=Path(os.environ.get("NS_VENV", "/tmp/ns-venv")))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--backend", default="auto", help="latentscape backend (auto: cpu on the CPU, numba hash encoding)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ns-bench-"))
    try:
        return _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run(args, work: Path) -> dict:
    import torch

    from latentscape.render.camera_path import load_camera_path
    from latentscape.render.renderer import render_camera
    from latentscape.scene import load_scene
    from latentscape.scene.nerfstudio import import_nerfstudio

    t0 = time.perf_counter()
    bundle = import_nerfstudio(args.run, work / "scene")
    import_s = time.perf_counter() - t0
    sc = load_scene(bundle, backend=args.backend)
    path = load_camera_path(args.camera_path)
    rays = sum(c.width * c.height for c in path.cameras)
    render_camera(sc.field, sc.grid, path.cameras[0], sc.render_config, sc.background)  # warm-up
    ours, times = [], []
    for r in range(args.repeat):
        t = time.perf_counter()
        frames = [render_camera(sc.field, sc.grid, c, sc.render_config, sc.background).rgb.numpy() for c in path.cameras]
        times.append(time.perf_counter() - t)
        if r == 0:
            ours = frames
    c = sc.field.config
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or 'cpu'}), load average "
                   f"{' '.join(f'{v:.1f}' for v in os.getloadavg())} at start (shared machine)",
        "run": str(args.run), "camera_path": str(args.camera_path), "views": len(path), "rays": rays,
        "model": f"nerfacto {c.implementation}, {c.num_levels} levels x 2^{c.log2_hashmap_size}, "
                 f"samples {c.num_proposal_samples_per_ray} + {c.num_nerf_samples_per_ray}",
        "import_seconds": round(import_s, 2),
        "latentscape_rays_per_s": round(rays / min(times), 1),
        "latentscape_backend": sc.backend, "latentscape_torch": torch.__version__, "latentscape_threads": torch.get_num_threads(),
    }
    ns_py = args.ns_venv / "bin" / "python"
    if ns_py.is_file():
        cfg = args.run / "config.yml"
        script = work / "ns_bench.py"
        script.write_text(_NS_SCRIPT)
        (work / "ns").mkdir()
        env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")  # nerfstudio's own loader needs it (trusted file)
        proc = subprocess.run([str(ns_py), str(script), str(cfg), str(args.camera_path), str(work / "ns"), str(args.repeat)],
                              capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            print(proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit("nerfstudio side failed")
        ns = json.loads(proc.stdout.strip().splitlines()[-1])
        res["nerfstudio_rays_per_s"] = round(ns["rays"] / ns["seconds"], 1)
        res["nerfstudio_torch"], res["nerfstudio_threads"] = ns["torch"], ns["threads"]
        res["speed_ratio"] = round(res["latentscape_rays_per_s"] / res["nerfstudio_rays_per_s"], 2)
        res["parity_psnr_db"] = [round(float(_psnr(o, np.load(work / "ns" / f"{i:05d}.npy"))), 1) for i, o in enumerate(ours)]
    else:
        res["nerfstudio"] = f"not run ({ns_py} missing)"
    for k, v in res.items():
        print(f"{k}: {v}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
