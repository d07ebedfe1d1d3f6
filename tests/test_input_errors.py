"""One-line errors instead of tracebacks (issue 11, class 9): wrong types, zeros, NaN and
absurd values in scene.toml, transforms.json, camera paths and command-line flags are a
typed LatentscapeError naming the file or flag and the key; none is accepted silently."""

from __future__ import annotations

import json
import math
import shutil
import tomllib

import pytest
import tomli_w
from PIL import Image

from latentscape.errors import CameraPathError, ConfigError, DatasetError, LatentscapeError
from latentscape.render.camera_path import load_camera_path
from latentscape.scene.bundle import load_scene
from latentscape.testing import make_tiny_scene


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_scene(tmp_path_factory.mktemp("base") / "scene")


SCENE_CASES = [
    ("fps", lambda c: c["render"].update(fps="24")),
    ("fps", lambda c: c["render"].update(fps=0)),
    ("fps", lambda c: c["render"].update(fps=math.nan)),
    ("chunk", lambda c: c["render"].update(chunk="big")),
    ("chunk", lambda c: c["render"].update(chunk=0)),
    ("segment", lambda c: c["render"].update(segment=0)),
    ("steps_per_diagonal", lambda c: c["render"].update(steps_per_diagonal=-5)),
    ("steps_per_diagonal", lambda c: c["render"].update(steps_per_diagonal=1.5)),
    ("scale", lambda c: c["field"]["normalization"].update(scale="x")),
    ("scale", lambda c: c["field"]["normalization"].update(scale=0.0)),
    ("center", lambda c: c["field"]["normalization"].update(center=[1.0, 2.0])),
    ("center", lambda c: c["field"]["normalization"].update(center=[math.nan, 0.0, 0.0])),
    ("center", lambda c: c["field"]["normalization"].update(center="origin")),
    ("width", lambda c: c["render"].update(width=10**9)),
    ("background", lambda c: c["render"].update(background=[1, 1])),
    ("n_levels", lambda c: c["field"]["config"].update(n_levels="16")),
    ("log2_hashmap_size", lambda c: c["field"]["config"].update(log2_hashmap_size=60)),
    ("aabb", lambda c: c["field"]["config"].update(aabb=[0, 0, 0, 1, 1])),
    ("resolution", lambda c: c["field"].setdefault("occupancy", {}).update(resolution=0)),
    ("format", lambda c: c["scene"].update(format="one")),
    ("up", lambda c: c["scene"].update(up=[0, 0, 0])),
]


@pytest.mark.parametrize("key,edit", SCENE_CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(SCENE_CASES)])
def test_scene_toml_numbers(base, tmp_path, key, edit):
    root = tmp_path / "scene"
    shutil.copytree(base, root)
    cfg = tomllib.loads((root / "scene.toml").read_text())
    edit(cfg)
    (root / "scene.toml").write_text(tomli_w.dumps(cfg))
    with pytest.raises(LatentscapeError) as err:
        load_scene(root, verify=False)
    msg = str(err.value)
    assert key in msg and "scene.toml" in msg, msg
    assert len(msg.splitlines()) <= 2


EYE = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3], [0, 0, 0, 1]]
DATASET_CASES = [
    ("transform_matrix", {"transform_matrix": [[1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3], [0, 0, 0, 1]]}),  # ragged
    ("transform_matrix", {"transform_matrix": [[0] * 4] * 4}),  # zero
    ("transform_matrix", {"transform_matrix": [[1e300, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3], [0, 0, 0, 1]]}),
    ("transform_matrix", {"transform_matrix": [["1", 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3], [0, 0, 0, 1]]}),
    ("transform_matrix", {"transform_matrix": "identity"}),
    ("file_path", {"file_path": 123}),
    ("file_path", {"file_path": ["a.png"]}),
    ("fl_x", {"fl_x": math.nan}),
    ("fl_x", {"fl_x": "500"}),
    ("fl_x", {"fl_x": 0}),
    ("cx", {"fl_x": 50, "cx": math.inf}),
    ("camera_angle_x", {"camera_angle_x": 4.0}),
]


@pytest.mark.parametrize("key,change", DATASET_CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(DATASET_CASES)])
def test_transforms_json_types(tmp_path, key, change):
    from latentscape.dataset import load_dataset

    Image.new("RGB", (16, 16), (10, 20, 30)).save(tmp_path / "a.png")
    frame = {"file_path": "a.png", "transform_matrix": EYE, **change}
    meta = {"frames": [frame] * 3}
    if "fl_x" not in change and "camera_angle_x" not in change:
        meta["camera_angle_x"] = 0.8
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path)
    assert key in str(err.value) and "transforms.json" in str(err.value), str(err.value)


CP_EYE = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0, 0, 0, 1]
CP_CASES = [
    ("fov", {"camera_path": [{"camera_to_world": CP_EYE, "fov": 180}]}),  # a pinhole at 180 renders black
    ("fov", {"camera_path": [{"camera_to_world": CP_EYE, "fov": "wide"}]}),
    ("fov", {"camera_path": [{"camera_to_world": CP_EYE, "fov": True}]}),
    ("camera_to_world", {"camera_path": [{"camera_to_world": [True] * 16}]}),
    ("camera_to_world", {"camera_path": [{"camera_to_world": [0] * 16}]}),
    ("camera_to_world", {"camera_path": [{"camera_to_world": CP_EYE[:-1] + ["1"]}]}),
    ("seconds", {"seconds": 0}),
    ("fps", {"fps": math.nan}),
    ("camera_type", {"camera_type": ["perspective"]}),
    ("render_width", {"render_width": 64.5}),
]


@pytest.mark.parametrize("key,change", CP_CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(CP_CASES)])
def test_camera_path_types(tmp_path, key, change):
    data = {"render_width": 32, "render_height": 24, "camera_path": [{"camera_to_world": CP_EYE, "fov": 50}], **change}
    if "seconds" not in change:
        data.setdefault("fps", 24)
    p = tmp_path / "cp.json"
    p.write_text(json.dumps(data))
    with pytest.raises(CameraPathError) as err:
        load_camera_path(p)
    assert key in str(err.value) and str(p) in str(err.value), str(err.value)
    with pytest.raises(CameraPathError, match="folder"):
        load_camera_path(tmp_path)
    with pytest.raises(CameraPathError, match="not a regular file"):
        load_camera_path("/dev/zero")


@pytest.mark.parametrize("args", [
    ["--downscale", "0"], ["--downscale", "-2"], ["--occupancy-resolution", "0"], ["--max-seconds", "-5"],
    ["--max-seconds", "nan"], ["--levels", "0"], ["--eval-fraction", "nan"],
])
def test_train_flags(tmp_path, args):
    from typer.testing import CliRunner

    from latentscape.tools.cli import app

    res = CliRunner().invoke(app, ["train", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), *args])
    assert res.exit_code != 0 and isinstance(res.exception, ConfigError), res.output
    assert args[0] in str(res.exception)
    assert not (tmp_path / "o").exists()


def test_downscale_checked_by_the_dataset_reader_too(tmp_path):
    from latentscape.dataset import load_dataset

    for bad in (0, -1, 2.5, True):
        with pytest.raises(DatasetError, match="downscale"):
            load_dataset(tmp_path, downscale=bad)


def test_deeply_nested_files_are_one_line_errors(base, tmp_path):
    root = tmp_path / "scene"
    shutil.copytree(base, root)
    (root / "scene.toml").write_text("a = " + "[" * 100_000)
    with pytest.raises(LatentscapeError, match="nested too deeply"):
        load_scene(root, verify=False)
    (tmp_path / "cp.json").write_text("[" * 100_000)
    with pytest.raises(CameraPathError):
        load_camera_path(tmp_path / "cp.json")
    (tmp_path / "transforms.json").write_text("{\"frames\": " + "[" * 100_000)
    with pytest.raises(DatasetError):
        from latentscape.dataset import load_dataset

        load_dataset(tmp_path)
