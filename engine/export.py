"""Kiosk exports: a scene's student stylizer and GAN synthesis network as ONNX (fp32 or int8).

``export_scene(scene, target, out)`` writes through :func:`latentscape.outputs.staged`: a
temporary folder beside ``out`` renamed into place at the end (a failed export leaves
nothing behind), and ``force`` replaces only a folder latentscape wrote.

- ``onnx``: ``student.onnx`` (dynamic N, H, W; H and W multiples of ``2**downsample``,
  which :class:`latentscape.stylize.onnx.OnnxStylizer` pads to) and, per generator,
  ``gan-<name>.onnx`` = ``synthesis(ws)`` with noise mode ``const``. Each export is run
  by onnxruntime on sample inputs and compared to torch; ``export.json`` records the
  max abs differences.
- ``onnx-int8``: the same plus ``student.int8.onnx``, statically quantized
  (``onnxruntime.quantization.quantize_static``, QDQ, per-channel uint8 weights and uint8
  activations: signed int8 weights saturate in the u8s8 kernels of CPUs without VNNI, which
  cost 25 dB on the demo student: 17.9 dB vs fp32 instead of 43.2) with calibration frames rendered along the scene's camera path; the
  int8-vs-fp32 PSNR and onnxruntime latency at 256 and 512 go into ``export.json``.
- ``tensorrt``: needs CUDA and the ``tensorrt`` package; without them a one-line
  :class:`ExportError`.

The student exports with the TorchScript-based exporter (``dynamo=False``: 6 s instead
of 30 s, and dynamic H/W work); the StyleGAN3 synthesis network needs the dynamo
exporter (the TorchScript one cannot export the modulated grouped conv in
filtered_lrelu's reference) and opset 20 (``affine_grid`` of the input layer).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from latentscape.errors import ConfigError, ExportError

TARGETS = ("onnx", "onnx-int8", "tensorrt")
OPSET = 20


def check_target(target: str) -> None:
    """Unsupported targets, and tensorrt without CUDA/TensorRT, fail before any work."""
    if target not in TARGETS:
        raise ExportError(f"unsupported export target {target!r}", hint=f"use one of {', '.join(TARGETS)}")
    if target == "tensorrt":
        missing = []
        if not torch.cuda.is_available():
            missing.append("an NVIDIA GPU with CUDA (torch.cuda.is_available() is False)")
        try:
            import tensorrt  # noqa: F401
        except ImportError:
            missing.append("the tensorrt Python package (pip install tensorrt)")
        if missing:
            raise ExportError(f"target tensorrt needs {' and '.join(missing)}",
                              hint="export --target onnx here and build the engine on the GPU machine")


def _deps() -> None:
    for mod, what in (("onnx", "onnx"), ("onnxruntime", "onnxruntime")):
        try:
            __import__(mod)
        except ImportError:
            raise ConfigError(f"exporting needs {what}", hint="pip install 'latentscape[export]'") from None


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse <= 1e-12 else -10 * math.log10(mse)


def export_student(net: torch.nn.Module, path: Path, *, multiple: int, sample: torch.Tensor) -> None:
    """``net`` -> ONNX with dynamic N, H, W (metadata ``multiple``)."""
    import onnx

    net = net.eval()
    dyn = {0: "n", 2: "h", 3: "w"}
    with torch.no_grad(), warnings.catch_warnings():  # tracer chatter about pad_to_multiple's branch
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (sample,), str(path), dynamo=False, opset_version=OPSET, input_names=["frame"],
                          output_names=["stylized"], dynamic_axes={"frame": dyn, "stylized": dyn})
    model = onnx.load(str(path))
    entry = model.metadata_props.add()
    entry.key, entry.value = "multiple", str(multiple)
    onnx.save(model, str(path))


def export_synthesis(G: torch.nn.Module, path: Path, *, noise_mode: str = "const") -> None:
    """``G.synthesis(ws, noise_mode)`` -> ONNX (input ``ws`` [1, num_ws, w_dim])."""

    class _Synthesis(torch.nn.Module):
        def __init__(self, syn):
            super().__init__()
            self.syn = syn

        def forward(self, ws):
            return self.syn(ws, noise_mode=noise_mode)

    ws = torch.zeros(1, G.num_ws, G.w_dim)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(_Synthesis(G.synthesis).eval(), (ws,), dynamo=True, opset_version=OPSET,
                                    input_names=["ws"], output_names=["image"], verbose=False)
    program.save(str(path))


def max_abs_diff(session, feeds: list[dict], reference: Callable[[dict], np.ndarray]) -> float:
    worst = 0.0
    for feed in feeds:
        got = session.run(None, feed)[0]
        want = reference(feed)
        if got.shape != want.shape:
            raise ExportError(f"onnxruntime output shape {got.shape} != torch {want.shape}")
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


class _Frames:
    """A CalibrationDataReader over ``[1,3,H,W]`` float32 arrays."""

    def __init__(self, name: str, frames: list[np.ndarray]):
        self.name, self.frames, self.i = name, frames, 0

    def get_next(self):
        if self.i >= len(self.frames):
            return None
        self.i += 1
        return {self.name: self.frames[self.i - 1]}

    def rewind(self):
        self.i = 0


def quantize_student(fp32: Path, int8: Path, calibration: list[np.ndarray]) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = fp32.with_name(fp32.stem + ".pre.onnx")
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    try:
        quantize_static(str(pre), str(int8), _Frames("frame", calibration), quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
                        calibrate_method=CalibrationMethod.MinMax)
    finally:
        pre.unlink(missing_ok=True)


def latency(sessions: dict, sizes=(256, 512), repeats: int = 15) -> dict:
    """Median onnxruntime latency (ms) of each session at each size, interleaved so load hits both alike."""
    out: dict = {}
    rng = np.random.default_rng(0)
    for size in sizes:
        x = rng.random((1, 3, size, size), dtype=np.float32)
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for s in sessions.values():  # warm-up
            s.run(None, {"frame": x})
        for _ in range(repeats):
            for k, s in sessions.items():
                t = time.perf_counter()
                s.run(None, {"frame": x})
                times[k].append((time.perf_counter() - t) * 1000)
        out[str(size)] = {k: round(statistics.median(v), 2) for k, v in times.items()}
        if "fp32" in times and "int8" in times:
            out[str(size)]["speedup"] = round(out[str(size)]["fp32"] / out[str(size)]["int8"], 2)
    return out


def _student_metadata(path: Path) -> dict:
    from latentscape.stylize.student import student_paths

    try:
        return json.loads(student_paths(path)[1].read_text()).get("metadata") or {}
    except (OSError, ValueError):
        return {}


def _teacher_drop(net, fp32, int8, frames: list[np.ndarray]) -> dict:
    """PSNR of the fp32 and int8 students against the teacher named in the student's metadata
    (``multistyle26:K`` etc.) on ``frames``; the drop is fp32 - int8."""
    meta = getattr(net, "metadata", None) or {}
    spec = meta.get("teacher")
    if not spec:
        return {"skipped": "the student's json names no teacher"}
    try:
        from latentscape.stylize.teachers import teacher_from_spec

        teacher = teacher_from_spec(spec)
        a, b = [], []
        for x in frames:
            t = teacher(torch.from_numpy(x)).numpy()
            a.append(_psnr(fp32.run(None, {"frame": x})[0], t))
            b.append(_psnr(int8.run(None, {"frame": x})[0], t))
    except Exception as err:  # a teacher that cannot load here only costs this measurement
        return {"skipped": f"teacher {spec} unavailable: {str(err).splitlines()[0][:200] if str(err) else type(err).__name__}"}
    return {"teacher": spec, "psnr_fp32_db": round(statistics.mean(a), 3), "psnr_int8_db": round(statistics.mean(b), 3),
            "drop_db": round(statistics.mean(a) - statistics.mean(b), 3), "frames": len(frames)}


def calibration_frames(scene_path: Path, size: int, count: int) -> list[torch.Tensor]:
    """``2 * count`` frames at ``size`` spread along the scene's camera path (no stylizer, no plugins):
    even ones calibrate, odd ones measure."""
    from latentscape.session import CameraSpec, Session

    with Session.open(scene_path, stylize=False, scene_plugins=False,
                      cameras=CameraSpec(width=size, height=size)) as s:
        n = len(s.path.cameras)
        idx = sorted({round(i * n / (2 * count)) % n for i in range(2 * count)})
        return [torch.from_numpy(np.ascontiguousarray(s.render(i).rgb)).permute(2, 0, 1).float() / 255 for i in idx]


def export_scene(scene: str | Path, target: str, out: str | Path, *, force: bool = False, calibration: int = 8,
                 parts: tuple[str, ...] = ("student", "generators"), bench_sizes=(256, 512),
                 log: Callable[[str], None] = print) -> dict:
    """Export ``scene``'s student (and generators) to ``out``; returns what export.json holds."""
    check_target(target)
    if target == "tensorrt":  # CUDA and tensorrt are present, but the engine build is not written yet
        raise ExportError("building a TensorRT engine is not implemented in latentscape yet",
                          hint="export --target onnx, then: trtexec --onnx=DIR/student.onnx --fp16 --saveEngine=student.plan")
    _deps()
    import onnxruntime as ort

    from latentscape.scene.bundle import load_scene
    from latentscape.stylize.onnx import FP32_NAME, INT8_NAME, ort_session
    from latentscape.stylize.student import load_student
    from latentscape.texture.stylegan3 import load_generator

    from latentscape.outputs import check_output, staged

    out = Path(out)
    check_output(out, force=force, kind="dir")  # refuses before any work
    sc = load_scene(scene)
    scene_path = Path(sc.path)
    report: dict = {"target": target, "scene": str(scene_path), "opset": OPSET, "torch": torch.__version__,
                    "onnxruntime": ort.__version__, "models": {}, "skipped": {}}
    lock = scene_path / "scene.lock"
    if lock.is_file():
        from latentscape.scene.lock import sha256_file

        report["scene_lock_sha256"] = sha256_file(lock)
    # Written under a hidden temporary, renamed with the output marker; a failure or a full
    # disk (one OutputError line) leaves nothing.
    with staged(out, kind="dir", force=force, command="export") as tmp:
        size = int(sc.config.get("render", {}).get("width", 256))
        styl = sc.config.get("stylizer")
        if "student" in parts:
            if not styl or "path" not in styl:
                report["skipped"]["student"] = "the scene has no [stylizer]"
            else:
                net = load_student(scene_path / styl["path"])
                net.metadata = _student_metadata(scene_path / styl["path"])
                multiple = 2 ** net.config.downsample
                size = max(multiple, size - size % multiple)
                log(f"exporting student ({net.num_params} parameters) -> {FP32_NAME}")
                export_student(net, tmp / FP32_NAME, multiple=multiple, sample=torch.rand(1, 3, size, size))
                frames = calibration_frames(scene_path, size, calibration)
                calib = [f[None].numpy() for f in frames[0::2]]
                held = [f[None].numpy() for f in frames[1::2]] or calib
                sess = ort_session(tmp / FP32_NAME)
                odd = torch.rand(1, 3, multiple * 5, multiple * 7, generator=torch.Generator().manual_seed(0)).numpy()
                feeds = [{"frame": x} for x in (*held, odd)]
                with torch.no_grad():
                    ref = lambda feed: net(torch.from_numpy(feed["frame"])).numpy()  # noqa: E731
                    diff = max_abs_diff(sess, feeds, ref)
                entry = {"file": FP32_NAME, "parameters": net.num_params, "input": f"frame [N,3,H,W], H,W multiple of {multiple}",
                         "max_abs_diff_vs_torch": diff, "checked_on": f"{len(held)} scene frames at {size} + random {odd.shape[2]}x{odd.shape[3]}"}
                report["models"]["student"] = entry
                log(f"  onnxruntime vs torch: max abs diff {diff:.2e}")
                if diff > 1e-3:
                    raise ExportError(f"exported student differs from torch by {diff:.3g} (> 1e-3)")
                if target == "onnx-int8":
                    log(f"quantizing student with {len(calib)} calibration frames -> {INT8_NAME}")
                    quantize_student(tmp / FP32_NAME, tmp / INT8_NAME, calib)
                    q = ort_session(tmp / INT8_NAME)
                    rows = []
                    for x in held:
                        a = sess.run(None, {"frame": x})[0]
                        b = q.run(None, {"frame": x})[0]
                        rows.append(_psnr(b, a))
                    vs_teacher = _teacher_drop(net, sess, q, held)
                    bench = latency({"fp32": ort_session(tmp / FP32_NAME), "int8": q}, sizes=bench_sizes)
                    report["models"]["student_int8"] = {
                        "file": INT8_NAME, "calibration_frames": len(calib), "eval_frames": len(held),
                        "psnr_int8_vs_fp32_db": round(statistics.mean(rows), 2),
                        "psnr_int8_vs_fp32_min_db": round(min(rows), 2), "vs_teacher": vs_teacher,
                        "latency_ms": bench, "cpu_threads": os.cpu_count(),
                        "loadavg_1min": round(os.getloadavg()[0], 2)}
                    log(f"  int8 vs fp32: {statistics.mean(rows):.2f} dB PSNR; vs teacher: "
                        f"{vs_teacher}; latency (ms) {bench}")
        if "generators" in parts:
            for name, g in (sc.config.get("generators") or {}).items():
                G = load_generator(scene_path / g["path"])
                fname = f"gan-{name}.onnx"
                log(f"exporting generator {name!r} synthesis (noise_mode const) -> {fname}")
                try:
                    export_synthesis(G, tmp / fname)
                except Exception as err:  # the exporter raises many types; report the op and go on
                    msg = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
                    report["skipped"][f"gan-{name}"] = f"synthesis did not export: {type(err).__name__}: {msg}"
                    log(f"  skipped: {report['skipped'][f'gan-{name}']}")
                    continue
                sess = ort_session(tmp / fname)
                gen = torch.Generator().manual_seed(0)
                feeds = [{"ws": torch.randn(1, G.num_ws, G.w_dim, generator=gen).numpy()} for _ in range(3)]
                with torch.no_grad():
                    ref = lambda feed: G.synthesis(torch.from_numpy(feed["ws"]), noise_mode="const").numpy()  # noqa: E731
                    diff = max_abs_diff(sess, feeds, ref)
                report["models"][f"gan-{name}"] = {"file": fname, "input": f"ws [1,{G.num_ws},{G.w_dim}]",
                                                    "noise_mode": "const", "max_abs_diff_vs_torch": diff,
                                                    "checked_on": "3 random ws"}
                log(f"  onnxruntime vs torch: max abs diff {diff:.2e}")
        if not report["models"]:
            raise ExportError("nothing to export: " + "; ".join(f"{k}: {v}" for k, v in report["skipped"].items()),
                              path=scene_path / "scene.toml")
        (tmp / "export.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
