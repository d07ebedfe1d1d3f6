"""`--track`: MLflow runs with params, scene digests, metrics and images, against a local
file store and a real `mlflow server` on loopback; `latentscape compare`; one-line errors
for a bad tracking URI and a missing extra."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

mlflow = pytest.importorskip("mlflow")

from latentscape.errors import TrackingError  # noqa: E402


def _cli(*args):
    from typer.testing import CliRunner

    from latentscape.tools.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def _run_id(output: str) -> str:
    import re

    m = re.search(r"tracked: run ([0-9a-f]{32})", output)
    assert m, output
    return m.group(1)


@pytest.fixture
def file_store(tmp_path, monkeypatch):
    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("LATENTSCAPE_TRACK", raising=False)
    return uri


def test_render_logs_params_digests_metrics_and_preview(adapter_scene, tmp_path, file_store, one_thread):
    res = _cli("render", adapter_scene, "--out", tmp_path / "frames", "--frames", "6", "--track")
    assert res.exit_code == 0, res.output
    c = mlflow.MlflowClient(file_store)
    run = c.get_run(_run_id(res.output))
    assert run.info.status == "FINISHED"
    assert run.data.tags["latentscape.command"] == "render"
    lock = adapter_scene / "scene.lock"
    from latentscape.scene.lock import sha256_file as sha256

    assert run.data.tags["scene.lock"] == sha256(lock)
    # every file the lock lists is tagged with its digest, the adapters included
    digests = {k: v for k, v in run.data.tags.items() if k.startswith("sha256:")}
    assert any("warm" in k for k in digests) and any("field" in k for k in digests)
    assert run.data.params["frames"] == "6"
    assert run.data.metrics["frames"] == 6 and run.data.metrics["fps"] > 0
    arts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"preview.mp4", "preview_sheet.png"} <= arts


def test_env_flag_turns_tracking_on(adapter_scene, tmp_path, file_store, monkeypatch, one_thread):
    monkeypatch.setenv("LATENTSCAPE_TRACK", "1")
    res = _cli("render", adapter_scene, "--out", tmp_path / "f", "--frames", "1")
    assert res.exit_code == 0 and "tracked: run" in res.output


def test_bad_uri_and_missing_extra_are_one_line_errors(adapter_scene, tmp_path, monkeypatch):
    from latentscape.tools.cli import main

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    with pytest.raises(TrackingError, match="is not usable"):
        from latentscape import tracking

        tracking.client()
    with pytest.raises(SystemExit) as exc:
        main(["render", str(adapter_scene), "--out", str(tmp_path / "f"), "--frames", "1", "--track"])
    assert exc.value.code == 2
    assert not (tmp_path / "f").exists()  # failed before any work
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if the extra were not installed
    with pytest.raises(TrackingError, match=r"pip install 'latentscape\[track\]'"):
        tracking.client()


def test_make_adapter_logs_a_before_after_sheet(adapter_scene, tmp_path, file_store, one_thread, capsys):
    import shutil

    from latentscape.tools.recipes.make_adapter import main

    scene = tmp_path / "scene"
    shutil.copytree(adapter_scene, scene)
    assert main([str(scene), "--name", "amber", "--look", "warm", "--steps", "5", "--points", "512",
                 "--no-progress", "--track"]) == 0
    rid = _run_id(capsys.readouterr().out)
    c = mlflow.MlflowClient(file_store)
    run = c.get_run(rid)
    assert "loss" in run.data.metrics and "sha256:adapter/amber.safetensors" in run.data.tags
    assert "before_after.png" in {a.path for a in c.list_artifacts(rid)}


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on loopback (sqlite backend, artifacts served by it)."""
    root = tmp_path_factory.mktemp("mlflow_server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts"),
           "--workers", "1"]
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    import urllib.request

    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow server did not answer within 120 s")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


@pytest.mark.slow
def test_server_runs_and_compare(adapter_scene, tmp_path, mlflow_server, monkeypatch, one_thread):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    a = _cli("render", adapter_scene, "--out", tmp_path / "a", "--frames", "2", "--track")
    b = _cli("render", adapter_scene, "--out", tmp_path / "b", "--frames", "4", "--width", "12", "--height", "12",
             "--track")
    assert a.exit_code == 0 and b.exit_code == 0, a.output + b.output
    ra, rb = _run_id(a.output), _run_id(b.output)
    c = mlflow.MlflowClient(mlflow_server)
    assert c.get_run(rb).data.params["width"] == "12"
    res = _cli("compare", ra, rb, "--out", tmp_path / "cmp")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert doc["metrics"]["frames"] == {"a": 2.0, "b": 4.0, "delta": 2.0}
    assert "preview_sheet.png" in doc["images"]
    from PIL import Image

    with Image.open(tmp_path / "cmp" / "compare.png") as im:
        assert im.width > 2 * 8  # two columns of images
    bad = _cli("compare", ra, "0" * 32, "--out", tmp_path / "cmp2")
    assert isinstance(bad.exception, TrackingError) and "no run" in str(bad.exception)


def test_distill_run_logs_loss_and_heldout_sheet(tmp_path, file_store, one_thread):
    """What `distill --track` logs after a (tiny) distillation: held-out metrics, per-view PSNR,
    the input | teacher | student sheet and the student's digests."""
    import torch

    from latentscape import tracking
    from latentscape.stylize.distill import DistillConfig, distill
    from latentscape.stylize.student import StudentConfig
    from latentscape.tools.commands.distill import _track_distill

    g = torch.Generator().manual_seed(0)
    frames = [torch.rand(3, 8, 8, generator=g).repeat_interleave(6, 1).repeat_interleave(6, 2) for _ in range(5)]

    class Teacher:
        name, version = "colour", "1"

        def __call__(self, x):
            return x.flip(-3)

    cfg = DistillConfig(steps=6, batch_size=2, crop=32, checkpoint_every=3, train_size=48, holdout=0.2,
                        student=StudentConfig(base_channels=4, num_residual=1))
    with tracking.run("distill", True, params={"steps": 6}) as run:
        res = distill(Teacher(), frames, tmp_path / "out", cfg, progress=False,
                      on_step=lambda step, loss: run.metric("loss", loss, step))
        _track_distill(run, res, frames, tmp_path / "out")
    c = mlflow.MlflowClient(file_store)
    r = c.get_run(run.id)
    assert len(c.get_metric_history(run.id, "loss")) == 6
    assert "heldout_psnr_db" in r.data.metrics and "heldout_view_psnr_db" in r.data.metrics
    assert "sha256:student/student.safetensors" in r.data.tags
    assert {"heldout_sheet.png", "metrics.json"} <= {a.path for a in c.list_artifacts(run.id)}


def test_train_run_logs_history_and_heldout_sheet(tmp_path, file_store, one_thread):
    from helpers_core import train_tiny_scene

    from latentscape.tools.commands.train import _track_training

    scene = train_tiny_scene(tmp_path, steps=10)
    _track_training(scene, tmp_path / "sphere_data", {"steps": 10})
    c = mlflow.MlflowClient(file_store)
    (run,) = c.search_runs([c.get_experiment_by_name("latentscape").experiment_id])
    assert run.data.tags["latentscape.command"] == "train" and "scene.lock" in run.data.tags
    assert "test_psnr" in run.data.metrics or "heldout_view_psnr_db" in run.data.metrics
    assert "heldout_sheet.png" in {a.path for a in c.list_artifacts(run.info.run_id)}
