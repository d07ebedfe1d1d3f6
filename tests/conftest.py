# Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when its module is
# imported, so it must be set before any test module imports latentscape.kernels.*:
# the Triton kernels then run on the CPU (numpy) and are checked against torch.
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

# ---------------------------------------------------------------------------------------
# Shared fixtures. Tests that make tiny torch models ask for ``one_thread``; scenes,
# frame contexts and generators come from here rather than from per-file copies.

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for the whole module: the CI box is 2 shared cores,
    and OpenMP oversubscription stalls tiny convs and matmuls far more than it helps."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def frame_ctx():
    """``frame_ctx(i, fps=24.0, camera=None)``: a FrameContext for frame ``i`` (no renderer)."""
    from latentscape.frame import FrameContext

    def make(i: int = 0, fps: float = 24.0, camera=None, scene_version: str = "v") -> FrameContext:
        return FrameContext(index=i, time=i / fps, camera=camera, deadline=None, scene_version=scene_version)

    return make


@pytest.fixture(scope="module")
def adapter_scene(tmp_path_factory):
    """A tiny random scene (8x8, 24-frame orbit) with random ``warm`` and ``cool``
    adapters for ``nerf.color`` (:func:`latentscape.testing.make_tiny_scene`). Shared by a
    module: do not modify it."""
    from latentscape.testing import make_tiny_scene

    return make_tiny_scene(tmp_path_factory.mktemp("adapter_scene") / "scene", adapters=("warm", "cool"))


TINY_GENERATOR = dict(z_dim=8, w_dim=8, img_resolution=16, channel_base=64, channel_max=4, num_layers=4, num_critical=1)


@pytest.fixture(scope="module")
def tiny_generator():
    """``tiny_generator(preset=None, seed=0, **config)``: a random StyleGAN3 generator small
    enough to run in milliseconds (16 px), in eval mode without gradients. ``preset``
    ("T"/"R") starts from that preset; ``config`` overrides :data:`TINY_GENERATOR`."""
    from latentscape.texture.stylegan3 import Generator, StyleGAN3Config

    def make(preset: str | None = None, seed: int = 0, **config) -> Generator:
        torch.manual_seed(seed)
        kw = {**TINY_GENERATOR, **config}
        cfg = StyleGAN3Config.preset(preset, **kw) if preset else StyleGAN3Config(**kw)
        return Generator(cfg).eval().requires_grad_(False)

    return make
