"""Mesh layers: load a triangle mesh, place it by a similarity transform, and draw it
textured through its UVs for a frame's camera, with depth, so the frame loop can
composite it with the NeRF (see :class:`latentscape.frame.Layer`).

Pieces, lowest first:

* :func:`load_mesh` reads glTF / GLB / OBJ / PLY (anything ``trimesh.load(...,
  force="mesh")`` reads; multi-part files are concatenated) into a :class:`MeshData`:
  world-space vertices, faces and per-vertex UVs. Vertices are not merged or
  repaired (``process=False``), so UV seams survive; non-manifold, open or
  self-intersecting meshes are fine (rasterizing needs only triangles). Empty meshes,
  non-finite vertices and out-of-range faces are :class:`SceneError`.
* Meshes without UVs: an error by default; ``uv="spherical"`` or ``uv="planar"``
  projects UVs in the mesh's own frame instead (see :func:`project_uv`).
* :func:`check_similarity`: the 4x4 placement must be rotation (or reflection) times a
  uniform scale plus a translation; shears, non-uniform scales and projective rows
  are :class:`ConfigError` (depth would no longer be a distance the NeRF agrees on).
* :func:`rasterize`: a pure-torch rasterizer for pinhole cameras, vectorised over
  (triangle, screen tile) pairs and the pixels of each tile, on the CPU or CUDA.
  Per-pixel screen barycentrics from edge functions; a z-buffer made by
  ``scatter_reduce(amin)`` on (view depth bits << 31 | triangle index), which is
  deterministic (min does not depend on order) and breaks depth ties by the lower
  triangle index; perspective-correct barycentrics (interpolating 1/z); depth
  returned as the *distance along the ray* (view depth times the pixel ray's length
  per unit depth), the quantity the NeRF renderer's ``depth_limit`` takes. No back-face
  culling (both windings are drawn). Triangles with a vertex closer than ``near`` to the
  camera plane are dropped, not clipped: a mesh that passes through the camera loses
  those triangles.
* :func:`raycast`: the same fragments by trimesh's ray caster (needs ``rtree``); it
  serves every camera model, so fisheye and equirectangular frames use it, and it is
  the reference the tests hold the rasterizer to.
* :func:`sample_texture`: bilinear, wrapping (``repeat``) texture lookup; UVs follow
  trimesh's convention (v up, origin at the image's bottom-left; trimesh flips glTF's
  v on load).
* :class:`MeshLayer`: the frame-loop layer. Its texture is a still image or the
  texture a :class:`latentscape.texture.stage.TextureStage` put in
  ``ctx.extras["textures"][name]`` for this frame.

Why a rasterizer, measured at the demo size (256x256, a 5120-triangle icosphere covering
a third of the frame, one CPU thread of this team's 2-core machine, 2026-11-26,
``nice python -m latentscape.tools.benchmarks.layers``): rasterizing 24 ms (tile 8; 22 ms
at tile 4, 55 ms at tile 16), the whole layer with texturing and compositing 27 ms;
trimesh's ray caster (rtree, no embree) 55 s for the same frame, with identical
coverage and depths within 1.6e-5. Tile 8 is the default: as fast as 4 on small
triangles, and fewer (pair, pixel) tests than 4 on large ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from latentscape.errors import BackendError, ConfigError, SceneError
from latentscape.render.cameras import Camera, generate_rays

__all__ = [
    "MeshData",
    "Fragments",
    "MeshLayer",
    "load_mesh",
    "check_similarity",
    "project_uv",
    "rasterize",
    "raycast",
    "shade",
    "sample_texture",
    "UV_MODES",
]

UV_MODES = ("mesh", "spherical", "planar")
_SIMILARITY_TOL = 1e-4
_IDX_BITS = 31  # triangle index bits in a z-buffer key; depth bits sit above them
_EMPTY = torch.iinfo(torch.int64).max


@dataclass
class MeshData:
    """A triangle mesh placed in the world."""

    vertices: torch.Tensor  # [V, 3] float32, world units
    faces: torch.Tensor  # [F, 3] int64
    uv: torch.Tensor  # [V, 2] float32 (v up)
    source: str = ""

    def to(self, device: torch.device | str) -> "MeshData":
        return MeshData(self.vertices.to(device), self.faces.to(device), self.uv.to(device), self.source)


@dataclass
class Fragments:
    """What covers each pixel: the nearest triangle, where on it, and how far."""

    tri: torch.Tensor  # [H, W] int64, -1 where no triangle
    bary: torch.Tensor  # [H, W, 3] float32 perspective-correct barycentrics (0 where empty)
    depth: torch.Tensor  # [H, W] float32 distance along the ray, inf where empty

    @property
    def mask(self) -> torch.Tensor:
        return self.tri >= 0


# --------------------------------------------------------------------------- loading


def check_similarity(matrix: Any, *, where: str = "transform", path: str | Path | None = None) -> torch.Tensor:
    """Validate a 4x4 placement: ``[sR | t; 0 0 0 1]`` with R orthogonal, s > 0. Returns it as float32.

    Orthogonality is checked up to the uniform scale: ``A^T A = s^2 I`` within a
    relative tolerance of 1e-4 (enough for matrices written with 6 decimals).
    """
    try:
        m = np.asarray(matrix, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{where} must be a 4x4 array of numbers", path=path) from None
    if m.shape != (4, 4):
        raise ConfigError(f"{where} must be 4x4 (four rows of four numbers), got shape {m.shape}", path=path)
    if not np.isfinite(m).all():
        raise ConfigError(f"{where} holds NaN or Inf", path=path)
    if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-9):
        raise ConfigError(f"{where}: the last row must be [0, 0, 0, 1], got {m[3].tolist()}", path=path,
                          hint="a projective transform cannot place a mesh; use rotation * uniform scale + translation")
    a = m[:3, :3]
    ata = a.T @ a
    s2 = float(np.trace(ata)) / 3.0
    if s2 <= 1e-12:
        raise ConfigError(f"{where}: the 3x3 part is zero (scale 0)", path=path)
    err = float(np.abs(ata / s2 - np.eye(3)).max())
    if err > _SIMILARITY_TOL:
        raise ConfigError(f"{where} is not a rigid or similarity transform (A^T A deviates from s^2 I by {err:.2g}, "
                          "relative)", path=path,
                          hint="use rotation * uniform scale + translation; shears and non-uniform scales are "
                               "refused because depths would no longer be distances the NeRF agrees on")
    return torch.from_numpy(m).to(torch.float32)


def project_uv(vertices: torch.Tensor, mode: str) -> torch.Tensor:
    """UVs for a mesh that has none, from its own (local) vertex positions.

    ``spherical``: longitude/latitude around the bounding-box centre (u = atan2(x, z)
    / 2pi + 0.5, v = asin(y / r) / pi + 0.5); the texture wraps once around Y, with a
    seam at -Z and pinched poles. ``planar``: projection along the bounding box's
    thinnest axis, the other two axes (in x, y, z order) scaled to [0, 1].
    """
    v = vertices.double()
    lo, hi = v.min(0).values, v.max(0).values
    if mode == "spherical":
        p = v - (lo + hi) / 2
        r = p.norm(dim=-1).clamp_min(1e-12)
        u = torch.atan2(p[:, 0], p[:, 2]) / (2 * math.pi) + 0.5
        vv = torch.asin((p[:, 1] / r).clamp(-1, 1)) / math.pi + 0.5
        return torch.stack((u, vv), -1).float()
    if mode == "planar":
        ext = hi - lo
        keep = [i for i in range(3) if i != int(torch.argmin(ext))]
        uv = (v[:, keep] - lo[keep]) / ext[keep].clamp_min(1e-12)
        return uv.float()
    raise ConfigError(f"unknown UV projection {mode!r}", hint=f"use one of {', '.join(UV_MODES)}")


def load_mesh(path: str | Path, *, transform: Any = None, uv: str = "mesh") -> MeshData:
    """Read a mesh file and place it in the world by ``transform`` (4x4, default identity).

    ``uv``: ``"mesh"`` takes the file's UVs (a mesh without them is a ConfigError that
    names the fallbacks); ``"spherical"`` / ``"planar"`` project new ones (:func:`project_uv`).
    """
    try:
        import trimesh
    except ImportError:
        raise BackendError("mesh layers need trimesh", hint="pip install 'latentscape[mesh]'") from None
    path = Path(path)
    if uv not in UV_MODES:
        raise ConfigError(f"uv must be one of {', '.join(UV_MODES)}, got {uv!r}", path=path)
    if not path.is_file():
        raise SceneError("mesh file not found", path=path, hint="put the mesh inside the scene bundle and re-lock it")
    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as err:  # trimesh raises many kinds for malformed files
        raise SceneError(f"cannot read mesh: {type(err).__name__}: {err}", path=path,
                         hint="use glTF/GLB, OBJ or PLY") from None
    if not isinstance(mesh, trimesh.Trimesh):
        raise SceneError("file holds no triangle mesh", path=path)
    verts = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    if faces.ndim != 2 or faces.shape[0] == 0 or verts.shape[0] == 0:
        raise SceneError("mesh is empty (no triangles)", path=path)
    if faces.min() < 0 or faces.max() >= verts.shape[0]:
        raise SceneError("faces index vertices that do not exist", path=path)
    if not np.isfinite(verts).all():
        raise SceneError("mesh has NaN or Inf vertices", path=path)
    local = torch.from_numpy(verts)
    if uv == "mesh":
        uvs = getattr(mesh.visual, "uv", None)
        if uvs is None or len(uvs) != len(verts):
            raise ConfigError("mesh has no texture coordinates (UVs)", path=path,
                              hint='set uv = "spherical" or uv = "planar" on the layer to project them, '
                                   "or unwrap the mesh (e.g. in Blender) and export it with UVs")
        uvs = np.asarray(uvs, dtype=np.float64)
        if not np.isfinite(uvs).all():
            raise SceneError("mesh has NaN or Inf UVs", path=path)
        uv_t = torch.from_numpy(uvs).float()
    else:
        uv_t = project_uv(local, uv)
    m = check_similarity(np.eye(4) if transform is None else transform, path=path).double()
    world = local @ m[:3, :3].T + m[:3, 3]
    return MeshData(world.float().contiguous(), torch.from_numpy(faces).contiguous(), uv_t.contiguous(), str(path))


# --------------------------------------------------------------------------- rasterizer


def _world_to_camera(cam: Camera, device) -> torch.Tensor:
    c2w = cam.c2w.to(device=device, dtype=torch.float64)
    return torch.linalg.inv(c2w)


def _ray_length_per_depth(cam: Camera, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """|d| / depth for pinhole pixel centres (px, py): distance = view depth * this."""
    x = (px + 0.5 - cam.cx) / cam.fx
    y = (py + 0.5 - cam.cy) / cam.fy
    return torch.sqrt(1.0 + x * x + y * y)


def rasterize(vertices: torch.Tensor, faces: torch.Tensor, cam: Camera, *, tile: int = 8, near: float = 1e-4,
              budget: int = 1 << 21) -> Fragments:
    """Rasterize world-space triangles for a pinhole ``cam`` (pixel centres at i + 0.5).

    vertices: [V, 3] float; faces: [F, 3] int64. ``tile``: pixels per side of a screen
    tile; triangles are binned to the tiles their bounding box overlaps and every
    pixel of a tile is tested (measured: tile 8 vs 16 in tools/benchmarks/layers.py).
    ``budget``: (pair, pixel) tests per chunk, which bounds memory (about 40 bytes
    each). Runs wherever ``vertices`` lives.
    """
    if cam.model != "pinhole":
        raise ConfigError(f"the rasterizer draws pinhole cameras only, got {cam.model!r}",
                          hint="use raycast() (MeshLayer does so automatically) for fisheye/equirectangular")
    dev = vertices.device
    H, W = cam.height, cam.width
    w2c = _world_to_camera(cam, dev)
    vc = vertices.double() @ w2c[:3, :3].T + w2c[:3, 3]  # [V, 3] camera space (looking down -Z)
    z = -vc[:, 2]  # view depth, positive in front
    sx = cam.cx + cam.fx * vc[:, 0] / z - 0.5  # pixel index space: pixel i's centre at i
    sy = cam.cy - cam.fy * vc[:, 1] / z - 0.5
    tz = z[faces]  # [F, 3]
    front = (tz > near).all(-1)
    px, py = sx[faces], sy[faces]  # [F, 3]
    # Edge functions b_i(x, y) = A_i x + B_i y + C_i, normalised by the signed area so the
    # three are the screen barycentrics (positive inside for either winding).
    x0, x1, x2 = px.unbind(-1)
    y0, y1, y2 = py.unbind(-1)
    A = torch.stack((y1 - y2, y2 - y0, y0 - y1), -1)
    B = torch.stack((x2 - x1, x0 - x2, x1 - x0), -1)
    C = torch.stack((x1 * y2 - x2 * y1, x2 * y0 - x0 * y2, x0 * y1 - x1 * y0), -1)
    area = C.sum(-1)  # = 2 * signed area (A, B terms sum to zero)
    xmin = torch.ceil(px.min(-1).values).clamp(0, W - 1)
    xmax = torch.floor(px.max(-1).values).clamp(-1, W - 1)
    ymin = torch.ceil(py.min(-1).values).clamp(0, H - 1)
    ymax = torch.floor(py.max(-1).values).clamp(-1, H - 1)
    finite = torch.isfinite(px).all(-1) & torch.isfinite(py).all(-1)
    keep = front & finite & (area.abs() > 1e-12) & (xmax >= xmin) & (ymax >= ymin) & (px.max(-1).values >= 0) \
        & (py.max(-1).values >= 0) & (px.min(-1).values <= W - 1) & (py.min(-1).values <= H - 1)
    ids = keep.nonzero().squeeze(-1)
    coef = (torch.stack((A, B, C), -1) / area[:, None, None]).float()  # [F, 3, 3]
    inv_z = (1.0 / tz).float()  # [F, 3]
    # The z-buffer is padded to whole tiles so no pixel of a tile needs a bounds test.
    nty_all, ntx_all = -(-H // tile), -(-W // tile)
    Wp = ntx_all * tile
    zbuf = torch.full((nty_all * tile * Wp,), _EMPTY, dtype=torch.int64, device=dev)
    if ids.numel():
        tx0, tx1 = (xmin[ids] // tile).long(), (xmax[ids] // tile).long()
        ty0, ty1 = (ymin[ids] // tile).long(), (ymax[ids] // tile).long()
        ntx, nty = tx1 - tx0 + 1, ty1 - ty0 + 1
        counts = ntx * nty
        pair_tri = torch.repeat_interleave(torch.arange(ids.numel(), device=dev), counts)
        first = torch.cumsum(counts, 0) - counts
        k = torch.arange(pair_tri.numel(), device=dev) - first[pair_tri]
        pair_tx = tx0[pair_tri] + k % ntx[pair_tri]
        pair_ty = ty0[pair_tri] + k // ntx[pair_tri]
        pair_tri = ids[pair_tri]
        off = torch.arange(tile, device=dev)
        oy, ox = torch.meshgrid(off, off, indexing="ij")
        offs = torch.stack((ox.reshape(-1), oy.reshape(-1))).float()  # [2, T*T] pixel offsets in a tile
        step = max(1, budget // (3 * tile * tile))
        for s in range(0, pair_tri.numel(), step):
            t = pair_tri[s:s + step]
            x0, y0 = pair_tx[s:s + step] * tile, pair_ty[s:s + step] * tile
            c = coef[t]  # [P, 3 edges, (A, B, C)]
            base = c[..., 0] * x0[:, None].float() + c[..., 1] * y0[:, None].float() + c[..., 2]  # [P, 3] at tile origin
            # All three edge functions at every pixel of the tile in one GEMM: [3P, 2] @ [2, T*T].
            b = torch.addmm(base.reshape(-1, 1), c[..., :2].reshape(-1, 2), offs).view(-1, 3, tile * tile)
            pi, qi = (b.amin(1) >= 0).nonzero(as_tuple=True)
            if pi.numel() == 0:
                continue
            tt = t[pi]
            iz = (b[pi, :, qi] * inv_z[tt]).sum(-1)  # 1 / view depth, linear in screen space
            depth = (1.0 / iz.clamp_min(1e-30)).float()
            key = (depth.view(torch.int32).to(torch.int64) << _IDX_BITS) | tt
            pix = (y0[pi] + qi // tile) * Wp + x0[pi] + qi % tile
            zbuf.scatter_reduce_(0, pix, key, reduce="amin", include_self=True)
    zbuf = zbuf.view(-1, Wp)[:H, :W].reshape(-1)
    hit = zbuf != _EMPTY
    tri = torch.where(hit, zbuf & ((1 << _IDX_BITS) - 1), torch.full_like(zbuf, -1))
    bary = torch.zeros(H * W, 3, device=dev)
    depth = torch.full((H * W,), math.inf, device=dev)
    where = hit.nonzero().squeeze(-1)
    if where.numel():
        t = tri[where]
        gx, gy = (where % W).float(), (where // W).float()
        c = coef[t]
        b = (c[:, :, 0] * gx[:, None] + c[:, :, 1] * gy[:, None] + c[:, :, 2]).clamp_min(0)
        b = b / b.sum(-1, keepdim=True).clamp_min(1e-12)
        pb = b * inv_z[t]
        iz = pb.sum(-1)
        bary[where] = pb / iz[:, None]
        depth[where] = (1.0 / iz) * _ray_length_per_depth(cam, gx, gy)
    return Fragments(tri.reshape(H, W), bary.reshape(H, W, 3), depth.reshape(H, W))


def raycast(vertices: torch.Tensor, faces: torch.Tensor, cam: Camera) -> Fragments:
    """The same fragments by trimesh ray casting (any camera model; CPU; needs ``rtree``)."""
    try:
        import rtree  # noqa: F401  (trimesh's ray-triangle intersector needs it for its tree)
        import trimesh
        from trimesh.ray.ray_triangle import RayMeshIntersector
    except ImportError as err:
        raise BackendError(f"ray casting meshes needs trimesh and rtree ({err})",
                           hint="pip install trimesh rtree") from None
    dev = vertices.device
    H, W = cam.height, cam.width
    mesh = trimesh.Trimesh(vertices.detach().cpu().double().numpy(), faces.detach().cpu().numpy(), process=False)
    o, d, valid = generate_rays(cam, "cpu")
    o64, d64 = o.double().numpy(), d.double().numpy()
    rows = valid.nonzero().squeeze(-1).numpy()
    tri = torch.full((H * W,), -1, dtype=torch.int64)
    bary = torch.zeros(H * W, 3, dtype=torch.float32)
    depth = torch.full((H * W,), math.inf, dtype=torch.float32)
    if rows.size:
        loc, ray_i, tri_i = RayMeshIntersector(mesh).intersects_location(o64[rows], d64[rows], multiple_hits=False)
        if len(ray_i):
            ray_i = rows[ray_i]
            bc = trimesh.triangles.points_to_barycentric(mesh.triangles[tri_i], loc)
            tri[ray_i] = torch.from_numpy(np.asarray(tri_i, dtype=np.int64))
            bary[ray_i] = torch.from_numpy(bc).float()
            depth[ray_i] = torch.from_numpy(np.linalg.norm(loc - o64[ray_i], axis=-1)).float()
    return Fragments(tri.reshape(H, W).to(dev), bary.reshape(H, W, 3).to(dev), depth.reshape(H, W).to(dev))


# --------------------------------------------------------------------------- texturing


def sample_texture(texture: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup with wrap-around: texture [Ht, Wt, C], uv [N, 2] (v up) -> [N, C]."""
    ht, wt = texture.shape[0], texture.shape[1]
    x = uv[:, 0] * wt - 0.5
    y = (1.0 - uv[:, 1]) * ht - 0.5
    x0, y0 = torch.floor(x), torch.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.long(), y0.long()
    xa, xb = x0 % wt, (x0 + 1) % wt
    ya, yb = y0 % ht, (y0 + 1) % ht
    top = texture[ya, xa] * (1 - fx) + texture[ya, xb] * fx
    bot = texture[yb, xa] * (1 - fx) + texture[yb, xb] * fx
    return top * (1 - fy) + bot * fy


def shade(frags: Fragments, mesh: MeshData, texture: torch.Tensor) -> torch.Tensor:
    """rgb [H, W, 3] of the fragments (0 where empty) from a texture [Ht, Wt, 3] in [0, 1]."""
    H, W = frags.tri.shape
    rgb = torch.zeros(H * W, 3, device=frags.tri.device)
    where = frags.mask.reshape(-1).nonzero().squeeze(-1)
    if where.numel():
        t = frags.tri.reshape(-1)[where]
        b = frags.bary.reshape(-1, 3)[where]
        uv = (mesh.uv[mesh.faces[t]] * b[..., None]).sum(1)  # [N, 2]
        rgb[where] = sample_texture(texture.to(rgb.device, torch.float32), uv)[:, :3]
    return rgb.reshape(H, W, 3)


def texture_from_image(path: str | Path) -> torch.Tensor:
    """A still texture [H, W, 3] float in [0, 1] from an image file (alpha dropped)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError) as err:
        raise SceneError(f"cannot read texture image: {err}", path=path) from None
    return torch.from_numpy(arr)


class MeshLayer:
    """An opaque textured mesh, drawn for each frame's camera (a :class:`latentscape.frame.Layer`).

    ``texture``: a still [Ht, Wt, 3] tensor in [0, 1], or the name of a texture that a
    stage puts in ``ctx.extras["textures"]`` every frame. ``method``: ``auto``
    (rasterize pinhole cameras, ray-cast the others), ``raster`` or ``raycast``.
    """

    def __init__(self, mesh: MeshData, texture: torch.Tensor | str, *, name: str = "mesh", method: str = "auto",
                 device: torch.device | str = "cpu", tile: int = 8):
        if method not in ("auto", "raster", "raycast"):
            raise ConfigError(f"layer method must be auto, raster or raycast, got {method!r}")
        self.name, self.method, self.tile = name, method, tile
        self.mesh = mesh.to(device)
        self.texture = texture.to(device) if isinstance(texture, torch.Tensor) else texture

    def fragments(self, cam: Camera) -> Fragments:
        if self.method == "raycast" or (self.method == "auto" and cam.model != "pinhole"):
            return raycast(self.mesh.vertices, self.mesh.faces, cam)
        return rasterize(self.mesh.vertices, self.mesh.faces, cam, tile=self.tile)

    def current_texture(self, ctx) -> torch.Tensor:
        if isinstance(self.texture, torch.Tensor):
            return self.texture
        tex = ctx.extras.get("textures", {}).get(self.texture)
        if tex is None:
            raise ConfigError(f"layer {self.name!r}: no texture {self.texture!r} this frame",
                              hint="the generator's TextureStage must be among the frame loop's stages")
        return tex

    @torch.no_grad()
    def render(self, ctx) -> tuple[torch.Tensor, torch.Tensor]:
        frags = self.fragments(ctx.camera)
        return shade(frags, self.mesh, self.current_texture(ctx)), frags.depth
