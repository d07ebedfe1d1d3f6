"""Property-based fuzzing (Hypothesis) of every parser a stranger's file reaches (issue 11):
scene.toml, transforms.json, camera_path.json, safetensors headers (LoRA adapters and field
weights) and the StyleGAN3 pickle importer's opcode stream.

Each target asserts: a typed :class:`LatentscapeError` or success, never another exception;
each example within the deadline; the process's peak memory bounded. The runs are small
and derandomized so CI is reproducible and takes seconds per target; a longer soak is
``LATENTSCAPE_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz_parsers.py`` (not a CI job).
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import struct
import tomllib
import warnings
from collections import OrderedDict
from contextlib import contextmanager

import pytest
import tomli_w
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from latentscape.errors import LatentscapeError

EXAMPLES = int(os.environ.get("LATENTSCAPE_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=3000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
MEMORY_GROWTH_LIMIT = 1 << 30
"""Peak RSS a whole fuzz target may add (bytes)."""


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


@contextmanager
def bounded_memory():
    before = _peak_rss()
    yield
    grown = _peak_rss() - before
    assert grown < MEMORY_GROWTH_LIMIT, f"peak memory grew by {grown / 2**20:.0f} MiB"


def typed_or_success(fn, *args, **kw):
    """Run a parser: success and LatentscapeError are fine; anything else fails the test."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn(*args, **kw)
    except LatentscapeError as err:
        text = str(err)
        assert len(text) < 2000, f"error message of {len(text)} characters"
        assert "\x1b" not in text, "a terminal escape reached the message"


# ------------------------------------------------------------------ value strategies

numbers = st.one_of(st.integers(min_value=-2**70, max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([0, -1, 1, 2**31, 2**63 - 1, 1e308, -0.0, 0.5]))
texts = st.one_of(st.text(max_size=20), st.sampled_from(["../x", "/etc/passwd", "", ".hidden/f", "a\x00b",
                                                         "\x1b[2J", "field.safetensors", "cameras"]))
scalars = st.one_of(numbers, texts, st.booleans())
json_values = st.recursive(st.one_of(st.none(), scalars), lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(texts, inner, max_size=4)), max_leaves=12)
toml_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3)), max_leaves=10)


# ------------------------------------------------------------------ scene.toml

SCENE_KEYS = [
    ("scene", "name"), ("scene", "format"), ("scene", "up"), ("field", "weights"), ("field", "backend"),
    ("field", "config"), ("field", "normalization"), ("field", "occupancy"), ("render", "fps"), ("render", "chunk"),
    ("render", "segment"), ("render", "steps_per_diagonal"), ("render", "width"), ("render", "height"),
    ("render", "background"), ("render", "early_stop"), ("cameras", "default"), ("cameras", "paths"),
    ("guardrails", "slate"), ("guardrails", "audit_log"), ("adapters", "x"), ("plugins", None),
    ("generators", "g"), ("stylizer", "path"), ("render", "bogus"),
]
SUBKEYS = {"config": ["n_levels", "log2_hashmap_size", "aabb", "sh_degree", "finest_resolution"],
           "normalization": ["center", "scale"], "occupancy": ["resolution", "levels", "decay"]}


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    from latentscape.testing import make_tiny_scene

    return make_tiny_scene(tmp_path_factory.mktemp("fuzz") / "scene", adapters=("warm",))


@st.composite
def scene_edits(draw):
    edits = []
    for _ in range(draw(st.integers(1, 4))):
        section, key = draw(st.sampled_from(SCENE_KEYS))
        sub = draw(st.sampled_from(SUBKEYS[key])) if key in SUBKEYS and draw(st.booleans()) else None
        edits.append((section, key, sub, draw(toml_values)))
    return edits


def test_fuzz_scene_toml(scene_dir):
    from latentscape.scene.bundle import load_scene

    base = tomllib.loads((scene_dir / "scene.toml").read_text())
    original = (scene_dir / "scene.toml").read_text()

    @FUZZ
    @given(scene_edits())
    def check(edits):
        cfg = json.loads(json.dumps(base))
        for section, key, sub, value in edits:
            if key is None:
                cfg[section] = value
                continue
            table = cfg.setdefault(section, {})
            if not isinstance(table, dict):
                continue
            if sub is not None and isinstance(table.get(key), dict):
                table[key][sub] = value
            else:
                table[key] = value
        try:
            text = tomli_w.dumps(cfg)
        except (TypeError, ValueError):
            return  # not representable in TOML
        (scene_dir / "scene.toml").write_text(text)
        typed_or_success(load_scene, scene_dir, verify=False)

    try:
        with bounded_memory():
            check()
    finally:
        (scene_dir / "scene.toml").write_text(original)


def test_fuzz_scene_toml_raw_text(tmp_path):
    from latentscape.scene.bundle import load_scene

    root = tmp_path / "s"
    root.mkdir()

    @FUZZ
    @given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin1"))))
    def check(text):
        (root / "scene.toml").write_text(text, encoding="utf-8", errors="surrogateescape")
        typed_or_success(load_scene, root, verify=False)

    with bounded_memory():
        check()


# ------------------------------------------------------------------ transforms.json

EYE = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3], [0, 0, 0, 1]]
FRAME_KEYS = ["file_path", "transform_matrix", "fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x"]
META_KEYS = ["frames", "camera_angle_x", "fl_x", "w", "h", "aabb_scale", "train_filenames", "test_filenames"]


def test_fuzz_transforms_json(tmp_path):
    from latentscape.dataset import load_dataset

    Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "a.png")

    @FUZZ
    @given(st.lists(st.tuples(st.sampled_from(FRAME_KEYS), json_values), max_size=3),
           st.lists(st.tuples(st.sampled_from(META_KEYS), json_values), max_size=2),
           st.integers(-1, 9))
    def check(frame_edits, meta_edits, downscale):
        frame = {"file_path": "a.png", "transform_matrix": EYE}
        frame.update(dict(frame_edits))
        meta = {"camera_angle_x": 0.8, "frames": [frame, {"file_path": "a.png", "transform_matrix": EYE}]}
        meta.update(dict(meta_edits))
        (tmp_path / "transforms.json").write_text(json.dumps(meta))
        typed_or_success(load_dataset, tmp_path, downscale=downscale)

    with bounded_memory():
        check()


# ------------------------------------------------------------------ camera_path.json

CP_EYE = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0, 0, 0, 1]


def test_fuzz_camera_path_json(tmp_path):
    from latentscape.render.camera_path import load_camera_path

    p = tmp_path / "cp.json"

    @FUZZ
    @given(st.lists(st.tuples(st.sampled_from(["render_width", "render_height", "camera_type", "fps", "seconds",
                                               "camera_path"]), json_values), max_size=3),
           st.lists(st.tuples(st.sampled_from(["camera_to_world", "fov", "aspect"]), json_values), max_size=2),
           st.one_of(st.none(), st.integers(-5, 20000)))
    def check(top, cam, width):
        frame = {"camera_to_world": CP_EYE, "fov": 50}
        frame.update(dict(cam))
        data = {"render_width": 16, "render_height": 12, "fps": 24, "camera_path": [frame]}
        data.update(dict(top))
        p.write_text(json.dumps(data))
        typed_or_success(load_camera_path, p, width=width)

    with bounded_memory():
        check()


# ------------------------------------------------------------------ safetensors headers

DTYPES = ["F32", "F16", "BF16", "F64", "I64", "I32", "I8", "U8", "BOOL", "F8_E4M3", "C64", "X", "", "F32 "]


@st.composite
def safetensors_files(draw):
    names = draw(st.lists(st.sampled_from(["nerf.color.0.lora_A", "nerf.color.0.lora_B", "m.lora_A.weight",
                                           "x", "m.alpha", "grid", "\x1b[2J"]), max_size=3, unique=True))
    header, offset = {}, 0
    for n in names:
        shape = draw(st.lists(st.one_of(st.integers(0, 6), st.integers(-3, 2**40)), max_size=3))
        size = draw(st.one_of(st.integers(0, 64), st.integers(-8, 2**62)))
        header[n] = {"dtype": draw(st.sampled_from(DTYPES)), "shape": shape,
                     "data_offsets": [offset, offset + size]}
        offset += max(size, 0)
    if draw(st.booleans()):
        header["__metadata__"] = draw(st.dictionaries(st.sampled_from(["rank", "alpha", "format"]),
                                                      st.one_of(texts, numbers.map(str)), max_size=2))
    raw = json.dumps(header).encode()
    declared = draw(st.one_of(st.just(len(raw)), st.integers(0, 2**64 - 1)))
    body = draw(st.binary(max_size=256))
    return struct.pack("<Q", declared) + raw + body


def test_fuzz_safetensors_headers(tmp_path):
    from latentscape.field.nerf import FieldConfig, NerfField
    from latentscape.lora.format import load_adapter
    from latentscape.render.occupancy import OccupancyGrid
    from latentscape.scene.bundle import _load_field_weights

    fcfg = FieldConfig(n_levels=2, log2_hashmap_size=4, finest_resolution=32)
    fld, grid = NerfField(fcfg), OccupancyGrid(fcfg.aabb, resolution=4)
    p = tmp_path / "w.safetensors"

    @FUZZ
    @given(safetensors_files())
    def check(data):
        p.write_bytes(data)
        typed_or_success(load_adapter, p)
        typed_or_success(_load_field_weights, p, fld, grid)

    with bounded_memory():
        check()


# ------------------------------------------------------------------ the pickle importer's opcode stream

def _snippets() -> list[bytes]:
    def uni(s: str) -> bytes:
        return b"\x8c" + bytes([len(s)]) + s.encode()

    globs = [uni(m) + uni(n) + b"\x93" for m, n in (
        ("torch._utils", "_rebuild_tensor_v2"), ("torch.storage", "_load_from_bytes"), ("torch", "Tensor"),
        ("torch", "FloatStorage"), ("collections", "OrderedDict"), ("builtins", "set"), ("numpy", "ndarray"),
        ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
        ("_codecs", "encode"), ("dnnlib.util", "EasyDict"), ("torch_utils.persistence", "_reconstruct_persistent_obj"),
        ("os", "system"))]
    return globs + [
        b"N", b"\x88", b"\x89", b"K\x05", b"K\x00", b"J\xff\xff\xff\x7f", b"M\xff\xff", b"\x8a\x01\x01",
        b"G\x7f\xf0\x00\x00\x00\x00\x00\x00", uni("abc"), uni("storage"), uni("O"), uni("<f4"), uni("latin1"),
        b"C\x04abcd", b"B\x00\x00\x00\x00", b")", b"]", b"}", b"\x8f", b"(", b"t", b"l", b"d", b"a", b"e", b"s",
        b"u", b"\x85", b"\x86", b"\x87", b"\x90", b"\x91", b"\x94", b"h\x00", b"h\x01", b"j\x00\x00\x00\x00",
        b"q\x00", b"r\xff\xff\xff\xff", b"0", b"1", b"2", b"R", b"\x81", b"\x92", b"b", b"Q", b"P0\n", b"\x96",
        b"\x97", b"\x98", b"o", b"i__main__\nX\n", b"\x82\x01",
    ]


SNIPPETS = _snippets()


def _legit_tensor_pickle() -> bytes:
    class _R:
        def __init__(self, fn, args):
            self.fn, self.args = fn, args

        def __reduce__(self):
            return self.fn, self.args

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        blob = torch.arange(6, dtype=torch.float32).storage().__reduce__()[1][0]
    t = _R(torch._utils._rebuild_tensor_v2, (_R(torch.storage._load_from_bytes, (blob,)), 0, (2, 3), (3, 1),
                                            False, OrderedDict()))
    return pickle.dumps({"w": t, "n": [1, 2.5, "x", (3, 4)]}, protocol=4)


def test_fuzz_pickle_opcode_stream():
    from latentscape.texture.pickle_import import loads_network_pickle

    @FUZZ
    @given(st.lists(st.one_of(st.sampled_from(SNIPPETS), st.binary(max_size=4)), max_size=40))
    def check(ops):
        typed_or_success(loads_network_pickle, b"\x80\x04" + b"".join(ops) + b".", max_memory=64 * 2**20)

    with bounded_memory():
        check()


def test_fuzz_pickle_mutations():
    from latentscape.texture.pickle_import import loads_network_pickle

    legit = _legit_tensor_pickle()
    assert torch.equal(loads_network_pickle(legit)["w"], torch.arange(6.0).reshape(2, 3))

    @FUZZ
    @given(st.lists(st.tuples(st.integers(0, len(legit) - 1), st.integers(0, 255)), min_size=1, max_size=4),
           st.integers(1, len(legit)))
    def check(flips, cut):
        data = bytearray(legit)
        for at, value in flips:
            data[at] = value
        typed_or_success(loads_network_pickle, bytes(data[:cut]) if cut < len(legit) // 2 else bytes(data))

    with bounded_memory():
        check()


def test_fuzz_targets_are_listed_in_the_architecture_doc():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "architecture.md").read_text()
    for name in ("test_fuzz_scene_toml", "test_fuzz_transforms_json", "test_fuzz_camera_path_json",
                 "test_fuzz_safetensors_headers", "test_fuzz_pickle_opcode_stream"):
        assert name in doc, name


def test_fuzz_stylegan3_record_mapping():
    """The importer's mapping of a recorded Generator (init kwargs, submodules) onto ours."""
    from latentscape.texture.pickle_import import PersistentRecord, generator_from_record

    keys = ["z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "channel_base",
            "channel_max", "num_layers", "filter_size", "conv_kernel", "margin_size", "use_radial_filters", "bogus"]
    good = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, channel_base=64, channel_max=16,
                num_layers=4)

    @FUZZ
    @given(st.lists(st.tuples(st.sampled_from(keys), json_values), max_size=3),
           st.sampled_from(["_init_kwargs", "_init_args", "_modules", "layer_names", None]), json_values)
    def check(edits, state_key, state_value):
        kw = {**good, **dict(edits)}
        synth = PersistentRecord("SynthesisNetwork", 1, "", {"layer_names": [], "_modules": {}})
        state = {"_init_kwargs": kw, "_modules": {"synthesis": synth}}
        if state_key == "layer_names":
            synth.state["layer_names"] = state_value
        elif state_key is not None:
            state[state_key] = state_value
        typed_or_success(generator_from_record, PersistentRecord("Generator", 1, "", state))

    with bounded_memory():
        check()
