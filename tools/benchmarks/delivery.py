"""Delivery benchmarks: viewer frame rate, stream latency, memory under a slow consumer.

    python -m latentscape.tools.benchmarks.delivery [--soak-s 60] [--size 256] [--json out.json]

1. viewer: the viewer's headless core on the demo scene at SIZE x SIZE, at full
   resolution, then holding ``--target-fps`` with dynamic resolution (the window adds
   one texture upload per frame; it is not measured here);
2. latency: frame handed to a sink -> encoded packet in the muxer (RTMP to a local
   nginx-rtmp when nginx and its module are installed, else fragmented MP4), and frame
   -> its HLS segment listed in the playlist;
3. soak: frames at 30 fps into a sink whose consumer takes 200 ms per frame, for
   ``--soak-s`` seconds (default 60, not the 10 minutes of an installation); RSS is
   sampled each second after a 5 s warm-up and must stay within 5 %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def bench_viewer(size: int, frames: int, target_fps: float, dyn_s: float, stylizer=None) -> dict:
    from latentscape.viewer import PER_PIXEL_STAGES, ViewerCore

    core = ViewerCore(None, width=size, height=size, target_fps=target_fps, stylizer=stylizer)
    cam = core.rig.camera(size, size)
    core.step(cam)  # warm-up (the first frame also waits for the first GAN texture)
    stages = core.loop.stages
    made0 = sum(getattr(getattr(s, "_worker", None), "synthesised", 0) for s in stages)
    totals: dict[str, float] = {}
    t0 = time.perf_counter()
    for _ in range(frames):
        f = core.step(cam)
        for k, v in f.context.stats.items():
            totals[k] = totals.get(k, 0.0) + v
    full_s = time.perf_counter() - t0
    full_fps = frames / full_s
    made = sum(getattr(getattr(s, "_worker", None), "synthesised", 0) for s in stages) - made0
    stage_ms = {k: round(v / frames, 1) for k, v in totals.items()}
    scaled = sum(v for k, v in stage_ms.items() if k in PER_PIXEL_STAGES)
    full_ms = 1000 / full_fps
    core.dynres.update(full_ms, fixed_ms=full_ms - scaled)  # start the dynamic phase where full resolution asks
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < dyn_s:
        core.rig.drag(5, 0)
        core.step()
        n += 1
    dyn_fps = n / (time.perf_counter() - t0)
    out = {"size": size, "full_res_fps": round(full_fps, 3), "full_res_ms": round(full_ms, 1),
           "stage_ms": stage_ms, "live_textures_per_s": round(made / full_s, 2),
           "target_fps": target_fps, "dynamic_fps": round(dyn_fps, 2), "dynamic_factor": round(core.dynres.factor, 3),
           "dynamic_render_size": list(core.last_frame.rgb.shape[:2])}
    core.close()
    return out


def _timed_sink(sink):
    """Wrap a stream sink so that each frame's write and mux times are recorded."""
    written: dict[int, float] = {}
    muxed: dict[int, float] = {}
    send, write = sink._send, sink.write

    def timed_write(rgb):
        written[sink._index] = time.perf_counter()
        write(rgb)

    def timed_send(index, rgb):
        send(index, rgb)
        muxed[index + getattr(sink, "_base", 0)] = time.perf_counter()

    sink.write, sink._send = timed_write, timed_send
    return written, muxed


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def bench_latency(tmp: Path, size: int = 128, fps: float = 24.0, seconds: float = 6.0) -> dict:
    from latentscape.sinks.stream import FragmentedMp4Sink, HlsSink, RtmpSink

    frames = [np.random.default_rng(i).integers(0, 255, (size, size, 3), dtype=np.uint8) for i in range(8)]
    results = {}
    server = None
    try:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
        from test_streams import Nginx, _nginx_skip_reason  # the same nginx-rtmp the tests start

        if _nginx_skip_reason() is None:
            server = Nginx(tmp / "nginx")
            server.start()
    except Exception as err:  # noqa: BLE001 - fall back to a file stream
        results["rtmp_note"] = f"no nginx-rtmp: {err}"
        server = None
    sink = RtmpSink(server.url("bench"), queue_size=64) if server else FragmentedMp4Sink(tmp / "lat.fmp4.mp4", queue_size=64)
    written, muxed = _timed_sink(sink)
    hls = HlsSink(tmp / "hls" / "s.m3u8", segment_s=1.0, queue_size=64)
    hls_written: list[float] = []
    seg_lat: list[float] = []
    sink.open(size, size, fps)
    hls.open(size, size, fps)
    seen = 0
    n = int(seconds * fps)
    t_start = time.perf_counter()
    for i in range(n):
        rgb = frames[i % len(frames)]
        sink.write(rgb)
        hls_written.append(time.perf_counter())
        hls.write(rgb)
        segs = hls.path.read_text().count("#EXTINF") if hls.path.exists() else 0
        while seen < segs:  # segment k holds frames k*fps .. (k+1)*fps-1; its first frame's wait
            first = int(seen * fps * hls.segment_s)
            seg_lat.append(time.perf_counter() - hls_written[first])
            seen += 1
        time.sleep(max(0.0, t_start + (i + 1) / fps - time.perf_counter()))
    sink.close()
    hls.close()
    if server:
        server.stop()
    lat = [1000 * (muxed[i] - written[i]) for i in muxed if i in written]
    results.update({
        "sink": type(sink).__name__, "size": size, "fps": fps, "frames": n,
        "write_to_packet_ms_p50": round(statistics.median(lat), 2) if lat else None,
        "write_to_packet_ms_p95": round(_pct(lat, 0.95), 2) if lat else None,
        "dropped": sink.stats["dropped"],
        "hls_segment_s": hls.segment_s,
        "hls_first_frame_to_segment_listed_s_median": round(statistics.median(seg_lat), 3) if seg_lat else None,
    })
    return results


def bench_soak(tmp: Path, seconds: float, size: int = 256, fps: float = 30.0, consumer_s: float = 0.2) -> dict:
    from latentscape.sinks.stream import FragmentedMp4Sink

    class SlowConsumer(FragmentedMp4Sink):
        def _send(self, index, rgb):
            time.sleep(consumer_s)
            super()._send(index, rgb)

    sink = SlowConsumer(tmp / "soak.fmp4.mp4", queue_size=8, overwrite=True)
    sink.open(size, size, fps)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for i in range(4)]
    samples: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    i = 0
    next_sample = t0 + 5.0
    while time.perf_counter() - t0 < seconds:
        sink.write(frames[i % 4])
        i += 1
        now = time.perf_counter()
        if now >= next_sample:
            samples.append((now - t0, rss_mb()))
            next_sample += 1.0
        time.sleep(max(0.0, t0 + i / fps - time.perf_counter()))
    sink.close()
    rss = [r for _, r in samples]
    base = rss[0] if rss else float("nan")
    return {"seconds": seconds, "size": size, "fps": fps, "consumer_s_per_frame": consumer_s, "frames": i,
            "dropped": sink.stats["dropped"], "encoded": sink.stats["encoded"],
            "rss_mb_first": round(base, 1), "rss_mb_last": round(rss[-1], 1) if rss else None,
            "rss_mb_max": round(max(rss), 1) if rss else None,
            "rss_max_growth_pct": round(100 * (max(rss) - base) / base, 2) if rss else None,
            "flat_within_5pct": bool(rss) and max(rss) <= base * 1.05}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=1, help="full-resolution viewer frames to time")
    ap.add_argument("--target-fps", type=float, default=10.0)
    ap.add_argument("--dyn-s", type=float, default=20.0, help="seconds of dynamic-resolution viewing")
    ap.add_argument("--soak-s", type=float, default=60.0)
    ap.add_argument("--skip", nargs="*", default=[], choices=["viewer", "latency", "soak"])
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    import torch

    out = {"cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if "viewer" not in a.skip:
            out["viewer"] = bench_viewer(a.size, a.frames, a.target_fps, a.dyn_s)
            print("viewer", json.dumps(out["viewer"]), flush=True)
        if "latency" not in a.skip:
            out["latency"] = bench_latency(tmp)
            print("latency", json.dumps(out["latency"]), flush=True)
        if "soak" not in a.skip:
            out["soak"] = bench_soak(tmp, a.soak_s)
            print("soak", json.dumps(out["soak"]), flush=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
