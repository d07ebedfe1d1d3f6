"""`latentscape import nerfstudio`: a nerfacto run trained by nerfstudio 1.1.5 (tests/data/nerfstudio,
made by tools/recipes/nerfstudio_fixture.sh) renders like `ns-render` did; bad inputs fail cleanly.

nerfstudio itself is never needed here: its renders of the fixture's camera path are committed.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from latentscape.errors import LatentscapeError
from latentscape.field.nerfacto import NerfactoConfig, NerfactoField, ProposalNetConfig
from latentscape.render.camera_path import load_camera_path
from latentscape.render.renderer import render_camera
from latentscape.scene import load_scene
from latentscape.scene.nerfstudio import import_nerfstudio, pack_tcnn_mlp, unpack_tcnn_mlp
from latentscape.tools.cli import main as cli_main

FIXTURE = Path(__file__).parent / "data" / "nerfstudio" / "nerfacto_torch"
RUN = FIXTURE / "run"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())
    return 10 * np.log10(1.0 / max(mse, 1e-20))


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ns") / "duck"
    import_nerfstudio(RUN, out)
    return out


def _cli(capsys, *args) -> tuple[int, str, str]:
    try:
        cli_main(list(map(str, args)))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_render_matches_ns_render_per_view(imported):
    """Float renders of the committed camera path vs nerfstudio's float frames and its PNGs (cpu backend: the
    numba hash encoding; test_cpu_kernel_is_nerfstudios_torch_encoding ties it to the torch twin)."""
    sc = load_scene(imported, backend="cpu")
    assert sc.grid is None and sc.field.estimator == "proposal"
    path = load_camera_path(FIXTURE / "camera_path.json")
    assert len(path) == 4
    for i, cam in enumerate(path.cameras):
        rgb = render_camera(sc.field, sc.grid, cam, sc.render_config, sc.background).rgb.numpy()
        ref = np.load(FIXTURE / "ns_render" / f"{i:05d}.npy")
        png = np.asarray(Image.open(FIXTURE / "ns_render" / f"{i:05d}.png").convert("RGB")) / 255.0
        assert rgb.shape == ref.shape == (40, 40, 3)
        assert psnr(rgb, ref) >= 40.0, f"view {i}: {psnr(rgb, ref):.1f} dB vs ns-render (float)"
        assert psnr(rgb, png) >= 40.0, f"view {i}: {psnr(rgb, png):.1f} dB vs ns-render PNG"
        assert ref.std() > 0.05  # the views show something (not a blank frame)


def test_cpu_kernel_is_nerfstudios_torch_encoding():
    """The cpu backend's numba hash encoding computes exactly what the torch twin computes."""
    from latentscape.field.nerfacto import TorchHashEncoding
    from latentscape.kernels.cpu.ns_hashgrid import ns_hash_encode

    g = torch.Generator().manual_seed(1)
    enc = TorchHashEncoding(6, 16, 300, 10, 2)
    enc.hash_table.data.uniform_(-1, 1, generator=g)
    x = torch.cat([torch.rand(3000, 3, generator=g), torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.25, 0.125]])])
    with torch.no_grad():
        torch.testing.assert_close(ns_hash_encode(x, enc.hash_table, enc.scalings, enc.table_size), enc(x), rtol=0, atol=1e-7)


def test_cli_import_and_render_camera_path(tmp_path, capsys):
    """The commands a user runs: import, then `latentscape render --camera-path` of nerfstudio's path."""
    scene = tmp_path / "duck"
    code, out, err = _cli(capsys, "import", "nerfstudio", RUN, "--out", scene, "--camera-path", FIXTURE / "camera_path.json")
    assert code == 0, err
    assert load_scene(scene).default_camera == "camera_path"
    assert "nerfacto (torch hash grid" in out
    assert (scene / "scene.lock").is_file() and (scene / "field.safetensors").is_file()
    toml = (scene / "scene.toml").read_text()
    assert 'kind = "nerfacto"' in toml and "dataparser_scale" in toml
    frames = tmp_path / "frames"
    code, out, err = _cli(capsys, "render", scene, "--camera-path", FIXTURE / "camera_path.json", "--out", frames, "--frames", "2")
    assert code == 0, err
    for i in range(2):
        got = np.asarray(Image.open(frames / f"frame_{i:05d}.png").convert("RGB")) / 255.0
        want = np.asarray(Image.open(FIXTURE / "ns_render" / f"{i:05d}.png").convert("RGB")) / 255.0
        assert psnr(got, want) >= 40.0


def test_dataparser_transform_maps_dataset_poses(imported):
    """The kept transform and scale put the dataset's test poses exactly where nerfstudio's camera path has them."""
    import json

    from latentscape.scene.nerfstudio import dataset_pose_to_scene

    sc = load_scene(imported, backend="torch")
    meta = json.loads((FIXTURE / "dataset_transforms.json").read_text())
    frames = {f["file_path"]: f["transform_matrix"] for f in meta["frames"]}
    path = load_camera_path(FIXTURE / "camera_path.json")
    for name, cam in zip(meta["test_filenames"], path.cameras):
        torch.testing.assert_close(dataset_pose_to_scene(sc.config, frames[name]), cam.c2w, rtol=0, atol=1e-5)


def test_appearance_choice(tmp_path, imported):
    """--appearance INDEX renders with that training image's embedding (not the mean); a bad index is refused."""
    cam = load_camera_path(FIXTURE / "camera_path.json", width=20, height=20).cameras[0]
    mean = load_scene(imported, backend="torch")
    one = load_scene(import_nerfstudio(RUN, tmp_path / "a3", appearance="3"), backend="torch")
    assert one.field.config.appearance == "3"
    a = render_camera(mean.field, None, cam, mean.render_config, mean.background).rgb
    b = render_camera(one.field, None, cam, one.render_config, one.background).rgb
    assert not torch.equal(a, b)
    with pytest.raises(LatentscapeError, match="appearance index 99 is out of range"):
        import_nerfstudio(RUN, tmp_path / "a99", appearance="99")
    assert not (tmp_path / "a99").exists()


# ---------------------------------------------------------------------------------------------
# bad inputs: one-line error naming the file, non-zero exit, nothing written, nothing executed


def _copy_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    return run


def _assert_clean_failure(capsys, tmp_path, run, *, exit_code=2, contains=()):
    out = tmp_path / "out" / "scene"
    code, _, err = _cli(capsys, "import", "nerfstudio", run, "--out", out)
    assert code == exit_code
    lines = err.strip().splitlines()
    assert lines[0].startswith("error: ") and "Traceback" not in err
    assert len(lines) <= 2 and (len(lines) == 1 or lines[1].strip().startswith("fix:"))
    for text in contains:
        assert text in lines[0], lines[0]
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # no partial folder
    return lines[0]


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("force_no_weights_only", [False, True])
def test_pickle_payload_in_checkpoint(tmp_path, capsys, monkeypatch, force_no_weights_only):
    if force_no_weights_only:  # nerfstudio users often export this (ns-render needs it); it must not open the door
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    run = _copy_run(tmp_path)
    ckpt = next((run / "nerfstudio_models").glob("step-*.ckpt"))
    marker = tmp_path / "PWNED"
    torch.save({"step": 99, "pipeline": {"_model.field.aabb": torch.zeros(2, 3)}, "optimizers": _Payload(marker)}, ckpt)
    line = _assert_clean_failure(capsys, tmp_path, run, contains=(str(ckpt), "refuses to unpickle", "system"))
    assert "GLOBAL" in line
    assert not marker.exists()


def test_yaml_python_tag_payload(tmp_path, capsys):
    run = _copy_run(tmp_path)
    marker = tmp_path / "PWNED"
    cfg = run / "config.yml"
    cfg.write_text(cfg.read_text().replace("experiment_name: fixture",
                                           f"experiment_name: !!python/object/apply:os.system ['touch {marker}']"))
    _assert_clean_failure(capsys, tmp_path, run, contains=(str(cfg), "!!python/object/apply:os.system"))
    assert not marker.exists()


@pytest.mark.parametrize("missing", ["config.yml", "dataparser_transforms.json", "nerfstudio_models"])
def test_missing_file(tmp_path, capsys, missing):
    run = _copy_run(tmp_path)
    target = run / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    line = _assert_clean_failure(capsys, tmp_path, run)
    assert missing in line


def test_unsupported_model_splatfacto(tmp_path, capsys):
    run = _copy_run(tmp_path)
    cfg = run / "config.yml"
    text = cfg.read_text().replace("nerfstudio.models.nerfacto.NerfactoModelConfig", "nerfstudio.models.splatfacto.SplatfactoModelConfig")
    cfg.write_text(text.replace("method_name: nerfacto", "method_name: splatfacto"))
    _assert_clean_failure(capsys, tmp_path, run, contains=("unsupported nerfstudio model", "SplatfactoModelConfig", "splatfacto"))


def test_unsupported_option_is_named(tmp_path, capsys):
    run = _copy_run(tmp_path)
    cfg = run / "config.yml"
    cfg.write_text(cfg.read_text().replace("    use_single_jitter: true\n", "    use_single_jitter: true\n    warp_space: 3\n"))
    _assert_clean_failure(capsys, tmp_path, run, contains=("unsupported nerfacto option(s) warp_space",))


def test_existing_output_is_kept(tmp_path, capsys):
    out = tmp_path / "scene"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = _cli(capsys, "import", "nerfstudio", RUN, "--out", out)
    assert code == 2 and "already exists" in err
    assert (out / "keep.txt").read_text() == "mine"
    # --force replaces only what latentscape wrote (issue 11): a user's folder stays.
    code, _, err = _cli(capsys, "import", "nerfstudio", RUN, "--out", out, "--force")
    assert code == 2 and (out / "keep.txt").read_text() == "mine"
    # ... while an earlier import is replaced.
    ours = tmp_path / "ours"
    assert _cli(capsys, "import", "nerfstudio", RUN, "--out", ours)[0] == 0
    assert _cli(capsys, "import", "nerfstudio", RUN, "--out", ours, "--force")[0] == 0
    assert (ours / "scene.lock").is_file() and (ours / ".latentscape-output").is_file()


def test_imported_bundle_is_locked(imported, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(imported, copy)
    with open(copy / "field.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\x00\x00\x80\x7f")
    with pytest.raises(LatentscapeError, match="does not match its sha256"):
        load_scene(copy)


# ---------------------------------------------------------------------------------------------
# tiny-cuda-nn layout (nerfstudio's implementation="tcnn"): no tcnn checkpoint can be trained on a CPU,
# so the mapping is tested on tcnn-format tensors built here.


def _tcnn_forward_reference(flat: torch.Tensor, x: torch.Tensor, n_in: int, width: int, layers: int, n_out: int) -> torch.Tensor:
    """What tiny-cuda-nn computes: input padded to 16 with ones, row-major [padded out, padded in]
    matrices one after another, ReLU between, output rows past n_out dropped."""
    pad = lambda v: (v + 15) // 16 * 16  # noqa: E731
    dims = [pad(n_in)] + [width] * (layers - 1) + [pad(n_out)]
    h = torch.cat([x, torch.ones(x.shape[0], dims[0] - n_in)], 1)
    pos = 0
    for i in range(len(dims) - 1):
        w = flat[pos:pos + dims[i + 1] * dims[i]].reshape(dims[i + 1], dims[i])
        pos += w.numel()
        h = h @ w.T
        if i < len(dims) - 2:
            h = torch.relu(h)
    assert pos == flat.numel()
    return h[:, :n_out]


@pytest.mark.parametrize("n_in,width,layers,n_out", [(39, 32, 3, 3), (8, 16, 2, 1), (16, 64, 2, 16)])
def test_tcnn_mlp_unpacking_matches_tcnn_semantics(n_in, width, layers, n_out):
    g = torch.Generator().manual_seed(n_in)
    pad = lambda v: (v + 15) // 16 * 16  # noqa: E731
    n = pad(n_in) * width + (layers - 2) * width * width + width * pad(n_out)
    flat = torch.randn(n, generator=g) * 0.3
    mats, used = unpack_tcnn_mlp(flat, n_in, width, layers, n_out)
    assert used == n
    from latentscape.field.nerfacto import TcnnMLP

    mlp = TcnnMLP(n_in, width, layers, n_out)
    for p, w in zip(mlp.weights, mats):
        p.data.copy_(w)
    x = torch.rand(64, n_in, generator=g)
    torch.testing.assert_close(mlp(x), _tcnn_forward_reference(flat, x, n_in, width, layers, n_out), rtol=1e-5, atol=1e-5)


def test_tcnn_checkpoint_imports_and_renders(tmp_path):
    """A tcnn-layout run folder (fused mlp_base params = MLP then grid, separate proposal encodings and
    networks) imports; the imported field computes what the field the tensors came from computes."""
    cfg = NerfactoConfig(implementation="tcnn", num_levels=4, max_res=64, log2_hashmap_size=10, hidden_dim=16,
                         hidden_dim_color=16, appearance_embed_dim=4, num_images=3, average_init_density=0.5,
                         proposal_nets=[ProposalNetConfig(hidden_dim=16, log2_hashmap_size=8, num_levels=3, max_res=32)],
                         use_same_proposal_network=True, num_proposal_iterations=2, num_proposal_samples_per_ray=[16, 8],
                         num_nerf_samples_per_ray=8)
    g = torch.Generator().manual_seed(0)
    src = NerfactoField(cfg)
    with torch.no_grad():
        for p in src.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    b, head, prop = src.mlp_base, src.mlp_head, src.proposal_networks[0]
    st = {
        "_model.field.aabb": torch.tensor([[-1.0] * 3, [1.0] * 3]),
        "_model.field.mlp_base.model.params": torch.cat([pack_tcnn_mlp(list(b.net.weights), 8, 16, 2, 16), b.params.detach()]),
        "_model.field.mlp_head.tcnn_encoding.params": pack_tcnn_mlp(list(head.weights), 16 + 15 + 4, 16, 3, 3),
        "_model.field.embedding_appearance.embedding.weight": src.appearance_embedding.detach().clone(),
        "_model.proposal_networks.0.encoding.tcnn_encoding.params": prop.params.detach().clone(),
        "_model.proposal_networks.0.mlp_base.0.tcnn_encoding.params": prop.params.detach().clone(),
        "_model.proposal_networks.0.mlp_base.1.tcnn_encoding.params": pack_tcnn_mlp(list(prop.net.weights), 6, 16, 2, 1),
        "_model.camera_optimizer.pose_adjustment": torch.zeros(3, 6),
    }
    run = _copy_run(tmp_path)
    ck = next((run / "nerfstudio_models").glob("step-*.ckpt"))
    torch.save({"step": 5, "pipeline": st, "optimizers": {}, "schedulers": {}, "scalers": {}}, ck)
    text = (run / "config.yml").read_text()
    for key, value in {"implementation": "tcnn", "num_levels": 4, "max_res": 64, "log2_hashmap_size": 10, "hidden_dim": 16,
                       "hidden_dim_color": 16, "appearance_embed_dim": 4, "average_init_density": 0.5,
                       "use_same_proposal_network": "true", "num_nerf_samples_per_ray": 8}.items():
        text, n = re.subn(rf"(\n    {key}: ).*", rf"\g<1>{value}", text)
        assert n == 1, key
    text = text.replace("    num_proposal_samples_per_ray: !!python/tuple\n    - 64\n    - 32\n",
                        "    num_proposal_samples_per_ray: !!python/tuple\n    - 16\n    - 8\n")
    start = text.index("    proposal_net_args_list:\n")
    end = text.index("    proposal_update_every")
    text = text[:start] + ("    proposal_net_args_list:\n    - hidden_dim: 16\n      log2_hashmap_size: 8\n"
                           "      max_res: 32\n      num_levels: 3\n      use_linear: false\n") + text[end:]
    (run / "config.yml").write_text(text)
    bundle = import_nerfstudio(run, tmp_path / "tcnn")
    x = torch.rand(256, 3, generator=g) * 4 - 2
    d = torch.nn.functional.normalize(torch.randn(256, 3, generator=g), dim=-1)
    for backend in ("torch", "cpu"):  # the tcnn layout runs on the scene backend's hash-grid op
        sc = load_scene(bundle, backend=backend)
        assert sc.field.config.implementation == "tcnn"
        with torch.no_grad():
            s1, c1 = src(x, d)
            s2, c2 = sc.field(x, d)
            torch.testing.assert_close(s2, s1, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(c2, c1, rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(sc.field.proposal_density(1, x), src.proposal_density(1, x), rtol=1e-4, atol=1e-5)
    cam = load_camera_path(FIXTURE / "camera_path.json", width=8, height=8).cameras[0]
    out = render_camera(sc.field, None, cam, sc.render_config, sc.background)
    assert out.rgb.shape == (8, 8, 3) and torch.isfinite(out.rgb).all()
