"""CPU kernels compiled with numba: the fast path where there is no GPU.

Each module mirrors a torch reference in ``latentscape.kernels.reference`` (named in its
docstring) and is checked against it in ``tests/test_kernels_cpu.py``; ``ns_hashgrid`` (nerfstudio's
torch hash encoding, for imported scenes) mirrors ``latentscape.field.nerfacto.TorchHashEncoding``
and is checked in ``tests/test_nerfstudio_import.py``. numba is a
dependency of the package; where it cannot be installed the ``cpu`` backend is
unavailable and ``auto`` falls back to the torch references.

Compiled functions are cached on disk (``cache=True``), so the compile cost (a few
seconds a kernel) is paid once per machine.
"""

from __future__ import annotations


def numba_problem() -> str | None:
    """Why the numba kernels cannot run here, or None."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return "numba is not installed (pip install numba)"
    return None
