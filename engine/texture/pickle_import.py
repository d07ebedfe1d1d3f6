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
import pickletools
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentscape.errors import LatentscapeError, UnsafeFileError, WeightsError, safe_repr, strip_control

__all__ = [
    "PersistentRecord",
    "load_network_pickle",
    "loads_network_pickle",
    "stylegan3_config_from_record",
    "generator_from_record",
    "import_stylegan3",
    "MAX_PICKLE_BYTES",
    "default_max_memory",
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
        args = self.state.get("_init_args", ()) or ()
        if not isinstance(args, (tuple, list)):
            raise WeightsError(f"{safe_repr(self.class_name, 60)}: _init_args is {safe_repr(args, 60)}, not a tuple")
        return tuple(args)

    @property
    def init_kwargs(self) -> dict:
        kwargs = self.state.get("_init_kwargs", {}) or {}
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise WeightsError(f"{safe_repr(self.class_name, 60)}: _init_kwargs is {safe_repr(kwargs, 60)}, "
                               "not a table of names")
        return dict(kwargs)

    def child(self, name: str) -> Any:
        modules = self.state.get("_modules") or {}
        if not isinstance(modules, dict):
            raise WeightsError(f"{safe_repr(self.class_name, 60)}: _modules is {safe_repr(modules, 60)}, not a table")
        return modules.get(name)


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


class _Token:
    """An inert stand-in for a type a legitimate pickle only *names* (``torch.Tensor`` as
    ``_rebuild_from_type_v2``'s ``new_type``, ``numpy.ndarray`` as ``_reconstruct``'s
    class). It cannot be called or instantiated: no pickle reaches a constructor that
    takes pointers, buffers or dtypes."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_TENSOR, _PARAMETER, _NDARRAY = _Token("torch.Tensor"), _Token("torch.nn.Parameter"), _Token("numpy.ndarray")

# numpy dtypes an array or scalar may have: booleans and plain numbers, native or
# explicit byte order. No objects, no structured/void records, no strings, no datetimes.
_NP_KINDS = {"b", "i", "u", "f", "c"}

_MAX_DEPTH = 200
"""Deepest nesting of containers a pickle may build (our own walks recurse over it)."""
_MAX_WORK = 50_000_000
"""Hashing/comparison work (tuple and frozenset elements touched, expanded) for one file."""
_MAX_MEMO = 1_000_000
"""Memo entries one pickle may define."""
_MAX_DIM = 8
"""Dimensions of any tensor or array (StyleGAN3 uses at most 4)."""


class _Mark:
    """The MARK opcode's marker on the stack."""


_MARK = _Mark()


class _Loader:
    """One load of one file: the allow-list and the budgets, bound to the file for error messages.

    The opcode stream is executed by our own small interpreter (:meth:`unpickle`), not by
    :mod:`pickle`: every opcode's effect is ours, so the interpreter can refuse what a
    network pickle never needs (``INST``/``OBJ``/``EXT*``, out-of-band buffers), build only
    the few allowed types (``NEWOBJ`` only for dict/set stand-ins, ``BUILD`` only on an
    array of ours or a dict stand-in), and budget memory (``max_memory`` bytes of tensor and
    array data materialised, summed over the file), hashing work (a tuple that doubles
    itself 60 times is refused, not hashed) and nesting depth."""

    def __init__(self, path: str | Path, *, max_memory: int | None = None):
        self.path = Path(path)
        self.max_memory = max_memory
        self.memory = 0
        self.work = 0
        self._weights: dict[int, tuple[int, int]] = {}  # id -> (expanded size, depth) of tuples/frozensets
        self._keep: list[Any] = []  # keeps the objects in _weights alive (ids stay unique)
        self._arrays: set[int] = set()  # ndarrays made by _np_reconstruct, awaiting their BUILD
        self._globals: dict[tuple[str, str], Any] = {
            ("torch._utils", "_rebuild_tensor_v2"): self._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_tensor"): self._rebuild_tensor,
            ("torch._utils", "_rebuild_parameter"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_parameter_with_state"): self._rebuild_parameter,
            ("torch._utils", "_rebuild_from_type_v2"): self._rebuild_from_type_v2,
            ("torch.storage", "_load_from_bytes"): self._load_from_bytes,
            ("torch", "Tensor"): _TENSOR,
            ("torch.nn.parameter", "Parameter"): _PARAMETER,
            ("collections", "OrderedDict"): OrderedDict,
            ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
            ("__builtin__", "set"): set, ("__builtin__", "frozenset"): frozenset,
            ("dnnlib.util", "EasyDict"): EasyDict, ("dnnlib", "EasyDict"): EasyDict,
            ("torch_utils.persistence", "_reconstruct_persistent_obj"): self._record_persistent,
            ("numpy", "ndarray"): _NDARRAY,
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
        return WeightsError(f"malformed network pickle: {strip_control(what)}", path=self.path,
                            hint="the file may be truncated or not a StyleGAN3 pickle; download it again")

    def too_big(self, what: str) -> WeightsError:
        return WeightsError(f"refusing to load: {what}", path=self.path,
                            hint="official StyleGAN3 pickles need far less; do not trust this file")

    # -- budgets --------------------------------------------------------------------

    def charge_memory(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` of tensor/array data against the file's budget *before* allocating it."""
        self.memory += nbytes
        if self.max_memory is not None and self.memory > self.max_memory:
            raise self.too_big(f"{what} would bring the tensor data to {self.memory / 2**20:.1f} MiB, more than the "
                               f"{self.max_memory / 2**20:.1f} MiB this file may hold")

    def _weight(self, obj: Any) -> tuple[int, int]:
        w = self._weights.get(id(obj))
        if w is not None:
            return w
        if isinstance(obj, (list, dict, set, OrderedDict)):
            return (1, 1)  # unhashable (hashing fails at once); its walks are bounded by depth below
        return (1, 0)

    def _charge_work(self, units: int) -> None:
        self.work += units
        if self.work > _MAX_WORK:
            raise self.too_big(f"the pickle's nested tuples would take more than {_MAX_WORK:,} steps to hash "
                               "(a repeated-doubling structure)")

    def _composite(self, obj: Any, items: Any) -> Any:
        """Record the expanded size and depth of a new tuple/frozenset; refuse one too deep."""
        size, depth = 1, 0
        for x in items:
            ws, wd = self._weight(x)
            size += ws
            depth = max(depth, wd)
        if depth + 1 > _MAX_DEPTH:
            raise self.too_big(f"containers nested more than {_MAX_DEPTH} deep")
        self._weights[id(obj)] = (size, depth + 1)
        self._keep.append(obj)
        return obj

    def _hashed(self, *keys: Any) -> None:
        """Charge the work of hashing ``keys`` (dict keys, set members) before it happens."""
        self._charge_work(sum(self._weight(k)[0] for k in keys))

    # -- the unpickling ---------------------------------------------------------------

    def scan(self, data: bytes, start: int = 0) -> int:
        """Refuse forbidden opcodes in the pickle at ``data[start:]``; return its end offset."""
        stream = io.BytesIO(data)
        stream.seek(start)
        try:
            for op, _arg, _pos in pickletools.genops(stream):
                if op.name in _FORBIDDEN_OPS:
                    raise self.unsafe(f"the {op.name} opcode (constructs arbitrary classes)")
                if op.name not in _HANDLED_OPS:
                    raise self.unsafe(f"the {op.name} opcode (not used by network pickles)")
        except UnsafeFileError:
            raise
        except Exception as err:  # truncated stream, unknown opcode, ...
            raise self.corrupt(f"{type(err).__name__}: {safe_repr(str(err), 200)}") from None
        return stream.tell()

    def unpickle(self, data: bytes, start: int = 0, persistent_load=None) -> tuple[Any, int]:
        end = self.scan(data, start)
        stream = io.BytesIO(data)
        stream.seek(start)
        try:
            obj = self._run(pickletools.genops(stream), persistent_load)
        except WeightsError:
            raise
        except RecursionError:
            raise self.too_big("structures nested too deep") from None
        except MemoryError:
            raise self.too_big("more memory than this machine has") from None
        except Exception as err:
            raise self.corrupt(f"{type(err).__name__}: {safe_repr(str(err), 200)[1:-1]}") from None
        return obj, end

    def _run(self, ops, persistent_load) -> Any:
        stack: list[Any] = []
        marks: list[int] = []
        memo: dict[int, Any] = {}

        def pop_mark() -> list[Any]:
            if not marks:
                raise self.corrupt("an opcode needs a MARK that is not there")
            at = marks.pop()
            items = stack[at:]
            del stack[at:]
            return items

        def put(index: int) -> None:
            if len(memo) >= _MAX_MEMO and index not in memo:
                raise self.too_big(f"more than {_MAX_MEMO:,} memo entries")
            memo[index] = stack[-1]

        def get(index: int) -> None:
            if index not in memo:
                raise self.corrupt(f"memo entry {index} used before it is defined")
            stack.append(memo[index])

        def call(fn: Any, args: Any, kwargs: Any = None) -> Any:
            if not isinstance(args, tuple) or (kwargs is not None and not isinstance(kwargs, dict)):
                raise self.corrupt("a call without an argument tuple")
            if fn in (set, frozenset, OrderedDict):
                if kwargs or len(args) > 1 or (args and not isinstance(args[0], (list, tuple, set, frozenset))):
                    raise self.unsafe(f"{fn.__name__} called with unusual arguments")
                items = list(args[0]) if args else []
                if fn is OrderedDict:
                    if not all(isinstance(p, (tuple, list)) and len(p) == 2 for p in items):
                        raise self.corrupt("OrderedDict built from something other than pairs")
                    self._hashed(*(p[0] for p in items))
                    return OrderedDict(items)
                self._hashed(*items)
                out = fn(items)
                return self._composite(out, out) if fn is frozenset else out
            if not callable(fn) or isinstance(fn, type) or not hasattr(fn, "__self__") or fn.__self__ is not self:
                raise self.unsafe(f"a call of {safe_repr(fn, 80)}")
            return fn(*args, **(kwargs or {}))

        for op, arg, _pos in ops:
            name = op.name
            if name in ("PROTO", "FRAME"):
                continue
            if name == "STOP":
                if len(stack) != 1 or marks:
                    raise self.corrupt("the stack is not a single object at STOP")
                return stack[0]
            if name == "MARK":
                marks.append(len(stack))
            elif name in _CONSTANT_OPS:
                value = arg if op.arg is not None else _CONSTANT_OPS[name]
                if name == "BYTEARRAY8":
                    value = bytearray(value)
                stack.append(value)
            elif name in ("STRING", "BINSTRING", "SHORT_BINSTRING"):  # Python 2 str: read as latin-1
                stack.append(arg.decode("latin1") if isinstance(arg, bytes) else arg)
            elif name == "POP":
                if marks and len(stack) == marks[-1]:
                    pop_mark()  # as pickle does: an empty frame pops its mark
                else:
                    stack.pop()
            elif name == "POP_MARK":
                pop_mark()
            elif name == "DUP":
                stack.append(stack[-1])
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                put(int(arg))
            elif name == "MEMOIZE":
                put(len(memo))
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                get(int(arg))
            elif name == "EMPTY_TUPLE":
                stack.append(())
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                if len(stack) < n:
                    raise self.corrupt(f"{name} on a short stack")
                items = stack[-n:]
                del stack[-n:]
                stack.append(self._composite(tuple(items), items))
            elif name == "TUPLE":
                items = pop_mark()
                stack.append(self._composite(tuple(items), items))
            elif name == "EMPTY_LIST":
                stack.append([])
            elif name == "LIST":
                stack.append(pop_mark())
            elif name == "APPEND":
                value = stack.pop()
                self._append(stack[-1], [value])
            elif name == "APPENDS":
                items = pop_mark()
                self._append(stack[-1], items)
            elif name == "EMPTY_DICT":
                stack.append({})
            elif name == "DICT":
                items = pop_mark()
                stack.append({})
                self._setitems(stack[-1], items)
            elif name == "SETITEM":
                value, key = stack.pop(), stack.pop()
                self._setitems(stack[-1], [key, value])
            elif name == "SETITEMS":
                items = pop_mark()
                self._setitems(stack[-1], items)
            elif name == "EMPTY_SET":
                stack.append(set())
            elif name == "ADDITEMS":
                items = pop_mark()
                target = stack[-1]
                if not isinstance(target, set):
                    raise self.corrupt("ADDITEMS on something that is not a set")
                self._hashed(*items)
                target.update(items)
            elif name == "FROZENSET":
                items = pop_mark()
                self._hashed(*items)
                stack.append(self._composite(frozenset(items), items))
            elif name in ("GLOBAL", "STACK_GLOBAL"):
                if name == "GLOBAL":
                    module, _, qual = arg.partition(" ")
                else:
                    qual, module = stack.pop(), stack.pop()
                    if not isinstance(module, str) or not isinstance(qual, str):
                        raise self.corrupt("STACK_GLOBAL with names that are not strings")
                fn = self._globals.get((module, qual))
                if fn is None:
                    raise self.unsafe(f"the global {safe_repr(module, 80)[1:-1]}.{safe_repr(qual, 80)[1:-1]}")
                stack.append(fn)
            elif name == "REDUCE":
                args = stack.pop()
                fn = stack.pop()
                stack.append(call(fn, args))
            elif name in ("NEWOBJ", "NEWOBJ_EX"):
                kwargs = stack.pop() if name == "NEWOBJ_EX" else {}
                args = stack.pop()
                cls = stack.pop()
                # Only the dict/set stand-ins may be created this way, empty; their contents
                # follow as SETITEMS/BUILD. Never a tensor or an array (raw pointers, buffers).
                if cls not in (EasyDict, OrderedDict, set):
                    raise self.unsafe(f"{name} of {safe_repr(cls, 80)} (only dict stand-ins may be created this way)")
                if args or kwargs:
                    raise self.unsafe(f"{name} of {cls.__name__} with arguments")
                stack.append(cls())
            elif name == "BUILD":
                state = stack.pop()
                self._build(stack[-1], state)
            elif name in ("PERSID", "BINPERSID"):
                pid = arg if name == "PERSID" else stack.pop()
                if persistent_load is None:
                    raise self.unsafe(f"a persistent id {safe_repr(pid, 80)} outside a tensor storage")
                stack.append(persistent_load(pid))
            else:  # pragma: no cover - scan() refuses every other opcode
                raise self.unsafe(f"the {name} opcode")
        raise self.corrupt("the pickle ends without STOP")

    def _append(self, target: Any, items: list[Any]) -> None:
        if not isinstance(target, list):
            raise self.corrupt("APPEND(S) on something that is not a list")
        target.extend(items)

    def _setitems(self, target: Any, items: list[Any]) -> None:
        if not isinstance(target, dict):
            raise self.corrupt("SETITEM(S) on something that is not a dict")
        if len(items) % 2:
            raise self.corrupt("SETITEMS with an odd number of items")
        keys = items[0::2]
        self._hashed(*keys)
        for k, v in zip(keys, items[1::2]):
            target[k] = v

    def _build(self, obj: Any, state: Any) -> None:
        if isinstance(obj, np.ndarray) and id(obj) in self._arrays:
            self._arrays.discard(id(obj))
            self._np_setstate(obj, state)
        elif isinstance(obj, (EasyDict, OrderedDict)) and (state is None or isinstance(state, dict) and not state):
            pass  # what a dict subclass pickles as its (empty) __dict__
        elif isinstance(obj, np.dtype):
            # np.dtype pickles as dtype("f4") + BUILD(version, byteorder, ...); the dtype came from
            # _np_dtype (plain numbers only), so its state must be the one it already has.
            own = obj.__reduce__()[2]
            if not (isinstance(state, tuple) and len(state) == len(own) and state[:5] == own[:5]):
                raise self.corrupt(f"numpy dtype state {safe_repr(state, 80)} (only native-order plain numbers)")
        else:
            raise self.unsafe(f"BUILD on {safe_repr(obj, 60)} (sets the state of an object)")

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
            raise self.corrupt(f"storage payload with protocol {safe_repr(proto, 40)}")
        sys_info, pos = self.unpickle(blob, pos)
        if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
            raise self.corrupt("big-endian storages are not supported")
        refs: dict[str, tuple[torch.dtype, int]] = {}

        def storage_id(pid: Any) -> Any:
            if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                    and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                    and _is_int(pid[4]) and pid[4] >= 0):
                raise self.unsafe(f"a persistent id {safe_repr(pid, 80)}")
            refs[pid[2]] = (pid[1].dtype, pid[4])
            view = pid[5] if len(pid) > 5 else None
            if view is not None:
                if not (isinstance(view, tuple) and len(view) == 3 and _is_int(view[1]) and _is_int(view[2])):
                    raise self.corrupt("malformed storage view")
                return ("view", pid[2], int(view[1]), int(view[2]))
            return ("storage", pid[2])

        ref, pos = self.unpickle(blob, pos, persistent_load=storage_id)
        keys, pos = self.unpickle(blob, pos)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or set(keys) != set(refs):
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
                raise self.corrupt(f"storage {safe_repr(key, 40)}: {count} elements stored, {numel} declared")
            nbytes = count * itemsize
            if pos + nbytes > len(blob):
                raise self.corrupt("storage data truncated")
            self.charge_memory(nbytes, f"storage {safe_repr(key, 40)}")
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

    def _check_layout(self, size: Any, stride: Any, offset: Any, storage_numel: int, what: str):
        """Validated plain (size, stride, offset): within the storage, no expansion."""
        if not (isinstance(size, (tuple, list)) and isinstance(stride, (tuple, list)) and _is_int(offset)
                and all(_is_int(s) for s in size) and all(_is_int(s) for s in stride)):
            raise self.corrupt(f"{what} with a malformed size/stride")
        size, stride, offset = tuple(int(s) for s in size), tuple(int(s) for s in stride), int(offset)
        if len(size) != len(stride) or len(size) > _MAX_DIM or offset < 0 or any(s < 0 for s in size):
            raise self.corrupt(f"{what} with a malformed size/stride")
        numel = 1
        for s in size:
            numel *= s
        if numel == 0:
            return size, stride, offset, 0
        if any(st <= 0 for s, st in zip(size, stride) if s > 1):
            # stride 0 repeats one element (a 336-byte file becomes gigabytes); negative
            # strides walk backwards out of the storage
            raise self.corrupt(f"{what} with a zero or negative stride (an expanded view)")
        last = offset + sum((s - 1) * st for s, st in zip(size, stride))
        if last >= storage_numel or numel > storage_numel - offset:
            # the second test refuses overlapping strides that read the same elements many times
            raise self.corrupt(f"{what} view outside its storage (or larger than it)")
        return size, stride, offset, numel

    def _rebuild_tensor(self, storage, storage_offset, size, stride) -> torch.Tensor:
        if not isinstance(storage, torch.Tensor) or storage.ndim != 1 or not storage.is_contiguous():
            raise self.corrupt("tensor rebuilt from something that is not a storage")
        size, stride, offset, numel = self._check_layout(size, stride, storage_offset, storage.numel(), "tensor")
        self.charge_memory(numel * storage.element_size(), "a tensor")
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
            raise self.unsafe(f"_rebuild_from_type_v2 with {safe_repr(func, 80)}")
        if new_type not in (_TENSOR, _PARAMETER):
            raise self.unsafe(f"_rebuild_from_type_v2 to {safe_repr(new_type, 80)}")
        if not isinstance(args, tuple):
            raise self.corrupt("_rebuild_from_type_v2 without an argument tuple")
        return func(*args)

    def _latin1_bytes(self, text, encoding="utf-8"):
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise self.unsafe(f"_codecs.encode with encoding {safe_repr(encoding, 40)}")
        return text.encode("latin1")

    def _np_dtype(self, spec, align=False, copy=False):
        # Only a short type string ("f4", "<i8", "?") names a dtype; never a list of fields or an object.
        if not isinstance(spec, str) or len(spec) > 8:
            raise self.unsafe(f"a numpy dtype built from {safe_repr(spec, 60)}")
        try:
            dt = np.dtype(spec)
        except Exception:
            raise self.corrupt(f"numpy dtype {safe_repr(spec, 40)}") from None
        if dt.hasobject:
            raise self.unsafe("a numpy object dtype (would unpickle arbitrary objects)")
        if dt.kind not in _NP_KINDS or dt.fields is not None or dt.subdtype is not None:
            raise self.unsafe(f"the numpy dtype {safe_repr(spec, 40)} (only numbers and booleans are accepted)")
        return dt

    def _check_np_dtype(self, dtype: Any) -> np.dtype:
        if not isinstance(dtype, np.dtype):
            raise self.corrupt("numpy data without a dtype")
        if dtype.hasobject:
            raise self.unsafe("a numpy object dtype (would unpickle arbitrary objects)")
        if dtype.kind not in _NP_KINDS or dtype.fields is not None or dtype.subdtype is not None:
            raise self.unsafe(f"the numpy dtype {dtype.str} (only numbers and booleans are accepted)")
        return dtype

    def _np_reconstruct(self, cls, shape, dtype):
        if cls is not _NDARRAY or shape not in ((0,), [0], 0) or dtype not in (b"b", "b"):
            raise self.unsafe("numpy _reconstruct with unusual arguments")
        arr = np.empty(0, dtype=np.int8)  # BUILD then gives it validated shape, dtype and data
        self._arrays.add(id(arr))
        self._keep.append(arr)
        return arr

    def _np_setstate(self, arr: np.ndarray, state: Any) -> None:
        """ndarray state ``(version, shape, dtype, is_fortran, raw bytes)``, validated, then applied."""
        if not (isinstance(state, tuple) and len(state) == 5):
            raise self.corrupt("numpy array state is not (version, shape, dtype, fortran, data)")
        version, shape, dtype, fortran, raw = state
        dtype = self._check_np_dtype(dtype)
        if not isinstance(raw, (bytes, bytearray)):
            raise self.unsafe("numpy array data that is not raw bytes")
        if not (version in (0, 1) and isinstance(fortran, bool) and isinstance(shape, tuple)
                and len(shape) <= _MAX_DIM and all(_is_int(s) and s >= 0 for s in shape)):
            raise self.corrupt("numpy array with a malformed shape")
        count = 1
        for s in shape:
            count *= int(s)
        if count * dtype.itemsize != len(raw):
            raise self.corrupt(f"numpy array of shape {safe_repr(shape, 60)} with {len(raw)} bytes of data")
        self.charge_memory(len(raw), "a numpy array")
        arr.__setstate__((1, tuple(int(s) for s in shape), dtype, fortran, bytes(raw)))

    def _np_scalar(self, dtype, data=None):
        dtype = self._check_np_dtype(dtype)
        if not isinstance(data, (bytes, bytearray)):
            raise self.unsafe("a numpy scalar without raw bytes")
        if len(data) != dtype.itemsize:
            raise self.corrupt("numpy scalar of the wrong size")
        return np.frombuffer(data, dtype=dtype)[0].copy()


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# Opcodes whose argument is the value to push (None: the value below).
_CONSTANT_OPS = {
    "NONE": None, "NEWTRUE": True, "NEWFALSE": False, "INT": None, "BININT": None, "BININT1": None,
    "BININT2": None, "LONG": None, "LONG1": None, "LONG4": None, "FLOAT": None, "BINFLOAT": None,
    "UNICODE": None, "BINUNICODE": None, "SHORT_BINUNICODE": None, "BINUNICODE8": None,
    "BINBYTES": None, "SHORT_BINBYTES": None, "BINBYTES8": None, "BYTEARRAY8": None,
}
_HANDLED_OPS = set(_CONSTANT_OPS) | {
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP", "STRING", "BINSTRING", "SHORT_BINSTRING",
    "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE", "GET", "BINGET", "LONG_BINGET",
    "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_LIST", "LIST", "APPEND", "APPENDS",
    "EMPTY_DICT", "DICT", "SETITEM", "SETITEMS", "EMPTY_SET", "ADDITEMS", "FROZENSET",
    "GLOBAL", "STACK_GLOBAL", "REDUCE", "NEWOBJ", "NEWOBJ_EX", "BUILD", "PERSID", "BINPERSID",
}
# Not handled, hence refused: INST, OBJ (arbitrary classes), EXT1/2/4 (the copyreg
# extension registry), NEXT_BUFFER/READONLY_BUFFER (protocol 5 out-of-band buffers).


def default_max_memory(file_bytes: int) -> int:
    """Tensor/array bytes a pickle of ``file_bytes`` may materialise: every tensor of a real
    network pickle is backed by bytes in the file, so twice the file plus 64 MiB is ample."""
    return 2 * file_bytes + 64 * 2**20


def loads_network_pickle(data: bytes, path: str | Path = "<bytes>", *, max_memory: int | None = None) -> Any:
    """Unpickle ``data`` with the restrictions above (networks become PersistentRecords).

    ``max_memory``: tensor and array bytes the file may materialise, summed, checked
    before each allocation (default :func:`default_max_memory`)."""
    if not isinstance(data, (bytes, bytearray)):
        raise WeightsError("network pickle data must be bytes", path=path)
    if data[:2] == b"PK":
        raise WeightsError("this is a torch.save zip checkpoint, not a network pickle", path=path,
                           hint="export the network with the official training code (network-snapshot-*.pkl)")
    budget = default_max_memory(len(data)) if max_memory is None else max_memory
    obj, _ = _Loader(path, max_memory=budget).unpickle(bytes(data))
    return obj


def load_network_pickle(path: str | Path, max_bytes: int = MAX_PICKLE_BYTES) -> Any:
    """Read and safely unpickle a network pickle (size-capped)."""
    path = Path(path)
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes <= 0:
        raise WeightsError(f"the size limit must be a positive number of bytes, got {safe_repr(max_bytes, 40)}",
                           path=path, hint="pass a positive --max-gb")
    if path.is_dir():
        raise WeightsError("this is a folder, not a network pickle", path=path,
                           hint="give the .pkl file itself (network-snapshot-*.pkl)")
    try:
        size = os.path.getsize(path)
        if not path.is_file():
            raise WeightsError("not a regular file", path=path, hint="give the .pkl file itself")
    except OSError as err:
        raise WeightsError(f"cannot read network pickle: {err.strerror}", path=path) from None
    if size > max_bytes:
        raise WeightsError(f"file is {size / 2**30:.2f} GiB, larger than the {max_bytes / 2**30:.2f} GiB limit",
                           path=path, hint="this is not a StyleGAN3 network pickle, or raise max_bytes")
    if size == 0:
        raise WeightsError("file is empty", path=path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise WeightsError(f"cannot read network pickle: {err.strerror}", path=path) from None
    return loads_network_pickle(data, path)


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
        raise WeightsError(f"expected a Generator network, found {safe_repr(G.class_name, 60)}", path=path)
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
        cfg[k] = _plain(kw.pop(k))
    mapping = kw.pop("mapping_kwargs", {}) or {}
    if not isinstance(mapping, dict):
        raise WeightsError(f"mapping_kwargs is {safe_repr(mapping, 60)}, not a table", path=path)
    for k, v in mapping.items():
        if k not in _MAPPING_KEYS:
            raise WeightsError(f"unsupported mapping option {safe_repr(k, 60)}={safe_repr(v, 60)}", path=path)
        cfg[_MAPPING_KEYS[k]] = _plain(v)
    for k, v in kw.items():
        if k in _IGNORED_KEYS:
            continue
        if k not in _SYNTH_KEYS:
            raise WeightsError(f"unsupported synthesis option {safe_repr(k, 60)}={safe_repr(v, 60)}", path=path)
        cfg[k] = _plain(v)
    try:
        return StyleGAN3Config(**cfg).validate()
    except LatentscapeError as err:
        raise WeightsError(f"bad generator config in pickle: {err.message}", path=path) from None
    except (TypeError, ValueError, OverflowError) as err:
        raise WeightsError(f"bad generator config in pickle: {safe_repr(str(err), 200)[1:-1]}", path=path) from None


def _flatten(rec: PersistentRecord, prefix: str, out: dict[str, torch.Tensor], path, depth: int = 0) -> None:
    if depth > 32:
        raise WeightsError("submodules nested more than 32 deep", path=path)
    for group in ("_parameters", "_buffers", "_modules"):
        if not isinstance(rec.state.get(group) or {}, dict):
            raise WeightsError(f"{safe_repr(prefix, 80)}{group} is not a table", path=path)
    for group in ("_parameters", "_buffers"):
        for name, t in (rec.state.get(group) or {}).items():
            if not isinstance(name, str):
                raise WeightsError(f"tensor name {safe_repr(name, 60)} in {safe_repr(prefix, 80)} is not a string",
                                   path=path)
            if t is None:
                continue
            if not isinstance(t, torch.Tensor):
                raise WeightsError(f"{safe_repr(prefix + name, 120)[1:-1]} is not a tensor", path=path)
            out[prefix + name] = t
    for name, child in (rec.state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(name, str) or not isinstance(child, PersistentRecord):
            raise WeightsError(f"submodule {safe_repr(prefix + str(name), 120)[1:-1]} is not a persistent network "
                               "object", path=path)
        _flatten(child, f"{prefix}{name}.", out, path, depth + 1)


def generator_from_record(G_rec: PersistentRecord, path: str | Path = "<pickle>"):
    """Build our :class:`Generator` from a recorded official one; names and shapes must match."""
    try:
        return _generator_from_record(G_rec, path)
    except WeightsError as err:
        if err.path is not None:
            raise
        raise WeightsError(err.message, path=path, hint=err.hint) from None


def _generator_from_record(G_rec: PersistentRecord, path: str | Path):
    from latentscape.texture.stylegan3 import Generator

    cfg = stylegan3_config_from_record(G_rec, path)
    tensors: dict[str, torch.Tensor] = {}
    _flatten(G_rec, "", tensors, path)
    with torch.device("meta"):
        G = Generator(cfg)
    theirs_names = G_rec.child("synthesis").state.get("layer_names") or []
    if not isinstance(theirs_names, (list, tuple)):
        raise WeightsError(f"layer_names is {safe_repr(theirs_names, 60)}, not a list", path=path)
    theirs_names = list(theirs_names)
    if theirs_names != G.synthesis.layer_names:
        raise WeightsError(f"layer layout differs: {safe_repr(theirs_names, 120)} vs "
                           f"{safe_repr(G.synthesis.layer_names, 120)}",
                           path=path)
    expected = G.state_dict()
    missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or extra:
        raise WeightsError(f"tensors do not match the architecture: missing {safe_repr(missing, 150)}, "
                           f"unexpected {safe_repr(extra, 150)}",
                           path=path)
    for k, v in expected.items():
        if tuple(tensors[k].shape) != tuple(v.shape):
            raise WeightsError(f"{k}: shape {safe_repr(tuple(tensors[k].shape), 80)} != expected {tuple(v.shape)}",
                               path=path)
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
            keys = [safe_repr(k, 40) for k, _ in zip(obj, range(8))]
            raise WeightsError(f"no {safe_repr(key, 40)} in the pickle (keys: {', '.join(keys)})", path=pkl,
                               hint="pass --key G or --key G_ema")
        obj = obj[key]
    if not isinstance(obj, PersistentRecord):
        raise WeightsError(f"{safe_repr(key, 40)} is not a network object", path=pkl)
    G = generator_from_record(obj, pkl)
    if out_dir is not None:
        digest = hashlib.sha256()
        with open(pkl, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        save_generator(G, out_dir, source={"kind": "stylegan3-pickle", "file": pkl.name, "key": key,
                                           "sha256": digest.hexdigest()})
    return G
