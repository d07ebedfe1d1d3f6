"""`latentscape export`: a tiny scene's student (and generator) to ONNX, run by onnxruntime,
parity with torch; int8 static quantization with camera-path calibration frames; typed errors;
nothing left behind on failure; `render --stylizer DIR` through onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from latentscape.errors import ExportError, OutputError  # noqa: E402
from latentscape.stylize.student import StudentConfig, StudentNet, save_student  # noqa: E402

TINY_STUDENT = StudentConfig(base_channels=4, num_residual=1, downsample=1)


def _student_files(seed: int = 0) -> dict[str, bytes]:
    import tempfile

    torch.manual_seed(seed)
    net = StudentNet(TINY_STUDENT)
    with tempfile.TemporaryDirectory() as d:
        w, c = save_student(net, Path(d) / "student")
        return {"stylizer/student.safetensors": w.read_bytes(), "stylizer/student.json": c.read_bytes()}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from latentscape.testing import make_tiny_scene

    return make_tiny_scene(tmp_path_factory.mktemp("export") / "scene", size=16, frames=8,
                           extra_files=_student_files(), extra_config={"stylizer": {"path": "stylizer"}})


@pytest.fixture(scope="module")
def exported(scene, tmp_path_factory, one_thread):
    from latentscape.export import export_scene

    out = tmp_path_factory.mktemp("out") / "kiosk"
    report = export_scene(scene, "onnx-int8", out, calibration=2, parts=("student",), bench_sizes=(32,), log=lambda m: None)
    return out, report


def test_export_matches_torch_and_records_the_check(exported, scene):
    from latentscape.stylize.onnx import OnnxStylizer
    from latentscape.stylize.student import load_student

    out, report = exported
    doc = json.loads((out / "export.json").read_text())
    assert doc == json.loads(json.dumps(report))
    assert doc["models"]["student"]["max_abs_diff_vs_torch"] < 1e-4
    assert sorted(p.name for p in out.iterdir()) == [".latentscape-output", "export.json", "student.int8.onnx", "student.onnx"]
    # any frame size, batched or not: the wrapper pads to the graph's multiple and crops back
    net = load_student(scene / "stylizer")
    sty = OnnxStylizer.load(out / "student.onnx")
    for shape in [(3, 21, 17), (2, 3, 16, 16)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            want = net(x if x.ndim == 4 else x[None])
        got = sty(x)
        assert got.shape == x.shape
        assert torch.allclose(got if x.ndim == 4 else got[None], want, atol=1e-4)


def test_int8_is_close_to_fp32_and_reports_drop_and_speed(exported):
    from latentscape.stylize.onnx import OnnxStylizer

    out, report = exported
    q = report["models"]["student_int8"]
    assert q["calibration_frames"] == 2 and q["eval_frames"] == 2
    assert q["psnr_int8_vs_fp32_db"] > 25
    assert set(q["latency_ms"]["32"]) == {"fp32", "int8", "speedup"}
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 0.8 + 0.1
    a = OnnxStylizer.load(out, int8=False)(x)
    b = OnnxStylizer.load(out, int8=True)(x)
    assert not torch.equal(a, b)  # really quantized
    mse = float((a - b).pow(2).mean())
    assert -10 * np.log10(mse) > 25


def test_load_stylizer_dispatches_and_render_uses_onnx(exported, scene, tmp_path):
    from typer.testing import CliRunner

    from latentscape.stylize import load_stylizer
    from latentscape.stylize.onnx import OnnxStylizer
    from latentscape.tools.cli import app

    out, _ = exported
    assert isinstance(load_stylizer(out / "student.int8.onnx"), OnnxStylizer)
    in_loop = load_stylizer(out)
    assert isinstance(in_loop, OnnxStylizer)
    # in a frame loop onnxruntime's threads must sleep between runs, not spin on the NeRF's cores
    spin = "session.intra_op.allow_spinning"
    assert in_loop.session.get_session_options().get_session_config_entry(spin) == "0"
    with pytest.raises(RuntimeError, match="does not have configuration"):  # alone: onnxruntime's default
        OnnxStylizer.load(out, spinning=True).session.get_session_options().get_session_config_entry(spin)
    frames = tmp_path / "frames"
    res = CliRunner().invoke(app, ["render", str(scene), "--out", str(frames), "--stylizer", str(out / "student.onnx"),
                                   "--frames", "2"])
    assert res.exit_code == 0, res.output
    assert len(list(frames.glob("*.png"))) == 2


def test_bad_targets_are_one_line_errors(scene, tmp_path):
    from typer.testing import CliRunner

    from latentscape.export import check_target
    from latentscape.tools.cli import main

    with pytest.raises(ExportError, match="unsupported export target 'coreml'"):
        check_target("coreml")
    if not torch.cuda.is_available():
        with pytest.raises(ExportError, match="tensorrt needs an NVIDIA GPU with CUDA"):
            check_target("tensorrt")
    del CliRunner
    with pytest.raises(SystemExit) as exc:
        main(["export", str(scene), "--target", "coreml", "--out", str(tmp_path / "x")])
    assert exc.value.code != 0
    assert not (tmp_path / "x").exists()


def test_existing_output_and_failures_leave_nothing(scene, tmp_path, monkeypatch):
    from latentscape import export

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep").write_text("mine")
    with pytest.raises(OutputError, match="exists"):
        export.export_scene(scene, "onnx", mine, parts=("student",), log=lambda m: None)
    with pytest.raises(OutputError):  # --force replaces only a folder latentscape wrote
        export.export_scene(scene, "onnx", mine, force=True, parts=("student",), log=lambda m: None)
    assert (mine / "keep").read_text() == "mine"

    out = tmp_path / "kiosk"
    export.export_scene(scene, "onnx", out, parts=("student",), log=lambda m: None)
    before = (out / "student.onnx").read_bytes()

    def boom(*a, **k):
        raise RuntimeError("exporter fell over")

    monkeypatch.setattr(export, "export_student", boom)
    with pytest.raises(RuntimeError):
        export.export_scene(scene, "onnx", out, force=True, parts=("student",), log=lambda m: None)
    with pytest.raises(RuntimeError):
        export.export_scene(scene, "onnx", tmp_path / "new", parts=("student",), log=lambda m: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kiosk", "mine"]  # no temporary folder left
    assert (out / "student.onnx").read_bytes() == before  # the old export is untouched


def test_generator_synthesis_exports(tmp_path, tiny_generator, one_thread):
    """The StyleGAN3 synthesis network (filtered_lrelu's torch reference) goes through the
    dynamo exporter; onnxruntime matches torch."""
    import onnxruntime as ort

    from latentscape.export import export_synthesis

    G = tiny_generator(num_layers=2)
    path = tmp_path / "gan.onnx"
    export_synthesis(G, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ws = torch.randn(1, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(0))
    got = sess.run(None, {"ws": ws.numpy()})[0]
    with torch.no_grad():
        want = G.synthesis(ws, noise_mode="const").numpy()
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-4
