"""Safe StyleGAN3 pickle import: official-structure pickles (crafted here, no official
code), the malicious corpus, truncated and oversize files."""

from __future__ import annotations

import io
import os
import pickle
import sys
import types
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.storage
from torch import nn

from latentscape.errors import UnsafeFileError, WeightsError
from latentscape.texture.pickle_import import import_stylegan3, load_network_pickle, loads_network_pickle
from latentscape.texture.stylegan3 import Generator, StyleGAN3Config, load_generator

CFG = dict(z_dim=16, w_dim=16, img_resolution=32, channel_base=256, channel_max=16, num_layers=6)
_OFFICIAL_NAMES = {"Generator": "Generator", "MappingNetwork": "MappingNetwork",
                   "SynthesisNetwork": "SynthesisNetwork", "SynthesisInput": "SynthesisInput",
                   "SynthesisLayer": "SynthesisLayer", "FullyConnected": "FullyConnectedLayer"}


@pytest.fixture
def canary(tmp_path):
    path = tmp_path / "CANARY"
    yield path
    assert not path.exists(), "code from the pickle ran"


@pytest.fixture
def fake_official(monkeypatch, canary):
    """Fake ``torch_utils.persistence`` / ``dnnlib.util`` modules so the stock pickler
    writes the same globals an official pickle holds; they exist only while dumping."""
    persistence = types.ModuleType("torch_utils.persistence")
    util = types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - must never be called
        raise AssertionError("the real reconstructor must not run")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class EasyDict(dict):
        pass

    EasyDict.__module__ = "dnnlib.util"
    EasyDict.__qualname__ = "EasyDict"
    util.EasyDict = EasyDict
    for name, mod in {"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
                      "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    src = f"import pathlib\npathlib.Path({str(canary)!r}).write_text('pwned')\n"
    return types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=EasyDict, module_src=src)


def official_pickle(G: Generator, fake, extra_state: dict | None = None) -> bytes:
    """A training-snapshot pickle laid out as the official code writes it."""
    cfg = G.cfg

    class OfficialPickler(pickle.Pickler):
        def reducer_override(self, obj):
            if not isinstance(obj, nn.Module):
                return NotImplemented
            state = {"training": False, "_parameters": OrderedDict(obj._parameters),
                     "_buffers": OrderedDict(obj._buffers), "_modules": OrderedDict(obj._modules),
                     "_forward_hooks": OrderedDict(), "_non_persistent_buffers_set": set(),
                     "_init_args": (), "_init_kwargs": {}}
            name = type(obj).__name__
            if name == "Generator":
                state["_init_kwargs"] = dict(
                    z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
                    img_channels=cfg.img_channels, mapping_kwargs=fake.EasyDict(num_layers=2),
                    channel_base=cfg.channel_base, channel_max=cfg.channel_max, num_layers=cfg.num_layers,
                    magnitude_ema_beta=0.999, conv_kernel=cfg.conv_kernel,
                    use_radial_filters=cfg.use_radial_filters, num_fp16_res=4)
                state.update(extra_state or {})
            if name == "SynthesisNetwork":
                state["layer_names"] = list(obj.layer_names)
            if name == "SynthesisLayer":  # numpy attributes as in the official objects
                state["in_size"] = np.broadcast_to(np.asarray(obj.in_size), [2])
                state["in_sampling_rate"] = np.float64(16.0)
            meta = dict(type="class", version=6, module_src=fake.module_src,
                        class_name=_OFFICIAL_NAMES[name], state=state)
            return fake.reconstruct, (meta,)

    snapshot = {"G": G, "D": None, "G_ema": G, "augment_pipe": None,
                "training_set_kwargs": fake.EasyDict(resolution=cfg.img_resolution)}
    buf = io.BytesIO()
    OfficialPickler(buf, protocol=4).dump(snapshot)
    return buf.getvalue()


def tiny(preset="T") -> Generator:
    torch.manual_seed(1)
    extra = dict(channel_base=512) if preset == "R" else {}
    G = Generator(StyleGAN3Config.preset(preset, **{**CFG, **extra})).eval()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        for n, b in G.named_buffers():
            if n.endswith("magnitude_ema"):
                b.fill_(0.7)
    return G.requires_grad_(False)


@pytest.mark.parametrize("preset", ["T", "R"])
def test_import_round_trip_from_official_structure(tmp_path, fake_official, preset):
    G = tiny(preset)
    data = official_pickle(G, fake_official)
    assert b"torch_utils.persistence" in data and b"_load_from_bytes" in data and b"pwned" in data
    pkl = tmp_path / "network-snapshot.pkl"
    pkl.write_bytes(data)
    G2 = import_stylegan3(pkl, tmp_path / "out")
    for k, v in G.state_dict().items():
        assert torch.equal(G2.state_dict()[k], v), k
        # bit-identical through our own opcode interpreter (issue 11): same bytes, not just equal values
        assert G2.state_dict()[k].numpy().tobytes() == v.numpy().tobytes(), k
    G3 = load_generator(tmp_path / "out")
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(G(z, truncation_psi=0.7), G3(z, truncation_psi=0.7))
    rec = loads_network_pickle(data)["G_ema"]
    assert rec.class_name == "Generator" and len(rec.module_src_sha256) == 64


def test_import_cli(tmp_path, fake_official):
    from typer.testing import CliRunner

    from latentscape.tools.cli import app

    pkl = tmp_path / "net.pkl"
    pkl.write_bytes(official_pickle(tiny(), fake_official))
    res = CliRunner().invoke(app, ["import", "stylegan3", str(pkl), "--out", str(tmp_path / "g")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "g" / "generator.safetensors").exists() and (tmp_path / "g" / "generator.json").exists()


def test_truncated_and_oversize(tmp_path, fake_official):
    data = official_pickle(tiny(), fake_official)
    for cut in (len(data) // 2, len(data) - 1, 10):
        (tmp_path / "t.pkl").write_bytes(data[:cut])
        with pytest.raises(WeightsError) as err:
            load_network_pickle(tmp_path / "t.pkl")
        assert not isinstance(err.value, UnsafeFileError)
    (tmp_path / "big.pkl").write_bytes(data)
    with pytest.raises(WeightsError, match="limit"):
        load_network_pickle(tmp_path / "big.pkl", max_bytes=1000)
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        load_network_pickle(tmp_path / "empty.pkl")


def test_wrong_key_and_not_a_generator(tmp_path, fake_official):
    pkl = tmp_path / "n.pkl"
    pkl.write_bytes(official_pickle(tiny(), fake_official))
    with pytest.raises(WeightsError, match="no 'G_x'"):
        import_stylegan3(pkl, key="G_x")
    with pytest.raises(WeightsError, match="not a network"):
        import_stylegan3(pkl, key="training_set_kwargs")


# ------------------------------------------------------------------ malicious corpus


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _corpus(canary) -> dict[str, tuple[bytes, str]]:
    import importlib
    import pkgutil

    touch = f"open({str(canary)!r}, 'w').write('pwned')"
    cmd = f"touch {canary}"
    cases = {
        "os.system": (pickle.dumps(_Reduce(os.system, (cmd,))), "system"),
        "eval": (pickle.dumps(_Reduce(eval, (touch,))), "builtins.eval"),
        "exec": (pickle.dumps(_Reduce(exec, (touch,))), "builtins.exec"),
        "import_module": (pickle.dumps({"x": _Reduce(importlib.import_module, ("antigravity",))}),
                          "importlib.import_module"),
        "resolve_name": (pickle.dumps(_Reduce(pkgutil.resolve_name, ("os:system",))), "pkgutil.resolve_name"),
        "getattr": (pickle.dumps(_Reduce(getattr, (_Reduce(__import__, ("os",)), "system"))), "builtins.getattr"),
        # protocol 0/1 instance opcodes, hand-written
        "INST": (b"(S'" + cmd.encode() + b"'\nios\nsystem\n.", "INST"),
        "OBJ": (b"(cos\nsystem\nS'" + cmd.encode() + b"'\no.", "OBJ"),
        "numpy object dtype": (pickle.dumps(np.array([1, "a"], dtype=object)), "object dtype"),
    }
    # payload nested in a persistent object's state dict, next to good tensors
    nested = {"type": "class", "version": 6, "module_src": "", "class_name": "Generator",
              "state": {"_parameters": {"w": torch.ones(2), "evil": _Reduce(os.system, (cmd,))}}}
    cases["nested in state"] = (b"", "system")
    cases["nested in state"] = (_persistent_dump(nested), "system")
    # payload inside a storage's inner legacy torch.save stream

    header = b"".join(pickle.dumps(x, protocol=2) for x in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}))
    evil_blob = header + pickle.dumps(_Reduce(os.system, (cmd,)), protocol=2)
    evil = pickle.dumps({"w": _Reduce(torch._utils._rebuild_tensor_v2, (
        _Reduce(torch.storage._load_from_bytes, (evil_blob,)), 0, (3,), (1,), False, OrderedDict()))})
    cases["nested in storage bytes"] = (evil, "system")
    return cases


def _persistent_dump(meta) -> bytes:
    """Pickle ``_reconstruct_persistent_obj(meta)`` without a real torch_utils module."""
    body = pickle.dumps(meta, protocol=2)
    assert body[:2] == b"\x80\x02" and body[-1:] == b"."
    return (b"\x80\x02ctorch_utils.persistence\n_reconstruct_persistent_obj\n" + body[2:-1] + b"\x85R.")


def test_malicious_corpus_is_refused(tmp_path, canary):
    for name, (data, offending) in _corpus(canary).items():
        path = tmp_path / f"{name.replace(' ', '_')}.pkl"
        path.write_bytes(data)
        with pytest.raises(UnsafeFileError) as err:
            load_network_pickle(path)
        msg = str(err.value)
        assert str(path) in msg, (name, msg)
        assert offending in msg, (name, msg)
        assert not canary.exists(), name


def test_cli_refuses_malicious(tmp_path, canary):
    from typer.testing import CliRunner

    from latentscape.tools.cli import app

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Reduce(os.system, (f"touch {canary}",))}))
    res = CliRunner().invoke(app, ["import", "stylegan3", str(path), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and isinstance(res.exception, UnsafeFileError)
    assert not (tmp_path / "o").exists()
