"""Scene assembly: ``scene.toml`` -> the parts of a frame loop (plugin host, adapters,
GAN texture stages, mesh layers, stylizer).

Each part's section is read here, by its own function; a scene without the section
simply has no such part. :func:`assemble` builds them all (``latentscape.session``
calls it); :func:`build_layers` builds only the texture stages and mesh layers.

Generators and layers (every path is relative to the bundle and must stay inside it,
so ``scene.lock`` covers it: the lock hashes every file of the bundle)::

    [generators.marble]                      # one table per generator, any name
    path = "generators/marble"               # folder: generator.safetensors + generator.json
    program = { kind = "walk", seeds = [1, 5, 9], period = 8.0, psi = 0.7 }
    rate = 8.0                                 # optional: new textures per second of scene time
    description = "what it is, honestly"     # optional, free text

    [[layers]]                               # one entry per mesh, drawn opaque
    name = "screen"                          # optional (default layer<i>)
    mesh = "meshes/screen.glb"               # glTF/GLB, OBJ or PLY (trimesh)
    transform = [[1, 0, 0, 0.9], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]
                                             # optional 4x4 mesh -> world (scene units, the
                                             # scene's camera poses' frame); rotation *
                                             # uniform scale + translation only
    texture = "marble"                       # a [generators] name, or an image file
    uv = "mesh"                              # optional: mesh | spherical | planar
    method = "auto"                          # optional: auto | raster | raycast

``program`` is a latent program (:mod:`latentscape.texture.latents`), evaluated at the
frame's time. A ``texture`` string that names a generator is that generator's live
output; otherwise it must be an image file in the bundle (a still texture). Only
generators some layer uses are loaded and run. Errors name scene.toml and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from latentscape.config import check_keys
from latentscape.errors import LatentscapeError, SceneError, safe_repr
from latentscape.scene.bundle import Scene
from latentscape.config import resolve_in_bundle

__all__ = ["LoopParts", "assemble", "build_layers", "build_stylizer"]

_GENERATOR_KEYS = {"path", "program", "description", "rate"}
_LAYER_KEYS = {"name", "mesh", "transform", "texture", "uv", "method"}


def _inside(scene: Scene, rel: Any, what: str, kind: str = "any") -> Path:
    """``rel`` resolved inside the bundle (:func:`latentscape.scene.lock.resolve_in_bundle`)."""
    return resolve_in_bundle(scene.path, rel, what, kind=kind)


def _rethrow(err: LatentscapeError, where: str, toml: Path) -> LatentscapeError:
    """The same error class, now naming scene.toml and the section (and the asset, if any)."""
    return type(err)(f"{where}: {err.message}" + (f" ({err.path})" if err.path else ""), path=toml, hint=err.hint)


def build_layers(scene: Scene, *, hooks: Any = None) -> dict[str, list]:
    """``{"stages": [TextureStage...], "layers": [MeshLayer...]}`` for :class:`FrameLoop`.

    ``hooks``: the frame loop's plugin host; when it has ``check_latents`` every
    generator's latents pass the latent guardrails before synthesis. A scene without
    ``[[layers]]`` gets empty lists.
    """
    cfg = scene.config
    toml = scene.path / "scene.toml"
    gens = cfg.get("generators", {})
    layers_cfg = cfg.get("layers", [])
    if not isinstance(gens, dict):
        raise SceneError("[generators] must be a table of named generators", path=toml)
    if not isinstance(layers_cfg, list) or not all(isinstance(x, dict) for x in layers_cfg):
        raise SceneError("layers must be an array of tables ([[layers]])", path=toml)
    if not layers_cfg:
        return {"stages": [], "layers": []}

    from latentscape.render.mesh import MeshLayer, load_mesh, texture_from_image
    from latentscape.texture.latents import LatentProgram
    from latentscape.texture.stage import TextureStage
    from latentscape.texture.stylegan3 import load_generator

    dev = scene.device
    guard = getattr(hooks, "check_latents", None)
    stages: dict[str, TextureStage] = {}

    def stage_for(name: str) -> TextureStage:
        if name in stages:
            return stages[name]
        g = gens[name]
        where = f"[generators.{name}]"
        if not isinstance(g, dict):
            raise SceneError(f"{where} must be a table", path=toml)
        check_keys(g, _GENERATOR_KEYS, where=where, path=toml)
        if "path" not in g or "program" not in g:
            raise SceneError(f"{where} needs path (generator folder) and program (latent program)", path=toml)
        folder = _inside(scene, g["path"], f"{where} path", kind="dir")
        try:
            program = LatentProgram.from_dict(g["program"])
            G = load_generator(folder, device=dev)
            rate = g.get("rate")
            if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate <= 0):
                raise SceneError(f"{where} rate must be a positive number (textures per second)", path=toml)
            stages[name] = TextureStage(name, G, program, guard=guard, rate=rate)
        except LatentscapeError as err:
            raise _rethrow(err, where, toml) from None
        return stages[name]

    layers = []
    for i, lc in enumerate(layers_cfg):
        name = lc.get("name", f"layer{i}")
        where = f"[[layers]] #{i} ({name})"
        check_keys(lc, _LAYER_KEYS, where=where, path=toml)
        if "mesh" not in lc or "texture" not in lc:
            raise SceneError(f"{where} needs mesh and texture", path=toml)
        tex_ref = lc["texture"]
        if not isinstance(tex_ref, str) or not tex_ref:
            raise SceneError(f"{where} texture must be a generator name or an image path", path=toml)
        mesh_path = _inside(scene, lc["mesh"], f"{where} mesh", kind="file")
        try:
            mesh = load_mesh(mesh_path, transform=lc.get("transform"), uv=lc.get("uv", "mesh"))
        except LatentscapeError as err:
            raise _rethrow(err, where, toml) from None
        if tex_ref in gens:
            texture: Any = tex_ref
            stage_for(tex_ref)
        else:
            img = _inside(scene, tex_ref, f"{where} texture")
            if not img.is_file():
                known = ", ".join(sorted(gens)) or "none"
                raise SceneError(f"{where} texture {safe_repr(tex_ref, 80)} is neither a generator (known: {known}) "
                                 "nor an image file in the bundle", path=toml)
            texture = texture_from_image(img)
        try:
            layers.append(MeshLayer(mesh, texture, name=name, method=lc.get("method", "auto"), device=dev))
        except LatentscapeError as err:
            raise _rethrow(err, where, toml) from None
    return {"stages": list(stages.values()), "layers": layers}


# --------------------------------------------------------------------------- the whole loop

@dataclass
class LoopParts:
    """What :class:`latentscape.frame.FrameLoop` is built from, for one scene.

    ``hooks``: the plugin host for ``[guardrails]`` and ``[[plugins]]`` (always present:
    with no plugins it passes frames through); ``adapters``: the ``[adapters]`` manager
    or None; ``stages``/``layers``: ``[generators]`` and ``[[layers]]``; ``stylizer``:
    ``[stylizer]`` or None. :meth:`close` stops the host's plugins.
    """

    hooks: Any
    adapters: Any = None
    stages: list = field(default_factory=list)
    layers: list = field(default_factory=list)
    stylizer: Callable[[torch.Tensor], torch.Tensor] | None = None

    def loop_kwargs(self) -> dict[str, Any]:
        return {"hooks": self.hooks, "adapters": self.adapters, "stages": self.stages, "layers": self.layers,
                "stylizer": self.stylizer}

    def close(self) -> None:
        for stage in self.stages:  # background synthesis threads of live texture stages
            close = getattr(stage, "close", None)
            if close is not None:
                close()
        self.hooks.close()


def assemble(scene: Scene, *, stylize: bool = True, stylizer: str | Path | None = None,
             scene_plugins: bool = True, plugins: Iterable[Any] = (), audit_log: str | Path | None = None,
             host_clock: Callable[[], float] | None = None, verdict_listeners: Iterable[Callable] = ()) -> LoopParts:
    """Build every part of ``scene``'s frame loop.

    ``stylize=False`` leaves the stylizer out; ``stylizer`` (a student or diffusers
    folder) replaces ``[stylizer]``. ``scene_plugins=False`` leaves the scene's
    ``[[plugins]]`` out (its ``[guardrails]`` settings still apply); ``plugins`` adds
    :class:`latentscape.plugin_host.PluginSpec` s. ``audit_log`` overrides
    ``[guardrails] audit_log``; ``host_clock`` stamps input events (default
    ``time.monotonic``); ``verdict_listeners`` are added to the host
    (:meth:`PluginHost.add_verdict_listener`). If a part fails to build, the plugins
    already started are stopped before the error propagates.
    """
    from latentscape.lora.manager import build_adapters
    from latentscape.plugin_host import PluginHost

    adapters = build_adapters(scene)
    kw = {"clock": host_clock} if host_clock is not None else {}
    hooks = PluginHost.from_scene(scene, adapters=adapters, audit_log=audit_log, extra=plugins,
                                  scene_plugins=scene_plugins, **kw)
    try:
        for listener in verdict_listeners:
            hooks.add_verdict_listener(listener)
        built = build_layers(scene, hooks=hooks)
        styl = build_stylizer(scene, stylizer) if stylize else None
    except BaseException:
        hooks.close()  # no plugin threads or servers outlive a scene that failed to build
        raise
    return LoopParts(hooks=hooks, adapters=adapters, stages=built["stages"], layers=built["layers"], stylizer=styl)


def build_stylizer(scene: Scene, override: str | Path | None = None):
    """``[stylizer] path = "stylizer"`` (inside the bundle) plus diffusion options; None
    when the scene has none or it is disabled. ``override``: a student or diffusers folder."""
    from latentscape.errors import SceneError
    from latentscape.stylize import load_stylizer

    if override is not None:
        return load_stylizer(override, device=scene.device)
    sec = scene.config.get("stylizer")
    if not sec:
        return None
    if not isinstance(sec, dict) or not isinstance(sec.get("path"), str):
        raise SceneError("[stylizer] needs path = \"<folder inside the bundle>\"", path=scene.path / "scene.toml")
    if not sec.get("enabled", True):
        return None
    target = resolve_in_bundle(scene.path, sec["path"], "[stylizer] path", kind="dir")
    mix = sec.get("mix", 1.0)
    if isinstance(mix, bool) or not isinstance(mix, (int, float)) or not 0.0 <= mix <= 1.0:
        raise SceneError(f"[stylizer] mix must be a number in [0, 1], got {safe_repr(mix, 80)}", path=scene.path / "scene.toml")
    options = {k: v for k, v in sec.items() if k not in ("path", "enabled", "mix")}
    styl = load_stylizer(target, device=scene.device, **options)
    return styl if mix == 1.0 else _Mixed(styl, float(mix))


class _Mixed:
    """``(1 - mix) * frame + mix * stylizer(frame)``: keeps the scene legible under a strong style."""

    def __init__(self, stylizer, mix: float):
        self.stylizer, self.mix = stylizer, mix
        self.name = f"{getattr(stylizer, 'name', 'stylizer')}*{mix:g}"
        self.version = getattr(stylizer, "version", "")

    def __call__(self, frame):
        return torch.lerp(frame, self.stylizer(frame), self.mix)
