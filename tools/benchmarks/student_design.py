"""Why the demo's student starts from its teacher: the teacher with its instance norms frozen.

    python tools/benchmarks/student_design.py [SCENE] [--style 8]

Frames of the scene's camera path are rendered at 256 and 128 px (field + layers, no
stylizer). An inherited student (:mod:`latentscape.stylize.inherit`) folds the teacher's
full/half-resolution norms with the statistics of the even frames; it is measured
against the teacher (onnxruntime) on the odd frames, before any training, twice:

- ``bottleneck live``: the 1/4-resolution norms stay instance norms (the shipped design);
- ``all frozen``: the 1/4-resolution norms are frozen too (mean statistics of the same
  even frames): a student without the frame's statistics, however wide.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))


class _Frozen(nn.Module):
    """An instance norm's affine applied with fixed (recorded) statistics."""

    def __init__(self, norm: nn.InstanceNorm2d, mean: torch.Tensor, var: torch.Tensor):
        super().__init__()
        self.norm, self.mean, self.var = norm, mean.view(1, -1, 1, 1), var.view(1, -1, 1, 1)

    def forward(self, x):
        y = (x - self.mean) / torch.sqrt(self.var + self.norm.eps)
        return y * self.norm.weight.view(1, -1, 1, 1) + self.norm.bias.view(1, -1, 1, 1)


def main(argv=None) -> dict:
    from student_quality import render

    from latentscape.scene.bundle import demo_scene_path
    from latentscape.stylize.inherit import student_from_multistyle26
    from latentscape.stylize.teachers import MultiStyleTeacher

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scene", nargs="?", default=None)
    ap.add_argument("--style", default="8")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    scene = Path(a.scene) if a.scene else demo_scene_path()
    teacher = MultiStyleTeacher(a.style, threads=a.threads)
    frames = {s: [f[0] for f in render(scene, s, lambda ses: [(k, k) for k in range(len(ses.path.cameras))])]
              for s in (256, 128)}
    even = [f for s in frames for f in frames[s][0::2]]
    net = student_from_multistyle26(teacher.weights, even)

    def psnr_all() -> dict:
        out = {}
        with torch.no_grad():
            for s, fs in frames.items():
                vals = [-10 * math.log10(float((net(f[None])[0] - teacher(f)).pow(2).mean())) for f in fs[1::2]]
                out[f"psnr_{s}_db"] = round(sum(vals) / len(vals), 2)
        return out

    report = {"style": a.style, "odd_frames_per_size": len(frames[256][1::2]), "bottleneck_live": psnr_all()}
    norms = [m for m in net.modules() if isinstance(m, nn.InstanceNorm2d)]
    stats = {id(m): [] for m in norms}
    hooks = [m.register_forward_hook(lambda m, i, o: stats[id(m)].append(
        (i[0].mean((0, 2, 3)), i[0].var((2, 3), unbiased=False).mean(0)))) for m in norms]
    with torch.no_grad():
        for f in even:
            net(f[None])
    for h in hooks:
        h.remove()

    def freeze(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, nn.InstanceNorm2d):
                rec = stats[id(child)]
                setattr(parent, name, _Frozen(child, torch.stack([r[0] for r in rec]).mean(0),
                                              torch.stack([r[1] for r in rec]).mean(0)))
            else:
                freeze(child)

    freeze(net)
    report["all_frozen"] = psnr_all()
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
