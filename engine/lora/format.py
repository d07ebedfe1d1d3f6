"""LoRA adapter files (safetensors): reading, checking, writing.

Layout of a latentscape adapter file, per adapted ``nn.Linear`` called ``<module>``
(its name relative to the target, e.g. ``color_mlp.0``)::

    <module>.lora_A   [r, in]
    <module>.lora_B   [out, r]
    metadata: {"format": "latentscape-lora-1", "rank": "r", "alpha": "a"}

The weight change is ``delta W = (alpha / r) * B @ A``. Files written by peft /
diffusers are read too: keys ``base_model.model.<module>.lora_A.weight`` (or
``.lora_A.<adapter>.weight``) and ``...lora_B.weight``, an optional per-module
``<module>.alpha`` scalar (kohya), alpha from the metadata or the caller (peft keeps
it in adapter_config.json; without it alpha = r, i.e. scale 1).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from latentscape.errors import AdapterError, safe_repr

FORMAT = "latentscape-lora-1"
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<mod>.+?)\.(?:lora_(?P<ab>[AB])(?:\.[A-Za-z0-9_-]+)?(?:\.weight)?|(?P<alpha>alpha))$")


@dataclass
class LoraAdapter:
    """A checked adapter: per module (A [r, in], B [out, r]) and its scale."""

    name: str
    version: str
    """sha256 of the file (or of the tensors, for adapters made in memory)."""
    rank: int
    alpha: float
    layers: dict[str, tuple[torch.Tensor, torch.Tensor]]
    module_alpha: dict[str, float] = field(default_factory=dict)
    path: Path | None = None

    def scale(self, module: str) -> float:
        return self.module_alpha.get(module, self.alpha) / self.rank

    def delta(self, module: str) -> torch.Tensor:
        """delta W [out, in] (float32) for ``module``."""
        a, b = self.layers[module]
        return (b.float() @ a.float()) * self.scale(module)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_adapter(tensors: dict[str, torch.Tensor], metadata: dict | None, *, name: str, version: str,
                  alpha: float | None = None, path: Path | None = None) -> LoraAdapter:
    """Group tensors by module, check shapes, ranks and values; raises AdapterError."""
    metadata = metadata or {}
    a_: dict[str, torch.Tensor] = {}
    b_: dict[str, torch.Tensor] = {}
    module_alpha: dict[str, float] = {}
    for key, t in tensors.items():
        m = _KEY.match(key)
        if m is None:
            raise AdapterError(f"unexpected tensor {safe_repr(key, 80)}", path=path,
                               hint="keys are <module>.lora_A / <module>.lora_B (or peft's base_model.model.<module>.lora_A.weight)")
        mod = m.group("mod")
        if m.group("alpha"):
            if t.numel() != 1:
                raise AdapterError(f"{key} must be a scalar", path=path)
            module_alpha[mod] = float(t.reshape(()).item())
        elif m.group("ab") == "A":
            a_[mod] = t
        else:
            b_[mod] = t
    if not a_ and not b_:
        raise AdapterError("no LoRA tensors in this file", path=path)
    if set(a_) != set(b_):
        odd = sorted(set(a_) ^ set(b_))
        raise AdapterError(f"modules without both lora_A and lora_B: {odd}", path=path)
    ranks = set()
    layers = {}
    for mod in sorted(a_):
        a, b = a_[mod], b_[mod]
        if a.ndim != 2 or b.ndim != 2:
            raise AdapterError(f"{mod}: lora_A and lora_B must be matrices, got {tuple(a.shape)} and {tuple(b.shape)}", path=path)
        if a.shape[0] != b.shape[1]:
            raise AdapterError(f"{mod}: rank mismatch, lora_A is {tuple(a.shape)} [r, in], lora_B is {tuple(b.shape)} [out, r]", path=path)
        if not (torch.isfinite(a.float()).all() and torch.isfinite(b.float()).all()):
            raise AdapterError(f"{mod}: NaN or Inf in the adapter weights", path=path)
        ranks.add(int(a.shape[0]))
        layers[mod] = (a.detach().float().contiguous(), b.detach().float().contiguous())
    if len(ranks) != 1:
        raise AdapterError(f"modules have different ranks {sorted(ranks)}", path=path)
    rank = ranks.pop()
    if "rank" in metadata and int(metadata["rank"]) != rank:
        raise AdapterError(f"metadata says rank {metadata['rank']}, the tensors have rank {rank}", path=path)
    if alpha is None:
        alpha = float(metadata["alpha"]) if "alpha" in metadata else float(rank)
    if not (alpha == alpha and abs(alpha) != float("inf")):
        raise AdapterError(f"alpha must be finite, got {alpha}", path=path)
    if any(not (v == v and abs(v) != float("inf")) for v in module_alpha.values()):
        raise AdapterError("a per-module alpha is NaN or Inf", path=path)
    return LoraAdapter(name=name, version=version, rank=rank, alpha=float(alpha), layers=layers,
                       module_alpha=module_alpha, path=path)


def load_adapter(path: str | Path, *, name: str | None = None, alpha: float | None = None) -> LoraAdapter:
    """Read and check an adapter file; its version is the file's sha256."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise AdapterError("adapter file not found", path=path, hint="check [adapters.<name>] file in scene.toml")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise AdapterError(f"not a readable safetensors file: {err}", path=path) from None
    try:
        return parse_adapter(tensors, metadata, name=name or path.stem, version=_sha256_file(path), alpha=alpha, path=path)
    except (ValueError, TypeError) as err:
        raise AdapterError(f"malformed adapter: {err}", path=path) from None


def save_adapter(path: str | Path, layers: dict[str, tuple[torch.Tensor, torch.Tensor]], *, alpha: float | None = None,
                 peft_names: bool = False) -> Path:
    """Write ``{module: (A [r, in], B [out, r])}`` as an adapter file (``peft_names``: peft key naming)."""
    from safetensors.torch import save_file

    tensors = {}
    rank = None
    for mod, (a, b) in layers.items():
        rank = int(a.shape[0])
        if peft_names:
            tensors[f"base_model.model.{mod}.lora_A.weight"] = a.detach().cpu().contiguous()
            tensors[f"base_model.model.{mod}.lora_B.weight"] = b.detach().cpu().contiguous()
        else:
            tensors[f"{mod}.lora_A"] = a.detach().cpu().contiguous()
            tensors[f"{mod}.lora_B"] = b.detach().cpu().contiguous()
    meta = {"format": FORMAT}
    if rank is not None:
        meta["rank"] = str(rank)
    if alpha is not None:
        meta["alpha"] = str(float(alpha))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path
