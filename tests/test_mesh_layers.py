"""Mesh layers: rasterizer vs trimesh ray casting, occlusion both ways with a NeRF of known
density, scene.toml layers through ``latentscape render``, transform checks, UV
fallbacks, and GAN textures that move with time."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

trimesh = pytest.importorskip("trimesh")

from latentscape.errors import ConfigError, LatentscapeError, LockMismatchError, SceneError  # noqa: E402
from latentscape.render.cameras import Camera, look_at  # noqa: E402
from latentscape.render.mesh import (MeshData, MeshLayer, check_similarity, load_mesh, rasterize,  # noqa: E402
                                     raycast, sample_texture)


def _mesh(m, transform=None) -> tuple[torch.Tensor, torch.Tensor]:
    v = torch.tensor(np.asarray(m.vertices), dtype=torch.float32)
    if transform is not None:
        v = v @ torch.as_tensor(transform[:3, :3], dtype=torch.float32).T + torch.as_tensor(transform[:3, 3], dtype=torch.float32)
    return v, torch.tensor(np.asarray(m.faces), dtype=torch.int64)


def _two_objects():
    """An icosphere with a box half behind it: overlapping depths exercise the z-buffer."""
    sph = trimesh.creation.icosphere(subdivisions=2, radius=0.6)
    box = trimesh.creation.box(extents=(0.8, 0.5, 0.3))
    box.apply_translation((0.5, 0.2, -0.5))
    return _mesh(trimesh.util.concatenate([sph, box]))


# --------------------------------------------------------------------------- rasterizer vs ray casting


@pytest.mark.parametrize("tile", [4, 16])
@pytest.mark.parametrize("eye,fov", [((0.3, 0.4, 2.5), 50.0), ((1.8, -1.0, 1.2), 95.0)])
def test_rasterizer_matches_trimesh_raycast(tile, eye, fov):
    pytest.importorskip("rtree")
    v, f = _two_objects()
    cam = Camera.from_fov(look_at(eye), 61, 47, fov)  # odd sizes: partial tiles
    r = rasterize(v, f, cam, tile=tile)
    ref = raycast(v, f, cam)
    # Coverage: pixel centres exactly on a silhouette edge may go either way.
    assert (r.mask != ref.mask).sum() <= 2
    assert ref.mask.sum() > 100
    both = r.mask & ref.mask
    # Distance along the ray (not view z): the wide 95-degree view makes the two differ by up to 1.8x.
    assert torch.allclose(r.depth[both], ref.depth[both], rtol=1e-4, atol=1e-4)
    assert torch.isinf(r.depth[~r.mask]).all()
    same = both & (r.tri == ref.tri)
    assert same.float().sum() >= both.float().sum() - 2
    assert torch.allclose(r.bary[same], ref.bary[same], atol=2e-3)


def test_rasterizer_depth_is_distance_not_z():
    # A plane facing the camera at distance 2: view z is 2 everywhere, distance grows off-axis.
    quad = trimesh.Trimesh([[-5, -5, 0], [5, -5, 0], [5, 5, 0], [-5, 5, 0]], [[0, 1, 2], [0, 2, 3]])
    v, f = _mesh(quad)
    cam = Camera.from_fov(look_at((0, 0, 2)), 40, 30, 90.0)
    r = rasterize(v, f, cam)
    assert r.mask.all()
    u, w = torch.meshgrid(torch.arange(30) + 0.5, torch.arange(40) + 0.5, indexing="ij")
    x, y = (w - cam.cx) / cam.fx, (u - cam.cy) / cam.fy
    assert torch.allclose(r.depth, 2.0 * torch.sqrt(1 + x * x + y * y), rtol=1e-5)


def test_rasterizer_drops_triangles_behind_camera_and_handles_empty():
    v, f = _two_objects()
    behind = Camera.from_fov(look_at((0, 0, 5), (0, 0, 10)), 16, 16, 60.0)
    assert not rasterize(v, f, behind).mask.any()
    none = rasterize(v, f[:0], Camera.from_fov(look_at((0, 0, 3)), 8, 8, 60.0))
    assert not none.mask.any() and torch.isinf(none.depth).all()


def test_perspective_correct_uv_and_bilinear_wrap():
    # A quad seen at a grazing angle: UV must follow the surface, not the screen.
    verts = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 0, -4], [0, 0, -4]], dtype=torch.float32)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uv = torch.tensor([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=torch.float32)
    cam = Camera.from_fov(look_at((0.5, 0.6, 0.5), (0.5, 0, -1.5)), 48, 48, 70.0)
    fr = rasterize(verts, faces, cam)
    o, d, _ = __import__("latentscape.render.cameras", fromlist=["generate_rays"]).generate_rays(cam)
    hit = o + d * fr.depth.reshape(-1, 1)
    m = fr.mask.reshape(-1)
    # Surface point -> exact UV (u = x, v = -z / 4) vs interpolated UV.
    exact = torch.stack((hit[m, 0], -hit[m, 2] / 4), -1)
    interp = (uv[faces[fr.tri.reshape(-1)[m]]] * fr.bary.reshape(-1, 3)[m, :, None]).sum(1)
    assert m.sum() > 300 and (exact - interp).abs().max() < 1e-3
    tex = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]], [[0, 0, 1.0], [1.0, 1.0, 1.0]]])  # 2x2, row 0 = top
    got = sample_texture(tex, torch.tensor([[0.25, 0.75], [0.75, 0.25], [1.25, 0.75], [0.0, 0.75]]))
    assert torch.allclose(got[0], tex[0, 0]) and torch.allclose(got[1], tex[1, 1])
    assert torch.allclose(got[2], got[0])  # repeat wrap
    assert torch.allclose(got[3], 0.5 * (tex[0, 0] + tex[0, 1]))  # u = 0 blends across the seam


# --------------------------------------------------------------------------- occlusion with a NeRF


class SphereField(nn.Module):
    """A hand-made field: an opaque red ball of radius 0.5 at the origin, nothing else."""

    def __init__(self):
        super().__init__()
        self.register_buffer("aabb", torch.tensor([-1.0, -1, -1, 1, 1, 1]))

    def forward(self, x, d):
        sigma = torch.where(x.norm(dim=-1) < 0.5, 400.0, 0.0)
        return sigma, torch.tensor([1.0, 0.0, 0.0]).expand(x.shape[0], 3)


def _sphere_scene():
    from latentscape.render.occupancy import OccupancyGrid
    from latentscape.render.renderer import RenderConfig
    from latentscape.scene.bundle import Scene

    fld = SphereField()
    return Scene(path=Path("."), name="ball", version="test", config={}, field=fld, grid=OccupancyGrid(fld.aabb, 8),
                 render_config=RenderConfig(steps_per_diagonal=256, segment=32), background=(1.0, 1.0, 1.0),
                 center=torch.zeros(3), scale=1.0, width=48, height=48, fps=24.0, up_axis=1)


def _quad(x0, x1, y0, y1, z) -> MeshData:
    v = torch.tensor([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=torch.float32)
    return MeshData(v, torch.tensor([[0, 1, 2], [0, 2, 3]]), torch.tensor([[0, 0], [1, 0], [1, 1], [0, 1.0]]))


def _solid(rgb) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).expand(4, 4, 3).clone()


def test_layers_occlude_nerf_and_nerf_occludes_layers():
    from latentscape.frame import FrameLoop

    scene = _sphere_scene()
    # Blue quad through the ball's centre plane (its middle is hidden by the ball's front),
    # green quad in front of the ball (hides it).
    behind = MeshLayer(_quad(-1.0, 1.0, -1.0, -0.05, 0.0), _solid([0, 0, 1]), name="behind")
    front = MeshLayer(_quad(0.05, 1.0, 0.05, 1.0, 0.8), _solid([0, 1, 0]), name="front")
    cam = Camera.from_fov(look_at((0, 0, 3)), 48, 48, 40.0)
    frame = FrameLoop(scene, layers=[behind, front]).render(cam)

    def px(x, y, z=0.0):  # pixel of world point (x, y, z) for this camera
        f = cam.fy
        return int(cam.cy - f * y / (3 - z)), int(cam.cx + f * x / (3 - z))

    rgb = frame.rgb.astype(int)
    red, blue, green, white = [255, 0, 0], [0, 0, 255], [0, 255, 0], [255, 255, 255]
    assert rgb[px(0.0, -0.25)].tolist() == red  # NeRF in front of the blue quad
    assert rgb[px(0.8, -0.6)].tolist() == blue  # blue quad where no ball is in front
    assert rgb[px(0.2, 0.2, 0.8)].tolist() == green  # green quad in front of the ball
    assert rgb[px(-0.2, 0.25)].tolist() == red  # ball where no layer is
    assert rgb[px(-0.8, 0.8)].tolist() == white  # background
    # Depth: the layer's ray distance where it shows, the NeRF surface where the ball shows.
    r, c = px(0.8, -0.6)
    assert frame.depth[r, c] == pytest.approx(float(torch.tensor([0.8 * 3 / 3, -0.6, -3.0]).norm()), rel=2e-2)
    r, c = px(0.0, -0.25)
    assert 2.45 < frame.depth[r, c] < 2.6


# --------------------------------------------------------------------------- scene files and the CLI


def _write_screen(path: Path) -> Path:
    from latentscape.tools.recipes.demo_layer import screen_obj

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(screen_obj(4))
    return path


def test_non_similarity_transform_refused(tmp_path):
    rot = trimesh.transformations.rotation_matrix(0.7, [1, 2, 3])
    ok = rot @ np.diag([2.5, 2.5, 2.5, 1.0])
    ok[:3, 3] = [1, -2, 3]
    check_similarity(ok)
    check_similarity(np.diag([-1.0, 1, 1, 1]))  # a mirror is still a similarity
    shear = np.eye(4)
    shear[0, 1] = 0.2
    projective = np.eye(4)
    projective[3, 2] = 0.1
    for bad in (shear, np.diag([1.0, 2.0, 1.0, 1.0]), projective, np.zeros((4, 4)), np.eye(3), [[1, 2], [3, "x"]]):
        with pytest.raises(ConfigError):
            check_similarity(bad)
    mesh = _write_screen(tmp_path / "screen.obj")
    with pytest.raises(ConfigError, match="similarity"):
        load_mesh(mesh, transform=np.diag([1.0, 1.0, 3.0, 1.0]).tolist())
    placed = load_mesh(mesh, transform=ok.tolist())
    local = load_mesh(mesh)
    expect = local.vertices.double() @ torch.from_numpy(ok[:3, :3]).T + torch.from_numpy(ok[:3, 3])
    assert torch.allclose(placed.vertices.double(), expect, atol=1e-5)


def test_mesh_without_uvs_and_empty_mesh(tmp_path):
    ply = tmp_path / "ball.ply"
    trimesh.creation.uv_sphere(radius=1.0, count=[8, 8]).export(ply)
    with pytest.raises(ConfigError, match="UV") as err:
        load_mesh(ply)
    assert "spherical" in str(err.value) and str(ply) in str(err.value)
    for mode in ("spherical", "planar"):
        m = load_mesh(ply, uv=mode)
        assert m.uv.shape == (m.vertices.shape[0], 2)
        assert m.uv.min() >= -1e-6 and m.uv.max() <= 1 + 1e-6
    sph = load_mesh(ply, uv="spherical")
    p = sph.vertices.double()  # the sphere is centred: v = latitude about +Y, u = longitude
    r = p.norm(dim=-1)
    assert torch.allclose(sph.uv[:, 1].double(), torch.asin(p[:, 1] / r) / math.pi + 0.5, atol=1e-5)
    assert torch.allclose(sph.uv[:, 0].double(), torch.atan2(p[:, 0], p[:, 2]) / (2 * math.pi) + 0.5, atol=1e-5)
    empty = tmp_path / "empty.obj"
    empty.write_text("v 0 0 0\nv 1 0 0\n")
    with pytest.raises(SceneError, match="empty"):
        load_mesh(empty)
    with pytest.raises(SceneError, match="not found"):
        load_mesh(tmp_path / "missing.glb")
    junk = tmp_path / "junk.glb"
    junk.write_bytes(b"glTF\x02\x00\x00\x00garbage")
    with pytest.raises(SceneError):
        load_mesh(junk)


def test_texture_changes_with_time_under_a_walk(tiny_generator):
    from latentscape.frame import FrameContext
    from latentscape.texture.latents import LatentProgram
    from latentscape.texture.stage import TextureStage

    G = tiny_generator("T", z_dim=16, w_dim=16, channel_base=256, channel_max=16, num_critical=2)
    stage = TextureStage("gan", G, LatentProgram.from_dict({"kind": "walk", "seeds": [1, 2, 3], "period": 6.0}))
    cam = Camera.from_fov(look_at((0, 0, 2)), 24, 24, 60.0)
    layer = MeshLayer(_quad(-1, 1, -1, 1, 0), "gan")

    def at(t):
        ctx = FrameContext(index=0, time=t, camera=cam, deadline=None, scene_version="x")
        stage.prepare(ctx)
        return ctx.extras["textures"]["gan"].clone(), layer.render(ctx)[0]

    t0, img0 = at(0.0)
    t1, img1 = at(1.0)
    t6, img6 = at(6.0)
    assert t0.shape == (16, 16, 3)  # (values are clamped to [0, 1] by the stage: nothing to check)
    assert (t0 - t1).abs().max() > 1e-3 and (img0 - img1).abs().max() > 1e-3
    assert torch.allclose(t0, t6, atol=1e-5)  # the walk loops
    # Latent guardrails see [1, num_ws, w_dim] before synthesis and may project the latents.
    seen = []
    fixed = G.mapping(torch.zeros(1, 16), None)

    def guard(ctx, w):
        seen.append((ctx, tuple(w.shape)))
        return fixed

    guarded = TextureStage("g", G, stage.program, guard=guard)
    assert torch.equal(guarded.texture_at(0.0, "ctx"), guarded.texture_at(1.0, "ctx"))
    assert seen == [("ctx", (1, G.num_ws, 16))] * 2
    still = TextureStage("s", G, LatentProgram.from_dict({"kind": "seed", "seed": 4}))
    assert still.texture_at(0.0) is still.texture_at(5.0)  # unchanged w: no new synthesis
    with pytest.raises(ConfigError, match="no texture"):
        layer.render(FrameContext(index=0, time=0.0, camera=cam, deadline=None, scene_version="x"))


def _scene_with_layer(tmp_path, **kw) -> Path:
    from latentscape.testing import make_tiny_scene
    from latentscape.tools.recipes.demo_layer import add_layer

    scene = make_tiny_scene(tmp_path / "scene", size=24, frames=4)
    add_layer(scene, mesh="screen", resolution=16, offset=0.0, size=0.4, **kw)
    return scene


def test_demo_layer_and_cli_render(tmp_path):
    import tomllib

    from PIL import Image
    from typer.testing import CliRunner

    from latentscape.frame import FrameLoop
    from latentscape.scene import load_scene
    from latentscape.scene.assemble import build_layers
    from latentscape.tools.cli import app
    from latentscape.tools.recipes.demo_layer import add_layer

    scene_dir = _scene_with_layer(tmp_path)
    cfg = tomllib.loads((scene_dir / "scene.toml").read_text())
    assert "UNTRAINED" in cfg["generators"]["gan"]["description"] and "UNTRAINED" in cfg["scene"]["description"]
    assert cfg["generators"]["gan"]["program"]["kind"] == "walk"
    lock = (scene_dir / "scene.lock").read_text()
    assert "meshes/gan.obj" in lock and "generators/gan/generator.safetensors" in lock
    with pytest.raises(LatentscapeError, match="already has"):
        add_layer(scene_dir, mesh="screen", resolution=16)

    sc = load_scene(scene_dir)  # the lock verifies
    out = tmp_path / "frames"
    res = CliRunner().invoke(app, ["render", str(scene_dir), "--out", str(out), "--frames", "2"])
    assert res.exit_code == 0, res.output
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 2
    # The CLI's frames are the loop's frames with the layer, and the layer is visible in them.
    path = sc.camera_path()
    with_layer = FrameLoop(sc, **build_layers(sc)).render(path.cameras[1], index=1)
    bare = FrameLoop(sc).render(path.cameras[1], index=1)
    got = np.asarray(Image.open(pngs[1]).convert("RGB"))
    assert np.array_equal(got, with_layer.rgb)
    covered = np.isfinite(with_layer.depth) & (np.abs(with_layer.rgb.astype(int) - bare.rgb.astype(int)).sum(-1) > 0)
    assert covered.sum() > 20


def test_scene_toml_errors(tmp_path):
    import tomli_w
    import tomllib

    from latentscape.scene import load_scene
    from latentscape.scene.lock import write_lock
    from latentscape.scene.assemble import build_layers

    scene_dir = _scene_with_layer(tmp_path)
    toml = scene_dir / "scene.toml"
    base = tomllib.loads(toml.read_text())

    def with_layer(**changes):
        cfg = tomllib.loads(tomli_w.dumps(base))
        cfg["layers"][0].update(changes)
        toml.write_text(tomli_w.dumps(cfg))
        write_lock(scene_dir)
        return build_layers(load_scene(scene_dir))

    parts = with_layer()
    assert len(parts["layers"]) == 1 and len(parts["stages"]) == 1
    with pytest.raises(ConfigError, match="similarity") as err:
        with_layer(transform=np.diag([1.0, 2.0, 1.0, 1.0]).tolist())
    assert "scene.toml" in str(err.value)
    with pytest.raises(SceneError, match="outside the scene bundle"):
        with_layer(mesh="../elsewhere.obj")
    with pytest.raises(SceneError, match="neither a generator"):
        with_layer(texture="nope.png")
    with pytest.raises(ConfigError, match="unknown keys"):
        with_layer(colour="red")
    # A still image texture from the bundle.
    Image = pytest.importorskip("PIL.Image")
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(scene_dir / "still.png")
    parts = with_layer(texture="still.png")
    assert parts["stages"] == [] and torch.allclose(parts["layers"][0].texture, torch.full((4, 4, 3), 200 / 255))
    # Re-locking is the user's act: the demo script refuses to bless a changed file.
    (scene_dir / "still.png").write_bytes(b"changed")
    from latentscape.tools.recipes.demo_layer import add_layer

    with pytest.raises(LockMismatchError):
        add_layer(scene_dir, name="other", mesh="screen", resolution=16)


def test_fisheye_camera_uses_raycast():
    pytest.importorskip("rtree")
    v, f = _two_objects()
    layer = MeshLayer(MeshData(v, f, torch.zeros(v.shape[0], 2)), _solid([0.2, 0.4, 0.6]))
    cam = Camera.from_fov(look_at((0, 0, 2.5)), 20, 16, 60.0, model="fisheye")
    with pytest.raises(ConfigError, match="pinhole"):
        rasterize(v, f, cam)
    frags = layer.fragments(cam)
    assert frags.mask.sum() > 20 and torch.isfinite(frags.depth[frags.mask]).all()
    assert math.isinf(float(frags.depth[0, 0]))


def test_non_manifold_mesh_rasterizes():
    pytest.importorskip("rtree")
    # Three triangles on one edge (a "fin": not a manifold), plus a lone flipped triangle.
    v = torch.tensor([[0, -1, 0], [0, 1, 0], [1, 0, 0.3], [-1, 0, 0.3], [0, 0, -1], [0.5, 0.5, 0.5],
                      [0.9, 0.5, 0.5], [0.5, 0.9, 0.5]], dtype=torch.float32)
    f = torch.tensor([[0, 1, 2], [0, 1, 3], [0, 1, 4], [5, 7, 6]])
    cam = Camera.from_fov(look_at((0.4, 0.3, 3)), 40, 36, 50.0)
    r, ref = rasterize(v, f, cam), raycast(v, f, cam)
    assert r.mask.sum() > 50 and (r.mask != ref.mask).sum() <= 2
    both = r.mask & ref.mask
    assert torch.allclose(r.depth[both], ref.depth[both], rtol=1e-4)


def test_texture_rate_quantizes_scene_time():
    """With ``rate`` the generator runs once per 1/rate seconds of scene time."""
    import torch

    from latentscape.texture.stage import TextureStage

    calls = []

    class FakeG:
        num_ws, w_dim = 2, 3

    class Bound:
        def at(self, t):
            return torch.full((2, 3), float(t))

    class Program:
        def bind(self, G):
            return Bound()

    class Synth:
        def __call__(self, w, noise_mode="const"):
            calls.append(float(w[0, 0, 0]))
            return torch.zeros(1, 3, 4, 4)

    G = FakeG()
    G.synthesis = Synth()
    stage = TextureStage("g", G, Program(), rate=4.0)
    for t in (0.0, 0.1, 0.2, 0.25, 0.3, 0.49, 0.5):
        stage.texture_at(t)
    assert calls == [0.0, 0.25, 0.5]
    every_frame = TextureStage("g", G, Program())
    calls.clear()
    for t in (0.0, 0.1, 0.2):
        every_frame.texture_at(t)
    assert calls == pytest.approx([0.0, 0.1, 0.2])


def _slow_stage(delay: float, fail_on: float | None = None):
    """A texture stage over a fake generator that takes ``delay`` s per synthesis and
    paints the texture with its w (so a test can see which w a texture came from)."""
    import threading
    import time

    from latentscape.texture.stage import TextureStage

    class Bound:
        def at(self, t):
            return torch.full((2, 3), float(t))

    class Program:
        def bind(self, G):
            return Bound()

    class G:
        num_ws, w_dim = 2, 3
        calls: list[tuple[float, str]] = []

        @staticmethod
        def synthesis(w, noise_mode="const"):
            G.calls.append((float(w[0, 0, 0]), threading.current_thread().name))
            time.sleep(delay)
            if fail_on is not None and float(w[0, 0, 0]) == fail_on:
                raise RuntimeError("generator broke")
            return torch.full((1, 3, 2, 2), float(w[0, 0, 0]) / 127.5 - 1.0)

    return TextureStage("g", G, Program()), G


def test_live_texture_stage_never_waits_for_the_generator():
    """Live shows: the first frame waits for its texture, later frames show the newest
    finished one at once while the next is made in the background."""
    import time

    stage, G = _slow_stage(0.3)
    stage.set_live(True)
    try:
        tex0 = stage.texture_at(0.0)  # nothing finished yet: synthesised in the frame
        assert G.calls == [(0.0, "MainThread")]
        t0 = time.perf_counter()
        tex = stage.texture_at(1.0)  # asks for t=1, shows t=0's texture without waiting
        assert time.perf_counter() - t0 < 0.15
        assert torch.equal(tex, tex0) and float(stage._last_w[0, 0]) == 0.0
        deadline = time.monotonic() + 10
        while float(stage.texture_at(1.0)[0, 0, 0] * 255) < 1.0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert float(stage._last_w[0, 0]) == 1.0  # the shown w is the one its texture came from
        assert G.calls[1] == (1.0, "latentscape-texture-g")
        # A request superseded while the worker is busy is skipped: only the newest is made.
        for t in (2.0, 3.0, 4.0):
            stage.texture_at(t)
        while float(stage._last_w[0, 0]) != 4.0 and time.monotonic() < deadline:
            stage.texture_at(4.0)
            time.sleep(0.02)
        made = [c[0] for c in G.calls[2:]]
        assert made[-1] == 4.0 and 3.0 not in made
    finally:
        stage.close()
    assert stage._worker is None and not stage.live


def test_live_texture_failure_surfaces_in_a_frame_and_offline_stays_synchronous():
    import time

    stage, G = _slow_stage(0.0, fail_on=1.0)
    stage.set_live(True)
    try:
        stage.texture_at(0.0)
        deadline = time.monotonic() + 10
        with pytest.raises(RuntimeError, match="generator broke"):
            while time.monotonic() < deadline:
                stage.texture_at(1.0)
                time.sleep(0.01)
    finally:
        stage.close()
    offline, G2 = _slow_stage(0.0)
    for t in (0.0, 1.0, 2.0):
        assert float(offline.texture_at(t)[0, 0, 0] * 255) == pytest.approx(t + 0.5, abs=1e-3)
    assert [c[1] for c in G2.calls] == ["MainThread"] * 3


def test_live_sessions_make_textures_in_the_background(tmp_path):
    """A wall-clock session (viewer, serve) turns its texture stages live; the scene clock
    (render, farm) keeps them synchronous; closing the session stops the threads."""
    from latentscape.clock import WallClock
    from latentscape.session import Session

    scene = _scene_with_layer(tmp_path, name="gan")
    with Session.open(scene) as offline:
        assert [s.live for s in offline.loop.stages] == [False]
    live = Session.open(scene, clock=WallClock())
    stages = live.loop.stages
    assert [s.live for s in stages] == [True]
    cam = live.scene.camera_path(width=16, height=16).cameras[0]
    live.render(cam, index=0)
    live.close()
    assert not stages[0].live
