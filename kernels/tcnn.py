"""The tinycudann path for the hash grid: ``tcnn.Encoding`` configured from our
:class:`GridLayout`, fed our flat parameter buffer as its parameters.

tiny-cuda-nn's grid encoding stores its parameters level-major, then entry, then
feature: entry ``e`` of level ``l`` at ``(offset[l] + e) * F`` with its ``F`` features
adjacent, levels sized ``min(next_multiple(res^3, 8), 2^log2_hashmap_size)``. That is
our layout, so :func:`to_tcnn_params` is the identity (with checks); it is the one place
to change if a tiny-cuda-nn version ever orders them differently. On the first call the
module checks that tinycudann's parameter count equals ``layout.n_params`` and raises
:class:`BackendError` otherwise.

Calling convention: tinycudann's ``Module.forward`` uses the module's own ``params``;
we call its autograd function (``tinycudann.modules._module_function``) with our buffer
instead, padding the batch to ``batch_size_granularity`` as ``Module.forward`` does, so
gradients flow into our buffer. Those are internal names of the tinycudann bindings;
they are isolated in :func:`_apply`.
"""

from __future__ import annotations

import torch

from latentscape.errors import BackendError
from latentscape.kernels._common import check_encoding_inputs
from latentscape.kernels.layout import GridLayout

__all__ = ["encoding_config", "to_tcnn_params", "hashgrid_encode"]


def encoding_config(layout: GridLayout) -> dict:
    """tiny-cuda-nn's HashGrid encoding config for ``layout`` (keys per its DOCUMENTATION.md)."""
    return {
        "otype": "HashGrid",
        "n_levels": layout.n_levels,
        "n_features_per_level": layout.n_features_per_level,
        "log2_hashmap_size": layout.log2_hashmap_size,
        "base_resolution": layout.base_resolution,
        "per_level_scale": float(layout.per_level_scale),
        "interpolation": "Linear",
        "hash": "CoherentPrime",
    }


def to_tcnn_params(params: torch.Tensor, layout: GridLayout) -> torch.Tensor:
    """Our flat buffer -> tiny-cuda-nn's parameter vector (the same order: a view).

    params: [n_params] -> [n_params], level-major, entry, feature.
    """
    if params.shape != (layout.n_params,):
        raise ValueError(f"params must be [{layout.n_params}], got {tuple(params.shape)}")
    return params


def _import_tcnn():
    try:
        import tinycudann
    except ImportError as err:
        raise BackendError(f"tinycudann cannot be imported: {err}",
                           hint="build tinycudann from source (README, 'CUDA'), or ask for 'triton' or 'torch'") from None
    except EnvironmentError as err:  # the bindings raise this without a usable CUDA device
        raise BackendError(f"tinycudann cannot load: {err}", hint="it needs a CUDA device; ask for 'torch' on the CPU") from None
    return tinycudann


_ENCODINGS: dict[tuple, object] = {}


def _encoding_module(layout: GridLayout, dtype: torch.dtype, device: torch.device):
    key = (layout, dtype, str(device))
    if key not in _ENCODINGS:
        tcnn = _import_tcnn()
        enc = tcnn.Encoding(n_input_dims=3, encoding_config=encoding_config(layout), dtype=dtype)
        n = enc.params.numel()
        if n != layout.n_params or enc.n_output_dims != layout.n_output_dims:
            raise BackendError(f"tinycudann's hash grid has {n} parameters and {enc.n_output_dims} outputs, "
                               f"ours {layout.n_params} and {layout.n_output_dims}: its layout differs from this version's",
                               hint="use the 'triton' or 'torch' backend, and report the tinycudann version")
        _ENCODINGS[key] = enc
    return _ENCODINGS[key]


def _apply(enc, x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Run tinycudann's autograd function with ``params`` in place of the module's own."""
    from tinycudann import modules

    n = x.shape[0]
    gran = int(modules._C.batch_size_granularity())
    padded = (n + gran - 1) // gran * gran
    xp = x if padded == n else torch.nn.functional.pad(x, [0, 0, 0, padded - n])
    out = modules._module_function.apply(enc.native_tcnn_module, xp.float().contiguous(),
                                         params.to(enc.dtype).contiguous(), enc.loss_scale)
    return out[:n, : enc.n_output_dims]


def hashgrid_encode(x: torch.Tensor, params: torch.Tensor, layout: GridLayout) -> torch.Tensor:
    """Encode points with tinycudann's hash grid; same contract as the reference.

    x: [N, 3] in [0, 1] (CUDA); params: [n_params] float32 or float16 -> [N, L*F] float32.
    """
    check_encoding_inputs(x, params, layout)
    enc = _encoding_module(layout, params.dtype, x.device)
    return _apply(enc, x, to_tcnn_params(params, layout)).float()
