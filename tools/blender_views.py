"""Render posed views of one asset under an HDRI: the script Debian's ``blender`` runs.

This file runs inside blender's own Python, never inside latentscape::

    blender -b -noaudio --python-exit-code 3 --python tools/blender_views.py -- --job JOB.json

``latentscape.tools.demo_dataset`` writes ``JOB.json`` (asset, HDRI, resolution, field
of view, samples, seed, and one camera-to-world matrix per frame), runs this script,
and reads back ``result.json``. The script:

1. starts from an empty scene (factory settings, no default cube/light/camera);
2. imports the asset: glTF 2.0 through blender's importer, glTF 1.0 (the
   ``CesiumMilkTruck`` that Debian's ``assimp-testmodels`` ships is glTF 1.0, which
   blender's importer refuses) through the small reader below, Collada, OBJ, PLY,
   STL and FBX through blender's importers (the caller converts other formats to
   PLY); a mesh without a material gets one (its vertex colours, else light grey);
3. scales and moves it so its bounding box is centred on the origin with its
   largest half-extent equal to ``fit_half_extent`` (about ``[-1, 1]^3``);
4. lights it with the HDRI as the world (the background is not rendered:
   ``film_transparent``, so images are RGBA like the NeRF-synthetic scenes);
5. renders every frame with Cycles on the CPU, no denoising, and records the
   camera's ``matrix_world`` as blender holds it after the update.

It prints one line per event, ``LATENTSCAPE {json}``, for the caller's progress bar.
Only the standard library and blender's ``bpy``/``mathutils`` are used.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import time
import traceback

import bpy  # type: ignore[import-not-found]
from mathutils import Matrix, Quaternion, Vector  # type: ignore[import-not-found]

EVENT_PREFIX = "LATENTSCAPE "


def say(event: str, **fields) -> None:
    print(EVENT_PREFIX + json.dumps({"event": event, **fields}), flush=True)


# --------------------------------------------------------------------------- glTF 1.0

_COMPONENT = {5120: "b", 5121: "B", 5122: "h", 5123: "H", 5125: "I", 5126: "f"}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def _read_accessor(doc: dict, base: str, name: str, cache: dict) -> list[tuple]:
    acc = doc["accessors"][name]
    view = doc["bufferViews"][acc["bufferView"]]
    buf_name = view["buffer"]
    if buf_name not in cache:
        with open(os.path.join(base, doc["buffers"][buf_name]["uri"]), "rb") as fh:
            cache[buf_name] = fh.read()
    data = cache[buf_name]
    fmt = _COMPONENT[acc["componentType"]]
    width = _WIDTH[acc["type"]]
    item = struct.calcsize("<" + fmt) * width
    stride = acc.get("byteStride") or item
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    unpack = struct.Struct("<" + fmt * width).unpack_from
    return [unpack(data, start + i * stride) for i in range(acc["count"])]


def _gltf1_material(doc: dict, base: str, name: str, cache: dict):
    if name in cache:
        return cache[name]
    spec = doc["materials"][name]
    values = spec.get("values", {})
    mat = bpy.data.materials.new(spec.get("name", name))
    mat.use_nodes = True
    bsdf = mat.node_tree.nodes["Principled BSDF"]
    diffuse = values.get("diffuse", [0.8, 0.8, 0.8, 1.0])
    if isinstance(diffuse, str):
        image_spec = doc["images"][doc["textures"][diffuse]["source"]]
        tex = mat.node_tree.nodes.new("ShaderNodeTexImage")
        tex.image = bpy.data.images.load(os.path.join(base, image_spec["uri"]), check_existing=True)
        mat.node_tree.links.new(tex.outputs["Color"], bsdf.inputs["Base Color"])
    else:
        bsdf.inputs["Base Color"].default_value = tuple(diffuse[:3]) + (1.0,)
    # Phong shininess -> microfacet roughness (Blinn-Phong / Beckmann correspondence).
    shininess = float(values.get("shininess", 32.0))
    bsdf.inputs["Roughness"].default_value = max(0.08, math.sqrt(2.0 / (shininess + 2.0)))
    specular = values.get("specular")
    if isinstance(specular, list):
        # Principled "Specular" 0.5 means F0 = 0.04.
        bsdf.inputs["Specular"].default_value = min(1.0, float(specular[0]) / 0.08)
    cache[name] = mat
    return mat


def _gltf1_mesh(doc: dict, base: str, name: str, buffers: dict, materials: dict, meshes: dict):
    if name in meshes:
        return meshes[name]
    spec = doc["meshes"][name]
    positions: list[tuple] = []
    normals: list[tuple] = []
    uvs: list[tuple] = []
    faces: list[tuple] = []
    face_mats: list[int] = []
    mats: list = []
    offsets: dict[str, int] = {}  # POSITION accessor -> first vertex index
    for prim in spec["primitives"]:
        if prim.get("mode", 4) != 4:
            continue  # triangles only
        attrs = prim["attributes"]
        pos_name = attrs["POSITION"]
        if pos_name not in offsets:
            offsets[pos_name] = len(positions)
            pos = _read_accessor(doc, base, pos_name, buffers)
            positions += pos
            nrm = _read_accessor(doc, base, attrs["NORMAL"], buffers) if "NORMAL" in attrs else []
            normals += nrm if nrm else [(0.0, 0.0, 1.0)] * len(pos)
            uv = _read_accessor(doc, base, attrs["TEXCOORD_0"], buffers) if "TEXCOORD_0" in attrs else []
            uvs += uv if uv else [(0.0, 0.0)] * len(pos)
        first = offsets[pos_name]
        idx = [i[0] for i in _read_accessor(doc, base, prim["indices"], buffers)]
        mat = _gltf1_material(doc, base, prim["material"], materials) if "material" in prim else None
        if mat not in mats:
            mats.append(mat)
        slot = mats.index(mat)
        for k in range(0, len(idx) - 2, 3):
            faces.append((first + idx[k], first + idx[k + 1], first + idx[k + 2]))
            face_mats.append(slot)
    mesh = bpy.data.meshes.new(spec.get("name", name))
    mesh.from_pydata(positions, [], faces)
    for mat in mats:
        mesh.materials.append(mat)
    for poly, slot in zip(mesh.polygons, face_mats):
        poly.material_index = slot
        poly.use_smooth = True
    uv_layer = mesh.uv_layers.new(name="UVMap")
    for loop in mesh.loops:
        u, v = uvs[loop.vertex_index][:2]
        uv_layer.data[loop.index].uv = (u, 1.0 - v)  # glTF's v runs down the image
    mesh.use_auto_smooth = True
    mesh.normals_split_custom_set_from_vertices([Vector(n).normalized() for n in normals])
    mesh.validate()
    mesh.update()
    meshes[name] = mesh
    return mesh


def _node_matrix(spec: dict) -> Matrix:
    if "matrix" in spec:
        m = spec["matrix"]  # column-major
        return Matrix([[m[c * 4 + r] for c in range(4)] for r in range(4)])
    t = spec.get("translation", [0.0, 0.0, 0.0])
    x, y, z, w = spec.get("rotation", [0.0, 0.0, 0.0, 1.0])
    s = spec.get("scale", [1.0, 1.0, 1.0])
    scale = Matrix.Diagonal((s[0], s[1], s[2], 1.0))
    return Matrix.Translation(t) @ Quaternion((w, x, y, z)).to_matrix().to_4x4() @ scale


def import_gltf1(path: str, collection) -> list:
    """Import a glTF 1.0 file (meshes, node hierarchy, diffuse textures); returns new objects."""
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    base = os.path.dirname(path)
    buffers: dict = {}
    materials: dict = {}
    meshes: dict = {}
    created: list = []
    # glTF is +Y up; blender is +Z up: one parent rotated +90 degrees about X.
    up = bpy.data.objects.new("gltf_y_up", None)
    collection.objects.link(up)
    up.matrix_world = Matrix.Rotation(math.radians(90.0), 4, "X")
    created.append(up)

    def build(node_name: str, parent) -> None:
        spec = doc["nodes"][node_name]
        mesh_names = spec.get("meshes", [])
        if len(mesh_names) == 1:
            obj = bpy.data.objects.new(spec.get("name", node_name),
                                       _gltf1_mesh(doc, base, mesh_names[0], buffers, materials, meshes))
        else:
            obj = bpy.data.objects.new(spec.get("name", node_name), None)
        collection.objects.link(obj)
        obj.parent = parent
        obj.matrix_parent_inverse = Matrix.Identity(4)
        obj.matrix_basis = _node_matrix(spec)
        created.append(obj)
        for k, mesh_name in enumerate(mesh_names if len(mesh_names) > 1 else []):
            child = bpy.data.objects.new(f"{obj.name}.{k}",
                                         _gltf1_mesh(doc, base, mesh_name, buffers, materials, meshes))
            collection.objects.link(child)
            child.parent = obj
            created.append(child)
        for child_name in spec.get("children", []):
            build(child_name, obj)

    scene_name = doc.get("scene") or next(iter(doc["scenes"]))
    for node_name in doc["scenes"][scene_name]["nodes"]:
        build(node_name, up)
    return created


# --------------------------------------------------------------------------- scene setup


def import_asset(path: str) -> list:
    scene = bpy.context.scene
    before = set(bpy.data.objects)
    ext = os.path.splitext(path)[1].lower()
    if ext in (".gltf", ".glb"):
        version = "2"
        if ext == ".gltf":
            with open(path, encoding="utf-8") as fh:
                version = str(json.load(fh).get("asset", {}).get("version", "1"))
        if version.startswith("1"):
            import_gltf1(path, scene.collection)
        else:
            bpy.ops.import_scene.gltf(filepath=path)
    elif ext == ".dae":
        bpy.ops.wm.collada_import(filepath=path)
    elif ext == ".obj":
        bpy.ops.wm.obj_import(filepath=path)
    elif ext == ".ply":
        bpy.ops.import_mesh.ply(filepath=path)
    elif ext == ".stl":
        bpy.ops.import_mesh.stl(filepath=path)
    elif ext == ".fbx":
        bpy.ops.import_scene.fbx(filepath=path)
    else:
        raise ValueError(f"unsupported asset format {ext!r} (glTF, Collada, OBJ, PLY, STL or FBX)")
    new = [o for o in bpy.data.objects if o not in before]
    # Collada files may carry their own cameras and lights: only meshes and empties stay.
    for obj in list(new):
        if obj.type not in ("MESH", "EMPTY"):
            bpy.data.objects.remove(obj, do_unlink=True)
            new.remove(obj)
    if not any(o.type == "MESH" for o in new):
        raise ValueError(f"{path}: no mesh was imported")
    for obj in new:
        if obj.type == "MESH" and not any(obj.data.materials):
            obj.data.materials.clear()
            obj.data.materials.append(default_material(obj.data))
    return new


def default_material(mesh):
    """A diffuse-ish material for a mesh that has none: its vertex colours, else light grey."""
    mat = bpy.data.materials.new(f"{mesh.name}_default")
    mat.use_nodes = True
    tree = mat.node_tree
    bsdf = tree.nodes["Principled BSDF"]
    bsdf.inputs["Roughness"].default_value = 0.6
    colors = getattr(mesh, "color_attributes", None)
    if colors is not None and len(colors) > 0:
        attr = tree.nodes.new("ShaderNodeVertexColor")
        attr.layer_name = colors[0].name
        tree.links.new(attr.outputs["Color"], bsdf.inputs["Base Color"])
    else:
        bsdf.inputs["Base Color"].default_value = (0.7, 0.7, 0.7, 1.0)
    return mat


def world_bounds(objects) -> tuple[list[float], list[float]]:
    """Exact world-space bounds of the evaluated mesh vertices."""
    bpy.context.view_layer.update()
    depsgraph = bpy.context.evaluated_depsgraph_get()
    lo = [math.inf] * 3
    hi = [-math.inf] * 3
    for obj in objects:
        if obj.type != "MESH":
            continue
        evaluated = obj.evaluated_get(depsgraph)
        mesh = evaluated.to_mesh()
        mw = evaluated.matrix_world
        for v in mesh.vertices:
            w = mw @ v.co
            for a in range(3):
                lo[a] = min(lo[a], w[a])
                hi[a] = max(hi[a], w[a])
        evaluated.to_mesh_clear()
    return lo, hi


def normalise(objects, fit_half_extent: float) -> dict:
    """Parent the asset to one empty that centres it and scales its largest half-extent."""
    scene = bpy.context.scene
    root = bpy.data.objects.new("latentscape_asset", None)
    scene.collection.objects.link(root)
    for obj in objects:
        if obj.parent is None:
            world = obj.matrix_world.copy()
            obj.parent = root
            obj.matrix_parent_inverse = Matrix.Identity(4)
            obj.matrix_world = world
    lo, hi = world_bounds(objects)
    centre = [(a + b) / 2 for a, b in zip(lo, hi)]
    half = max((b - a) / 2 for a, b in zip(lo, hi))
    scale = fit_half_extent / half
    root.scale = (scale, scale, scale)
    root.location = tuple(-c * scale for c in centre)
    lo2, hi2 = world_bounds(objects)
    return {
        "bounds_before": [lo, hi],
        "bounds": [lo2, hi2],
        "scale": scale,
        "centre_before": centre,
    }


def setup_world(hdri: str, strength: float) -> None:
    world = bpy.data.worlds.new("latentscape_hdri")
    world.use_nodes = True
    tree = world.node_tree
    background = tree.nodes["Background"]
    env = tree.nodes.new("ShaderNodeTexEnvironment")
    env.image = bpy.data.images.load(hdri)
    tree.links.new(env.outputs["Color"], background.inputs["Color"])
    background.inputs["Strength"].default_value = strength
    bpy.context.scene.world = world


def setup_render(job: dict) -> None:
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = int(job["samples"])
    scene.cycles.use_denoising = False  # Debian's build has no OpenImageDenoise
    scene.cycles.seed = int(job["seed"])
    scene.render.film_transparent = True  # HDRI lights the asset but is not seen
    scene.render.resolution_x = int(job["width"])
    scene.render.resolution_y = int(job["height"])
    scene.render.resolution_percentage = 100
    scene.render.pixel_aspect_x = 1.0
    scene.render.pixel_aspect_y = 1.0
    scene.render.use_persistent_data = True
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    scene.render.image_settings.color_depth = "8"
    scene.view_settings.view_transform = job.get("view_transform", "Standard")
    scene.view_settings.look = "None"
    if job.get("threads"):
        scene.render.threads_mode = "FIXED"
        scene.render.threads = int(job["threads"])


def setup_camera(job: dict):
    scene = bpy.context.scene
    data = bpy.data.cameras.new("latentscape_camera")
    data.type = "PERSP"
    data.sensor_fit = "VERTICAL"  # the sensor height spans the image height
    data.sensor_height = 24.0
    data.lens = 0.5 * data.sensor_height / math.tan(math.radians(job["fov_y_deg"]) / 2)
    data.shift_x = 0.0
    data.shift_y = 0.0
    data.clip_start = 0.05
    data.clip_end = 100.0
    cam = bpy.data.objects.new("latentscape_camera", data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    return cam


def run(job: dict) -> dict:
    started = time.time()
    bpy.ops.wm.read_factory_settings(use_empty=True)
    objects = import_asset(job["asset"])
    fit = normalise(objects, float(job.get("fit_half_extent", 1.0)))
    say("asset", n_objects=len(objects), **fit)
    setup_world(job["hdri"], float(job.get("hdri_strength", 1.0)))
    setup_render(job)
    cam = setup_camera(job)
    scene = bpy.context.scene
    out_dir = job["out_dir"]
    frames = []
    n = len(job["frames"])
    for i, frame in enumerate(job["frames"]):
        cam.matrix_world = Matrix(frame["transform_matrix"])
        bpy.context.view_layer.update()
        scene.render.filepath = os.path.join(out_dir, frame["file_path"])
        t0 = time.time()
        bpy.ops.render.render(write_still=True)
        matrix = [list(row) for row in cam.matrix_world]
        frames.append({"file_path": frame["file_path"], "matrix_world": matrix})
        say("frame", index=i, total=n, file_path=frame["file_path"], seconds=round(time.time() - t0, 3))
    data = cam.data
    return {
        "blender_version": bpy.app.version_string,
        "frames": frames,
        "camera": {
            "lens_mm": data.lens,
            "sensor_height_mm": data.sensor_height,
            "sensor_fit": data.sensor_fit,
            "shift": [data.shift_x, data.shift_y],
            "width": scene.render.resolution_x,
            "height": scene.render.resolution_y,
        },
        "asset": fit,
        "render": {
            "engine": scene.render.engine,
            "device": scene.cycles.device,
            "samples": scene.cycles.samples,
            "denoising": scene.cycles.use_denoising,
            "film_transparent": scene.render.film_transparent,
            "view_transform": scene.view_settings.view_transform,
        },
        "seconds": time.time() - started,
    }


def main(argv: list[str]) -> int:
    argv = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(prog="blender_views.py")
    parser.add_argument("--job", required=True, help="job JSON written by latentscape.tools.demo_dataset")
    args = parser.parse_args(argv)
    with open(args.job, encoding="utf-8") as fh:
        job = json.load(fh)
    try:
        result = run(job)
    except Exception as err:  # report to the caller, then fail blender's exit code
        traceback.print_exc()
        say("error", message=f"{type(err).__name__}: {err}")
        return 3
    with open(job["result"], "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    say("done", seconds=round(result["seconds"], 2))
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    if code:
        sys.exit(code)
