"""The pure-Python half of the demo dataset recipe (no blender needed)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from latentscape.errors import DatasetError
from latentscape.tools import demo_dataset as dd


def test_look_at_is_opengl_camera_to_world():
    c2w = dd.look_at((0.0, -4.0, 0.0))
    rot = c2w[:3, :3]
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)
    # looks down its -Z at the origin, +Y up (world +Z), +X to the right
    np.testing.assert_allclose(-c2w[:3, 2], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(c2w[:3, 1], [0.0, 0.0, 1.0], atol=1e-12)
    np.testing.assert_allclose(c2w[:3, 0], [1.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(c2w[:3, 3], [0.0, -4.0, 0.0])


def test_look_at_straight_down_is_still_a_rotation():
    rot = dd.look_at((0.0, 0.0, 3.0))[:3, :3]
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(-rot[:, 2], [0.0, 0.0, -1.0], atol=1e-12)


def test_poses_are_seeded_on_the_sphere_and_look_at_the_origin():
    poses = dd.sample_camera_poses(200, seed=3, radius=4.0)
    again = dd.sample_camera_poses(200, seed=3, radius=4.0)
    other = dd.sample_camera_poses(200, seed=4, radius=4.0)
    assert all(np.array_equal(a, b) for a, b in zip(poses, again))
    assert not np.allclose(poses[0], other[0])
    elevations = []
    for c2w in poses:
        eye = c2w[:3, 3]
        assert np.linalg.norm(eye) == pytest.approx(4.0)
        np.testing.assert_allclose(-c2w[:3, 2], -eye / np.linalg.norm(eye), atol=1e-12)
        assert c2w[2, 0] == pytest.approx(0.0, abs=1e-12)  # no roll: image x stays horizontal
        elevations.append(math.degrees(math.asin(eye[2] / 4.0)))
    assert -15.0 <= min(elevations) < 0.0 < 60.0 < max(elevations) <= 85.0
    assert np.mean(np.asarray(elevations) > 0) > 0.75  # mostly the upper hemisphere


def test_intrinsics_and_projection():
    intr = dd.Intrinsics.from_fov_y(128, 128, 40.0)
    assert intr.fl_x == pytest.approx(64 / math.tan(math.radians(20)))
    assert intr.camera_angle_x == pytest.approx(math.radians(40))
    c2w = dd.look_at((4.0, 0.0, 0.0))
    u, v, depth = dd.project(c2w, intr, (0.0, 0.0, 0.0))
    assert (u, v, depth) == pytest.approx((64.0, 64.0, 4.0))
    # world +Z is up in the image (v decreases); camera right is world +Y here
    assert dd.project(c2w, intr, (0.0, 0.0, 0.5))[1] < 64.0
    assert dd.project(c2w, intr, (0.0, 0.5, 0.0))[0] > 64.0


def test_transforms_fields_and_splits(tmp_path):
    splits = dd.frame_paths(3, 1, 2)
    assert splits == {
        "train": ["images/r_000.png", "images/r_001.png", "images/r_002.png"],
        "val": ["images/r_003.png"],
        "test": ["images/r_004.png", "images/r_005.png"],
    }
    poses = dd.sample_camera_poses(6, seed=0)
    intr = dd.Intrinsics.from_fov_y(128, 128, 40.0)
    doc = dd.build_transforms(poses, intr, splits, recipe={"seed": 0})
    path = dd.write_transforms(tmp_path / "out" / "transforms.json", doc)
    loaded = json.loads(path.read_text())
    for key in ("camera_angle_x", "fl_x", "fl_y", "cx", "cy", "w", "h", "aabb_scale"):
        assert key in loaded
    assert (loaded["w"], loaded["h"], loaded["cx"], loaded["cy"]) == (128, 128, 64.0, 64.0)
    assert "camera_model" not in loaded
    assert [f["file_path"] for f in loaded["frames"]] == splits["train"] + splits["val"] + splits["test"]
    assert loaded["train_filenames"] == splits["train"]
    assert loaded["val_filenames"] == splits["val"]
    assert loaded["test_filenames"] == splits["test"]
    assert np.asarray(loaded["frames"][0]["transform_matrix"]).shape == (4, 4)
    assert loaded["latentscape_recipe"] == {"seed": 0}
    assert dd.check_centred(loaded) < 1e-6


def test_check_centred_rejects_world_to_camera_matrices():
    poses = dd.sample_camera_poses(2, seed=0)
    intr = dd.Intrinsics.from_fov_y(64, 64, 40.0)
    doc = dd.build_transforms([np.linalg.inv(p) for p in poses], intr, dd.frame_paths(2, 0, 0))
    with pytest.raises(DatasetError):
        dd.check_centred(doc)


def test_missing_blender_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setattr(dd.shutil, "which", lambda name: None)
    with pytest.raises(DatasetError, match="apt-get install") as err:
        dd.build_demo_dataset(tmp_path / "ds", progress=False)
    assert "blender" in str(err.value)
    assert not (tmp_path / "ds").exists()


def test_missing_asset_names_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(dd.shutil, "which", lambda name: "/usr/bin/blender")
    monkeypatch.setattr(dd, "ASSET_CANDIDATES", (tmp_path / "nope.gltf",))
    with pytest.raises(DatasetError, match="assimp-testmodels"):
        dd.build_demo_dataset(tmp_path / "ds", progress=False)


def test_missing_hdri_names_the_package(tmp_path):
    with pytest.raises(DatasetError, match="blender-data"):
        dd.find_hdri(dirs=(tmp_path,))
    (tmp_path / "b.exr").write_bytes(b"")
    (tmp_path / "a.exr").write_bytes(b"")
    assert dd.find_hdri(dirs=(tmp_path,)).name == "a.exr"


def test_cli_reports_missing_blender(monkeypatch, tmp_path, capsys):
    from latentscape.tools import cli

    monkeypatch.setattr(dd.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["dataset", "demo", "--out", str(tmp_path / "ds")])
    assert exit_info.value.code == DatasetError.exit_code
    assert "apt-get install" in capsys.readouterr().err
