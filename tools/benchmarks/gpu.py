"""GPU benchmark of the hot path: parity and speed of every Triton kernel against its
torch reference and its memory-bandwidth floor, and whole frames per backend.

Usage::

    python -m latentscape.tools.benchmarks.gpu [--scene DIR] [--out FILE] [--budget SECONDS]
    python -m latentscape.tools.benchmarks.gpu --dry [--out FILE]      # CPU, TRITON_INTERPRET=1, tiny, parity only

On CUDA, in one call (a few minutes, ``--budget`` bounds it): parity at full size
(N = 2^20 points; hash grids L=16 F=2 T=2^19 and L=8 F=4 T=2^19) for each kernel vs
torch; each kernel's median time (``triton.testing.do_bench``) vs the torch reference on
the same GPU and vs its memory floor (bytes that must move / the bandwidth of a large
device-to-device copy measured in the same run); whole 1920x1080 and 1280x720 frames
per backend, of ``--scene DIR`` (``latentscape.scene.load_scene``) or, without one, of a
randomly initialised NerfField with a half-occupied occupancy grid. Prints a short
table, writes every number to ``--out`` (JSON). A section that fails is recorded with its
error and the others still run.

Memory floors are lower bounds on traffic, not predictions: hash grid forward reads
the points and the whole table once and writes the features; backward reads the
points and output gradients and zeroes + read-modify-writes the float32 gradient
table; MLP and SH read inputs and write outputs; the marcher reads rays and writes ``t``
(4 B) and ``valid`` (1 B) per sample; the compositor reads ``sigma``, ``rgb``, ``t``
per sample and writes 24 B per ray (backward: reads those and writes their gradients).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import traceback
from pathlib import Path


def log(msg: str) -> None:
    print(msg, flush=True)


class Bench:
    """Runs sections, records their numbers or errors, keeps an eye on the time budget."""

    def __init__(self, device, dry: bool, budget_s: float):
        self.device = device
        self.dry = dry
        self.budget_s = budget_s
        self.t0 = time.perf_counter()
        self.results: dict = {"sections": {}}
        self.rows: list[tuple] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def section(self, name: str, fn, *args, min_left_s: float = 0.0):
        left = self.budget_s - self.elapsed()
        if left < min_left_s:
            log(f"[{self.elapsed():6.1f}s] {name}: skipped, {left:.0f}s of the budget left (needs {min_left_s:.0f}s)")
            self.results["sections"][name] = {"skipped": f"time budget: {left:.0f}s left"}
            return None
        log(f"[{self.elapsed():6.1f}s] {name} ...")
        try:
            out = fn(*args)
            self.results["sections"][name] = out
            return out
        except Exception as err:  # one failing section must not stop the others
            tb = traceback.format_exc()
            log(f"  FAILED: {type(err).__name__}: {err}\n{tb[-2000:]}")
            self.results["sections"][name] = {"error": f"{type(err).__name__}: {err}", "traceback": tb[-4000:]}
            return None
        finally:
            if self.device.type == "cuda":
                import torch

                torch.cuda.empty_cache()

    def time_ms(self, fn) -> float | None:
        """Median milliseconds of ``fn`` (None in dry mode: the interpreter's times mean nothing)."""
        if self.dry:
            return None
        import triton.testing

        try:
            return float(triton.testing.do_bench(fn, warmup=10, rep=50, return_mode="median"))
        except TypeError:  # older signature
            return float(triton.testing.do_bench(fn, warmup=10, rep=50, quantiles=[0.5])[0])

    def row(self, kernel: str, case: str, torch_ms, triton_ms, floor_ms, parity: str) -> None:
        self.rows.append((kernel, case, torch_ms, triton_ms, floor_ms, parity))


def _max_rel(a, b) -> float:
    a, b = a.float(), b.float()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12)) if b.numel() else 0.0


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


# --- sections ---------------------------------------------------------------------------

def env_section(b: Bench) -> dict:
    import torch
    import triton

    info = {"python": platform.python_version(), "torch": torch.__version__, "triton": triton.__version__,
            "device": str(b.device), "dry": b.dry,
            "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET")}
    if b.device.type == "cuda":
        p = torch.cuda.get_device_properties(b.device)
        info.update(gpu=p.name, sms=p.multi_processor_count, memory_gib=round(p.total_memory / 2**30, 1))
    log("  " + ", ".join(f"{k}={v}" for k, v in info.items()))
    return info


def bandwidth_section(b: Bench) -> dict:
    import torch

    n_bytes = (1 << 30) if not b.dry else (1 << 20)
    src = torch.empty(n_bytes // 4, dtype=torch.float32, device=b.device).uniform_()
    dst = torch.empty_like(src)
    ms = b.time_ms(lambda: dst.copy_(src))
    out = {"bytes_copied": n_bytes, "ms": ms}
    if ms:
        out["gb_per_s"] = 2 * n_bytes / (ms * 1e-3) / 1e9  # read + write
        b.bandwidth = out["gb_per_s"]
        log(f"  device-to-device copy: {out['gb_per_s']:.0f} GB/s (read + write)")
    else:
        b.bandwidth = None
    return out


def _floor_ms(b: Bench, n_bytes: float):
    bw = getattr(b, "bandwidth", None)
    return n_bytes / (bw * 1e9) * 1e3 if bw else None


def hashgrid_section(b: Bench, name: str, levels: int, F: int, log2_t: int, n: int) -> dict:
    import torch

    from latentscape.kernels.hashgrid import hashgrid_encode as tri
    from latentscape.kernels.layout import GridLayout, per_level_scale_for
    from latentscape.kernels.reference.hashgrid import hashgrid_encode as ref

    base = 16
    layout = GridLayout(levels, F, log2_t, base, per_level_scale_for(base, 2048 if not b.dry else 64, levels))
    g = torch.Generator(device=b.device).manual_seed(0)
    x = torch.rand(n, 3, device=b.device, generator=g)
    out: dict = {"layout": dict(n_levels=levels, F=F, log2_T=log2_t, n_params=layout.n_params,
                                n_dense=sum(layout.dense)), "n": n}
    for dtype in (torch.float32, torch.float16):
        key = str(dtype).replace("torch.", "")
        params = (torch.rand(layout.n_params, device=b.device, generator=g) * 2 - 1).to(dtype)
        y_tri, y_ref = tri(x, params, layout), ref(x, params, layout)
        fwd_err = float((y_tri - y_ref).abs().max())
        gout = torch.randn(n, layout.n_output_dims, device=b.device, generator=g)
        pa = params.detach().clone().requires_grad_()
        pb = params.detach().float().clone().requires_grad_()
        (gp_tri,) = torch.autograd.grad(tri(x, pa, layout), pa, gout)
        (gp_ref,) = torch.autograd.grad(ref(x, pb, layout), pb, gout)
        bwd_rel = _max_rel(gp_tri.float(), gp_ref)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        (gx_tri,) = torch.autograd.grad(tri(xa, params, layout), xa, gout)
        (gx_ref,) = torch.autograd.grad(ref(xb, params.float(), layout), xb, gout)
        bx_rel = _max_rel(gx_tri, gx_ref)
        res = {"fwd_max_abs": fwd_err, "grad_params_max_rel": bwd_rel, "grad_x_max_rel": bx_rel}
        del y_tri, y_ref, gp_tri, gp_ref, gx_tri, gx_ref
        pbytes = layout.n_params * params.element_size()
        fwd_floor = _floor_ms(b, 12 * n + 4 * n * layout.n_output_dims + pbytes)
        bwd_floor = _floor_ms(b, 12 * n + 4 * n * layout.n_output_dims + 3 * 4 * layout.n_params)
        from latentscape.kernels.hashgrid import hashgrid_bwd, hashgrid_fwd

        p_c = params.contiguous()
        res["fwd_ms"] = {"triton": b.time_ms(lambda: hashgrid_fwd(x, p_c, layout)),
                         "torch": b.time_ms(lambda: ref(x, p_c, layout)), "floor": fwd_floor}
        pr = params.detach().clone().requires_grad_()

        def torch_bwd():
            torch.autograd.grad(ref(x, pr, layout), pr, gout)

        res["bwd_params_ms"] = {"triton": b.time_ms(lambda: hashgrid_bwd(gout, x, p_c, layout, True, False)),
                                "torch_fwd_bwd": b.time_ms(torch_bwd), "floor": bwd_floor}
        out[key] = res
        ok = fwd_err < (1e-5 if dtype == torch.float32 else 1e-3) and bwd_rel < 1e-3
        parity = f"fwd {fwd_err:.1e} gp {bwd_rel:.1e} gx {bx_rel:.1e}" + ("" if ok else " MISMATCH")
        b.row("hashgrid fwd", f"{name} {key}", res["fwd_ms"]["torch"], res["fwd_ms"]["triton"], fwd_floor, parity)
        b.row("hashgrid bwd", f"{name} {key}", res["bwd_params_ms"]["torch_fwd_bwd"], res["bwd_params_ms"]["triton"],
              bwd_floor, "(torch: fwd+bwd)")
    return out


def mlp_section(b: Bench, n: int) -> dict:
    import torch

    from latentscape.kernels.mlp import fused_mlp
    from latentscape.kernels.reference.mlp import mlp_reference

    shapes = {"density 32-64-16": [32, 64, 16], "color 32-64-64-3": [32, 64, 64, 3], "wide 32-128-128-16": [32, 128, 128, 16]}
    out: dict = {"n": n}
    g = torch.Generator(device=b.device).manual_seed(1)
    for name, dims in shapes.items():
        ws = [torch.randn(o, i, device=b.device, generator=g) / math.sqrt(i) for i, o in zip(dims[:-1], dims[1:])]
        x = torch.randn(n, dims[0], device=b.device, generator=g)
        want = mlp_reference(x, ws)
        res: dict = {}
        floor = _floor_ms(b, 4 * n * (dims[0] + dims[-1]))
        torch_ms = b.time_ms(lambda: mlp_reference(x, ws))
        ws16, x16 = [w.half() for w in ws], x.half()
        res["torch_ms"] = torch_ms
        res["torch_fp16_ms"] = b.time_ms(lambda: mlp_reference(x16, ws16)) if b.device.type == "cuda" else None
        for precision in ("ieee", "tf32", "fp16"):
            rel = _max_rel(fused_mlp(x, ws, precision=precision), want)
            ms = b.time_ms(lambda: fused_mlp(x, ws, precision=precision))
            res[precision] = {"max_rel": rel, "ms": ms}
            lim = 1e-4 if precision == "ieee" else 1e-2
            b.row("mlp", f"{name} {precision}", torch_ms, ms, floor, f"rel {rel:.1e}" + ("" if rel < lim else " MISMATCH"))
        res["floor_ms"] = floor
        out[name] = res
    return out


def sh_section(b: Bench, n: int) -> dict:
    import torch

    from latentscape.kernels.reference.sh import sh_encode as sh_reference
    from latentscape.kernels.sh import sh_encode

    g = torch.Generator(device=b.device).manual_seed(2)
    d = torch.nn.functional.normalize(torch.randn(n, 3, device=b.device, generator=g), dim=-1)
    out: dict = {"n": n}
    for degree in (3, 4):
        want = sh_reference(d, degree)
        rel = _max_rel(sh_encode(d, degree), want)
        floor = _floor_ms(b, 4 * n * (3 + degree * degree))  # read 3 floats, write degree^2 per direction
        torch_ms = b.time_ms(lambda: sh_reference(d, degree))
        ms = b.time_ms(lambda: sh_encode(d, degree))
        out[f"degree {degree}"] = {"max_rel": rel, "ms": ms, "torch_ms": torch_ms, "floor_ms": floor}
        b.row("sh", f"degree {degree}", torch_ms, ms, floor, f"rel {rel:.1e}" + ("" if rel < 1e-5 else " MISMATCH"))
    return out


def raymarch_section(b: Bench, n_rays: int, steps: int) -> dict:
    import torch

    from latentscape.kernels import raymarch as tri
    from latentscape.kernels.reference import raymarch as ref

    g = torch.Generator(device=b.device).manual_seed(2)
    aabb = torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0, 1.0], device=b.device)
    o = (torch.rand(n_rays, 3, device=b.device, generator=g) * 2 - 1) * 3
    d = torch.nn.functional.normalize(torch.randn(n_rays, 3, device=b.device, generator=g), dim=-1)
    tnear, tfar = ref.ray_aabb(o, d, aabb, 0.05)
    bits = torch.rand(2, 128, 128, 128, device=b.device, generator=g) < 0.5
    dt = 2 * math.sqrt(3) / 512
    out: dict = {"n_rays": n_rays, "steps": steps}
    t_a, v_a = tri.march_segment(o, d, tnear, tfar, dt, steps, bits, aabb)
    t_b, v_b = ref.march_segment(o, d, tnear, tfar, dt, steps, bits, aabb)
    mism = int((v_a != v_b).sum())
    out["march"] = {"t_max_abs": float((t_a - t_b).abs().max()), "valid_mismatches": mism,
                    "valid_fraction": float(v_b.float().mean())}
    floor = _floor_ms(b, 32 * n_rays + 5 * n_rays * steps)
    out["march"]["ms"] = {"triton": b.time_ms(lambda: tri.march_segment(o, d, tnear, tfar, dt, steps, bits, aabb)),
                          "torch": b.time_ms(lambda: ref.march_segment(o, d, tnear, tfar, dt, steps, bits, aabb)),
                          "floor": floor}
    b.row("march", f"{n_rays}x{steps}", out["march"]["ms"]["torch"], out["march"]["ms"]["triton"], floor,
          f"t {out['march']['t_max_abs']:.1e}, valid mism {mism}/{v_b.numel()}")

    sigma = torch.rand(n_rays, steps, device=b.device, generator=g) * 50 * v_b
    rgb = torch.rand(n_rays, steps, 3, device=b.device, generator=g)
    trans = torch.rand(n_rays, device=b.device, generator=g)
    got = tri.composite_segment(sigma, rgb, t_b, dt, trans)
    want = ref.composite_segment(sigma, rgb, t_b, dt, trans)
    fwd_err = max(float((a - c).abs().max()) for a, c in zip(got, want))
    ins_a = [v.clone().requires_grad_() for v in (sigma, rgb, trans)]
    ins_b = [v.clone().requires_grad_() for v in (sigma, rgb, trans)]
    grads = [torch.randn_like(v) for v in want]
    ga = torch.autograd.grad(tri.composite_segment(ins_a[0], ins_a[1], t_b, dt, ins_a[2]), ins_a, grads)
    gb = torch.autograd.grad(ref.composite_segment(ins_b[0], ins_b[1], t_b, dt, ins_b[2]), ins_b, grads)
    grad_rel = max(_max_rel(a, c) for a, c in zip(ga, gb))
    floor_f = _floor_ms(b, 20 * n_rays * steps + 28 * n_rays)
    floor_b = _floor_ms(b, 36 * n_rays * steps + 48 * n_rays)

    def fwd_bwd(impl):
        ins = [v.clone().requires_grad_() for v in (sigma, rgb, trans)]

        def run():
            torch.autograd.grad(impl.composite_segment(ins[0], ins[1], t_b, dt, ins[2]), ins, grads)
        return run

    out["composite"] = {"fwd_max_abs": fwd_err, "grad_max_rel": grad_rel,
                        "fwd_ms": {"triton": b.time_ms(lambda: tri.composite_segment(sigma, rgb, t_b, dt, trans)),
                                   "torch": b.time_ms(lambda: ref.composite_segment(sigma, rgb, t_b, dt, trans)),
                                   "floor": floor_f},
                        "fwd_bwd_ms": {"triton": b.time_ms(fwd_bwd(tri)), "torch": b.time_ms(fwd_bwd(ref)),
                                       "floor": floor_b}}
    c = out["composite"]
    b.row("composite fwd", f"{n_rays}x{steps}", c["fwd_ms"]["torch"], c["fwd_ms"]["triton"], floor_f, f"{fwd_err:.1e}")
    b.row("composite f+b", f"{n_rays}x{steps}", c["fwd_bwd_ms"]["torch"], c["fwd_bwd_ms"]["triton"], floor_b,
          f"grad rel {grad_rel:.1e}")
    return out


def _random_scene(b: Bench):
    """A randomly initialised NerfField (visible densities) and a half-occupied grid."""
    import torch

    from latentscape.field.nerf import FieldConfig, NerfField
    from latentscape.render.occupancy import OccupancyGrid
    from latentscape.render.renderer import RenderConfig

    torch.manual_seed(0)
    cfg = FieldConfig() if not b.dry else FieldConfig(n_levels=4, log2_hashmap_size=10, finest_resolution=32,
                                                          density_hidden=16, color_hidden=16)
    fld = NerfField(cfg)
    with torch.no_grad():
        fld.grid.uniform_(-1.0, 1.0)
        # A solid-looking field: make the raw density (output 0, fed by ReLU features)
        # about 4 (sigma ~ e^4) so rays stop a few steps into the occupied half, as at
        # a surface, instead of marching the whole box through fog.
        w_last = fld.density_mlp[-1].weight
        w_last[0] = w_last[0].abs()
        pts = torch.rand(4096, 3) * 2 - 1
        raw = fld.density_and_features(pts)[1][:, 0]
        w_last[0] *= 4.0 / raw.median().clamp_min(1e-6)
    grid = OccupancyGrid(cfg.aabb, resolution=128 if not b.dry else 8)
    half = grid.resolution // 2
    grid.bitfield[:, :half] = False  # the half x < 0 is empty: skipped
    render = RenderConfig() if not b.dry else RenderConfig(steps_per_diagonal=32, segment=16)
    return fld.to(b.device), grid.to(b.device), render, (1.0, 1.0, 1.0), "random NerfField, half-occupied grid"


def frames_section(b: Bench, scene_dir: str | None, sizes: list[tuple[int, int]]) -> dict:
    import torch

    from latentscape.kernels.backend import BackendError, select_ops
    from latentscape.render.cameras import Camera, look_at
    from latentscape.render.renderer import render_camera

    if scene_dir:
        from latentscape.scene import load_scene

        scene = load_scene(scene_dir, device=b.device, backend="torch")
        fld, grid, render, bg, what = scene.field, scene.grid, scene.render_config, scene.background, str(scene_dir)
    else:
        fld, grid, render, bg, what = _random_scene(b)
    out: dict = {"scene": what, "frames": {}}
    # Field coordinates: the box is [-1, 1]^3 after normalisation whatever the scene's world units.
    # An orbit of 8 views (the "median over an orbit"); the first view is also the
    # parity view against torch.
    orbit = [look_at((3.1 * math.cos(a), 3.1 * math.sin(a), 1.4), (0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
             for a in [-math.pi / 4 + k * math.pi / 4 for k in range(8)]]
    backends = ["torch", "triton", "tcnn"]
    images = {}
    for (w, h) in sizes:
        cam = Camera.from_fov(orbit[0], w, h, 45.0)
        views = [Camera.from_fov(c, w, h, 45.0) for c in orbit]
        for name in backends:
            key = f"{w}x{h} {name}"
            left = b.budget_s - b.elapsed()
            if left < 20:
                out["frames"][key] = {"skipped": f"time budget: {left:.0f}s left"}
                continue
            try:
                fld.set_ops(select_ops(name, b.device))
            except BackendError as err:
                out["frames"][key] = {"skipped": str(err).splitlines()[0]}
                log(f"  {key}: skipped ({str(err).splitlines()[0]})")
                continue
            try:
                _sync(b.device)
                t0 = time.perf_counter()
                r = render_camera(fld, grid, cam, render, bg)
                _sync(b.device)
                first = time.perf_counter() - t0
                first_r = r
                times, rounds = [], []
                while not b.dry and len(times) < 16 and sum(times) + first < min(20.0, left / 4):
                    view = views[len(times) % len(views)]
                    t0 = time.perf_counter()
                    r = render_camera(fld, grid, view, render, bg)
                    _sync(b.device)
                    times.append(time.perf_counter() - t0)
                    rounds.append(r.rounds)
                res = {"first_s": first, "ms_median": 1e3 * sorted(times)[len(times) // 2] if times else None,
                       "runs": len(times), "orbit_views": len(views), "samples": first_r.samples,
                       "rounds": rounds or [first_r.rounds], "path": "packed" if getattr(fld.ops, "packed", False) else "segment",
                       "alpha_mean": float(first_r.alpha.mean())}
                r = first_r
                images[(w, h, name)] = r.rgb
                if name != "torch" and (w, h, "torch") in images:
                    res["rgb_max_abs_vs_torch"] = float((r.rgb - images[(w, h, "torch")]).abs().max())
                out["frames"][key] = res
                ms = res["ms_median"]
                log(f"  {key}: {ms if ms is None else round(ms, 1)} ms (first {first:.2f} s), {r.samples} samples"
                    + (f", rgb vs torch {res['rgb_max_abs_vs_torch']:.1e}" if "rgb_max_abs_vs_torch" in res else ""))
            except Exception as err:
                out["frames"][key] = {"error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
                log(f"  {key}: FAILED {type(err).__name__}: {err}")
    fld.set_ops(select_ops("torch", b.device))
    return out


def _fmt(v) -> str:
    return "-" if v is None else f"{v:8.3f}"


def print_table(b: Bench) -> None:
    log("\nkernel          case                          torch ms  triton ms  floor ms  parity")
    for kernel, case, t_ms, k_ms, f_ms, parity in b.rows:
        log(f"{kernel:15s} {case:28s} {_fmt(t_ms):>9s} {_fmt(k_ms):>10s} {_fmt(f_ms):>9s}  {parity}")
    frames = b.results["sections"].get("frames") or {}
    for key, res in (frames.get("frames") or {}).items():
        if "ms_median" in res:
            log(f"frame {key:24s} {_fmt(res['ms_median'])} ms  ({res['samples']} samples)")
        else:
            log(f"frame {key:24s} {res.get('skipped') or res.get('error')}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Parity and speed of the Triton kernels and whole frames (see module docstring).")
    ap.add_argument("--dry", action="store_true", help="CPU under TRITON_INTERPRET=1, tiny sizes, parity only")
    ap.add_argument("--out", type=Path, default=None, help="write every number here (JSON)")
    ap.add_argument("--scene", default=None, help="scene bundle folder for the frame timings (default: a random field)")
    ap.add_argument("--budget", type=float, default=210.0, help="seconds; later sections are skipped past it")
    args = ap.parse_args(argv)
    if args.dry:
        # Must precede the first import of the kernels (Triton reads it when a kernel is defined).
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    if args.dry:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        log("no CUDA device: use --dry for the CPU parity check")
        return 2
    b = Bench(device, args.dry, args.budget)
    b.section("env", env_section, b)
    b.section("bandwidth", bandwidth_section, b)
    n = 1 << 20 if not args.dry else 300
    log2_t = 19 if not args.dry else 10
    levels16, levels8 = (16, 8) if not args.dry else (4, 3)
    b.section("hashgrid L16F2", hashgrid_section, b, f"L{levels16}F2", levels16, 2, log2_t, n)
    b.section("hashgrid L8F4", hashgrid_section, b, f"L{levels8}F4", levels8, 4, log2_t, n)
    b.section("mlp", mlp_section, b, n)
    b.section("sh", sh_section, b, n)
    rays = (1 << 17) if not args.dry else 200
    b.section("raymarch", raymarch_section, b, rays, 32 if not args.dry else 8)
    sizes = [(1920, 1080), (1280, 720)] if not args.dry else [(24, 16)]
    b.section("frames", frames_section, b, args.scene, sizes, min_left_s=30)
    b.results["elapsed_s"] = b.elapsed()
    print_table(b)
    failed = [k for k, v in b.results["sections"].items() if isinstance(v, dict) and "error" in v]
    b.results["failed_sections"] = failed
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(b.results, indent=1, default=str))
        log(f"wrote {args.out}")
    log(f"done in {b.elapsed():.1f}s" + (f"; failed sections: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
