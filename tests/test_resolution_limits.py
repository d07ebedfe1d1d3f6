"""Resolution and memory checked up front (issue 11, class 6): absurd frame sizes and
oversized dataset images are refused with the memory they would need, before anything is
allocated; rays are generated one chunk at a time, with the same values."""

from __future__ import annotations

import json
import struct
import time
import zlib

import pytest
import torch

from latentscape.errors import CameraPathError, DatasetError, LatentscapeError
from latentscape.render.camera_path import load_camera_path, orbit_path
from latentscape.render.cameras import Camera, generate_rays, pixel_centres


def test_width_100000_is_refused_before_work(tmp_path):
    from typer.testing import CliRunner

    from latentscape.tools.cli import app

    t0 = time.perf_counter()
    res = CliRunner().invoke(app, ["render", "--width", "100000", "--out", str(tmp_path / "o.mp4")])
    assert res.exit_code != 0 and isinstance(res.exception, CameraPathError), res.output
    assert "16384" in str(res.exception)
    assert not (tmp_path / "o.mp4").exists()
    assert time.perf_counter() - t0 < 60


def test_huge_camera_path_states_the_memory(tmp_path, monkeypatch):
    p = tmp_path / "cp.json"
    eye = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0, 0, 0, 1]
    p.write_text(json.dumps({"render_width": 100_000, "render_height": 100_000, "fps": 24,
                             "camera_path": [{"camera_to_world": eye, "fov": 50}]}))
    with pytest.raises(CameraPathError, match="width must be a positive integer"):
        load_camera_path(p)
    monkeypatch.setenv("LATENTSCAPE_MAX_FRAME_GB", "0.5")
    with pytest.raises(CameraPathError, match=r"4000x3000 needs about 3\.1 GiB per frame, more than the 0\.5 GiB"):
        load_camera_path(p, width=4000, height=3000)
    with pytest.raises(CameraPathError, match="GiB per frame"):
        orbit_path(4, 4000, 3000, radius=2.0)
    assert len(load_camera_path(p, width=64, height=48)) == 1


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header says ``width`` x ``height`` (and whose pixel data is cut short)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))


def test_13000px_dataset_image_refused_from_its_header(tmp_path):
    (tmp_path / "big.png").write_bytes(png_header(13000, 13000))
    eye = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3], [0, 0, 0, 1]]
    (tmp_path / "transforms.json").write_text(json.dumps(
        {"camera_angle_x": 0.8, "frames": [{"file_path": "big.png", "transform_matrix": eye}]}))
    t0 = time.perf_counter()
    with pytest.raises(DatasetError, match=r"13000x13000 \(169 Mpx\): decoded it needs 2\.5 GiB") as err:
        from latentscape.dataset import load_dataset

        load_dataset(tmp_path)
    assert "transforms.json" in str(err.value)
    assert time.perf_counter() - t0 < 5


def test_dataset_total_memory_budget(tmp_path):
    from PIL import Image

    from latentscape.dataset import load_dataset

    Image.new("RGB", (64, 64), (10, 20, 30)).save(tmp_path / "a.png")
    eye = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 3], [0, 0, 0, 1]]
    frames = [{"file_path": "a.png", "transform_matrix": eye}] * 10
    (tmp_path / "transforms.json").write_text(json.dumps({"camera_angle_x": 0.8, "frames": frames}))
    with pytest.raises(DatasetError, match=r"10 images need .* GiB decoded, more than"):
        load_dataset(tmp_path, max_bytes=100_000)
    assert len(load_dataset(tmp_path).split("train")) == 8


@pytest.mark.parametrize("model", ["pinhole", "fisheye", "equirectangular"])
def test_rays_per_chunk_equal_rays_of_the_whole_image(model):
    c2w = orbit_path(3, 8, 8, radius=2.0).cameras[1].c2w
    cam = Camera.from_fov(c2w, 131, 67, 170.0 if model == "fisheye" else 60.0, model) if model != "fisheye" else \
        Camera(c2w, 131, 67, 40.0, 40.0, 65.5, 33.5, "fisheye")
    o, d, v = generate_rays(cam)
    n = cam.width * cam.height
    for chunk in (7, 1000):
        parts = [generate_rays(cam, pixels=pixel_centres(cam, i, min(i + chunk, n))) for i in range(0, n, chunk)]
        assert torch.equal(torch.cat([p[0] for p in parts]), o)
        assert torch.equal(torch.cat([p[1] for p in parts]), d)
        assert torch.equal(torch.cat([p[2] for p in parts]), v)


def test_render_camera_builds_rays_one_chunk_at_a_time(tmp_path, monkeypatch):
    import latentscape.render.renderer as renderer
    from latentscape.scene.bundle import load_scene
    from latentscape.testing import make_tiny_scene

    scene = load_scene(make_tiny_scene(tmp_path / "s"))
    sizes = []
    real = renderer.generate_rays

    def spy(cam, device="cpu", pixels=None):
        sizes.append(cam.width * cam.height if pixels is None else pixels.shape[0])
        return real(cam, device, pixels)

    cam = scene.orbit(1, 40, 30).cameras[0]
    cfg = renderer.RenderConfig(**{**scene.render_config.__dict__, "chunk": 256})
    ref = renderer.render_camera(scene.field, scene.grid, cam, cfg, scene.background,
                                 world_to_field=(scene.center, scene.scale))
    monkeypatch.setattr(renderer, "generate_rays", spy)
    out = renderer.render_camera(scene.field, scene.grid, cam, cfg, scene.background,
                                 world_to_field=(scene.center, scene.scale))
    assert max(sizes) == 256 and sum(sizes) == 1200
    assert torch.equal(out.rgb, ref.rgb) and torch.equal(out.depth, ref.depth)


def test_camera_rejects_nan_intrinsics():
    with pytest.raises(ValueError):
        Camera(torch.eye(4), 8, 8, float("nan"), 1.0, 4.0, 4.0)
    with pytest.raises(LatentscapeError):
        orbit_path(2, 8, 8, radius=2.0, fov_deg=180.0)
