"""Add a GAN-textured mesh layer to a scene bundle, then re-lock it.

Usage::

    python -m latentscape.tools.recipes.demo_layer SCENE [--mesh auto|box|screen|sphere|FILE] [--name gan]
        [--offset 0.32] [--size 0.16] [--resolution 64] [--seed 0] [--period 8] [--force]

What it writes into SCENE (all covered by scene.lock, which it rewrites):

* ``meshes/<name>.<ext>``: the mesh. ``box`` copies the real ``BoxTextured.glb`` from
  Debian's assimp-testmodels (BSD-3-Clause, with its own UVs); ``screen`` is a
  generated 16x16-cell quad with UVs (an OBJ); ``sphere`` a generated UV sphere
  without UVs, textured through the layer's ``uv = "spherical"`` projection; a FILE
  is copied as it is. ``auto`` = ``box`` when assimp-testmodels is installed, else
  ``screen``.
* ``generators/<name>/``: a small StyleGAN3-T generator (z, w 64; ``--resolution``
  px) with **random, untrained weights**, saved with ``save_generator``; the scene
  and generator descriptions say so. Replace it with real weights through
  ``latentscape import stylegan3`` and keep the same folder.
* ``scene.toml``: ``[generators.<name>]`` with a looping latent walk (seeds 0..3
  after ``--seed``, one loop per ``--period`` seconds) and one ``[[layers]]`` entry
  placing the mesh beside the NeRF object: centred ``--offset`` camera radii from
  the scene centre along world +X, ``--size`` camera radii across, its +Y turned to
  the scene's up axis.

The bundle's lock is verified first: the script refuses to bless files that
already differ from scene.lock.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tomllib
from pathlib import Path

import numpy as np

from latentscape.errors import ConfigError, LatentscapeError, OutputError, SceneError

ASSIMP_BOX = Path("/usr/share/assimp/models/glTF2/BoxTextured-glTF-Binary/BoxTextured.glb")


def screen_obj(cells: int = 16) -> str:
    """A unit quad in the local XY plane (facing +Z), ``cells`` x ``cells``, UVs over [0, 1]^2."""
    n = cells + 1
    lines = ["# latentscape demo screen: unit quad, UVs over [0, 1]^2"]
    for j in range(n):
        for i in range(n):
            lines.append(f"v {i / cells - 0.5:.6f} {j / cells - 0.5:.6f} 0")
    for j in range(n):
        for i in range(n):
            lines.append(f"vt {i / cells:.6f} {j / cells:.6f}")
    for j in range(cells):
        for i in range(cells):
            a, b, c, d = j * n + i + 1, j * n + i + 2, (j + 1) * n + i + 2, (j + 1) * n + i + 1
            lines.append(f"f {a}/{a} {b}/{b} {c}/{c}")
            lines.append(f"f {a}/{a} {c}/{c} {d}/{d}")
    return "\n".join(lines) + "\n"


def write_mesh(kind: str, out_dir: Path, name: str) -> tuple[Path, str]:
    """Write the mesh into ``out_dir``; returns (path, uv mode)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind == "auto":
        kind = "box" if ASSIMP_BOX.is_file() else "screen"
    if kind == "box":
        if not ASSIMP_BOX.is_file():
            raise ConfigError(f"{ASSIMP_BOX} not found", hint="apt-get install assimp-testmodels, or use --mesh screen")
        dst = out_dir / f"{name}.glb"
        shutil.copyfile(ASSIMP_BOX, dst)
        return dst, "mesh"
    if kind == "screen":
        dst = out_dir / f"{name}.obj"
        dst.write_text(screen_obj())
        return dst, "mesh"
    if kind == "sphere":
        import trimesh

        dst = out_dir / f"{name}.ply"
        trimesh.creation.uv_sphere(radius=0.5, count=[32, 32]).export(dst)
        return dst, "spherical"
    src = Path(kind)
    if not src.is_file():
        raise ConfigError(f"--mesh {kind!r} is neither auto, box, screen, sphere nor a file")
    dst = out_dir / f"{name}{src.suffix.lower()}"
    shutil.copyfile(src, dst)
    return dst, "mesh"


def placement(mesh_path: Path, uv: str, cfg: dict, offset: float, size: float) -> list[list[float]]:
    """4x4 similarity: the mesh's bounding box centred ``offset`` camera radii along +X of the
    scene centre, its largest side ``size`` camera radii, mesh +Y turned to the scene's up."""
    from latentscape.render.mesh import load_mesh

    local = load_mesh(mesh_path, uv=uv).vertices.double().numpy()
    lo, hi = local.min(0), local.max(0)
    norm = cfg.get("field", {}).get("normalization", {})
    center = np.asarray(norm.get("center", [0.0, 0.0, 0.0]), dtype=np.float64)
    radius = 2.0 / float(norm.get("scale", 1.0))  # training puts the cameras 2 normalised units out
    up = cfg.get("scene", {}).get("up", [0.0, 0.0, 1.0])
    up_axis = max(range(3), key=lambda i: abs(up[i]))
    s = size * radius / max(float((hi - lo).max()), 1e-9)
    rot = np.eye(3)
    if up_axis == 2:  # mesh Y -> world Z (and mesh Z -> world -Y): +90 degrees about X
        rot = np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])
    if up[up_axis] < 0:  # upside-down scenes: half a turn about X
        rot = np.diag([1.0, -1.0, -1.0]) @ rot
    m = np.eye(4)
    m[:3, :3] = s * rot
    m[:3, 3] = center + np.array([offset * radius, 0.0, 0.0]) - s * rot @ ((lo + hi) / 2)
    return [[round(float(v), 9) for v in row] for row in m]


def add_layer(scene: Path, *, mesh: str = "auto", name: str = "gan", offset: float = 0.32, size: float = 0.16,
              resolution: int = 64, seed: int = 0, period: float = 8.0, force: bool = False) -> Path:
    import tomli_w
    import torch

    from latentscape.outputs import check_output, staged
    from latentscape.scene.lock import verify_lock, write_lock
    from latentscape.texture.stylegan3 import Generator, StyleGAN3Config, save_generator

    toml_path = scene / "scene.toml"
    if not toml_path.is_file():
        raise SceneError("no scene.toml here", path=scene, hint="give a scene bundle folder")
    verify_lock(scene)  # never re-lock over files that already differ from the lock
    cfg = tomllib.loads(toml_path.read_text())
    gens = cfg.setdefault("generators", {})
    layers = cfg.setdefault("layers", [])
    if (name in gens or any(lc.get("name") == name for lc in layers)) and not force:
        raise OutputError(f"the scene already has a generator or layer named {name!r}", path=toml_path,
                          hint="pass --force to replace it, or choose another --name")
    check_output(scene / "generators" / name, force=force, kind="dir")  # before anything is written
    layers[:] = [lc for lc in layers if lc.get("name") != name]
    mesh_path, uv = write_mesh(mesh, scene / "meshes", name)
    torch.manual_seed(seed)
    gcfg = StyleGAN3Config.preset("T", z_dim=64, w_dim=64, img_resolution=resolution, channel_base=4096,
                                  channel_max=64, num_layers=8, num_critical=2)
    G = Generator(gcfg).eval()
    gen_dir = scene / "generators" / name
    untrained = f"UNTRAINED StyleGAN3-T generator (random weights, torch seed {seed}): a stand-in for real weights"
    # --force replaces only a generator folder latentscape wrote (its .latentscape-output marker)
    with staged(gen_dir, kind="dir", force=force, command="demo_layer") as tmp:
        save_generator(G, tmp, source={"kind": "untrained", "torch_seed": seed, "note": untrained})
    gens[name] = {
        "path": f"generators/{name}",
        "description": untrained + "; import real ones with `latentscape import stylegan3` into this folder",
        "program": {"kind": "walk", "seeds": [seed + i for i in range(4)], "period": float(period),
                    "interp": "slerp", "space": "z", "psi": 1.0},
    }
    layers.append({
        "name": name,
        "mesh": mesh_path.relative_to(scene).as_posix(),
        "transform": placement(mesh_path, uv, cfg, offset, size),
        "texture": name,
        "uv": uv,
    })
    sc = cfg.setdefault("scene", {})
    note = f"mesh layer {name!r} textured live by an UNTRAINED (random-weight) StyleGAN3 generator"
    desc = sc.get("description", "")
    if note not in desc:
        sc["description"] = f"{desc}; {note}" if desc else note
    tmp = toml_path.with_suffix(".toml.tmp")
    tmp.write_text(tomli_w.dumps(cfg))
    tmp.replace(toml_path)
    write_lock(scene)
    return scene


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scene", type=Path)
    ap.add_argument("--mesh", default="auto", help="auto | box | screen | sphere | a mesh file")
    ap.add_argument("--name", default="gan")
    ap.add_argument("--offset", type=float, default=0.32, help="camera radii from the scene centre along +X")
    ap.add_argument("--size", type=float, default=0.16, help="largest side, in camera radii")
    ap.add_argument("--resolution", type=int, default=64, help="generator output size (power of two)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--period", type=float, default=8.0, help="seconds per loop of the latent walk")
    ap.add_argument("--force", action="store_true")
    a = ap.parse_args(argv)
    try:
        if a.period <= 0 or a.size <= 0 or not math.isfinite(a.offset):
            raise ConfigError("--period and --size must be positive, --offset finite")
        add_layer(a.scene, mesh=a.mesh, name=a.name, offset=a.offset, size=a.size, resolution=a.resolution,
                  seed=a.seed, period=a.period, force=a.force)
    except LatentscapeError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    print(f"added layer {a.name!r} to {a.scene} and re-locked it; render with: latentscape render {a.scene}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
