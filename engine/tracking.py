"""Visual run tracking in MLflow (``pip install 'latentscape[track]'``).

``latentscape train|distill|render`` and ``make_adapter`` take ``--track`` (or
``LATENTSCAPE_TRACK=1``) and log one MLflow run: parameters, metrics over time, the
scene.lock digest and the digest of every file it lists (seed files, adapters,
weights) as tags, and images: a contact sheet of held-out views (rendered | ground
truth) with per-view PSNR for ``train``, a short preview MP4 for ``render``, a
before/after sheet for adapters. Runs go to ``./mlruns`` unless ``MLFLOW_TRACKING_URI``
names another store or a tracking server.

A missing extra or an unusable tracking URI is a one-line :class:`TrackingError`,
raised before any work starts. mlflow is imported only when tracking is on.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from latentscape.errors import TrackingError
from latentscape.scene.lock import sha256_file

ENV_FLAG = "LATENTSCAPE_TRACK"


def wanted(flag: bool) -> bool:
    """``--track`` given, or ``LATENTSCAPE_TRACK`` set to 1/true/yes."""
    return flag or os.environ.get(ENV_FLAG, "").strip().lower() in ("1", "true", "yes", "on")


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else ``./mlruns`` (a local file store)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or Path("mlruns").resolve().as_uri()


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise TrackingError("--track needs mlflow", hint="pip install 'latentscape[track]'") from None
    return mlflow


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


def client():
    """An ``MlflowClient`` on :func:`tracking_uri`, checked to answer (one request, no retries)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    mlflow = _mlflow()
    uri = tracking_uri()
    if uri.startswith("file:") or "://" not in uri:
        # mlflow 3 keeps the file store in "maintenance mode" and refuses it unless asked;
        # it still works, and ./mlruns needs no database. sqlite:///mlflow.db is the alternative.
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        mlflow.set_tracking_uri(uri)
        c = mlflow.MlflowClient(tracking_uri=uri)
        c.search_experiments(max_results=1)
    except Exception as err:  # mlflow raises MlflowException, requests errors, ValueError ...
        raise TrackingError(f"tracking URI {uri!r} is not usable: {_first_line(err)}",
                            hint="start the server, fix MLFLOW_TRACKING_URI, or unset it to log to ./mlruns") from None
    return c




def scene_tags(scene: str | Path) -> dict[str, str]:
    """``scene.lock`` sha256 and, per file the lock lists (weights, seeds, adapters), its sha256."""
    folder = Path(scene)
    tags: dict[str, str] = {"scene": folder.resolve().name}
    lock = folder / "scene.lock"
    if not lock.is_file():
        return tags
    tags["scene.lock"] = sha256_file(lock)
    try:
        import tomllib

        doc = tomllib.loads(lock.read_text())
    except (OSError, ValueError):
        return tags

    def walk(node: Any, prefix: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
                    tags[f"sha256:{prefix}{k}"] = v
                else:
                    walk(v, f"{prefix}{k}/" if not isinstance(v, (str, int, float)) else prefix)

    walk(doc)
    return tags


def file_tags(paths: Sequence[str | Path], prefix: str = "sha256:") -> dict[str, str]:
    out = {}
    for p in paths:
        p = Path(p)
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        for f in files:
            if f.is_file() and f.suffix in (".safetensors", ".json", ".onnx", ".glb", ".png", ".toml", ".lock"):
                out[f"{prefix}{f.relative_to(p) if p.is_dir() else f.name}"] = sha256_file(f)
    return out


# -- images ------------------------------------------------------------------


def to_uint8(img: Any) -> np.ndarray:
    """``[H,W,3]`` uint8 from a uint8/float array or a torch tensor (``[3,H,W]`` or ``[H,W,3]``)."""
    a = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (3, 4):
        a = a.transpose(1, 2, 0)
    a = a[..., :3]
    if a.dtype != np.uint8:
        a = (np.clip(a.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a)


def contact_sheet(rows: Sequence[Sequence[Any]], labels: Sequence[str] = (), header: Sequence[str] = (),
                  cell: int = 160) -> "Image.Image":  # noqa: F821
    """A grid image: one row per entry of ``rows`` (each a list of images), a label under each row."""
    from PIL import Image, ImageDraw

    cols = max(len(r) for r in rows)
    pad, text_h = 4, 14
    top = text_h if header else 0
    sheet = Image.new("RGB", (cols * (cell + pad) + pad, top + len(rows) * (cell + pad + text_h) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for j, h in enumerate(header):
        draw.text((pad + j * (cell + pad), 1), str(h), fill="black")
    for i, row in enumerate(rows):
        y = top + pad + i * (cell + pad + text_h)
        for j, img in enumerate(row):
            im = Image.fromarray(to_uint8(img))
            im.thumbnail((cell, cell), Image.Resampling.NEAREST if max(im.size) < cell else Image.Resampling.LANCZOS)
            if max(im.size) < cell:
                s = cell / max(im.size)
                im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.Resampling.NEAREST)
            sheet.paste(im, (pad + j * (cell + pad), y))
        if i < len(labels):
            draw.text((pad, y + cell + 1), str(labels[i]), fill="black")
    return sheet


def psnr(a: Any, b: Any) -> float:
    x = to_uint8(a).astype(np.float64) / 255
    y = to_uint8(b).astype(np.float64) / 255
    mse = float(np.mean((x - y) ** 2))
    return 100.0 if mse <= 1e-12 else -10 * math.log10(mse)


def heldout_views(scene: str | Path, max_views: int = 4) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """Render up to ``max_views`` of the bundle's ``heldout/`` views: (name, rendered, ground truth, PSNR)."""
    import torch

    from latentscape.dataset import load_dataset
    from latentscape.render.renderer import render_camera
    from latentscape.scene import load_scene
    from latentscape.training import composite_on

    sc = load_scene(scene)
    if not (sc.path / "heldout").is_dir():
        return []
    ds = load_dataset(sc.path / "heldout", require_train=False)
    frames = ds.split("test")
    step = max(1, len(frames) // max_views)
    out = []
    with torch.no_grad():
        for k, fr in enumerate(frames[::step][:max_views]):
            r = render_camera(sc.field, sc.grid, fr.camera, sc.render_config, sc.background,
                              world_to_field=(sc.center, sc.scale))
            gt = composite_on(fr.image, sc.background).to(r.rgb.device)
            rgb, truth = to_uint8(r.rgb), to_uint8(gt)
            out.append((getattr(fr, "name", f"view{k}"), rgb, truth, psnr(rgb, truth)))
    return out


# -- runs --------------------------------------------------------------------


class Run:
    """One MLflow run (from :func:`run`); every method logs at once."""

    def __init__(self, mlflow, active):
        self.mlflow, self.active = mlflow, active
        self.id = active.info.run_id

    def params(self, params: dict) -> None:
        flat = {k: (json.dumps(v) if isinstance(v, (dict, list, tuple)) else v) for k, v in params.items() if v is not None}
        self.mlflow.log_params({k: str(v)[:6000] for k, v in flat.items()})

    def tags(self, tags: dict) -> None:
        self.mlflow.set_tags({k[:250]: str(v)[:5000] for k, v in tags.items()})

    def metric(self, key: str, value: float, step: int | None = None) -> None:
        if value is not None and math.isfinite(float(value)):
            self.mlflow.log_metric(key, float(value), step=step)

    def metrics(self, values: dict, step: int | None = None) -> None:
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                self.metric(k, v, step)

    def image(self, img, name: str) -> None:
        from PIL import Image

        im = img if isinstance(img, Image.Image) else Image.fromarray(to_uint8(img))
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            im.save(p)
            self.mlflow.log_artifact(str(p))

    def file(self, path: str | Path, folder: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=folder)

    def json(self, data: dict, name: str) -> None:
        self.mlflow.log_dict(data, name)


@contextmanager
def run(command: str, enabled: bool, *, experiment: str = "latentscape", params: dict | None = None,
        tags: dict | None = None) -> Iterator[Run | None]:
    """``with run("train", wanted(track), params=...) as r:`` -> a :class:`Run`, or None when
    tracking is off. The run ends FAILED if the body raises."""
    if not enabled:
        yield None
        return
    client()  # fails fast, one line
    mlflow = _mlflow()
    try:
        mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME") or experiment)
        active = mlflow.start_run(run_name=command)
    except Exception as err:
        raise TrackingError(f"cannot start an MLflow run at {tracking_uri()!r}: {_first_line(err)}") from None
    r = Run(mlflow, active)
    status = "FAILED"
    try:
        r.tags({"latentscape.command": command, **(tags or {})})
        if params:
            r.params(params)
        yield r
        status = "FINISHED"
    finally:
        mlflow.end_run(status=status)


# -- compare -----------------------------------------------------------------


def side_by_side(rows: Sequence[tuple[str, Sequence[np.ndarray]]], left: str, right: str) -> "Image.Image":  # noqa: F821
    """Rows of (name, [image a, image b]) at their own size: a | b, the name above each row."""
    from PIL import Image, ImageDraw

    pad, text_h = 6, 14
    wa = max(p[0].shape[1] for _, p in rows)
    wb = max(p[1].shape[1] for _, p in rows)
    height = sum(max(p[0].shape[0], p[1].shape[0]) + text_h + pad for _, p in rows) + text_h + pad
    sheet = Image.new("RGB", (wa + wb + 3 * pad, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, 1), left, fill="black")
    draw.text((2 * pad + wa, 1), right, fill="black")
    y = text_h + pad
    for name, (a, b) in rows:
        draw.text((pad, y), name, fill="black")
        y += text_h
        sheet.paste(Image.fromarray(to_uint8(a)), (pad, y))
        sheet.paste(Image.fromarray(to_uint8(b)), (2 * pad + wa, y))
        y += max(a.shape[0], b.shape[0]) + pad
    return sheet


def compare(run_a: str, run_b: str, out: str | Path, *, force: bool = False) -> dict:
    """Side-by-side sheet of the two runs' images (``out/compare.png``) and their metric deltas
    (``out/compare.json``: b - a for every metric both logged)."""
    from PIL import Image

    from latentscape.outputs import check_output, staged

    out = Path(out)
    check_output(out, force=force, kind="dir")  # refuses before any work
    c = client()
    runs = []
    for rid in (run_a, run_b):
        try:
            runs.append(c.get_run(rid))
        except Exception as err:
            raise TrackingError(f"no run {rid!r} at {tracking_uri()!r}: {_first_line(err)}",
                                hint="run ids are in the MLflow UI or `mlflow runs list`") from None
    ma, mb = runs[0].data.metrics, runs[1].data.metrics
    deltas = {k: {"a": ma[k], "b": mb[k], "delta": mb[k] - ma[k]} for k in sorted(set(ma) & set(mb))}
    images = []
    with tempfile.TemporaryDirectory() as d:
        names = []
        for r in runs:
            names.append({a.path for a in c.list_artifacts(r.info.run_id) if a.path.endswith(".png")})
        common = sorted(names[0] & names[1]) or []
        for name in common:
            pair = []
            for i, r in enumerate(runs):
                local = c.download_artifacts(r.info.run_id, name, str(Path(d) / str(i)))
                pair.append(np.asarray(Image.open(local).convert("RGB")))
            images.append((name, pair))
    report = {"a": run_a, "b": run_b, "command_a": runs[0].data.tags.get("latentscape.command"),
              "command_b": runs[1].data.tags.get("latentscape.command"), "metrics": deltas,
              "only_a": sorted(set(ma) - set(mb)), "only_b": sorted(set(mb) - set(ma)),
              "images": [n for n, _ in images]}
    if images:
        report["sheet"] = str(out / "compare.png")
    with staged(out, kind="dir", force=force, command="compare") as tmp:  # a full disk is one line, nothing left
        if images:
            side_by_side(images, f"A {run_a[:8]}", f"B {run_b[:8]}").save(tmp / "compare.png")
        (tmp / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


# -- previews ----------------------------------------------------------------

from latentscape.sinks.base import FrameSink  # noqa: E402


class PreviewSink(FrameSink):
    """Keeps the first ``max_frames`` frames of a run for :meth:`log_preview` (a short MP4 + a sheet)."""

    def __init__(self, max_frames: int = 48):
        self.max_frames, self.frames, self.fps = max_frames, [], 24.0

    def open(self, width: int, height: int, fps: float) -> None:
        self.fps = fps

    def write(self, rgb: np.ndarray) -> None:
        if len(self.frames) < self.max_frames:
            self.frames.append(np.array(rgb[..., :3], dtype=np.uint8, copy=True))

    def close(self) -> None:
        pass

    def abort(self) -> None:
        self.frames.clear()


def log_preview(r: Run, sink: PreviewSink, name: str = "preview") -> None:
    """``preview.mp4`` (needs PyAV; skipped without it) and ``preview_sheet.png`` (8 frames) of ``sink``."""
    frames = sink.frames
    if not frames:
        return
    h, w = frames[0].shape[:2]
    step = max(1, len(frames) // 8)
    pick = frames[::step][:8]
    r.image(contact_sheet([pick[:4], pick[4:8]] if len(pick) > 4 else [pick], cell=min(256, max(h, w))),
            f"{name}_sheet.png")
    try:
        import av  # noqa: F401
    except ImportError:
        return
    from latentscape.sinks.files import Mp4Sink

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / f"{name}.mp4"
        even = [f[: h - h % 2, : w - w % 2] for f in frames]
        mp4 = Mp4Sink(p, crf=23)
        mp4.open(even[0].shape[1], even[0].shape[0], sink.fps)
        for f in even:
            mp4.write(f)
        mp4.close()
        r.file(p)
