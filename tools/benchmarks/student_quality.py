"""How faithful and how stable a scene's student stylizer is (issue 15, part 2: the measurement).

    python tools/benchmarks/student_quality.py [SCENE] [--frames 8] [--json out.json]

Three measurements, on frames rendered now by a :class:`latentscape.session.Session`
(field + layers, no stylizer, no plugins) and stylized here by the student (raw, no
``[stylizer] mix``) and by its teacher (``metadata.teacher`` in the student's json):

1. **Fidelity**: PSNR of student vs teacher at 256 and 128 px on camera-path frames the
   student did not train on (the path's odd frames between the ones distill rendered;
   the identity PSNR, input vs teacher, is the floor).
2. **Static-camera stability**: one camera, consecutive frames (scene time advances; the
   GAN layer animates). Mean |frame k+1 - frame k| (of 255) of the stylized output vs of
   the unstylized input, over all pixels and over the pixels whose input does not change
   (there any output change is flicker the student adds). Goal: output <= 1.5x input.
   Also: the share of those static pixels whose 8-bit value (what a screen shows) changes.
3. **Warped error along the orbit**: consecutive orbit frames are aligned exactly with the
   NeRF's depth and the two camera poses (no optical flow; :mod:`latentscape.stylize.temporal`):
   every pixel of frame k+1 is back-projected with its depth, projected into frame k and
   sampled there; pixels that are occluded (depth disagrees by > 2 %) or leave the image
   are masked out; background (infinite depth) warps by rotation. Reported: mean |S(k+1) - warp(S(k))| (of 255) for
   the input, the teacher and the student.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.float() - b.float()).pow(2).mean())
    return 100.0 if mse <= 1e-12 else -10 * math.log10(mse)


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb[..., :3])).permute(2, 0, 1).float() / 255


def render(scene: Path, size: int, which) -> list:
    """Frames (rgb tensor [3,H,W], depth [H,W], camera) for ``which(session)`` -> list of (camera or index, index)."""
    from latentscape.session import CameraSpec, Session

    out = []
    with Session.open(scene, stylize=False, scene_plugins=False, cameras=CameraSpec(width=size, height=size)) as s:
        for item, index in which(s):
            fr = s.render(item, index=index)
            cam = item if not isinstance(item, int) else s.path.cameras[item % len(s.path.cameras)]
            out.append((_tensor(fr.rgb), torch.from_numpy(np.array(fr.depth, dtype=np.float32)), cam))
    return out


def warp_into(prev: torch.Tensor, depth_prev: torch.Tensor, cam_prev, depth_next: torch.Tensor, cam_next):
    """``prev`` [C,H,W] resampled at where each pixel of the next frame was in the previous one; and the valid mask."""
    from latentscape.stylize.temporal import depth_warp, warp

    grid, valid = depth_warp(depth_prev, cam_prev, depth_next, cam_next)
    return warp(prev, grid), valid


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scene", nargs="?", default=None, help="scene bundle (default: the demo)")
    ap.add_argument("--frames", type=int, default=8, help="frames per measurement")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--student", type=Path, default=None,
                    help="measure this student (folder or .json) instead of the scene's [stylizer]")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    from latentscape.scene.bundle import demo_scene_path, load_scene
    from latentscape.stylize import load_stylizer
    from latentscape.stylize.student import student_paths
    from latentscape.stylize.teachers import teacher_from_spec

    scene = Path(a.scene) if a.scene else demo_scene_path()
    sc = load_scene(scene)
    styl_dir = a.student if a.student else scene / sc.config["stylizer"]["path"]
    meta = json.loads(student_paths(styl_dir)[1].read_text()).get("metadata", {})
    student = load_stylizer(styl_dir)
    teacher = teacher_from_spec(meta["teacher"], threads=a.threads)
    n = a.frames
    t0 = time.perf_counter()
    report = {"scene": str(scene), "teacher": meta["teacher"], "student": student.name, "frames": n,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "loadavg_start": [round(x, 2) for x in os.getloadavg()], "torch_threads": a.threads}

    def stylize(fn, x):
        with torch.no_grad():
            return fn(x[None])[0].float().clamp(0, 1)

    # 1. fidelity on unseen frames of the camera path, at 256 and 128
    for size in (256, 128):
        def unseen(s):
            m = len(s.path.cameras)
            step = max(2, m // n)
            # odd path frames: distill renders every second one (even indices) for training
            return [(((k * step + step // 2) | 1) % m, k) for k in range(n)]

        rows = []
        for rgb, _, _ in render(scene, size, unseen):
            t = stylize(teacher, rgb)
            y = stylize(student, rgb)
            rows.append((_psnr(y, t), _psnr(rgb, t)))
        report[f"fidelity_{size}"] = {"psnr_student_vs_teacher_db": round(statistics.mean(r[0] for r in rows), 2),
                                      "min_db": round(min(r[0] for r in rows), 2),
                                      "psnr_identity_vs_teacher_db": round(statistics.mean(r[1] for r in rows), 2)}
        print(f"fidelity {size}: {report[f'fidelity_{size}']}", flush=True)

    # 2. static camera: time advances, the camera does not
    frames = render(scene, 256, lambda s: [(s.path.cameras[0], k) for k in range(n + 1)])
    xs = [f[0] for f in frames]
    ys = [stylize(student, x) for x in xs]
    ts = [stylize(teacher, x) for x in xs]
    static = torch.stack([(xs[k + 1] - xs[k]).abs().amax(0) for k in range(n)]).amax(0) == 0

    def change(seq, mask=None):
        vals = []
        for k in range(n):
            d = (seq[k + 1] - seq[k]).abs().mean(0) * 255
            vals.append(float(d[mask].mean()) if mask is not None else float(d.mean()))
        return statistics.mean(vals)

    st = {"input": change(xs), "student": change(ys), "teacher": change(ts),
          "static_pixels_share": round(float(static.float().mean()), 3),
          "student_on_static_pixels": change(ys, static) if static.any() else None,
          "teacher_on_static_pixels": change(ts, static) if static.any() else None}
    def shown_changes(seq, mask):
        """Share of the static pixels whose 8-bit value (what a screen shows) changes, per frame pair."""
        q = [(x * 255).round() for x in seq]
        return statistics.mean(float((q[k + 1] != q[k]).any(0)[mask].float().mean()) for k in range(n))

    if static.any():
        st["student_8bit_changed_static_share"] = shown_changes(ys, static)
        st["teacher_8bit_changed_static_share"] = shown_changes(ts, static)
    st["student_over_input"] = st["student"] / st["input"] if st["input"] > 0 else None
    st["teacher_over_input"] = st["teacher"] / st["input"] if st["input"] > 0 else None
    report["static_camera_change_of_255"] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in st.items()}
    print(f"static camera: {report['static_camera_change_of_255']}", flush=True)

    # 3. consecutive orbit frames, warped exactly with depth + poses
    frames = render(scene, 256, lambda s: [(k, k) for k in range(n + 1)])
    errs = {"input": [], "teacher": [], "student": []}
    masked = []
    for k in range(n):
        (xa, da, ca), (xb, db, cb) = frames[k], frames[k + 1]
        for name, fn in (("input", None), ("teacher", teacher), ("student", student)):
            sa = xa if fn is None else stylize(fn, xa)
            sb = xb if fn is None else stylize(fn, xb)
            warped, mask = warp_into(sa, da, ca, db, cb)
            errs[name].append(float(((sb - warped).abs().mean(0) * 255)[mask].mean()))
        masked.append(float(mask.float().mean()))
    report["orbit_warped_error_of_255"] = {k: round(statistics.mean(v), 3) for k, v in errs.items()}
    report["orbit_warped_error_of_255"]["student_over_teacher"] = round(
        statistics.mean(errs["student"]) / statistics.mean(errs["teacher"]), 3)
    report["orbit_warped_error_of_255"]["valid_pixels_share"] = round(statistics.mean(masked), 3)
    print(f"orbit warped error: {report['orbit_warped_error_of_255']}", flush=True)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    if a.json:
        a.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
