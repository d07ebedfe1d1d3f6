"""Backend selection for the hot ops: ``auto | torch | cpu | triton | tcnn``.

``torch`` is the reference and runs everywhere. ``cpu`` is the CPU fast path: numba
kernels (``kernels/cpu/``) for the hash grid and the packed marcher/compositor, with
the MLPs on torch's BLAS. ``triton`` needs CUDA (or
``TRITON_INTERPRET=1`` for parity tests on the CPU). ``tcnn`` needs ``tinycudann`` on
CUDA. ``auto`` picks the best available (tcnn > triton > torch) and warns once when it
falls back; an explicitly requested backend that cannot load raises
:class:`~latentscape.errors.BackendError`. The environment variable
``LATENTSCAPE_BACKEND`` overrides a scene's choice.

``auto`` picks ``cpu`` for CPU devices when numba is installed, ``triton`` only for CUDA devices: under ``TRITON_INTERPRET=1`` the
kernels run on the CPU too, but that is for parity tests, so it must be asked for.

:func:`select_ops` returns every hot op of the resolved backend at once
(:class:`Ops`: hash-grid encoding, fused MLP, marcher, compositor); ``NerfField``
and ``render_rays`` take theirs from it.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Callable

import torch

from latentscape.errors import BackendError

BACKENDS = ("auto", "torch", "cpu", "triton", "tcnn")
ENV_VAR = "LATENTSCAPE_BACKEND"

Encoding = Callable[[torch.Tensor, torch.Tensor, object], torch.Tensor]

_warned: set[str] = set()


def requested_backend(scene_choice: str | None = None) -> str:
    """The backend asked for: the environment variable wins over the scene."""
    choice = os.environ.get(ENV_VAR) or scene_choice or "auto"
    if choice not in BACKENDS:
        raise BackendError(f"unknown backend {choice!r}", hint=f"use one of {', '.join(BACKENDS)} (in scene.toml or ${ENV_VAR})")
    return choice


def _triton_problem(device: torch.device | None) -> str | None:
    try:
        import triton  # noqa: F401
    except ImportError:
        return "triton is not installed (pip install 'latentscape[triton]')"
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if not interpret and not torch.cuda.is_available():
        return "triton needs a CUDA device (or TRITON_INTERPRET=1 for CPU parity tests)"
    if device is not None and device.type != "cuda" and not interpret:
        return f"triton kernels run on CUDA tensors, the scene is on {device}"
    try:
        import latentscape.kernels.hashgrid  # noqa: F401
    except ImportError as err:
        return f"the triton kernels failed to import: {err}"
    return None


def _cpu_problem(device: torch.device | None) -> str | None:
    from latentscape.kernels.cpu import numba_problem

    if device is not None and device.type != "cpu":
        return f"the numba kernels run on CPU tensors, the scene is on {device}"
    return numba_problem()


def _tcnn_problem(device: torch.device | None) -> str | None:
    if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        return "tinycudann needs a CUDA device"
    try:
        import tinycudann  # noqa: F401
    except ImportError:
        return "tinycudann is not installed (build it from source: see README, 'CUDA')"
    return None


def resolve_backend(choice: str | None = None, device: torch.device | str | None = None) -> str:
    """Turn a request into the backend that will run, raising or warning as documented."""
    choice = requested_backend(choice)
    device = torch.device(device) if device is not None else None
    problems = {"cpu": _cpu_problem, "triton": _triton_problem, "tcnn": _tcnn_problem}
    if choice == "torch":
        return "torch"
    if choice in problems:
        problem = problems[choice](device)
        if problem:
            raise BackendError(f"backend {choice!r} was requested but cannot load: {problem}",
                               hint=f"install what it needs, or ask for 'auto' or 'torch' (scene.toml or ${ENV_VAR})")
        return choice
    reasons = []
    on_cuda = device.type == "cuda" if device is not None else torch.cuda.is_available()
    if not on_cuda:
        # The CPU: the numba kernels when they load, else the references (no warning:
        # torch is a correct, complete backend there).
        return "cpu" if _cpu_problem(device) is None else "torch"
    for name in ("tcnn", "triton"):
        problem = problems[name](device)
        if problem is None and name == "triton" and not on_cuda:
            problem = "'auto' runs triton only on CUDA (ask for 'triton' to use the CPU interpreter)"
        if problem is None:
            return name
        reasons.append(f"{name}: {problem}")
    on_gpu = device is not None and device.type == "cuda"
    if on_gpu and "auto" not in _warned:
        _warned.add("auto")
        warnings.warn("backend 'auto' fell back to torch (" + "; ".join(reasons) + ")", stacklevel=2)
    return "torch"


def select_encoding(choice: str | None = None, device: torch.device | str | None = None) -> Encoding:
    """The hash-grid encoding function of the resolved backend."""
    backend = resolve_backend(choice, device)
    if backend == "triton":
        from latentscape.kernels.hashgrid import hashgrid_encode as triton_encode

        return triton_encode
    if backend == "tcnn":
        from latentscape.kernels.tcnn import hashgrid_encode as tcnn_encode

        return tcnn_encode
    if backend == "cpu":
        from latentscape.kernels.cpu.hashgrid import hashgrid_encode as cpu_encode

        return cpu_encode
    from latentscape.kernels.reference.hashgrid import hashgrid_encode

    return hashgrid_encode


MLP = Callable[[torch.Tensor, list], torch.Tensor]


@dataclass(frozen=True)
class Ops:
    """The hot ops of one backend, with the contracts of their torch references.

    ``mlp`` is None where the field's own ``nn.Sequential`` modules should run (torch);
    otherwise ``mlp(x, weights)`` with weights in ``nn.Linear`` layout. ``march_next`` and
    ``composite_packed`` are set where the renderer should march packed samples in
    rounds (``kernels.reference.packed`` contracts); otherwise it marches fixed segments
    with ``march_segment`` / ``composite_segment``.
    """

    name: str
    encoding: Encoding
    mlp: MLP | None
    march_segment: Callable
    composite_segment: Callable
    march_next: Callable | None = None
    composite_packed: Callable | None = None
    sample_points: Callable | None = None
    sh_packed: Callable | None = None

    @property
    def packed(self) -> bool:
        return self.march_next is not None


def _triton_mlp(x: torch.Tensor, weights: list) -> torch.Tensor:
    """The fused kernel where it applies (widths up to 128), the reference otherwise."""
    from latentscape.kernels.mlp import MAX_WIDTH, fused_mlp
    from latentscape.kernels.reference.mlp import mlp_reference

    if max(max(w.shape) for w in weights) > MAX_WIDTH:
        return mlp_reference(x, weights)
    return fused_mlp(x, weights)


def select_ops(choice: str | None = None, device: torch.device | str | None = None) -> Ops:
    """Every hot op of the resolved backend.

    torch: the references. cpu: the numba hash grid and packed marcher/compositor
    (``kernels/cpu``), torch MLPs. triton: the Triton kernels for all four. tcnn:
    tinycudann's hash grid; the MLP, marcher and compositor from Triton when it loads,
    else torch.
    """
    from latentscape.kernels.reference import raymarch as ref_raymarch

    backend = resolve_backend(choice, device)
    encoding = select_encoding(backend, device)
    dev = torch.device(device) if device is not None else None
    if backend == "triton" or (backend == "tcnn" and _triton_problem(dev) is None):
        from latentscape.kernels import packed as tri_packed
        from latentscape.kernels import raymarch as tri_raymarch

        # The packed rounds (kernels/packed.py): no per-segment empty samples, one sync per round.
        return Ops(backend, encoding, _triton_mlp, tri_raymarch.march_segment, tri_raymarch.composite_segment,
                   tri_packed.march_next, tri_packed.composite_packed, tri_packed.sample_points, tri_packed.sh_packed)
    if backend == "cpu":
        from latentscape.kernels.cpu import raymarch as cpu_raymarch
        from latentscape.kernels.cpu.sh import sh_packed

        from latentscape.kernels.reference.mlp import mlp_reference

        return Ops(backend, encoding, mlp_reference, ref_raymarch.march_segment, ref_raymarch.composite_segment,
                   cpu_raymarch.march_next, cpu_raymarch.composite_packed, cpu_raymarch.sample_points, sh_packed)
    return Ops(backend, encoding, None, ref_raymarch.march_segment, ref_raymarch.composite_segment)
