"""latentscape.stylize: the frame stylizer (a distilled student, or few-step diffusion img2img).

The frame loop calls ``frame = stylizer(frame)`` with float RGB ``[3,H,W]`` or
``[N,3,H,W]`` in ``[0,1]``. Build one with :func:`load_stylizer`. Nothing here imports
diffusers or onnxruntime until a stylizer that needs them is loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from latentscape.errors import ConfigError, WeightsError
from latentscape.stylize.base import Stylizer
from latentscape.stylize.student import StudentConfig, StudentNet, StudentStylizer, load_student, save_student

__all__ = ["Stylizer", "StudentConfig", "StudentNet", "StudentStylizer", "load_student", "save_student",
           "load_stylizer"]


def load_stylizer(path: str | Path, *, device: str | torch.device = "cpu", half: bool = False,
                  **diffusion_options) -> Stylizer:
    """Load the stylizer a scene names.

    ``path`` is an exported student (a ``.onnx`` file or a ``latentscape export``
    folder: run by onnxruntime on the CPU), a student (``student.safetensors``/``student.json``, their common
    stem, or the folder ``latentscape distill --out`` wrote) or a diffusers pipeline
    folder (has ``model_index.json``); for the latter ``diffusion_options`` are
    :class:`~latentscape.stylize.diffusion.DiffusionConfig` fields (prompt, strength,
    steps, seed, ...). ``half=True`` runs fp16 (CUDA only).
    """
    p = Path(path)
    from latentscape.stylize.onnx import is_onnx_path

    if is_onnx_path(p):
        if diffusion_options or half:
            raise ConfigError("an ONNX student takes no diffusion options and runs fp32/int8 on the CPU", path=p,
                              hint="drop the diffusion options / half=True")
        from latentscape.stylize.onnx import OnnxStylizer

        return OnnxStylizer.load(p, spinning=False)  # a frame loop: leave the cores to the NeRF between runs
    if p.is_dir() and (p / "model_index.json").is_file():
        from latentscape.stylize.diffusion import DiffusionConfig, DiffusionStylizer

        return DiffusionStylizer.from_folder(p, DiffusionConfig(**diffusion_options), device=device, half=half)
    if diffusion_options:
        raise WeightsError(f"options {sorted(diffusion_options)} apply to a diffusers folder, but this is not one",
                           path=p, hint="a diffusers pipeline folder has a model_index.json")
    return StudentStylizer.load(p, device=device, half=half)
