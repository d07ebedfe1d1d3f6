"""Benchmark: plugin-hook dispatch overhead per frame and LoRA swap commit time.

    python -m latentscape.tools.benchmarks.plugins [--frames 2000] [--size 256]

Dispatch: 10 do-nothing plugins (5 guardrails on check_frame, 5 triggers on
frame_begin/frame_end) per isolation mode; the number is the host's cost per frame
(frame_begin + check_frame + frame_end), i.e. what plugins cost beyond their own work.
Commit: the NeRF colour MLP at the default field config (32 -> 64 -> 64 -> 3), one
adapter (a ``copy_`` per layer), a two-adapter blend (staging buffer), and a
request + commit pair.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


class _Guard:
    from latentscape.hooks import hookimpl

    @hookimpl
    def latentscape_check_frame(self, frame):
        return None


class _Trigger:
    from latentscape.hooks import hookimpl

    @hookimpl
    def latentscape_frame_begin(self, ctx):
        pass

    @hookimpl
    def latentscape_frame_end(self, ctx, frame):
        pass


def bench_dispatch(isolation: str, frames: int, size: int) -> tuple[float, float]:
    from latentscape.frame import FrameContext
    from latentscape.plugin_host import HostConfig, PluginHost, PluginSpec

    specs = [PluginSpec(f"g{i}", obj=_Guard(), isolation=isolation) for i in range(5)]
    specs += [PluginSpec(f"t{i}", obj=_Trigger(), isolation=isolation) for i in range(5)]
    host = PluginHost(specs, HostConfig(budget_ms=1000.0))
    rgb = np.zeros((size, size, 3), np.uint8)
    times = []
    for i in range(frames):
        ctx = FrameContext(index=i, time=i / 60, camera=None, deadline=None, scene_version="v")
        t0 = time.perf_counter()
        host.frame_begin(ctx)
        out = host.check_frame(ctx, rgb)
        host.frame_end(ctx, out)
        times.append(time.perf_counter() - t0)
    host.close()
    times = times[frames // 10:]
    return statistics.median(times) * 1e3, float(np.percentile(times, 99)) * 1e3


def bench_commit(iters: int) -> dict[str, float]:
    import torch

    from latentscape.field.nerf import FieldConfig, NerfField
    from latentscape.lora import AdapterManager, linear_modules
    from latentscape.lora.format import parse_adapter

    fld = NerfField(FieldConfig(log2_hashmap_size=12, n_levels=4))
    mods = linear_modules(fld.color_mlp, "color_mlp")
    mgr = AdapterManager()
    mgr.add_target("nerf.color", mods)
    for k, name in enumerate(("a", "b")):
        g = torch.Generator().manual_seed(k)
        t = {}
        for m, lin in mods.items():
            o, i = lin.weight.shape
            t[f"{m}.lora_A"] = torch.randn(8, i, generator=g)
            t[f"{m}.lora_B"] = torch.randn(o, 8, generator=g)
        mgr.preload(name, parse_adapter(t, {}, name=name, version=f"v{k}"), "nerf.color")
    out = {}
    for label, mixes in (("single", ["a", "b"]), ("blend", [{"a": 0.5, "b": 0.5}, {"a": 0.25, "b": 0.75}])):
        ts = []
        for i in range(iters):
            mgr.request("nerf.color", mixes[i % 2])
            t0 = time.perf_counter()
            mgr.commit_pending(None)
            ts.append(time.perf_counter() - t0)
        out[f"commit_{label}_us"] = statistics.median(ts[iters // 10:]) * 1e6
    ts = []
    for i in range(iters):
        t0 = time.perf_counter()
        mgr.commit_pending(None)  # nothing pending: the per-frame cost when no swap is asked
        ts.append(time.perf_counter() - t0)
    out["commit_idle_us"] = statistics.median(ts) * 1e6
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--iters", type=int, default=2000)
    args = ap.parse_args(argv)
    import os

    print(f"cpu cores: {os.cpu_count()}, frames: {args.frames}, frame {args.size}x{args.size}")
    for iso in ("inline", "thread"):
        med, p99 = bench_dispatch(iso, args.frames, args.size)
        print(f"dispatch, 10 plugins, {iso:<6}: median {med:.3f} ms/frame, p99 {p99:.3f} ms/frame")
    for k, v in bench_commit(args.iters).items():
        print(f"{k}: {v:.1f} us")


if __name__ == "__main__":
    main()
