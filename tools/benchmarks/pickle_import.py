"""Benchmark: the restricted StyleGAN3 pickle loader (our own opcode interpreter) on a pickle
laid out as the official training code writes it, at the official T config.

Usage: ``python -m latentscape.tools.benchmarks.pickle_import [--resolution 256] [--repeat 3]``.
The pickle holds the same Generator as ``G`` and ``G_ema`` (as a snapshot does), built with
the stock :mod:`pickle` and stand-in ``torch_utils``/``dnnlib`` modules that exist only
while dumping. Prints the pickle size, the best load time and the load rate.

Measured 2026-12-01 on this team's CPU machine (2 shared cores, load average 4-6 from other
jobs, so absolute times are pessimistic; torch 2.13 CPU), resolution 256 (108.7 MiB):
``python -m latentscape.tools.benchmarks.pickle_import`` printed a best load of 0.74-0.91 s
over three runs of the tool. Side by side in one process (each loader three times on the same
bytes, best of 3), against the loader on main before issue 11 (b8479e2, ``pickle.Unpickler``
with an allow-list, loaded from ``git show b8479e2:engine/texture/pickle_import.py``): this
pickle 0.37 s (main) vs 0.30 s (this loader); the test suite's official-structure pickle at
the same size 0.30-0.39 s (main) vs 0.43-0.47 s (this loader). The 114 tensors were
bit-identical. The opcode interpreter is pure Python, but a network pickle is a few thousand
opcodes around large byte strings, so the time goes into copying bytes either way.
"""

from __future__ import annotations

import argparse
import io
import pickle
import sys
import time
import types
from collections import OrderedDict

import numpy as np
import torch
from torch import nn


def _official_pickle(G) -> bytes:
    persistence = types.ModuleType("torch_utils.persistence")
    util = types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - never called: only its name is pickled
        raise AssertionError

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict
    names = {"Generator": "Generator", "MappingNetwork": "MappingNetwork", "SynthesisNetwork": "SynthesisNetwork",
             "SynthesisInput": "SynthesisInput", "SynthesisLayer": "SynthesisLayer", "FullyConnected": "FullyConnectedLayer"}
    cfg = G.cfg

    class OfficialPickler(pickle.Pickler):
        def reducer_override(self, obj):
            if not isinstance(obj, nn.Module):
                return NotImplemented
            state = {"training": False, "_parameters": OrderedDict(obj._parameters),
                     "_buffers": OrderedDict(obj._buffers), "_modules": OrderedDict(obj._modules),
                     "_non_persistent_buffers_set": set(), "_init_args": (), "_init_kwargs": {}}
            name = type(obj).__name__
            if name == "Generator":
                state["_init_kwargs"] = dict(
                    z_dim=cfg.z_dim, c_dim=cfg.c_dim, w_dim=cfg.w_dim, img_resolution=cfg.img_resolution,
                    img_channels=cfg.img_channels, mapping_kwargs=EasyDict(num_layers=2),
                    channel_base=cfg.channel_base, channel_max=cfg.channel_max, num_layers=cfg.num_layers,
                    magnitude_ema_beta=0.999, conv_kernel=cfg.conv_kernel,
                    use_radial_filters=cfg.use_radial_filters, num_fp16_res=4)
            if name == "SynthesisNetwork":
                state["layer_names"] = list(obj.layer_names)
            if name == "SynthesisLayer":
                state["in_sampling_rate"] = np.float64(16.0)
            meta = dict(type="class", version=6, module_src="# official module source\n",
                        class_name=names.get(name, name), state=state)
            return _reconstruct_persistent_obj, (meta,)

    saved = {k: sys.modules.get(k) for k in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")}
    sys.modules.update({"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
                        "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util})
    try:
        buf = io.BytesIO()
        OfficialPickler(buf, protocol=4).dump({"G": G, "D": None, "G_ema": G, "augment_pipe": None,
                                               "training_set_kwargs": EasyDict(resolution=cfg.img_resolution)})
        return buf.getvalue()
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def main(argv=None) -> None:
    from latentscape.texture.pickle_import import generator_from_record, loads_network_pickle
    from latentscape.texture.stylegan3 import Generator, StyleGAN3Config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    G = Generator(StyleGAN3Config.preset("T", img_resolution=args.resolution)).eval()
    data = _official_pickle(G)
    best = float("inf")
    obj = None
    for _ in range(args.repeat):
        obj = None  # the previous result is freed first: each load starts from the same memory state
        t0 = time.perf_counter()
        obj = loads_network_pickle(data)
        best = min(best, time.perf_counter() - t0)
    G2 = generator_from_record(obj["G_ema"])
    same = all(torch.equal(a, b) for a, b in zip(G.state_dict().values(), G2.state_dict().values()))
    mib = len(data) / 2**20
    print(f"pickle {mib:.1f} MiB: best load {best:.2f} s ({mib / best:.0f} MiB/s); weights identical: {same}")


if __name__ == "__main__":
    main()
