"""Load and save scene bundles.

A bundle is a folder::

    scene.toml            what the scene is made of (sections below)
    field.safetensors     NeRF weights: the flat hash-grid buffer (tiny-cuda-nn layout),
                          the MLP matrices and the occupancy bitfield
    cameras/*.json        named camera paths (nerfstudio camera_path.json format)
    heldout/              held-out views (transforms.json + images) for evaluation
    scene.lock            sha256 of every file (see :mod:`latentscape.scene.lock`)

``scene.toml`` sections: ``[scene]`` (name, format, description, up axis),
``[field]`` (``kind`` = "nerf" (default) or "nerfacto" (an imported nerfstudio scene, see
:mod:`latentscape.scene.nerfstudio`), weights file, backend, ``[field.config]`` = FieldConfig (or NerfactoConfig),
``[field.normalization]`` = world -> field transform), ``[render]`` (RenderConfig,
background, default size and fps), ``[cameras]`` (default name, ``[cameras.paths]``).
Later sections (generators, layers, stylizer, adapters, plugins, guardrails) are
read by their own components from :attr:`Scene.config`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import torch
import tomli_w

from latentscape.config import check_keys, check_number, check_vector, config_from_dict
from latentscape.errors import ConfigError, SceneError, WeightsError, safe_repr
from latentscape.field.nerf import FieldConfig, NerfField
from latentscape.render.camera_path import CameraPath, load_camera_path, orbit_path
from latentscape.render.occupancy import OccupancyGrid
from latentscape.render.renderer import MAX_IMAGE_SIDE, RenderConfig
from latentscape.scene.lock import resolve_in_bundle, verify_lock, write_lock

SCENE_FORMAT = 1
MAX_TOML_BYTES = 4 * 2**20
"""Largest scene.toml accepted (the demo's is 8 KB)."""
_OCCUPANCY_KEYS = ("resolution", "levels", "threshold", "decay")
"""``[field.occupancy]``: the keyword arguments of :class:`OccupancyGrid` besides the box."""
_OCCUPANCY_RANGES = {"resolution": (int, 2, 1024), "levels": (int, 1, 16), "threshold": (float, 0.0, 1e6),
                     "decay": (float, 0.0, 1.0)}


def demo_scene_path() -> Path:
    """The demo scene shipped inside the package."""
    import latentscape.scenes

    return Path(latentscape.scenes.__file__).parent / "demo"


@dataclass
class Scene:
    """A loaded, verified scene, ready to render."""

    path: Path
    name: str
    version: str
    config: dict
    field: NerfField  # or a NerfactoField (``[field] kind = "nerfacto"``, an imported nerfstudio scene)
    grid: OccupancyGrid | None  # None for fields that bring their own sampler (nerfacto)
    render_config: RenderConfig
    background: tuple[float, float, float]
    center: torch.Tensor
    scale: float
    width: int
    height: int
    fps: float
    up_axis: int
    camera_paths: dict[str, Path] = dataclasses.field(default_factory=dict)
    default_camera: str | None = None
    backend: str = "torch"

    @property
    def device(self) -> torch.device:
        return self.field.aabb.device

    def camera_path(self, name: str | None = None, *, width: int | None = None, height: int | None = None) -> CameraPath:
        """A named camera path of the scene (the default when ``name`` is None)."""
        name = name or self.default_camera
        if name is None or name not in self.camera_paths:
            known = ", ".join(sorted(self.camera_paths)) or "none"
            raise SceneError(f"scene has no camera path {safe_repr(name, 80)} (known: {known})", path=self.path / "scene.toml")
        return load_camera_path(self.camera_paths[name], width=width, height=height)

    def orbit(self, n_frames: int, width: int | None = None, height: int | None = None, **kw) -> CameraPath:
        """A built-in orbit around the scene centre at the training cameras' distance."""
        radius = kw.pop("radius", 2.0 / self.scale)
        return orbit_path(n_frames, width or self.width, height or self.height, radius=radius,
                          center=self.center.tolist(), up_axis=self.up_axis, fps=kw.pop("fps", self.fps), **kw)


def _section(cfg: dict, name: str, path: Path) -> dict:
    value = cfg.get(name, {})
    if not isinstance(value, dict):
        raise SceneError(f"[{name}] must be a table", path=path)
    return value


def load_scene(path: str | Path | None = None, *, device: str | torch.device = "cpu", backend: str | None = None,
               verify: bool = True) -> Scene:
    """Read a scene bundle, verify its lock, and build its field on ``device``.

    ``path`` None loads the demo scene. ``backend`` overrides the scene's choice
    (``LATENTSCAPE_BACKEND`` overrides both).
    """
    root = Path(path) if path is not None else demo_scene_path()
    toml_path = root / "scene.toml"
    if not root.is_dir():
        raise SceneError("scene folder not found", path=root, hint="give a scene bundle folder (it holds scene.toml)")
    if not toml_path.is_file():
        raise SceneError("no scene.toml in this folder", path=root, hint="a scene bundle is a folder with scene.toml; `latentscape train` writes one")
    version = verify_lock(root) if verify else "unverified"
    try:
        if toml_path.stat().st_size > MAX_TOML_BYTES:
            raise SceneError(f"scene.toml is larger than {MAX_TOML_BYTES // 2**20} MiB", path=toml_path,
                             hint="scene.toml describes the scene; large data belongs in asset files")
        cfg = tomllib.loads(toml_path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise SceneError(f"malformed TOML: {safe_repr(str(err), 200)[1:-1]}", path=toml_path) from None
    except RecursionError:
        raise SceneError("malformed TOML: nested too deeply", path=toml_path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise SceneError(f"cannot read scene.toml: {safe_repr(str(err), 160)[1:-1]}", path=toml_path) from None
    scene_sec = _section(cfg, "scene", toml_path)
    fmt = check_number(scene_sec.get("format", SCENE_FORMAT), name="format", kind=int, low=1, where="[scene]",
                       path=toml_path)
    if fmt > SCENE_FORMAT:
        raise SceneError(f"scene format {fmt} is newer than this latentscape understands ({SCENE_FORMAT})",
                         path=toml_path, hint="upgrade latentscape")
    check_bundle_paths(cfg, root, toml_path)
    field_sec = _section(cfg, "field", toml_path)
    kind = field_sec.get("kind", "nerf")
    if kind not in ("nerf", "nerfacto"):
        raise SceneError(f"unknown [field] kind {kind!r} (known: nerf, nerfacto)", path=toml_path)
    from latentscape.kernels.backend import resolve_backend, select_ops

    occupancy = _section(field_sec, "occupancy", toml_path)
    check_keys(occupancy, _OCCUPANCY_KEYS, where="[field.occupancy]", path=toml_path)
    for key, (num_kind, low, high) in _OCCUPANCY_RANGES.items():
        if key in occupancy:
            check_number(occupancy[key], name=key, kind=num_kind, low=low, high=high, where="[field.occupancy]",
                         path=toml_path)
    weights = resolve_in_bundle(root, field_sec.get("weights", "field.safetensors"), "[field] weights",
                                toml=toml_path)
    norm = _section(field_sec, "normalization", toml_path)
    check_keys(norm, ("center", "scale"), where="[field.normalization]", path=toml_path)
    center_v = check_vector(norm.get("center", [0.0, 0.0, 0.0]), name="center", length=3, low=-1e9, high=1e9,
                            where="[field.normalization]", path=toml_path)
    scale = check_number(norm.get("scale", 1.0), name="scale", low=0.0, high=1e9, low_open=True,
                         where="[field.normalization]", path=toml_path)
    render_sec = dict(_section(cfg, "render", toml_path))
    background = tuple(check_vector(render_sec.pop("background", [1.0, 1.0, 1.0]), name="background", length=3,
                                    low=0.0, high=1.0, where="[render]", path=toml_path))
    width = check_number(render_sec.pop("width", 256), name="width", kind=int, low=1, high=MAX_IMAGE_SIDE,
                         where="[render]", path=toml_path)
    height = check_number(render_sec.pop("height", 256), name="height", kind=int, low=1, high=MAX_IMAGE_SIDE,
                          where="[render]", path=toml_path)
    fps = check_number(render_sec.pop("fps", 24.0), name="fps", low=0.0, high=1000.0, low_open=True,
                       where="[render]", path=toml_path)
    rcfg = config_from_dict(RenderConfig, render_sec, where="[render]", path=toml_path).validate(path=toml_path)
    cams = _section(cfg, "cameras", toml_path)
    paths = {name: resolve_in_bundle(root, rel, f"[cameras.paths] {safe_repr(name, 60)}", toml=toml_path)
             for name, rel in _section(cams, "paths", toml_path).items()}
    default_cam = cams.get("default")
    if default_cam is not None and not isinstance(default_cam, str):
        raise SceneError(f"[cameras] default must be a camera path name, got {safe_repr(default_cam, 60)}",
                         path=toml_path)
    up = check_vector(scene_sec.get("up", [0.0, 0.0, 1.0]), name="up", length=3, low=-1e9, high=1e9,
                      where="[scene]", path=toml_path)
    if not any(up):
        raise ConfigError("[scene] up must not be the zero vector", path=toml_path)
    name = scene_sec.get("name", root.name)
    if not isinstance(name, str):
        raise ConfigError(f"[scene] name must be a string, got {safe_repr(name, 60)}", path=toml_path)

    dev = torch.device(device)
    chosen = resolve_backend(backend or field_sec.get("backend"), dev)
    if kind == "nerfacto":
        # An imported nerfstudio scene: its own field and proposal sampler (no occupancy grid).
        from latentscape.field.nerfacto import NerfactoConfig
        from latentscape.scene.nerfstudio import build_field

        ncfg = NerfactoConfig.from_dict(field_sec.get("config", {}), source="[field.config]", path=toml_path)
        fld = build_field(ncfg, _read_safetensors(weights), weights, ops=select_ops(chosen, dev))
        grid = None
    else:
        fcfg = FieldConfig.from_dict(field_sec.get("config", {}), source="[field.config]", path=toml_path)
        fld = NerfField(fcfg, ops=select_ops(chosen, dev))
        try:
            grid = OccupancyGrid(fcfg.aabb, **occupancy)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"invalid [field.occupancy]: {err}", path=toml_path) from None
        _load_field_weights(weights, fld, grid)
    center = torch.tensor(center_v, dtype=torch.float32)
    fld = fld.to(dev).eval()
    grid = grid.to(dev) if grid is not None else None
    return Scene(
        path=root, name=name, version=version, config=cfg, field=fld, grid=grid,
        render_config=rcfg, background=background, center=center, scale=scale, width=width, height=height, fps=fps,
        up_axis=int(max(range(3), key=lambda i: abs(up[i]))), camera_paths=paths, default_camera=default_cam,
        backend=chosen,
    )


PLUGIN_ALLOW_ENV = "LATENTSCAPE_PLUGIN_ALLOW"
"""Environment variable: comma-separated module names (and their submodules) that a scene's
``[[plugins]] module`` may import besides ``latentscape.plugins.*`` and installed entry points."""


def allowed_plugin_modules() -> tuple[set[str], set[str]]:
    """(module prefixes, entry-point names) a scene's ``[[plugins]]`` may name.

    Who decides is the operator of the machine, never the scene: the built-in plugins
    (``latentscape.plugins``), the packages installed with a ``latentscape`` entry point
    (installing a package is the act of trust) and the modules listed in
    ``LATENTSCAPE_PLUGIN_ALLOW``. A scene from a stranger cannot widen the list."""
    from importlib.metadata import entry_points

    prefixes = {"latentscape.plugins"}
    names = set()
    for ep in entry_points(group="latentscape"):
        names.add(ep.name)
        prefixes.add(ep.value.partition(":")[0].strip())
    for item in os.environ.get(PLUGIN_ALLOW_ENV, "").split(","):
        if item.strip():
            prefixes.add(item.strip())
    return prefixes, names


def check_bundle_paths(cfg: dict, root: Path, toml: Path) -> None:
    """Refuse, before anything is read or imported, every path or module in ``scene.toml``
    that leaves the bundle: ``[guardrails] slate`` (an image) and ``audit_log``,
    ``[adapters.*] file``, ``[generators.*] path``, ``[[layers]] mesh``, ``[stylizer] path``
    and ``[[plugins]] module`` (see :func:`allowed_plugin_modules`). ``[field] weights`` and
    ``[cameras.paths]`` are resolved by :func:`load_scene` itself."""
    guard = cfg.get("guardrails", {})
    if isinstance(guard, dict):
        slate = guard.get("slate")
        if isinstance(slate, str) and not slate.startswith("#"):
            resolve_in_bundle(root, slate, "[guardrails] slate", toml=toml)
        if "audit_log" in guard and guard["audit_log"] is not None:
            resolve_in_bundle(root, guard["audit_log"], "[guardrails] audit_log", kind="output", toml=toml)
    adapters = cfg.get("adapters", {})
    if isinstance(adapters, dict):
        for name, e in adapters.items():
            if isinstance(e, dict) and "file" in e:
                resolve_in_bundle(root, e["file"], f"[adapters.{safe_repr(name, 60)[1:-1]}] file", toml=toml)
    gens = cfg.get("generators", {})
    if isinstance(gens, dict):
        for name, g in gens.items():
            if isinstance(g, dict) and "path" in g:
                resolve_in_bundle(root, g["path"], f"[generators.{safe_repr(name, 60)[1:-1]}] path", kind="dir",
                                  toml=toml)
    layers = cfg.get("layers", [])
    if isinstance(layers, list):
        for i, lc in enumerate(layers):
            if isinstance(lc, dict) and "mesh" in lc:
                resolve_in_bundle(root, lc["mesh"], f"[[layers]] #{i} mesh", toml=toml)
    styl = cfg.get("stylizer")
    if isinstance(styl, dict) and "path" in styl:
        resolve_in_bundle(root, styl["path"], "[stylizer] path", kind="dir", toml=toml)
    plugins = cfg.get("plugins", [])
    if isinstance(plugins, dict):
        plugins = [plugins]
    if isinstance(plugins, list):
        allowed = None
        for i, e in enumerate(plugins):
            if not isinstance(e, dict) or e.get("module") is None:
                continue
            module = e["module"]
            label = f"[[plugins]] {safe_repr(e.get('name', i), 60)} module"
            if not isinstance(module, str) or not module:
                raise SceneError(f"{label} must be a module name, got {safe_repr(module, 60)}", path=toml)
            mod = module.partition(":")[0].strip()
            allowed = allowed if allowed is not None else allowed_plugin_modules()[0]
            if not any(mod == p or mod.startswith(p + ".") for p in allowed):
                raise SceneError(
                    f"{label} {safe_repr(module, 120)} is not an allowed plugin module (built-in "
                    "latentscape.plugins.*, an installed `latentscape` entry point, or "
                    f"{PLUGIN_ALLOW_ENV})", path=toml,
                    hint=f"install the plugin as a package with a `latentscape` entry point, or allow it on this "
                         f"machine: {PLUGIN_ALLOW_ENV}={mod}")


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise WeightsError("field weights are missing", path=path, hint="retrain with `latentscape train` (or re-import) or restore the file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise WeightsError(f"not a readable safetensors file: {err}", path=path) from None


def _load_field_weights(path: Path, fld: NerfField, grid: OccupancyGrid) -> None:
    tensors = _read_safetensors(path)
    state = {k: v for k, v in tensors.items() if not k.startswith("occupancy.")}
    expected = {k: v.shape for k, v in fld.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise WeightsError(f"weights do not match [field.config]: missing {missing}, unexpected {unexpected}", path=path,
                           hint="the config in scene.toml must be the one the weights were trained with")
    for k, shape in expected.items():
        if state[k].shape != shape:
            raise WeightsError(f"{k} has shape {tuple(state[k].shape)}, the config needs {tuple(shape)}", path=path,
                               hint="the config in scene.toml must be the one the weights were trained with")
        if not torch.isfinite(state[k].float()).all():
            raise WeightsError(f"{k} holds NaN or Inf values", path=path)
    fld.load_state_dict({k: v.float() for k, v in state.items()})
    bits = tensors.get("occupancy.bitfield")
    if bits is None or bits.numel() != grid.bitfield.numel():
        raise WeightsError("occupancy.bitfield is missing or of the wrong size", path=path)
    grid.bitfield.copy_(bits.reshape(grid.bitfield.shape).bool())


@dataclass
class SceneDraft:
    """What a new bundle is written from (by training, or by tools)."""

    name: str
    field: NerfField
    grid: OccupancyGrid
    render_config: RenderConfig
    center: torch.Tensor
    scale: float
    up: list[float] = field(default_factory=lambda: [0.0, 0.0, 1.0])
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    width: int = 256
    height: int = 256
    fps: float = 24.0
    description: str = ""
    camera_paths: dict[str, CameraPath] = field(default_factory=dict)
    extra_files: dict[str, bytes] = field(default_factory=dict)
    extra_config: dict = field(default_factory=dict)
    half_precision_grid: bool = True


def save_trained_scene(draft: SceneDraft, out: str | Path, *, overwrite: bool = False,
                       command: str = "save_trained_scene") -> Path:
    """Write a bundle atomically (:func:`latentscape.outputs.staged`: a hidden temporary folder
    beside ``out``, renamed into place with the output marker). ``overwrite`` replaces only
    what latentscape wrote (an empty folder, or a folder with the marker): any other folder
    is refused with an :class:`OutputError`, never deleted. ``command`` goes into the marker."""
    from latentscape.outputs import staged

    out = Path(out)
    with staged(out, kind="dir", force=overwrite, command=command) as tmp:
        _write_bundle(draft, tmp)
    return out


def _write_bundle(draft: SceneDraft, tmp: Path) -> None:
    """The bundle's files, into the (empty) folder ``tmp``."""
    from safetensors.torch import save_file

    fld = draft.field
    tensors = {k: v.detach().cpu().contiguous() for k, v in fld.state_dict().items()}
    if draft.half_precision_grid:
        # tiny-cuda-nn keeps grid parameters in fp16 on GPUs that support it; so do we on disk.
        tensors["grid"] = tensors["grid"].half()
    tensors["occupancy.bitfield"] = draft.grid.bitfield.detach().cpu().reshape(-1).to(torch.uint8)
    save_file(tensors, str(tmp / "field.safetensors"), metadata={"format": "latentscape-field-1"})
    paths = {}
    for name, cp in draft.camera_paths.items():
        (tmp / "cameras").mkdir(exist_ok=True)
        (tmp / "cameras" / f"{name}.json").write_text(json.dumps(cp.to_json(), indent=1))
        paths[name] = f"cameras/{name}.json"
    for rel, data in draft.extra_files.items():
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp / rel).write_bytes(data)
    rc = dataclasses.asdict(draft.render_config)
    cfg = {
        "scene": {"name": draft.name, "format": SCENE_FORMAT, "description": draft.description, "up": list(draft.up)},
        "field": {
            "weights": "field.safetensors",
            "backend": "auto",
            "config": fld.config.to_dict(),
            "normalization": {"center": [float(v) for v in draft.center.tolist()], "scale": float(draft.scale)},
            "occupancy": {"resolution": draft.grid.resolution, "levels": draft.grid.levels},
        },
        "render": {**rc, "background": list(draft.background), "width": draft.width, "height": draft.height, "fps": draft.fps},
        "cameras": {"default": next(iter(paths), None), "paths": paths} if paths else {"paths": {}},
        **draft.extra_config,
    }
    if cfg["cameras"].get("default") is None:
        cfg["cameras"].pop("default", None)
    (tmp / "scene.toml").write_text(tomli_w.dumps(cfg))
    write_lock(tmp)
