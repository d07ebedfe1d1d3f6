"""Backend selection and wiring: torch stays the CPU default, triton runs when asked
(under TRITON_INTERPRET=1 here) through NerfField and render_rays with the same
results and gradients as torch, and tcnn fails with a BackendError when it cannot
load; its config and parameter mapping are checked against a fake tinycudann."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from latentscape.errors import BackendError
from latentscape.field.nerf import FieldConfig, NerfField
from latentscape.kernels import backend
from latentscape.kernels.reference import raymarch as ref_raymarch
from latentscape.kernels.layout import GridLayout
from latentscape.kernels.reference.hashgrid import hashgrid_encode as reference_encode
from latentscape.render.occupancy import OccupancyGrid
from latentscape.render.renderer import RenderConfig, render_rays


@pytest.fixture(autouse=True)
def _no_env_backend(monkeypatch):
    monkeypatch.delenv(backend.ENV_VAR, raising=False)


def test_torch_ops_are_the_references():
    ops = backend.select_ops("torch", "cpu")
    assert ops.name == "torch" and ops.mlp is None
    assert ops.encoding is reference_encode
    assert ops.march_segment is ref_raymarch.march_segment and ops.composite_segment is ref_raymarch.composite_segment


def test_auto_picks_the_numba_kernels_on_the_cpu(monkeypatch):
    # TRITON_INTERPRET=1 is set for the suite: the interpreter must still not be chosen by 'auto'.
    assert backend.resolve_backend("auto", "cpu") == "cpu"
    ops = backend.select_ops(None, "cpu")
    assert ops.name == "cpu" and ops.packed
    # Without numba, auto falls back to the torch references (no warning on the CPU).
    monkeypatch.setitem(sys.modules, "numba", None)
    assert backend.resolve_backend("auto", "cpu") == "torch"
    with pytest.raises(BackendError, match="numba"):
        backend.select_ops("cpu", "cpu")


def test_tcnn_without_tinycudann_raises(monkeypatch):
    monkeypatch.setitem(sys.modules, "tinycudann", None)  # import fails
    with pytest.raises(BackendError, match="tcnn"):
        backend.select_ops("tcnn", "cpu")
    from latentscape.kernels import tcnn

    layout = GridLayout(4, 2, 10, 4, 1.5)
    with pytest.raises(BackendError, match="tinycudann"):
        tcnn.hashgrid_encode(torch.rand(3, 3), torch.zeros(layout.n_params), layout)


def test_unknown_backend_raises():
    with pytest.raises(BackendError, match="unknown backend"):
        backend.select_ops("cuda-magic", "cpu")


def _have_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


needs_triton = pytest.mark.skipif(not _have_triton(), reason="triton is not installed: the triton backend cannot load")


@needs_triton
def test_triton_ops_when_asked():
    from latentscape.kernels import hashgrid, raymarch

    ops = backend.select_ops("triton", "cpu")
    assert ops.name == "triton"
    assert ops.encoding is hashgrid.hashgrid_encode
    assert ops.march_segment is raymarch.march_segment and ops.composite_segment is raymarch.composite_segment
    w = [torch.randn(16, 8), torch.randn(200, 16), torch.randn(3, 200)]  # too wide for the kernel: reference
    x = torch.randn(5, 8)
    from latentscape.kernels.reference.mlp import mlp_reference

    torch.testing.assert_close(ops.mlp(x, w), mlp_reference(x, w))


def _scene(seed: int = 0):
    torch.manual_seed(seed)
    cfg = FieldConfig(n_levels=4, n_features_per_level=2, log2_hashmap_size=10, base_resolution=4,
                      finest_resolution=32, density_hidden=32, color_hidden=32)
    fld = NerfField(cfg)
    with torch.no_grad():
        fld.grid.uniform_(-1.0, 1.0)  # visible densities and colours, not tcnn's near-zero init
    grid = OccupancyGrid(cfg.aabb, resolution=8)
    grid.bitfield[:, :4] = False  # half the box empty: skipped samples
    g = torch.Generator().manual_seed(seed)
    o = torch.tensor([0.0, 0.0, -3.0]) + torch.randn(40, 3, generator=g) * 0.5
    d = torch.nn.functional.normalize(torch.tensor([0.0, 0.0, 1.0]) + torch.randn(40, 3, generator=g) * 0.3, dim=-1)
    o[:5] = torch.randn(5, 3, generator=g) * 0.2  # rays starting inside the box
    o[5:8] = torch.tensor([5.0, 5.0, 5.0])  # rays that miss it
    render = RenderConfig(steps_per_diagonal=48, segment=16, chunk=1 << 10)
    return fld, grid, o, d, render


@needs_triton
def test_render_rays_triton_matches_torch():
    """The whole path (marcher, hash grid, fused MLPs, compositor) and its gradients."""
    results = {}
    for name in ("torch", "triton"):
        fld, grid, o, d, render = _scene()
        fld.set_ops(backend.select_ops(name, "cpu"))
        out = render_rays(fld, grid, o, d, render, torch.tensor([1.0, 1.0, 1.0]))
        (out.rgb.sum() + out.alpha.sum()).backward()
        results[name] = (out, fld.grid.grad, fld.density_mlp[0].weight.grad, fld.color_mlp[-1].weight.grad)
    (a, *ga), (b, *gb) = results["triton"], results["torch"]
    assert a.samples == b.samples > 0
    assert 0.05 < float(b.alpha.detach().mean()) < 0.95, "the scene should be neither empty nor opaque"
    torch.testing.assert_close(a.rgb, b.rgb, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.alpha, b.alpha, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(a.depth, b.depth, rtol=1e-4, atol=1e-4)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=1e-3, atol=1e-4 * float(y.abs().max()))


# --- tcnn, against a fake tinycudann that follows tiny-cuda-nn's documented behaviour ---

def _fake_tinycudann(param_count_offset: int = 0):
    """A stand-in for the bindings: a HashGrid Encoding whose parameters are laid out as
    tiny-cuda-nn documents (level-major, entry, feature; levels of
    min(next_multiple(res^3, 8), 2^log2_T) entries), evaluated by the torch reference."""
    import math

    class Native:
        def __init__(self, cfg):
            assert cfg["otype"] == "HashGrid" and cfg["interpolation"] == "Linear" and cfg["hash"] == "CoherentPrime"
            self.layout = GridLayout(cfg["n_levels"], cfg["n_features_per_level"], cfg["log2_hashmap_size"],
                                     cfg["base_resolution"], cfg["per_level_scale"])
            entries = 0
            for level in range(cfg["n_levels"]):
                scale = math.exp2(level * math.log2(cfg["per_level_scale"])) * cfg["base_resolution"] - 1.0
                res = math.ceil(scale) + 1
                entries += min((res**3 + 7) // 8 * 8, 2 ** cfg["log2_hashmap_size"])
            self.n_params = entries * cfg["n_features_per_level"] + param_count_offset

    class Encoding(torch.nn.Module):
        def __init__(self, n_input_dims, encoding_config, seed=1337, dtype=None):
            super().__init__()
            self.native_tcnn_module = Native(encoding_config)
            self.dtype = dtype or torch.float16
            self.params = torch.nn.Parameter(torch.zeros(self.native_tcnn_module.n_params, dtype=self.dtype))
            self.loss_scale = 128.0 if self.dtype == torch.float16 else 1.0
            cfg = encoding_config
            self.n_output_dims = cfg["n_levels"] * cfg["n_features_per_level"]

    class ModuleFunction:
        calls: list = []

        @staticmethod
        def apply(native, x, params, loss_scale):
            ModuleFunction.calls.append(x.shape[0])
            return reference_encode(x, params, native.layout).to(params.dtype)

    modules = types.SimpleNamespace(_module_function=ModuleFunction,
                                    _C=types.SimpleNamespace(batch_size_granularity=lambda: 128))
    fake = types.ModuleType("tinycudann")
    fake.Encoding = Encoding
    fake.modules = modules
    return fake, ModuleFunction.calls


@pytest.fixture
def tcnn_module(monkeypatch):
    from latentscape.kernels import tcnn

    monkeypatch.setattr(tcnn, "_ENCODINGS", {})
    return tcnn


def _install(monkeypatch, fake):
    monkeypatch.setitem(sys.modules, "tinycudann", fake)
    monkeypatch.setitem(sys.modules, "tinycudann.modules", fake.modules)


def test_tcnn_param_mapping_is_identity():
    from latentscape.kernels.tcnn import to_tcnn_params

    layout = GridLayout(5, 4, 10, 4, 1.7)
    p = torch.randn(layout.n_params)
    assert to_tcnn_params(p, layout).data_ptr() == p.data_ptr()
    torch.testing.assert_close(to_tcnn_params(p, layout), p, rtol=0, atol=0)
    with pytest.raises(ValueError, match="params must be"):
        to_tcnn_params(p[:-1], layout)


@pytest.mark.parametrize("F,dtype", [(2, torch.float32), (4, torch.float32), (2, torch.float16)])
def test_tcnn_path_with_fake_bindings(monkeypatch, tcnn_module, F, dtype):
    fake, calls = _fake_tinycudann()
    _install(monkeypatch, fake)
    layout = GridLayout(6, F, 10, 4, 1.8)
    params = torch.randn(layout.n_params).to(dtype).requires_grad_()
    x = torch.rand(7, 3)
    out = tcnn_module.hashgrid_encode(x, params, layout)
    assert calls[-1] == 128  # padded to the batch granularity, cut back after
    assert out.shape == (7, layout.n_output_dims) and out.dtype == torch.float32
    want = reference_encode(x, params.detach(), layout).float()
    torch.testing.assert_close(out, want.to(dtype).float())
    out.sum().backward()  # gradients reach our own buffer
    assert params.grad is not None and params.grad.abs().sum() > 0


def test_tcnn_layout_mismatch_raises(monkeypatch, tcnn_module):
    fake, _ = _fake_tinycudann(param_count_offset=8)
    _install(monkeypatch, fake)
    layout = GridLayout(4, 2, 10, 4, 1.5)
    with pytest.raises(BackendError, match="layout differs"):
        tcnn_module.hashgrid_encode(torch.rand(3, 3), torch.zeros(layout.n_params), layout)


def test_tcnn_config_keys():
    from latentscape.kernels.tcnn import encoding_config

    cfg = encoding_config(GridLayout(16, 2, 19, 16, 1.3819))
    assert cfg == {"otype": "HashGrid", "n_levels": 16, "n_features_per_level": 2, "log2_hashmap_size": 19,
                   "base_resolution": 16, "per_level_scale": 1.3819, "interpolation": "Linear", "hash": "CoherentPrime"}
