"""The few-step diffusion img2img stage, on a tiny random pipeline saved to disk (CPU, seconds)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers", reason="the diffusion stage needs the 'diffusion' extra (diffusers)")
pytest.importorskip("transformers", reason="the diffusion stage needs the 'diffusion' extra (transformers)")

from latentscape.errors import ConfigError, WeightsError  # noqa: E402
from latentscape.stylize import Stylizer, load_stylizer  # noqa: E402
from latentscape.stylize.diffusion import DiffusionConfig, DiffusionStylizer  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")


def build_tiny_pipeline(root: Path) -> Path:
    """Random tiny SD-style components (diffusers test sizes), saved as a pipeline folder; no downloads."""
    from diffusers import AutoencoderKL, LCMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=8, norm_num_groups=2, attention_head_dim=2)
    vae = AutoencoderKL(
        block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1)
    # a character-level CLIP vocabulary written here: CLIPTokenizer needs only vocab.json + merges.txt
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    tok_dir = root / "_vocab"
    tok_dir.mkdir(parents=True, exist_ok=True)
    (tok_dir / "vocab.json").write_text(json.dumps(vocab))
    (tok_dir / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(tok_dir / "vocab.json"), str(tok_dir / "merges.txt"), model_max_length=16,
                              pad_token="!")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(vocab), hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=2, projection_dim=8))
    scheduler = LCMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                             beta_end=0.012, steps_offset=1)
    pipe = StableDiffusionImg2ImgPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                          scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.save_pretrained(root / "pipe")
    return root / "pipe"


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory, one_thread) -> Path:
    return build_tiny_pipeline(tmp_path_factory.mktemp("tiny_sd"))


def frames(n=4, h=12, w=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, h, w, generator=g)


def test_loads_offline_and_keeps_shape(pipe_dir):
    st = load_stylizer(pipe_dir, prompt="a red cat", steps=2, strength=0.6)
    assert isinstance(st, Stylizer) and isinstance(st, DiffusionStylizer)
    x = frames(2)  # 12x20 is not a multiple of the pad (4): padded and cropped back
    y = st(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.isfinite(y).all()  # (the decoder clamps to [0, 1]: a range check could not fail)
    one = st(x[0])
    assert one.shape == x[0].shape
    assert st.name == "diffusion:pipe" and len(st.version) == 16


def test_fixed_seed_is_deterministic_and_seed_matters(pipe_dir):
    x = frames(3)
    a = DiffusionStylizer.from_folder(pipe_dir, DiffusionConfig(prompt="cat", seed=3))(x)
    b = DiffusionStylizer.from_folder(pipe_dir, DiffusionConfig(prompt="cat", seed=3))(x)
    c = DiffusionStylizer.from_folder(pipe_dir, DiffusionConfig(prompt="cat", seed=4))(x)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-4
    d = DiffusionStylizer.from_folder(pipe_dir, DiffusionConfig(prompt="dog", seed=3))
    assert d.version != DiffusionStylizer.from_folder(pipe_dir, DiffusionConfig(prompt="cat", seed=3)).version


@pytest.mark.parametrize("steps", [1, 3])
def test_stream_batching_matches_per_frame_steps_with_fewer_unet_calls(pipe_dir, steps):
    x = frames(4)
    cfg = dict(prompt="cat", steps=steps, similarity_threshold=None)
    batched = DiffusionStylizer.from_folder(pipe_dir, DiffusionConfig(**cfg, stream_batch=True))
    alone = DiffusionStylizer.from_folder(pipe_dir, DiffusionConfig(**cfg, stream_batch=False))
    yb, ya = batched(x), alone(x)
    torch.testing.assert_close(yb, ya, atol=1e-5, rtol=0)
    assert alone.unet_calls == 4 * steps
    assert batched.unet_calls == 4 + steps - 1  # one batched call per frame, then steps - 1 to drain


def test_push_lags_by_steps_minus_one_and_flush_drains(pipe_dir):
    st = DiffusionStylizer.from_folder(pipe_dir, DiffusionConfig(prompt="cat", steps=3, similarity_threshold=None))
    x = frames(4)
    got = [len(st.push(f)) for f in x]
    assert got == [0, 0, 1, 1]
    assert len(st.flush()) == 2


def test_similarity_filter_skips_near_identical_frames(pipe_dir):
    x = frames(3)
    seq = torch.stack([x[0], (x[0] * 0.999), x[1], x[1], x[1], x[2]])
    st = DiffusionStylizer.from_folder(pipe_dir, DiffusionConfig(prompt="cat", steps=2, similarity_threshold=0.98))
    y = st(seq)
    assert y.shape == seq.shape
    assert st.skipped == 3
    ref = DiffusionStylizer.from_folder(pipe_dir, DiffusionConfig(prompt="cat", steps=2, similarity_threshold=None))
    yr = ref(seq)
    assert st.unet_calls < ref.unet_calls
    # a skipped frame repeats the output of the frame before it, in input order
    assert torch.equal(y[1], y[0]) and torch.equal(y[3], y[2]) and torch.equal(y[4], y[2])
    torch.testing.assert_close(y[[0, 2, 5]], yr[[0, 2, 5]], atol=1e-5, rtol=0)
    # max_skip_frames forces a re-style
    capped = DiffusionStylizer.from_folder(pipe_dir, DiffusionConfig(prompt="cat", steps=1, max_skip_frames=1))
    capped(torch.stack([x[0]] * 4))
    assert capped.skipped == 2


def test_prompt_embeds_without_text_encoder(pipe_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(pipe_dir, bare)
    shutil.rmtree(bare / "text_encoder")
    shutil.rmtree(bare / "tokenizer")
    with pytest.raises(WeightsError, match="text_encoder"):
        DiffusionStylizer.from_folder(bare)
    emb = torch.randn(1, 16, 8, generator=torch.Generator().manual_seed(0))
    st = DiffusionStylizer.from_folder(bare, prompt_embeds=emb)
    assert st(frames(1)).shape == (1, 3, 12, 20)


def test_missing_or_wrong_folder_is_a_typed_error(pipe_dir, tmp_path):
    with pytest.raises(WeightsError, match="does not exist") as err:
        DiffusionStylizer.from_folder(tmp_path / "nope")
    assert "nope" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="model_index.json"):
        DiffusionStylizer.from_folder(tmp_path / "empty")
    broken = tmp_path / "broken"
    shutil.copytree(pipe_dir, broken)
    for f in (broken / "unet").glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    with pytest.raises(WeightsError, match="unet.*safetensors") as err:
        DiffusionStylizer.from_folder(broken)
    assert "broken/unet" in str(err.value)
    for f in (broken / "unet").glob("*.bin"):
        f.rename(f.with_suffix(".safetensors"))
    shutil.rmtree(broken / "vae")
    with pytest.raises(WeightsError, match="'vae/' is missing"):
        DiffusionStylizer.from_folder(broken)


def test_bad_settings_and_frames(pipe_dir):
    with pytest.raises(ConfigError, match="steps"):
        DiffusionStylizer.from_folder(pipe_dir, DiffusionConfig(steps=5))
    with pytest.raises(ConfigError, match="strength"):
        DiffusionStylizer.from_folder(pipe_dir, DiffusionConfig(strength=0))
    st = DiffusionStylizer.from_folder(pipe_dir)
    with pytest.raises(ConfigError, match="channels"):
        st(torch.rand(1, 4, 16, 16))
    with pytest.raises(ConfigError, match="float"):
        st(torch.zeros(3, 16, 16, dtype=torch.uint8))
