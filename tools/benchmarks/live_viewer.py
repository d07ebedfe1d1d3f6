"""The live viewer on the CPU: frame rate at full resolution against how the GAN texture is
made, and the marcher's two paths on a real frame's rays, side by side in one run.

    python -m latentscape.tools.benchmarks.live_viewer [--size 128] [--frames 40] [--repeats 2]

1. ``ViewerCore`` on the demo at ``--size`` (full resolution, fixed camera): the frame waiting
   for every texture (``set_live(False)``), then background synthesis at duty cycles 1.0, 0.5
   and 0.3 (``_SynthesisWorker.DUTY``); frames/s, mean stage ms and textures made.
2. The packed marcher on the rays of that frame's rounds: one walk into a ``[rays, k]``
   scratch buffer against count + fill (``_SCRATCH_MAX = 0``), ms per frame.
Numbers print as JSON lines. The machine must be otherwise idle for the ratios to mean much.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time


def viewer_rate(size: int, frames: int, mode: str, duty: float | None) -> dict:
    from latentscape.texture import stage as st
    from latentscape.viewer import ViewerCore

    if duty is not None:
        st._SynthesisWorker.DUTY = duty
    core = ViewerCore(None, width=size, height=size, target_fps=30)
    try:
        if mode == "sync":
            for s in core.loop.stages:
                s.set_live(False)
        cam = core.rig.camera(size, size)
        core.step(cam)
        core.step(cam)
        made0 = sum(getattr(getattr(s, "_worker", None), "synthesised", 0) for s in core.loop.stages)
        totals: dict[str, float] = {}
        t0 = time.perf_counter()
        for _ in range(frames):
            f = core.step(cam)
            for k, v in f.context.stats.items():
                totals[k] = totals.get(k, 0.0) + v / frames
        fps = frames / (time.perf_counter() - t0)
        made = sum(getattr(getattr(s, "_worker", None), "synthesised", 0) for s in core.loop.stages) - made0
    finally:
        core.close()
    return {"mode": mode, "duty": duty, "fps": round(fps, 2), "textures": made,
            "stage_ms": {k: round(v, 1) for k, v in totals.items() if v >= 0.5}}


def march_paths(size: int, repeats: int = 4) -> dict:
    from latentscape.kernels.cpu import raymarch as rm
    from latentscape.render.renderer import render_camera
    from latentscape.scene import load_scene
    from latentscape.viewer import CameraRig

    scene = load_scene(None)
    rig = CameraRig(center=tuple(scene.center.tolist()), radius=2.0 / scene.scale, up_axis=scene.up_axis)
    cam = rig.camera(size, size)
    orig = rm.march_next
    times: dict[int, list[float]] = {0: [], rm._SCRATCH_MAX: []}
    scratch_max = rm._SCRATCH_MAX

    def timed(*a, **k):
        t0 = time.perf_counter()
        out = orig(*a, **k)
        times[rm._SCRATCH_MAX].append(time.perf_counter() - t0)
        return out

    scene.field.set_ops(dataclasses.replace(scene.field.ops, march_next=timed))
    try:
        for rep in range(repeats + 1):
            for v in (0, scratch_max):
                rm._SCRATCH_MAX = v
                if rep == 0:
                    times[v].clear()
                render_camera(scene.field, scene.grid, cam, scene.render_config, scene.background,
                              world_to_field=(scene.center, scene.scale))
                if rep == 0:
                    times[v].clear()  # the first frame compiles
    finally:
        rm._SCRATCH_MAX = scratch_max
    return {"march_ms_per_frame": {("count+fill" if v == 0 else "one walk, scratch"): round(sum(t) / repeats * 1e3, 1)
                                   for v, t in times.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args(argv)
    for _ in range(args.repeats):
        for mode, duty in (("sync", None), ("live", 1.0), ("live", 0.5), ("live", 0.3)):
            print(json.dumps(viewer_rate(args.size, args.frames, mode, duty)), flush=True)
    print(json.dumps(march_paths(args.size)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
