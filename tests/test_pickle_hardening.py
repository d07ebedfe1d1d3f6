"""Hostile StyleGAN3 pickles (issue 11, classes 1 and 2): no allowed callable takes raw
pointers, buffers or object dtypes, and memory, hashing work and nesting are budgeted
before anything is allocated. The pickles are written opcode by opcode, as an attacker
would, not by pickling real objects."""

from __future__ import annotations

import pickle
import struct
import time
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch

from latentscape.errors import LatentscapeError, UnsafeFileError, WeightsError, safe_repr
from latentscape.texture.pickle_import import load_network_pickle, loads_network_pickle


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def uni(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def i32(v: int) -> bytes:
    return b"J" + struct.pack("<i", v)


PROTO4 = b"\x80\x04"
EMPTY_TUPLE, EMPTY_DICT, TUPLE1, TUPLE3, SETITEM, REDUCE, NEWOBJ, NEWOBJ_EX, STOP = (
    b")", b"}", b"\x85", b"\x87", b"s", b"R", b"\x81", b"\x92", b".")


class _Reduce:
    def __init__(self, fn, args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def storage_blob(n: int) -> bytes:
    """The inner legacy torch.save stream of a float32 storage of ``n`` elements."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.arange(n, dtype=torch.float32).storage().__reduce__()[1][0]


def tensor_pickle(n: int, size, stride, offset=0, copies=1) -> bytes:
    storage = _Reduce(torch.storage._load_from_bytes, (storage_blob(n),))
    ts = [_Reduce(torch._utils._rebuild_tensor_v2, (storage, offset, size, stride, False, OrderedDict()))
          for _ in range(copies)]
    return pickle.dumps({"t": ts}, protocol=4)  # the storage is pickled once, then fetched from the memo


# ------------------------------------------------------------------ class 1: no pointers, buffers, object dtypes

def test_tensor_cdata_pointer_is_refused(tmp_path):
    # torch.Tensor(cdata=0x41414141) dereferences the integer as a C++ TensorImpl*
    kwargs = EMPTY_DICT + uni("cdata") + i32(0x41414141) + SETITEM
    for data in (PROTO4 + glob("torch", "Tensor") + EMPTY_TUPLE + kwargs + NEWOBJ_EX + STOP,
                 PROTO4 + glob("torch.nn.parameter", "Parameter") + EMPTY_TUPLE + kwargs + NEWOBJ_EX + STOP,
                 PROTO4 + glob("torch", "Tensor") + i32(7) + TUPLE1 + NEWOBJ + STOP,
                 PROTO4 + glob("torch", "Tensor") + i32(7) + TUPLE1 + REDUCE + STOP):
        path = tmp_path / "cdata.pkl"
        path.write_bytes(data)
        with pytest.raises(UnsafeFileError) as err:
            load_network_pickle(path)
        assert str(path) in str(err.value)


def test_object_dtype_ndarray_over_attacker_bytes_is_refused():
    # numpy.ndarray.__new__(ndarray, (1,), "O", buffer=b"AAAAAAAA"): an object array whose
    # one element is the pointer 0x4141414141414141
    args = b"(" + b"K\x01" + TUPLE1 + uni("O") + b"C\x08" + b"A" * 8 + b"t"
    for data in (PROTO4 + glob("numpy", "ndarray") + args + NEWOBJ + STOP,
                 PROTO4 + glob("numpy", "ndarray") + args + REDUCE + STOP):
        with pytest.raises(UnsafeFileError):
            loads_network_pickle(data)
    # the same through _reconstruct + BUILD (how numpy pickles arrays): the dtype is refused
    obj = pickle.dumps(np.array([1, "a"], dtype=object), protocol=2)
    with pytest.raises(UnsafeFileError, match="object dtype"):
        loads_network_pickle(obj)
    # a structured dtype with an object field, and a void dtype over raw bytes
    for spec in ([("a", "O")], "V8"):
        data = PROTO4 + glob("numpy", "dtype") + pickle.dumps(spec, protocol=4)[2:-1] + TUPLE1 + REDUCE + STOP
        with pytest.raises(UnsafeFileError):
            loads_network_pickle(data)


def test_build_cannot_set_state_of_a_tensor_or_dict():
    one = pickle.dumps(_Reduce(torch._utils._rebuild_tensor_v2,
                               (_Reduce(torch.storage._load_from_bytes, (storage_blob(4),)), 0, (4,), (1,), False,
                                OrderedDict())), protocol=4)
    assert torch.equal(loads_network_pickle(one), torch.arange(4.0))
    # BUILD({"data": ...}) on the rebuilt tensor would reach Tensor.__setstate__
    with pytest.raises(UnsafeFileError, match="BUILD"):
        loads_network_pickle(one[:-1] + EMPTY_DICT + uni("x") + i32(1) + SETITEM + b"b" + STOP)
    with pytest.raises(UnsafeFileError, match="BUILD"):
        loads_network_pickle(PROTO4 + EMPTY_DICT + EMPTY_DICT + b"b" + STOP)


def test_numpy_arrays_and_scalars_still_load():
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.float64(16.0),
           "b": np.broadcast_to(np.asarray([3, 4]), [2]), "i": np.int64(-3)}
    got = loads_network_pickle(pickle.dumps(obj, protocol=4))
    assert np.array_equal(got["a"], obj["a"]) and got["a"].dtype == np.float32
    assert got["s"] == 16.0 and got["i"] == -3 and np.array_equal(got["b"], [3, 4])


# ------------------------------------------------------------------ class 2: resource bombs

def test_stride_zero_tensor_bomb_is_refused():
    t0 = time.perf_counter()
    data = tensor_pickle(1, (100_000, 100_000), (0, 0))  # one float "expanded" to 37 GiB
    assert len(data) < 1000
    with pytest.raises(WeightsError, match="zero or negative stride"):
        loads_network_pickle(data)
    # overlapping strides: 10^6 elements read from a 2000-element storage
    with pytest.raises(WeightsError, match="outside its storage"):
        loads_network_pickle(tensor_pickle(2000, (1000, 1000), (1, 1)))
    assert time.perf_counter() - t0 < 5


def test_declared_memory_is_budgeted_before_allocating():
    # 50 tensors viewing the same 1 MiB storage: 50 MiB of clones from a 1 MiB file
    n = 1 << 18
    data = tensor_pickle(n, (n,), (1,), copies=50)
    with pytest.raises(WeightsError, match=r"MiB, more than the .* MiB this file may hold"):
        loads_network_pickle(data, max_memory=8 * 2**20)
    ok = loads_network_pickle(tensor_pickle(n, (n,), (1,), copies=2), max_memory=8 * 2**20)
    assert torch.equal(ok["t"][0], torch.arange(n, dtype=torch.float32))
    # a storage that declares more elements than the bytes it carries
    blob = bytearray(storage_blob(4))
    blob[-24:-16] = struct.pack("<Q", 1 << 40)
    with pytest.raises(WeightsError):
        loads_network_pickle(pickle.dumps(_Reduce(torch.storage._load_from_bytes, (bytes(blob),)), protocol=4))


def doubling_tuple(depth: int) -> bytes:
    """t = (); t = (t, t) ``depth`` times through the memo (a few bytes per level)."""
    out = PROTO4 + EMPTY_TUPLE + b"\x94"  # MEMOIZE as 0
    for i in range(depth):
        get = b"j" + struct.pack("<I", i)  # LONG_BINGET
        out += get + get + b"\x86" + b"\x94"  # TUPLE2, MEMOIZE as i + 1
    return out


def test_doubling_tuples_cannot_hash_forever():
    get70 = b"j" + struct.pack("<I", 70)
    t0 = time.perf_counter()
    # as a dict key (hashing 2^70 leaves), and as a frozenset member
    as_key = doubling_tuple(70) + b"0" + EMPTY_DICT + get70 + b"K\x01" + SETITEM + STOP
    with pytest.raises(WeightsError, match="doubling"):
        loads_network_pickle(as_key)
    as_member = doubling_tuple(70) + b"0" + b"(" + get70 + b"\x91" + STOP  # MARK, GET, FROZENSET
    with pytest.raises(WeightsError, match="doubling"):
        loads_network_pickle(as_member)
    # quoted in an error message: the message stays short
    quoted = doubling_tuple(70) + b"0" + glob("_codecs", "encode") + b"(" + uni("x") + get70 + b"t" + REDUCE + STOP
    with pytest.raises(LatentscapeError) as err:
        loads_network_pickle(quoted)
    assert len(str(err.value)) < 600
    assert time.perf_counter() - t0 < 5


def test_deep_nesting_is_refused():
    data = PROTO4 + b"]" * 100_000 + b"a" * 99_999 + STOP  # lists nested 100k deep
    obj = loads_network_pickle(data)  # lists are not hashed: fine, and nothing recursed
    assert isinstance(obj, list)
    data = PROTO4 + EMPTY_TUPLE + TUPLE1 * 1000 + STOP
    with pytest.raises(WeightsError, match="nested more than"):
        loads_network_pickle(data)


def test_untrusted_text_is_truncated_and_stripped():
    name = "\x1b[2J\x1b]0;pwned\x07" + "A" * 100_000
    data = PROTO4 + uni("evil.mod") + uni(name) + b"\x93" + STOP
    with pytest.raises(UnsafeFileError) as err:
        loads_network_pickle(data)
    msg = str(err.value)
    assert len(msg) < 800 and "\x1b" not in msg and "\x07" not in msg
    assert "\x1b" not in safe_repr("\x1b[31m") and len(safe_repr("x" * 10**6, 50)) <= 50


def test_generator_config_ranges(tmp_path):
    from latentscape.errors import ConfigError
    from latentscape.texture.stylegan3 import StyleGAN3Config

    for bad in ({"num_layers": 10**6}, {"filter_size": 10**9}, {"img_resolution": 1 << 20},
                {"channel_max": "512"}, {"first_cutoff": float("nan")}, {"z_dim": 0}):
        t0 = time.perf_counter()
        with pytest.raises(ConfigError):
            StyleGAN3Config(**bad).validate()
        assert time.perf_counter() - t0 < 1
    assert StyleGAN3Config.preset("R").validate().channel_max == 1024


def test_directory_and_nan_limit_given_to_the_importer(tmp_path):
    from typer.testing import CliRunner

    from latentscape.tools.cli import app

    with pytest.raises(WeightsError, match="folder"):
        load_network_pickle(tmp_path)
    res = CliRunner().invoke(app, ["import", "stylegan3", str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and isinstance(res.exception, LatentscapeError)
    pkl = tmp_path / "x.pkl"
    pkl.write_bytes(b"\x80\x04N.")
    res = CliRunner().invoke(app, ["import", "stylegan3", str(pkl), "--out", str(tmp_path / "o"), "--max-gb", "nan"])
    assert res.exit_code != 0 and isinstance(res.exception, LatentscapeError)
    assert not (tmp_path / "o").exists()
