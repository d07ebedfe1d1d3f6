"""A student stylizer exported to ONNX (``latentscape export``), run by onnxruntime.

``OnnxStylizer.load(path)`` takes ``student.onnx`` (fp32 or int8), or the folder
``latentscape export`` wrote (it prefers ``student.int8.onnx`` when both are there
only if asked: ``int8=True``). The exported graph wants H and W to be multiples of
``2**downsample`` (recorded in the model's metadata as ``multiple``); frames of any
size are padded here as :class:`~latentscape.stylize.student.StudentNet` pads them
and cropped back. onnxruntime is imported only when a model is loaded
(``pip install 'latentscape[stylize]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from latentscape.errors import ConfigError, WeightsError
from latentscape.stylize.base import as_batch, pad_to_multiple

FP32_NAME = "student.onnx"
INT8_NAME = "student.int8.onnx"


def is_onnx_path(path: str | Path) -> bool:
    """True for a ``.onnx`` file or a folder holding an exported student."""
    p = Path(path)
    if p.suffix == ".onnx":
        return True
    return p.is_dir() and ((p / FP32_NAME).is_file() or (p / INT8_NAME).is_file())


def resolve_onnx(path: str | Path, *, int8: bool | None = None) -> Path:
    """The .onnx file ``path`` names: itself, or ``student.onnx`` / ``student.int8.onnx`` in a folder
    (None: fp32 when present, else int8)."""
    p = Path(path)
    if p.is_dir():
        order = [INT8_NAME] if int8 else [FP32_NAME] if int8 is False else [FP32_NAME, INT8_NAME]
        for name in order:
            if (p / name).is_file():
                return p / name
        raise WeightsError(f"no {' or '.join(order)} in this folder", path=p,
                           hint="write one with `latentscape export SCENE --target onnx --out DIR`")
    if not p.is_file():
        raise WeightsError("ONNX stylizer file does not exist", path=p,
                           hint="write one with `latentscape export SCENE --target onnx --out DIR`")
    return p


def ort_session(path: Path, *, threads: int | None = None, spinning: bool = True) -> Any:
    """An onnxruntime CPU InferenceSession; a missing onnxruntime or a bad file is a typed error.

    ``spinning=False``: the worker threads sleep between runs instead of busy-waiting. Run
    alone, spinning is faster (demo student at 256 px, 2 cores: 38.8 vs 55.9 ms); inside a
    frame loop the spinning threads take the cores the NeRF's numba kernels need (viewer
    at 128 px: layers 13-18 ms instead of 6, stylize 20-23 ms instead of 14-16)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ConfigError("running an ONNX stylizer needs onnxruntime",
                          hint="pip install 'latentscape[stylize]'") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"onnxruntime cannot load this model: {first}", path=path,
                           hint="export it again with `latentscape export`") from None


@dataclass
class OnnxStylizer:
    """A :class:`~latentscape.stylize.base.Stylizer` that runs an exported student in onnxruntime (CPU)."""

    session: Any
    multiple: int
    version: str = "unversioned"
    name: str = "student-onnx"

    @classmethod
    def load(cls, path: str | Path, *, int8: bool | None = None, threads: int | None = None,
             spinning: bool = True) -> "OnnxStylizer":
        """``spinning``: see :func:`ort_session` (False in a frame loop)."""
        from latentscape.stylize.student import file_sha256

        p = resolve_onnx(path, int8=int8)
        sess = ort_session(p, threads=threads, spinning=spinning)
        meta = sess.get_modelmeta().custom_metadata_map
        inputs = sess.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise WeightsError(f"not an exported student: expected one [N,3,H,W] input, got "
                               f"{[(i.name, i.shape) for i in inputs]}", path=p,
                               hint="export it with `latentscape export SCENE --target onnx`")
        try:
            multiple = int(meta.get("multiple", "1"))
        except ValueError:
            raise WeightsError(f"bad 'multiple' metadata {meta.get('multiple')!r}", path=p) from None
        return cls(session=sess, multiple=max(1, multiple), version=file_sha256(p)[:16], name=f"onnx:{p.name}")

    def run_numpy(self, x: np.ndarray) -> np.ndarray:
        """``[N,3,H,W]`` float32 with H, W multiples of ``multiple`` -> same shape."""
        name = self.session.get_inputs()[0].name
        return self.session.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    @torch.inference_mode()
    def __call__(self, frame: Tensor) -> Tensor:  # [3,H,W] or [N,3,H,W] -> same
        x, single = as_batch(frame)
        xp, h, w = pad_to_multiple(x.detach().float().cpu(), self.multiple)
        y = torch.from_numpy(self.run_numpy(xp.numpy()))[..., :h, :w].clamp(0, 1)
        y = y.to(frame.device, frame.dtype)
        return y[0] if single else y
