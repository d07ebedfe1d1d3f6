"""Helper for tools/recipes/nerfstudio_fixture.sh; runs INSIDE the nerfstudio 1.1.5 venv (never in our tests).

  $NS_VENV/bin/python nerfstudio_fixture_ns.py train DATA OUT STEPS IMPLEMENTATION [RAYS_PER_BATCH]
  $NS_VENV/bin/python nerfstudio_fixture_ns.py campath DATA RUN OUT_JSON SIZE
  $NS_VENV/bin/python nerfstudio_fixture_ns.py render CONFIG CAMERA_PATH FRAMES

`train` builds nerfstudio's own nerfacto TrainerConfig with reduced sizes (small hash tables, few levels,
small proposal nets, fewer samples per ray) so the checkpoint stays a few MB, and runs nerfstudio's
trainer on the CPU. `campath` writes a camera_path.json (nerfstudio's format, in its dataparser space, as its
viewer exports) of the dataset's test views at SIZE x SIZE pixels: each test pose mapped with
RUN/dataparser_transforms.json (``p_ns = scale * (R p + t)``), fov from the dataset's focal.
`render` runs `ns-render camera-path` (nerfstudio's render entry point, eval-mode
sampling) and also keeps each frame's float32 image (frame.npy next to frame.png) by wrapping the
image writer, for exact parity numbers. Offline: LPIPS (not used) is stubbed; ffmpeg (not needed for
PNG frames) is not checked.
"""
import sys
from pathlib import Path

import numpy as np
import torch
import torchmetrics.image.lpip as L


class _NoLPIPS(torch.nn.Module):
    def __init__(self, *a, **k):
        super().__init__()

    def forward(self, a, b):
        return torch.zeros(())


L.LearnedPerceptualImagePatchSimilarity = _NoLPIPS


def train(data, out, steps, implementation, rays="1024"):
    from nerfstudio.configs.method_configs import all_methods
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
    from nerfstudio.scripts.train import main

    config = all_methods["nerfacto"]
    config.data = Path(data)
    config.output_dir = Path(out) / "runs"
    config.experiment_name = "fixture"
    config.timestamp = "run"
    config.max_num_iterations = int(steps)
    config.vis = "tensorboard"
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 0
    config.steps_per_save = 100000
    config.machine.device_type = "cpu"
    config.mixed_precision = False
    config.viewer.quit_on_train_completion = True
    dm = config.pipeline.datamanager
    dm.dataparser = NerfstudioDataParserConfig()
    dm.train_num_rays_per_batch = int(rays)
    m = config.pipeline.model
    m.implementation = implementation
    m.background_color = "white"
    m.log2_hashmap_size = 12
    m.num_levels = 8
    m.max_res = 256
    m.hidden_dim = 32
    m.hidden_dim_color = 32
    m.appearance_embed_dim = 8
    m.num_proposal_samples_per_ray = (64, 32)
    m.num_nerf_samples_per_ray = 24
    m.proposal_net_args_list = [
        {"hidden_dim": 16, "log2_hashmap_size": 11, "num_levels": 4, "max_res": 64, "use_linear": False},
        {"hidden_dim": 16, "log2_hashmap_size": 11, "num_levels": 4, "max_res": 128, "use_linear": False},
    ]
    main(config)


def campath(data, run, out_json, size):
    import json
    import math

    meta = json.loads((Path(data) / "transforms.json").read_text())
    tr = json.loads((Path(run) / "dataparser_transforms.json").read_text())
    T = np.array(tr["transform"], dtype=np.float64)
    scale = float(tr["scale"])
    frames = {f["file_path"]: f for f in meta["frames"]}
    fov = math.degrees(2 * math.atan(0.5 * meta["h"] / meta["fl_y"]))
    path = []
    for name in meta["test_filenames"]:
        c2w = np.array(frames[name]["transform_matrix"], dtype=np.float64)
        m = np.eye(4)
        m[:3, :3] = T[:3, :3] @ c2w[:3, :3]
        m[:3, 3] = (T[:3, :3] @ c2w[:3, 3] + T[:3, 3]) * scale
        path.append({"camera_to_world": [float(v) for v in m.reshape(-1)], "fov": fov, "aspect": 1.0})
    size = int(size)
    doc = {"camera_type": "perspective", "render_height": size, "render_width": size, "fps": 4,
           "seconds": len(path) / 4, "camera_path": path}
    Path(out_json).write_text(json.dumps(doc, indent=1))


def render(config, camera_path, frames):
    import mediapy
    from nerfstudio.scripts import render as ns_render
    from nerfstudio.utils import install_checks

    install_checks.check_ffmpeg_installed = lambda: None
    original = mediapy.write_image

    def write_image(path, image, **kw):
        np.save(Path(path).with_suffix(".npy"), np.asarray(image, dtype=np.float32))
        return original(path, image, **kw)

    ns_render.media.write_image = write_image
    sys.argv = ["ns-render", "camera-path", "--load-config", config, "--camera-path-filename", camera_path,
                "--output-path", frames, "--output-format", "images", "--image-format", "png"]
    ns_render.entrypoint()


if __name__ == "__main__":
    which = sys.argv[1]
    if which == "train":
        train(*sys.argv[2:7])
    elif which == "campath":
        campath(*sys.argv[2:6])
    elif which == "render":
        render(*sys.argv[2:5])
    else:
        raise SystemExit(f"unknown step {which!r}")
