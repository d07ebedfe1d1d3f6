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


def test_no_val_views_means_val_lists_the_test_views():
    splits = dd.frame_paths(3, 0, 2)
    assert splits["val"] == []
    doc = dd.build_transforms(dd.sample_camera_poses(5, seed=0), dd.Intrinsics.from_fov_y(32, 32, 40.0), splits)
    assert doc["val_filenames"] == doc["test_filenames"] == ["images/r_003.png", "images/r_004.png"]
    assert doc["train_filenames"] == splits["train"]
    assert len(doc["frames"]) == 5  # the test views are not duplicated as frames


def test_prepare_mesh_passes_blender_formats_and_converts_off(tmp_path):
    import trimesh

    for name in ("a.glb", "b.GLTF", "c.dae", "d.obj", "e.ply", "f.stl"):
        assert dd.prepare_mesh(tmp_path / name, tmp_path) == (tmp_path / name, None)
    off = tmp_path / "tet.off"
    off.write_text("OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 2 1\n3 0 1 3\n3 0 3 2\n3 1 2 3\n")
    out_dir = tmp_path / "tmp"
    out_dir.mkdir()
    converted, how = dd.prepare_mesh(off, out_dir)
    assert converted == out_dir / "tet.ply" and ".off -> .ply" in how
    mesh = trimesh.load(str(converted), force="mesh")
    assert (len(mesh.vertices), len(mesh.faces)) == (4, 4)
    np.testing.assert_allclose(mesh.bounds, [[0, 0, 0], [1, 1, 1]])


def test_prepare_mesh_rejects_unknown_and_empty_files(tmp_path):
    with pytest.raises(DatasetError, match="cannot read"):
        dd.prepare_mesh(tmp_path / "mesh.xyz123", tmp_path)
    empty = tmp_path / "empty.off"
    empty.write_text("OFF\n0 0 0\n")
    with pytest.raises(DatasetError):
        dd.prepare_mesh(empty, tmp_path)


def test_cli_blender_command_passes_the_mesh_and_splits(monkeypatch, tmp_path, capsys):
    from latentscape.tools import cli

    seen = {}

    def fake_build(out, **kwargs):
        seen.update(kwargs, out=out)
        return out / "transforms.json"

    monkeypatch.setattr(dd, "build_demo_dataset", fake_build)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["dataset", "blender", "--mesh", str(tmp_path / "cow.off"), "--out", str(tmp_path / "ds"),
                  "--size", "100", "--train", "60", "--val", "0", "--test", "12", "--seed", "5"])
    assert exit_info.value.code == 0
    assert seen["asset"] == tmp_path / "cow.off"
    assert (seen["size"], seen["n_train"], seen["n_val"], seen["n_test"], seen["seed"]) == (100, 60, 0, 12, 5)
    assert "72 views, 100x100" in capsys.readouterr().out


def _fake_blender(fail_after: int | None = None):
    """Stands in for ``_run_blender``: writes what tools/blender_views.py writes (images, result.json)."""

    def run(blender, job_path, n_frames, log_path, progress):
        job = json.loads(job_path.read_text())
        log_path.write_text("fake blender\n")
        out = dd.Path(job["out_dir"])
        for k, frame in enumerate(job["frames"]):
            if fail_after is not None and k == fail_after:
                raise DatasetError("blender failed (exit 3): boom", path=log_path)
            (out / frame["file_path"]).write_bytes(b"\x89PNG fake")
        h = job["height"]
        fl = 0.5 * h / math.tan(math.radians(job["fov_y_deg"]) / 2)
        result = {"camera": {"lens_mm": fl * 24.0 / h, "sensor_height_mm": 24.0, "shift": [0.0, 0.0], "width": h,
                             "height": h},
                  "frames": [{"matrix_world": f["transform_matrix"]} for f in job["frames"]],
                  "asset": {"bounds": [[-1, -1, -1], [1, 1, 1]], "scale": 1.0}, "blender_version": "fake",
                  "render": {"view_transform": "Standard"}}
        dd.Path(job["result"]).write_text(json.dumps(result))

    return run


@pytest.fixture
def fake_tools(monkeypatch, tmp_path):
    asset, hdri = tmp_path / "truck.glb", tmp_path / "sky.exr"
    asset.write_bytes(b"glb")
    hdri.write_bytes(b"exr")
    monkeypatch.setattr(dd, "find_blender", lambda b=None: dd.Path("/usr/bin/blender"))
    monkeypatch.setattr(dd, "find_asset", lambda a=None: asset)
    monkeypatch.setattr(dd, "find_hdri", lambda h=None: hdri)
    return monkeypatch


def _tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


def test_dataset_is_written_whole_or_not_at_all(fake_tools, tmp_path):
    """The dataset used to be rendered in place: a failed or interrupted run left a folder of some
    images and no transforms.json, and a second run wrote over any folder without asking."""
    out = tmp_path / "data" / "ds"
    fake_tools.setattr(dd, "_run_blender", _fake_blender(fail_after=2))
    before = _tree(tmp_path)
    with pytest.raises(DatasetError, match="boom") as err:
        dd.build_demo_dataset(out, n_train=3, n_val=1, n_test=1, size=16, progress=False)
    assert _tree(tmp_path) == before, "a partial dataset (or its created parent) was left"
    assert err.value.path.is_file() and "fake blender" in err.value.path.read_text()  # the log survives, named
    err.value.path.unlink()

    fake_tools.setattr(dd, "_run_blender", _fake_blender())
    path = dd.build_demo_dataset(out, n_train=3, n_val=1, n_test=1, size=16, progress=False)
    assert path == out.resolve() / "transforms.json"
    doc = json.loads(path.read_text())
    assert len(doc["frames"]) == 5 and (out / "blender.log").read_text() == "fake blender\n"
    assert all((out / f["file_path"]).is_file() for f in doc["frames"])
    with pytest.raises(dd.OutputError, match="already exists"):
        dd.build_demo_dataset(out, n_train=3, size=16, progress=False)
    dd.build_demo_dataset(out, n_train=2, n_val=0, n_test=1, size=16, progress=False, force=True)
    assert len(json.loads(path.read_text())["frames"]) == 3
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(dd.OutputError, match="marker"):
        dd.build_demo_dataset(mine, n_train=2, size=16, progress=False, force=True)
    assert _tree(mine) == ["notes.txt"]
