"""Read official StyleGAN3 network pickles without running any code they carry.

An official pickle (``network-snapshot-*.pkl``: a dict with ``G``, ``D``, ``G_ema``,
...) stores every network as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
where ``meta`` holds the *source code* of the defining module, which a normal
``pickle.load`` executes. Here a restricted :class:`pickle.Unpickler`:

* resolves only an allow-list of globals (tensor/parameter rebuilds, the legacy
  storage container ``torch.storage._load_from_bytes``, ``collections.OrderedDict``,
  numpy array/dtype/scalar reconstruction without object dtypes, ``dnnlib`` EasyDict
  as a plain dict) and refuses everything else with :class:`UnsafeFileError` naming the
  file and the global;
* replaces ``_reconstruct_persistent_obj`` by a recorder that keeps ``class_name``,
  init args and ``state`` in a :class:`PersistentRecord` and never looks at
  ``module_src`` beyond hashing it;
* refuses the ``INST``/``OBJ``/``EXT*`` opcodes outright (scanned before loading)
  and persistent ids outside the storage container;
* parses each storage's inner legacy ``torch.save`` stream (magic, protocol, sys
  info, a pickle whose persistent ids name the storages, the key list, raw
  little-endian data) with the same restrictions, bounds-checking every view.

Then :func:`import_stylegan3` maps ``G_ema`` onto :class:`latentscape.texture.Generator`
(the state-dict names line up one to one) and checks every name and shape.

Parity with the official code on the same weights (fp32, CPU, noise_mode const),
measured 2026-11 on the 2-core CPU: official ``training.networks_stylegan3.Generator``
(NVlabs/stylegan3 c233a91, in /tmp, never committed) at img_resolution 64, z/w_dim 32,
T: channel_base 2048 / channel_max 64, R: conv_kernel 1, channel_base 4096 / channel_max
128, radial filters; every parameter and w_avg/magnitude_ema perturbed; pickled as the
training loop does (dict G/D/G_ema/augment_pipe/training_set_kwargs); imported here;
seeds 0-3 through ``RandomState(seed).randn``, psi 0.7: max |diff| = 0.0 for T and for R.
Command: ``cd /tmp/stylegan3 && PYTHONPATH=/tmp/stylegan3:<scipy>:<pkg_resources shim>
python /tmp/sg3_parity.py``. Filters designed by :mod:`latentscape.texture.filters` match
scipy's to 0.0 (separable) and 1e-8 (radial) at 64 and 256 px.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentscape.errors import UnsafeFileError, WeightsError

__all__ = [
    "PersistentRecord",
    "load_network_pickle",
    "loads_network_pickle",
    "stylegan3_config_from_record",
    "generator_from_record",
    "import_stylegan3",
    "MAX_PICKLE_BYTES",
]

MAX_PICKLE_BYTES = 2 * 1024**3
"""Largest pickle accepted (official StyleGAN3 snapshots are about 0.3-1 GB)."""

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_FORBIDDEN_OPS = {"INST", "OBJ", "EXT1", "EXT2", "EXT4"}


@dataclass
class PersistentRecord:
    """What an official persistent object would have become, as plain data."""

    class_name: str
    version: Any
    module_src_sha256: str
    state: dict = field(repr=False)

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args", ()) or ())

    @property
    def init_kwargs(self) -> dict:
        return dict(self.state.get("_init_kwargs", {}) or {})

    def child(self, name: str) -> Any:
        return (self.state.get("_modules") or {}).get(name)


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict``: a plain dict."""


class _StorageType:
    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}
_TORCH_DTYPES = {n: getattr(torch, n) for n in (
    "float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")}


class _Loader:
    """One load of one file: the allow-list, bound to the file for error messages."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._globals: dict[tuple[str, str], Any] = {
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_from_type_v2"): self._rebuild_from_type_v2,
            ("torch.storage", "_load_from_bytes"): self._load_from_bytes,
            ("torch", "Tensor"): torch.Tensor,
            ("torch.nn.parameter", "Parameter"): torch.Tensor,
            ("collections", "OrderedDict"): OrderedDict,
            ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
            ("__builtin__", "set"): set, ("__builtin__", "frozenset"): frozenset,
            ("dnnlib.util", "EasyDict"): EasyDict, ("dnnlib", "EasyDict"): EasyDict,
            ("torch_utils.persistence", "_reconstruct_persistent_obj"): self._record_persistent,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): self._np_dtype,
            ("_codecs", "encode"): self._latin1_bytes,  # how protocol 2 writes bytes
        }
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            self._globals[(mod, "_reconstruct")] = self._np_reconstruct
            self._globals[(mod, "scalar")] = self._np_scalar
        for name, dtype in _TORCH_DTYPES.items():
            self._globals[("torch", name)] = dtype
        for name, dtype in _STORAGE_DTYPES.items():  # inert tokens naming a storage's dtype
            self._globals[("torch", name)] = _StorageType(dtype)

    # -- errors ---------------------------------------------------------------------

    def unsafe(self, what: str) -> UnsafeFileError:
        return UnsafeFileError(
            f"refusing to load: the pickle references {what}, which is not on the allow-list "
            "(loading it normally could run code)",
            path=self.path, hint="only official StyleGAN3 network pickles are accepted; do not trust this file")

    def corrupt(self, what: str) -> WeightsError:
        return WeightsError(f"malformed network pickle: {what}", path=self.path,
                            hint="the file may be truncated or not a StyleGAN3 pickle; download it again")

    # -- the unpickling ---------------------------------------------------------------

    def scan(self, data: bytes, start: int = 0) -> int:
        """Refuse forbidden opcodes in the pickle at ``data[start:]``; return its end offset."""
        stream = io.BytesIO(data)
        stream.seek(start)
        try:
            for op, _arg, _pos in pickletools.genops(stream):
                if op.name in _FORBIDDEN_OPS:
                    raise self.unsafe(f"the {op.name} opcode (constructs arbitrary classes)")
        except UnsafeFileError:
            raise
        except Exception as err:  # truncated stream, unknown opcode, ...
            raise self.corrupt(f"{type(err).__name__}: {err}") from None
        return stream.tell()

    def unpickle(self, data: bytes, start: int = 0, persistent_load=None) -> tuple[Any, int]:
        end = self.scan(data, start)
        loader = self

        class _Restricted(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> Any:
                fn = loader._globals.get((module, name))
                if fn is None:
                    raise loader.unsafe(f"the global {module}.{name}")
                return fn

            def persistent_load(self, pid: Any) -> Any:
                if persistent_load is None:
                    raise loader.unsafe(f"a persistent id {str(pid)[:80]!r} outside a tensor storage")
                return persistent_load(pid)

        up = _Restricted(io.BytesIO(data[start:end]))
        try:
            obj = up.load()
        except WeightsError:
            raise
        except Exception as err:
            raise self.corrupt(f"{type(err).__name__}: {err}") from None
        return obj, end

    # -- allowed callables ----------------------------------------------------------

    def _record_persistent(self, meta: Any) -> PersistentRecord:
        if not isinstance(meta, dict) or meta.get("type") != "class":
            raise self.corrupt("persistent object without type='class'")
        name, state, src = meta.get("class_name"), meta.get("state"), meta.get("module_src", "")
        if not isinstance(name, str) or not isinstance(state, dict):
            raise self.corrupt("persistent object without class_name/state")
        sha = hashlib.sha256(src.encode("utf-8", "replace") if isinstance(src, str) else b"").hexdigest()
        return PersistentRecord(class_name=name, version=meta.get("version"), module_src_sha256=sha, state=state)

    def _load_from_bytes(self, blob: Any) -> torch.Tensor:
        """A storage pickled as an inner legacy ``torch.save`` stream -> flat tensor."""
        if not isinstance(blob, (bytes, bytearray)):
            raise self.corrupt("storage payload is not bytes")
        blob = bytes(blob)
        magic, pos = self.unpickle(blob, 0)
        if magic != _LEGACY_MAGIC:
            raise self.corrupt("storage payload without the torch legacy magic number")
        proto, pos = self.unpickle(blob, pos)
        if proto != _LEGACY_PROTOCOL:
            raise self.corrupt(f"storage payload with protocol {proto!r}")
        sys_info, pos = self.unpickle(blob, pos)
        if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
            raise self.corrupt("big-endian storages are not supported")
        refs: dict[str, tuple[torch.dtype, int]] = {}
        views: list[tuple[str, int, int]] = []

        def storage_id(pid: Any) -> Any:
            if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                    and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                    and isinstance(pid[4], int) and pid[4] >= 0):
                raise self.unsafe(f"a persistent id {str(pid)[:80]!r}")
            refs[pid[2]] = (pid[1].dtype, pid[4])
            view = pid[5] if len(pid) > 5 else None
            if view is not None:
                views.append((pid[2], int(view[1]), int(view[2])))
                return ("view", pid[2], int(view[1]), int(view[2]))
            return ("storage", pid[2])

        ref, pos = self.unpickle(blob, pos, persistent_load=storage_id)
        keys, pos = self.unpickle(blob, pos)
        if not isinstance(keys, list) or set(keys) != set(refs):
            raise self.corrupt("storage key list does not match the storages")
        tensors = {}
        for key in keys:
            dtype, numel = refs[key]
            if pos + 8 > len(blob):
                raise self.corrupt("storage data truncated")
            count = int.from_bytes(blob[pos:pos + 8], "little")
            pos += 8
            itemsize = torch.empty((), dtype=dtype).element_size()
            if count != numel:
                raise self.corrupt(f"storage {key}: {count} elements stored, {numel} declared")
            nbytes = count * itemsize
            if pos + nbytes > len(blob):
                raise self.corrupt("storage data truncated")
            raw = bytearray(blob[pos:pos + nbytes])
            pos += nbytes
            tensors[key] = torch.frombuffer(raw, dtype=dtype) if nbytes else torch.empty(0, dtype=dtype)
        if not (isinstance(ref, tuple) and ref and ref[0] in ("storage", "view")):
            raise self.corrupt("storage payload does not hold a storage")
        flat = tensors[ref[1]]
        if ref[0] == "view":
            off, size = ref[2], ref[3]
            if off < 0 or size < 0 or off + size > flat.numel():
                raise self.corrupt("storage view out of bounds")
            flat = flat[off:off + size]
        return flat

    def _rebuild_tensor(self, storage, storage_offset, size, stride) -> torch.Tensor:
        if not isinstance(storage, torch.Tensor) or storage.ndim != 1:
            raise self.corrupt("tensor rebuilt from something that is not a storage")
        try:
            size = tuple(int(s) for s in size)
            stride = tuple(int(s) for s in stride)
            offset = int(storage_offset)
        except (TypeError, ValueError):
            raise self.corrupt("tensor with a malformed size/stride") from None
        if len(size) != len(stride) or offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
            raise self.corrupt("tensor with a malformed size/stride")
        if all(s > 0 for s in size):
            last = offset + sum((s - 1) * st for s, st in zip(size, stride))
            if last >= storage.numel():
                raise self.corrupt("tensor view outside its storage")
        return torch.as_strided(storage, size, stride, offset).clone()

    def _rebuild_tensor_v2(self, storage, storage_offset, size, stride, requires_grad=False,
                           backward_hooks=None, metadata=None) -> torch.Tensor:
        return self._rebuild_tensor(storage, storage_offset, size, stride)

    def _rebuild_parameter(self, data, requires_grad=False, backward_hooks=None, state=None) -> torch.Tensor:
        if not isinstance(data, torch.Tensor):
            raise self.corrupt("parameter without tensor data")
        return data

    def _rebuild_from_type_v2(self, func, new_type, args, state) -> torch.Tensor:
        if func not in (self._rebuild_tensor_v2, self._rebuild_tensor, self._rebuild_parameter):
            raise self.unsafe(f"_rebuild_from_type_v2 with {func!r}")
        if not isinstance(args, tuple):
            raise self.corrupt("_rebuild_from_type_v2 without an argument tuple")
        return func(*args)

    def _latin1_bytes(self, text, encoding="utf-8"):
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise self.unsafe(f"_codecs.encode with encoding {encoding!r}")
        return text.encode("latin1")

    def _np_dtype(self, spec, align=False, copy=False):
        try:
            dt = np.dtype(spec)
        except Exception:
            raise self.corrupt(f"numpy dtype {spec!r}") from None
        if dt.hasobject:
            raise self.unsafe("a numpy object dtype (would unpickle arbitrary objects)")
        return dt

    def _np_reconstruct(self, cls, shape, dtype):
        if cls is not np.ndarray or shape not in ((0,), [0], 0) or dtype not in (b"b", "b"):
            raise self.unsafe("numpy _reconstruct with unusual arguments")
        return np.empty(0, dtype=np.int8)  # BUILD then sets shape, dtype and data

    def _np_scalar(self, dtype, data=None):
        if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, (bytes, bytearray)):
            raise self.unsafe("a numpy scalar of object dtype")
        if len(data) != dtype.itemsize:
            raise self.corrupt("numpy scalar of the wrong size")
        return np.frombuffer(data, dtype=dtype)[0].copy()


def loads_network_pickle(data: bytes, path: str | Path = "<bytes>") -> Any:
    """Unpickle ``data`` with the restrictions above (networks become PersistentRecords)."""
    if data[:2] == b"PK":
        raise WeightsError("this is a torch.save zip checkpoint, not a network pickle", path=path,
                           hint="export the network with the official training code (network-snapshot-*.pkl)")
    obj, _ = _Loader(path).unpickle(data)
    return obj


def load_network_pickle(path: str | Path, max_bytes: int = MAX_PICKLE_BYTES) -> Any:
    """Read and safely unpickle a network pickle (size-capped)."""
    path = Path(path)
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise WeightsError(f"cannot read network pickle: {err.strerror}", path=path) from None
    if size > max_bytes:
        raise WeightsError(f"file is {size / 2**30:.2f} GiB, larger than the {max_bytes / 2**30:.2f} GiB limit",
                           path=path, hint="this is not a StyleGAN3 network pickle, or raise max_bytes")
    if size == 0:
        raise WeightsError("file is empty", path=path)
    return loads_network_pickle(path.read_bytes(), path)


# ------------------------------------------------------------------ StyleGAN3 mapping

_SYNTH_KEYS = {
    "channel_base", "channel_max", "num_layers", "num_critical", "first_cutoff", "first_stopband",
    "last_stopband_rel", "margin_size", "output_scale", "conv_kernel", "filter_size", "lrelu_upsampling",
    "use_radial_filters", "conv_clamp", "magnitude_ema_beta",
}
_IGNORED_KEYS = {"num_fp16_res"}  # we run fp32
_MAPPING_KEYS = {"num_layers": "mapping_layers", "lr_multiplier": "mapping_lr_multiplier", "w_avg_beta": "w_avg_beta"}


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def stylegan3_config_from_record(G: PersistentRecord, path: str | Path = "<pickle>"):
    """Our config from the official ``Generator`` init kwargs."""
    from latentscape.texture.stylegan3 import StyleGAN3Config

    synth = G.child("synthesis")
    if G.class_name != "Generator" or not isinstance(synth, PersistentRecord):
        raise WeightsError(f"expected a Generator network, found {G.class_name!r}", path=path)
    if synth.class_name != "SynthesisNetwork" or "layer_names" not in synth.state:
        raise WeightsError("not a StyleGAN3 generator (StyleGAN2/-ADA synthesis networks are not supported yet)",
                           path=path, hint="convert a StyleGAN3 (alias-free) pickle")
    kw = G.init_kwargs
    if G.init_args:
        raise WeightsError("Generator built with positional arguments; cannot read its config", path=path)
    cfg: dict[str, Any] = {}
    for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"):
        if k not in kw:
            raise WeightsError(f"Generator init kwargs lack {k!r}", path=path)
        cfg[k] = int(_plain(kw.pop(k)))
    for k, v in dict(kw.pop("mapping_kwargs", {}) or {}).items():
        if k not in _MAPPING_KEYS:
            raise WeightsError(f"unsupported mapping option {k}={v!r}", path=path)
        cfg[_MAPPING_KEYS[k]] = _plain(v)
    for k, v in kw.items():
        if k in _IGNORED_KEYS:
            continue
        if k not in _SYNTH_KEYS:
            raise WeightsError(f"unsupported synthesis option {k}={v!r}", path=path)
        cfg[k] = _plain(v)
    try:
        return StyleGAN3Config(**cfg).validate()
    except Exception as err:
        raise WeightsError(f"bad generator config in pickle: {err}", path=path) from None


def _flatten(rec: PersistentRecord, prefix: str, out: dict[str, torch.Tensor], path) -> None:
    for group in ("_parameters", "_buffers"):
        for name, t in (rec.state.get(group) or {}).items():
            if t is None:
                continue
            if not isinstance(t, torch.Tensor):
                raise WeightsError(f"{prefix}{name} is not a tensor", path=path)
            out[prefix + name] = t
    for name, child in (rec.state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise WeightsError(f"submodule {prefix}{name} is not a persistent network object", path=path)
        _flatten(child, f"{prefix}{name}.", out, path)


def generator_from_record(G_rec: PersistentRecord, path: str | Path = "<pickle>"):
    """Build our :class:`Generator` from a recorded official one; names and shapes must match."""
    from latentscape.texture.stylegan3 import Generator

    cfg = stylegan3_config_from_record(G_rec, path)
    tensors: dict[str, torch.Tensor] = {}
    _flatten(G_rec, "", tensors, path)
    with torch.device("meta"):
        G = Generator(cfg)
    theirs_names = list(G_rec.child("synthesis").state.get("layer_names") or [])
    if theirs_names != G.synthesis.layer_names:
        raise WeightsError(f"layer layout differs: {theirs_names[:3]}... vs {G.synthesis.layer_names[:3]}...",
                           path=path)
    expected = G.state_dict()
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise WeightsError(f"tensors do not match the architecture: missing {missing[:5]}, unexpected {extra[:5]}",
                           path=path)
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise WeightsError(f"{k}: shape {tuple(tensors[k].shape)} != expected {tuple(v.shape)}", path=path)
        if not tensors[k].is_floating_point():
            raise WeightsError(f"{k}: dtype {tensors[k].dtype} is not floating point", path=path)
    G.load_state_dict({k: t.to(torch.float32).contiguous() for k, t in tensors.items()}, strict=True, assign=True)
    return G.eval().requires_grad_(False)


def import_stylegan3(pkl: str | Path, out_dir: str | Path | None = None, key: str = "G_ema",
                     max_bytes: int = MAX_PICKLE_BYTES):
    """Convert an official StyleGAN3 pickle; write ``out_dir`` if given; return the generator."""
    from latentscape.texture.stylegan3 import save_generator

    pkl = Path(pkl)
    obj = load_network_pickle(pkl, max_bytes=max_bytes)
    if isinstance(obj, dict):
        if key not in obj:
            raise WeightsError(f"no {key!r} in the pickle (keys: {sorted(map(str, obj))[:8]})", path=pkl,
                               hint="pass --key G or --key G_ema")
        obj = obj[key]
    if not isinstance(obj, PersistentRecord):
        raise WeightsError(f"{key!r} is not a network object", path=pkl)
    G = generator_from_record(obj, pkl)
    if out_dir is not None:
        digest = hashlib.sha256()
        with open(pkl, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        save_generator(G, out_dir, source={"kind": "stylegan3-pickle", "file": pkl.name, "key": key,
                                           "sha256": digest.hexdigest()})
    return G
