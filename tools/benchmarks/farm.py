"""Render-farm benchmark: frames/s of the farm with 1 and 2 local workers against one
process, the farm's per-frame overhead, and a paper projection of a big job.

    python -m latentscape.tools.benchmarks.farm [--size 128] [--frames 24] [--json out.json]

1. single process: ``Session.run`` of the demo scene's default path at SIZE x SIZE
   (what ``latentscape render`` does; torch's default threads), after a warm-up frame in
   another Session;
2. farm, 1 and 2 workers (``run_farm`` with a local Ray instance, one CPU and one torch
   thread per worker, chunk 4): frames/s from the first chunk sent to the last frame
   written, and the whole command (Ray start, scene shipping and loading) as well; the
   farm's frames are compared byte for byte with the single-process ones;
3. overhead: per frame, the farm's wall time with one worker minus the worker's render
   time (= PNG encode + scheduling + object-store transfer + checksum, write, rename,
   manifest), for the demo at SIZE and for a tiny 8x8 scene (render ~ms: all overhead);
4. projection: a 10,000-frame 1080p job on 8 GPU nodes from the measured costs: the H200
   1080p frame time of ``kernels/PERF.md`` plus a 1080p PNG encode and a 1080p frame write
   measured here; assumptions printed with the numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

H200_1080P_MS = 1136.0
"""Demo scene, 1920x1080, torch backend, one H200 (kernels/PERF.md, 'Whole frames')."""
H200_720P_TRITON_MS = 356.0
"""Same, 1280x720, Triton backend (1080p Triton was not timed)."""


def single_process(scene, size: int, frames: int, out: Path) -> dict:
    from latentscape.session import CameraSpec, Session
    from latentscape.sinks import PngSequenceSink

    cams = CameraSpec(width=size, height=size)
    with Session.open(scene, cameras=cams) as s:
        s.render(0)  # warm-up (numba cache load, allocator) in a session of its own: plugins keep state
    with Session.open(scene, cameras=cams) as s:
        t0 = time.perf_counter()
        stats = s.run(s.path, PngSequenceSink(out), count=frames, progress=False)
        dt = time.perf_counter() - t0
    return {"frames": stats.frames, "seconds": dt, "fps": stats.frames / dt}


def farm(scene, size: int, frames: int, out: Path, workers: int) -> dict:
    from latentscape.farm import FarmJob, run_farm

    job = FarmJob(out=out, scene=scene, width=size, height=size, frames=frames, exports=[])
    t0 = time.perf_counter()
    rep = run_farm(job, workers=workers, chunk=4, progress=False)
    total = time.perf_counter() - t0
    wall_ms = rep.seconds / rep.rendered * 1000.0
    return {"workers": workers, "frames": rep.rendered, "seconds": rep.seconds, "fps": rep.fps,
            "total_seconds": total, "per_worker": rep.per_worker, "wall_ms_per_frame": wall_ms,
            "timings_ms": rep.timings, "overhead_ms": wall_ms * workers - rep.timings.get("render", 0.0)}


def same_bytes(a: Path, b: Path, frames: int) -> bool:
    return all((a / f"frame_{i:05d}.png").read_bytes() == (b / "frames" / f"frame_{i:05d}.png").read_bytes()
               for i in range(frames))


def write_cost_1080p(frame: np.ndarray, tmp: Path) -> dict:
    """PNG-encode a 1080p frame (the demo frame scaled up: real content, not noise) and write
    it the way the driver does (temp + fsync + rename, sidecar), on this machine."""
    from PIL import Image

    from latentscape.farm.manifest import FarmFolder
    from latentscape.farm.worker import encode_png

    big = np.asarray(Image.fromarray(frame).resize((1920, 1080), Image.BILINEAR))
    enc, write = [], []
    folder = FarmFolder(tmp / "w")
    folder.frames_dir.mkdir(parents=True)
    for i in range(5):
        t0 = time.perf_counter()
        png = encode_png(big)
        t1 = time.perf_counter()
        folder.write_frame(i, png, hashlib.sha256(png).hexdigest())
        t2 = time.perf_counter()
        enc.append((t1 - t0) * 1000)
        write.append((t2 - t1) * 1000)
    return {"png_bytes": len(png), "encode_ms": float(np.median(enc)), "write_ms": float(np.median(write))}


def projection(cost: dict, overhead_ms: float, startup_s: float, nodes: int = 8, frames: int = 10_000) -> dict:
    per_frame = H200_1080P_MS + cost["encode_ms"]
    node_fps = 1000.0 / per_frame
    cluster_fps = nodes * node_fps
    driver_ms = cost["write_ms"] + cost["png_bytes"] / 1.25e9 * 1000  # + 10 Gb/s to the driver
    hours = (startup_s + frames / cluster_fps) / 3600
    return {"nodes": nodes, "frames": frames, "worker_ms_per_frame": per_frame, "cluster_fps": cluster_fps,
            "driver_ms_per_frame": driver_ms, "driver_busy_share": driver_ms * cluster_fps / 1000.0,
            "hours": hours, "triton_hours_if_720p_ratio_holds":
                (startup_s + frames / (nodes * 1000.0 / (H200_1080P_MS * H200_720P_TRITON_MS / 623.0 + cost["encode_ms"]))) / 3600}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    from PIL import Image

    from latentscape.scene.bundle import demo_scene_path
    from latentscape.testing import make_tiny_scene

    os.environ.setdefault("LATENTSCAPE_FARM_CACHE", tempfile.mkdtemp(prefix="latentscape-farm-cache-"))
    res: dict = {"machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f} at start", "size": args.size,
                 "frames": args.frames}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        scene = demo_scene_path()
        res["single"] = single_process(scene, args.size, args.frames, tmp / "single")
        print("single process:", json.dumps(res["single"]), flush=True)
        for w in (1, 2):
            r = farm(scene, args.size, args.frames, tmp / f"farm{w}", w)
            r["identical_to_single"] = same_bytes(tmp / "single", tmp / f"farm{w}", args.frames)
            res[f"farm{w}"] = r
            print(f"farm, {w} worker(s):", json.dumps(r), flush=True)
        tiny = make_tiny_scene(tmp / "tiny", size=8, frames=48)
        res["tiny_overhead"] = farm(tiny, 8, 48, tmp / "farm_tiny", 1)
        print("tiny scene, 1 worker:", json.dumps(res["tiny_overhead"]), flush=True)
        frame = np.asarray(Image.open(tmp / "single" / "frame_00000.png").convert("RGB"))
        res["cost_1080p"] = write_cost_1080p(frame, tmp)
        print("1080p frame on this machine:", json.dumps(res["cost_1080p"]), flush=True)
    res["projection"] = projection(res["cost_1080p"], res["farm1"]["overhead_ms"], res["farm2"]["total_seconds"])
    res["machine"] += f", load {os.getloadavg()[0]:.2f} at the end"
    print("projection:", json.dumps(res["projection"]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
