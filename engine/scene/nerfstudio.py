"""Import a trained nerfstudio nerfacto run as a latentscape scene bundle, running nothing from it.

A nerfstudio output folder holds ``config.yml`` (the trainer config, written by PyYAML with
``!!python/object:...`` tags), ``dataparser_transforms.json`` (the transform and scale the
dataparser applied to the poses) and ``nerfstudio_models/step-*.ckpt`` (``torch.save`` of
``{step, pipeline, optimizers, schedulers, scalers}``).

* ``config.yml`` is read by a ``yaml.SafeLoader`` subclass that turns each python tag into
  plain data (``{"__tag__": "object:nerfstudio.models.nerfacto.NerfactoModelConfig", ...}``)
  and never imports or constructs what it names; a tag naming anything outside nerfstudio,
  pathlib, torch.optim or the plain python tags is refused.
* the checkpoint goes through ``torch.load(weights_only=True)`` (tensors, primitive containers;
  every other global refused) with two extra names: numpy's scalar reconstruction (object
  dtypes refused) and ``numpy.dtype``, which nerfstudio's scheduler states hold.
* only ``NerfactoModelConfig`` is imported; other models (splatfacto, ...) and options that
  change what nerfacto renders but that :mod:`latentscape.field.nerfacto` does not implement
  are refused with a one-line error naming them.

The bundle is written atomically (a temporary folder beside ``--out``, renamed at the end):
``field.safetensors`` (the field's tensors under latentscape names), ``scene.toml`` with
``[field] kind = "nerfacto"`` and the full :class:`NerfactoConfig`, ``[field.nerfstudio]``
with the dataparser transform and scale and the source files' sha256, and ``scene.lock``.
The scene's world is nerfstudio's dataparser space (what its viewer exports in
camera_path.json), so nerfstudio camera paths render the same views; ``dataparser_transform``
and ``dataparser_scale`` map the original dataset's poses into it
(``p_ns = scale * (R p + t)``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
import tomli_w
import yaml

from latentscape.errors import ConfigError, SceneError, UnsafeFileError, WeightsError
from latentscape.field.nerfacto import NerfactoConfig, NerfactoField, ProposalNetConfig, appearance_index, growth_factor
from latentscape.kernels.layout import GridLayout

MAX_CKPT_BYTES = 8 << 30
_ALLOWED_TAG_PREFIXES = ("nerfstudio.", "pathlib.", "torch.optim.")
_PLAIN_TAGS = {"tuple", "str", "unicode", "int", "long", "float", "bool", "none", "list", "dict", "bytes"}
SUPPORTED_MODEL = "nerfstudio.models.nerfacto.NerfactoModelConfig"

# NerfactoModelConfig fields: those read into NerfactoConfig, and those that do not change an
# eval-mode render (losses, training schedules, camera optimiser, normals prediction, ...).
_MODEL_READ = {
    "implementation", "num_levels", "base_res", "max_res", "log2_hashmap_size", "features_per_level", "hidden_dim",
    "hidden_dim_color", "appearance_embed_dim", "use_appearance_embedding", "use_average_appearance_embedding",
    "average_init_density", "disable_scene_contraction", "proposal_net_args_list", "use_same_proposal_network",
    "num_proposal_iterations", "num_proposal_samples_per_ray", "num_nerf_samples_per_ray", "proposal_initial_sampler",
    "far_plane", "near_plane", "background_color",
}
_MODEL_IGNORED = {
    "_target", "__tag__", "enable_collider", "collider_params", "loss_coefficients", "eval_num_rays_per_chunk", "prompt",
    "hidden_dim_transient", "interlevel_loss_mult", "distortion_loss_mult", "orientation_loss_mult",
    "pred_normal_loss_mult", "predict_normals", "proposal_update_every", "proposal_warmup",
    "proposal_weights_anneal_max_num_iters", "proposal_weights_anneal_slope", "use_proposal_weight_anneal",
    "use_single_jitter", "use_gradient_scaling", "camera_optimizer",
}
_PROPOSAL_KEYS = {f.name for f in dataclasses.fields(ProposalNetConfig)}


# ---------------------------------------------------------------------------------------------
# config.yml


class _DataLoader(yaml.SafeLoader):
    """SafeLoader that reads ``!!python/...`` tags as plain data, constructing nothing."""


def _tagged(loader: _DataLoader, suffix: str, node: yaml.Node) -> Any:
    kind, _, name = suffix.partition(":")
    if kind in _PLAIN_TAGS and not name:
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        return loader.construct_scalar(node)
    if kind not in ("object", "object/apply", "object/new", "name") or not name.startswith(_ALLOWED_TAG_PREFIXES):
        raise _TagRefused(f"!!python/{suffix}")
    if isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
        if kind == "object":
            return {"__tag__": suffix, **value}
        return {"__tag__": suffix, "args": value.get("args", []), "state": value.get("state", {})}
    if isinstance(node, yaml.SequenceNode):
        return {"__tag__": suffix, "args": loader.construct_sequence(node, deep=True)}
    return {"__tag__": suffix, "value": loader.construct_scalar(node)}


class _TagRefused(Exception):
    pass


_DataLoader.add_multi_constructor("tag:yaml.org,2002:python/", _tagged)


def read_config(path: Path) -> dict:
    """config.yml -> plain data (dicts, lists, scalars; python tags as ``__tag__`` dicts)."""
    if not path.is_file():
        raise SceneError("config.yml is missing", path=path, hint="give the nerfstudio run folder that holds config.yml (outputs/NAME/METHOD/TIMESTAMP)")
    try:
        data = yaml.load(path.read_text(), Loader=_DataLoader)  # noqa: S506 (a SafeLoader subclass)
    except _TagRefused as err:
        raise UnsafeFileError(f"refuses the YAML tag {err} (only nerfstudio, pathlib and torch.optim names are read, as data)",
                              path=path, hint="use the config.yml nerfstudio wrote; nothing in it is ever executed") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise SceneError(f"not readable YAML: {str(err).splitlines()[0]}", path=path) from None
    if not isinstance(data, dict):
        raise SceneError("config.yml does not hold a nerfstudio trainer config", path=path)
    return data


def _class_name(value: Any) -> str | None:
    if isinstance(value, dict) and isinstance(value.get("__tag__"), str):
        return value["__tag__"].partition(":")[2]
    return None


def _path_value(value: Any) -> str | None:
    """A ``!!python/object/apply:pathlib.PosixPath [parts]`` as a string path."""
    if isinstance(value, str):
        return value
    name = _class_name(value)
    if name and name.startswith("pathlib.") and isinstance(value.get("args"), list):
        parts = [str(p) for p in value["args"]]
        return str(Path(*parts)) if parts else "."
    return None


def nerfacto_config(cfg: dict, path: Path) -> NerfactoConfig:
    """Map nerfstudio's NerfactoModelConfig (plain data) onto :class:`NerfactoConfig`, refusing what we cannot render."""
    pipeline = cfg.get("pipeline")
    model = pipeline.get("model") if isinstance(pipeline, dict) else None
    name = _class_name(model)
    if name != SUPPORTED_MODEL:
        method = cfg.get("method_name", "?")
        raise SceneError(f"unsupported nerfstudio model {name or 'missing'} (method {method}); only nerfacto ({SUPPORTED_MODEL}) imports",
                         path=path, hint="train the scene with `ns-train nerfacto` (or nerfacto-big/-huge)")
    unknown = sorted(set(model) - _MODEL_READ - _MODEL_IGNORED)
    if unknown:
        raise SceneError(f"unsupported nerfacto option(s) {', '.join(unknown)}", path=path,
                         hint="this importer knows nerfstudio 1.1.5's NerfactoModelConfig; retrain without them or extend latentscape.field.nerfacto")
    m = model

    def need(key, kinds):
        if key not in m:
            raise SceneError(f"pipeline.model.{key} is missing", path=path)
        v = m[key]
        if not isinstance(v, kinds) or isinstance(v, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
            raise SceneError(f"pipeline.model.{key} has an unexpected value {v!r}", path=path)
        return v

    impl = need("implementation", str)
    if impl not in ("torch", "tcnn"):
        raise SceneError(f"unsupported nerfacto option implementation={impl!r} (torch or tcnn)", path=path)
    bg = need("background_color", (str, list))
    if isinstance(bg, list) or bg not in ("white", "black", "random", "last_sample"):
        raise SceneError(f"unsupported nerfacto option background_color={bg!r}", path=path)
    sampler = need("proposal_initial_sampler", str)
    if sampler not in ("piecewise", "uniform"):
        raise SceneError(f"unsupported nerfacto option proposal_initial_sampler={sampler!r}", path=path)
    nets = []
    for i, net in enumerate(need("proposal_net_args_list", list)):
        if not isinstance(net, dict) or set(net) - _PROPOSAL_KEYS:
            extra = sorted(set(net) - _PROPOSAL_KEYS) if isinstance(net, dict) else [repr(net)]
            raise SceneError(f"unsupported proposal_net_args_list[{i}] option(s) {', '.join(extra)}", path=path)
        nets.append(ProposalNetConfig(**{k: v for k, v in net.items()}))
    use_app = bool(m.get("use_appearance_embedding", True))
    try:
        return NerfactoConfig(
            implementation=impl, num_levels=int(need("num_levels", int)), base_res=int(need("base_res", int)),
            max_res=int(need("max_res", int)), log2_hashmap_size=int(need("log2_hashmap_size", int)),
            features_per_level=int(need("features_per_level", int)), hidden_dim=int(need("hidden_dim", int)),
            hidden_dim_color=int(need("hidden_dim_color", int)),
            appearance_embed_dim=int(need("appearance_embed_dim", int)) if use_app else 0,
            appearance="mean" if m.get("use_average_appearance_embedding", True) else "zeros",
            average_init_density=float(need("average_init_density", (int, float))),
            scene_contraction=not bool(m.get("disable_scene_contraction", False)),
            proposal_nets=nets, use_same_proposal_network=bool(m.get("use_same_proposal_network", False)),
            num_proposal_iterations=int(need("num_proposal_iterations", int)),
            num_proposal_samples_per_ray=[int(v) for v in need("num_proposal_samples_per_ray", list)],
            num_nerf_samples_per_ray=int(need("num_nerf_samples_per_ray", int)),
            proposal_initial_sampler=sampler, far_plane=float(need("far_plane", (int, float))), near_plane=0.0,
            background_color=bg,
        )
    except (TypeError, ValueError) as err:
        raise SceneError(f"unsupported nerfacto config: {err}", path=path) from None


# ---------------------------------------------------------------------------------------------
# checkpoint


def _safe_globals() -> list:
    try:
        from numpy._core import multiarray as _ma  # numpy 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray as _ma

    def scalar(dtype, data=None):
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise pickle.UnpicklingError("numpy scalar of an object dtype is refused")
        return _ma.scalar(dtype, data)

    out = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), (np.dtype, "numpy.dtype")]
    import numpy.dtypes as nd

    for n in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType"):
        out.append((getattr(nd, n), f"numpy.dtypes.{n}"))
    return out


def load_checkpoint(path: Path, max_bytes: int = MAX_CKPT_BYTES) -> dict:
    """A nerfstudio checkpoint's ``pipeline`` state dict, loaded without running code from the file."""
    if not path.is_file():
        raise WeightsError("checkpoint is missing", path=path, hint="nerfstudio writes nerfstudio_models/step-*.ckpt; pass --step to pick one")
    size = path.stat().st_size
    if size > max_bytes:
        raise WeightsError(f"checkpoint is {size / 2**30:.1f} GiB, over the {max_bytes / 2**30:.1f} GiB limit", path=path)
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        text = str(err)
        m = re.search(r"(unsupported GLOBAL [^\s]+|Unsupported global: GLOBAL [^\s]+|Unsupported operand \d+"
                      r"|[^\n]*refused[^\n]*|[^\n]*(?:blocked|not an allowed)[^\n]*)", text, re.IGNORECASE)
        what = m.group(1) if m else "it holds objects other than tensors and plain containers"
        raise UnsafeFileError(f"refuses to unpickle the checkpoint: {what}", path=path,
                              hint="only tensors and plain containers are read; use the checkpoint nerfstudio wrote") from None
    except (RuntimeError, OSError, EOFError, ValueError, AttributeError) as err:
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise WeightsError(f"not a readable torch checkpoint: {first}", path=path) from None
    if not isinstance(ck, dict) or not isinstance(ck.get("pipeline"), dict):
        raise WeightsError("not a nerfstudio checkpoint (no 'pipeline' state dict)", path=path)
    state = ck["pipeline"]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise WeightsError("the 'pipeline' state dict holds something other than named tensors", path=path)
    return state


# ---------------------------------------------------------------------------------------------
# tensors


def _tcnn_mlp_sizes(n_in: int, width: int, layers: int, n_out: int) -> list[tuple[int, int]]:
    """(rows, cols) of each FullyFusedMLP weight matrix, with tcnn's padding (input and output to 16)."""
    pad = lambda v: (v + 15) // 16 * 16  # noqa: E731
    dims = [pad(n_in)] + [width] * (layers - 1) + [pad(n_out)]
    return [(dims[i + 1], dims[i]) for i in range(len(dims) - 1)]


def unpack_tcnn_mlp(flat: torch.Tensor, n_in: int, width: int, layers: int, n_out: int) -> tuple[list[torch.Tensor], int]:
    """tcnn FullyFusedMLP flat params -> [out, in] matrices for :class:`TcnnMLP`, and the params consumed.

    Each layer's matrix is stored row-major as [padded out, padded in] (``GPUMatrix<T, RM>``),
    one after another. The padded input columns multiply tcnn's padding, which is 1: they
    are summed into one bias column (fed a constant 1 by TcnnMLP); padded output rows are dropped.
    """
    mats, pos = [], 0
    sizes = _tcnn_mlp_sizes(n_in, width, layers, n_out)
    for i, (r, c) in enumerate(sizes):
        w = flat[pos:pos + r * c].reshape(r, c).float()
        pos += r * c
        if i == len(sizes) - 1:
            w = w[:n_out]
        if i == 0 and c != n_in:
            w = torch.cat([w[:, :n_in], w[:, n_in:].sum(1, keepdim=True)], 1)
        mats.append(w.clone())
    return mats, pos


def pack_tcnn_mlp(mats: list[torch.Tensor], n_in: int, width: int, layers: int, n_out: int) -> torch.Tensor:
    """Inverse of :func:`unpack_tcnn_mlp` (the bias column goes to the first padded column, the rest 0)."""
    sizes = _tcnn_mlp_sizes(n_in, width, layers, n_out)
    parts = []
    for i, ((r, c), w) in enumerate(zip(sizes, mats)):
        full = torch.zeros(r, c)
        full[:w.shape[0], :min(w.shape[1], c)] = w[:, :c]
        parts.append(full.reshape(-1))
    return torch.cat(parts)


def map_state(state: dict[str, torch.Tensor], cfg: NerfactoConfig, path: Path) -> dict[str, torch.Tensor]:
    """nerfstudio ``_model.*`` tensors -> :class:`NerfactoField` state dict names (shape-checked)."""
    s = {k[len("_model."):]: v for k, v in state.items() if k.startswith("_model.")}
    used: set[str] = set()
    out: dict[str, torch.Tensor] = {}

    def take(src: str) -> torch.Tensor:
        if src not in s:
            raise WeightsError(f"checkpoint lacks _model.{src} (is config.yml the run's own?)", path=path)
        used.add(src)
        return s[src]

    def mlp(src_prefix: str, dst_prefix: str, n: int):
        for i in range(n):
            out[f"{dst_prefix}.{i}.weight"] = take(f"{src_prefix}.{i}.weight")
            out[f"{dst_prefix}.{i}.bias"] = take(f"{src_prefix}.{i}.bias")

    n_color_in = 16 + cfg.geo_feat_dim + cfg.appearance_embed_dim
    if cfg.implementation == "torch":
        out["mlp_base.encoding.hash_table"] = take("field.mlp_base.model.0.hash_table")
        mlp("field.mlp_base.model.1.layers", "mlp_base.net", cfg.num_layers)
        mlp("field.mlp_head.layers", "mlp_head", cfg.num_layers_color)
    else:
        flat = take("field.mlp_base.model.params").float()
        layout = _layout(cfg.num_levels, cfg.base_res, cfg.max_res, cfg.log2_hashmap_size, cfg.features_per_level)
        mats, n = unpack_tcnn_mlp(flat, layout.n_output_dims, cfg.hidden_dim, cfg.num_layers, 1 + cfg.geo_feat_dim)
        if flat.numel() != n + layout.n_params:
            raise WeightsError(f"field.mlp_base.model.params has {flat.numel()} values, the config needs {n + layout.n_params}", path=path)
        for i, w in enumerate(mats):
            out[f"mlp_base.net.weights.{i}"] = w
        out["mlp_base.params"] = flat[n:].clone()
        flat = take("field.mlp_head.tcnn_encoding.params").float()
        mats, n = unpack_tcnn_mlp(flat, n_color_in, cfg.hidden_dim_color, cfg.num_layers_color, 3)
        if flat.numel() != n:
            raise WeightsError(f"field.mlp_head.tcnn_encoding.params has {flat.numel()} values, the config needs {n}", path=path)
        for i, w in enumerate(mats):
            out[f"mlp_head.weights.{i}"] = w
    if cfg.appearance_embed_dim > 0:
        out["appearance_embedding"] = take("field.embedding_appearance.embedding.weight")
    for k in range(cfg.n_proposal_networks()):
        p = cfg.proposal_net(k)
        src = f"proposal_networks.{k}"
        for extra in ("mlp_base.0.hash_table", "mlp_base.0.tcnn_encoding.params"):
            if f"{src}.{extra}" in s:
                used.add(f"{src}.{extra}")  # the same tensor as .encoding (one module, two names)
        if cfg.implementation == "torch":
            out[f"{src}.encoding.hash_table"] = take(f"{src}.encoding.hash_table")
            if p.use_linear:
                out[f"{src}.net.0.weight"] = take(f"{src}.linear.weight")
                out[f"{src}.net.0.bias"] = take(f"{src}.linear.bias")
            else:
                mlp(f"{src}.mlp_base.1.layers", f"{src}.net", p.num_layers)
        else:
            layout = _layout(p.num_levels, p.base_res, p.max_res, p.log2_hashmap_size, p.features_per_level)
            grid = take(f"{src}.encoding.tcnn_encoding.params").float()
            if grid.numel() != layout.n_params:
                raise WeightsError(f"{src}.encoding.tcnn_encoding.params has {grid.numel()} values, the config needs {layout.n_params}", path=path)
            out[f"{src}.params"] = grid.clone()
            if p.use_linear:
                out[f"{src}.net.0.weight"] = take(f"{src}.linear.weight")
                out[f"{src}.net.0.bias"] = take(f"{src}.linear.bias")
            else:
                flat = take(f"{src}.mlp_base.1.tcnn_encoding.params").float()
                mats, n = unpack_tcnn_mlp(flat, layout.n_output_dims, p.hidden_dim, p.num_layers, 1)
                if flat.numel() != n:
                    raise WeightsError(f"{src}.mlp_base.1.tcnn_encoding.params has {flat.numel()} values, the config needs {n}", path=path)
                for i, w in enumerate(mats):
                    out[f"{src}.net.weights.{i}"] = w
    ignorable = re.compile(r"^(device_indicator_param|camera_optimizer\..*|field\.(aabb|max_res|num_levels|log2_hashmap_size)"
                           r"|proposal_networks\.\d+\.(aabb|max_res|num_levels|log2_hashmap_size)"
                           r"|field\.(mlp_pred_normals|field_head_pred_normals|direction_encoding|position_encoding)\..*)$")
    unknown = sorted(k for k in s if k not in used and not ignorable.match(k))
    if unknown:
        more = f" (and {len(unknown) - 3} more)" if len(unknown) > 3 else ""
        raise WeightsError(f"checkpoint holds tensors this importer does not know: {', '.join(unknown[:3])}{more}", path=path,
                           hint="the importer reads nerfstudio 1.1.5 nerfacto checkpoints")
    return {k: v.detach().float().contiguous().clone() for k, v in out.items()}


def _layout(levels, base, max_res, log2, feats) -> GridLayout:
    return GridLayout(n_levels=levels, n_features_per_level=feats, log2_hashmap_size=log2, base_resolution=base,
                      per_level_scale=growth_factor(base, max_res, levels))


def build_field(cfg: NerfactoConfig, tensors: dict[str, torch.Tensor], path: Path, ops=None) -> NerfactoField:
    fld = NerfactoField(cfg, ops=ops)
    expected = {k: v.shape for k, v in fld.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise WeightsError(f"weights do not match the nerfacto config: missing {missing[:3]}, unexpected {unexpected[:3]}", path=path)
    for k, shape in expected.items():
        if tuple(tensors[k].shape) != tuple(shape):
            raise WeightsError(f"{k} has shape {tuple(tensors[k].shape)}, the config needs {tuple(shape)}", path=path)
        if not torch.isfinite(tensors[k]).all():
            raise WeightsError(f"{k} holds NaN or Inf values", path=path)
    fld.load_state_dict(tensors)
    return fld.eval()


# ---------------------------------------------------------------------------------------------
# the import


def find_checkpoint(run: Path, cfg: dict, step: int | None) -> Path:
    rel = _path_value(cfg.get("relative_model_dir")) or "nerfstudio_models"
    models = run / rel
    ckpts = sorted(models.glob("step-*.ckpt")) if models.is_dir() else []
    if step is not None:
        want = models / f"step-{step:09d}.ckpt"
        if not want.is_file():
            have = ", ".join(c.stem.removeprefix("step-").lstrip("0") or "0" for c in ckpts) or "none"
            raise WeightsError(f"no checkpoint for step {step} (have: {have})", path=want)
        return want
    if not ckpts:
        raise WeightsError("no step-*.ckpt checkpoint", path=models, hint="train the run (ns-train) until it saves a checkpoint")
    return ckpts[-1]


def read_dataparser_transforms(path: Path) -> tuple[list[list[float]], float]:
    if not path.is_file():
        raise SceneError("dataparser_transforms.json is missing", path=path, hint="nerfstudio writes it beside config.yml; copy it from the training run")
    try:
        data = json.loads(path.read_text())
        t = [[float(v) for v in row] for row in data["transform"]]
        scale = float(data["scale"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as err:
        raise SceneError(f"not a dataparser transform (transform 3x4, scale): {type(err).__name__}", path=path) from None
    if len(t) != 3 or any(len(r) != 4 for r in t) or not all(math.isfinite(v) for r in t for v in r) or not scale > 0:
        raise SceneError("transform must be 3x4 finite numbers and scale positive", path=path)
    return t, scale


def import_nerfstudio(run: str | Path, out: str | Path, *, step: int | None = None, appearance: str | None = None,
                      overwrite: bool = False, name: str | None = None, camera_paths: list[Path] | None = None) -> Path:
    """Read a nerfstudio nerfacto run folder and write a latentscape scene bundle at ``out``.

    ``camera_paths``: nerfstudio camera_path.json files to carry as the bundle's named camera paths
    (``cameras/<stem>.json``; the first is the default).

    ``appearance``: "mean", "zeros" or a training-image index; None renders as ``ns-render`` does
    (the mean embedding, or zeros when the run set ``use_average_appearance_embedding`` false)."""
    from safetensors.torch import save_file

    from latentscape.scene.bundle import SCENE_FORMAT
    from latentscape.scene.lock import sha256_file, write_lock

    run = Path(run)
    out = Path(out)
    if not run.is_dir():
        raise SceneError("nerfstudio output folder not found", path=run, hint="give the run folder that holds config.yml (outputs/NAME/nerfacto/TIMESTAMP)")
    from latentscape.outputs import check_output, staged

    # --force replaces only a folder latentscape wrote (latentscape.outputs); checked before any work.
    check_output(out, force=overwrite, kind="dir")
    cfg_path = run / "config.yml"
    cfg = read_config(cfg_path)
    ncfg = nerfacto_config(cfg, cfg_path)
    transform, scale = read_dataparser_transforms(run / "dataparser_transforms.json")
    ckpt = find_checkpoint(run, cfg, step)
    state = load_checkpoint(ckpt)
    if ncfg.appearance_embed_dim > 0:
        emb = state.get("_model.field.embedding_appearance.embedding.weight")
        if emb is None or emb.dim() != 2:
            raise WeightsError("checkpoint lacks the appearance embedding its config names", path=ckpt)
        ncfg.num_images = int(emb.shape[0])
    aabb = state.get("_model.field.aabb")
    if aabb is not None and aabb.numel() == 6:
        ncfg.aabb = [float(v) for v in aabb.reshape(-1).tolist()]
    if appearance is not None:
        try:
            appearance_index(appearance, ncfg.num_images if ncfg.appearance_embed_dim > 0 else 0)
        except ValueError as err:
            raise ConfigError(f"--appearance: {err}", path=ckpt) from None
        ncfg.appearance = str(appearance)
    tensors = map_state(state, ncfg, ckpt)
    build_field(ncfg, tensors, ckpt)  # every name, shape and value checked before anything is written
    from latentscape.render.camera_path import load_camera_path

    cams = {}
    for p in camera_paths or []:
        load_camera_path(p)  # checked now, copied verbatim
        cams[Path(p).stem] = Path(p).read_bytes()
    step_value = int(re.sub(r"\D", "", ckpt.stem) or 0)
    bg = {"white": [1.0, 1.0, 1.0], "black": [0.0, 0.0, 0.0], "random": [0.0, 0.0, 0.0], "last_sample": [1.0, 1.0, 1.0]}[ncfg.background_color]

    # Written under a hidden temporary and renamed into place, with latentscape's output marker;
    # a failure (or a full disk) leaves nothing.
    with staged(out, kind="dir", force=overwrite, command="import nerfstudio") as tmp:
        save_file(tensors, str(tmp / "field.safetensors"), metadata={"format": "latentscape-nerfacto-1"})
        toml = {
            "scene": {"name": name or out.name, "format": SCENE_FORMAT, "up": [0.0, 0.0, 1.0],
                      "description": f"nerfstudio nerfacto import of {run.name} (step {step_value})"},
            "field": {
                "kind": "nerfacto",
                "weights": "field.safetensors",
                "backend": "auto",
                "config": _toml_clean(ncfg.to_dict()),
                "normalization": {"center": [0.0, 0.0, 0.0], "scale": 1.0},
                "nerfstudio": {
                    "method_name": str(cfg.get("method_name", "nerfacto")),
                    "step": step_value,
                    "dataparser_transform": transform,
                    "dataparser_scale": scale,
                    "config_sha256": sha256_file(cfg_path),
                    "checkpoint_sha256": sha256_file(ckpt),
                    "checkpoint": ckpt.name,
                },
            },
            "render": {"background": bg, "width": 256, "height": 256, "fps": 24.0},
            "cameras": {"paths": {n: f"cameras/{n}.json" for n in cams}},
        }
        if cams:
            toml["cameras"]["default"] = next(iter(cams))
            (tmp / "cameras").mkdir()
            for n, data in cams.items():
                (tmp / "cameras" / f"{n}.json").write_bytes(data)
        (tmp / "scene.toml").write_text(tomli_w.dumps(toml))
        write_lock(tmp)
    return out


def dataset_pose_to_scene(scene_config: dict, c2w) -> torch.Tensor:
    """A camera-to-world pose of the original dataset (e.g. a transforms.json frame) in an imported
    scene's world (nerfstudio's dataparser space): rotation ``R c2w[:3,:3]``, position
    ``scale * (R p + t)``, from ``[field.nerfstudio]`` of the scene's config."""
    ns = scene_config.get("field", {}).get("nerfstudio")
    if not isinstance(ns, dict) or "dataparser_transform" not in ns:
        raise SceneError("not an imported nerfstudio scene (no [field.nerfstudio] dataparser_transform)")
    T = torch.tensor(ns["dataparser_transform"], dtype=torch.float64)
    scale = float(ns["dataparser_scale"])
    m = torch.as_tensor(c2w, dtype=torch.float64).reshape(4, 4)
    out = torch.eye(4, dtype=torch.float64)
    out[:3, :3] = T[:, :3] @ m[:3, :3]
    out[:3, 3] = (T[:, :3] @ m[:3, 3] + T[:, 3]) * scale
    return out.to(torch.float32)


def _toml_clean(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _toml_clean(v) for k, v in d.items() if v is not None}
    if isinstance(d, list):
        return [_toml_clean(v) for v in d]
    return d
