"""The distilled student network: shapes, size, file round trip, typed errors, the Stylizer contract."""

from __future__ import annotations

import json

import pytest
import torch

from latentscape.errors import ConfigError, WeightsError
from latentscape.stylize import (StudentConfig, StudentNet, StudentStylizer, Stylizer, load_student, load_stylizer,
                                 save_student)


def test_default_student_is_slim():
    net = StudentNet()
    assert 20_000 <= net.num_params <= 60_000


@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 37, 53), (1, 3, 17, 129)])
@pytest.mark.parametrize("padding", ["reflect", "zeros"])
def test_forward_keeps_shape(shape, padding):
    # (No range check: the head is a sigmoid, so [0, 1] cannot fail.)
    net = StudentNet(StudentConfig(padding=padding))
    y = net(torch.rand(shape))
    assert y.shape == shape


def test_round_trip_and_stylizer(tmp_path):
    torch.manual_seed(0)
    net = StudentNet(StudentConfig(base_channels=4, num_residual=1, downsample=1))
    weights, cfg = save_student(net, tmp_path / "s", metadata={"teacher": "x"})
    assert weights.name == "s.safetensors" and cfg.name == "s.json"
    back = load_student(tmp_path / "s.safetensors")
    assert back.config == net.config
    x = torch.rand(2, 3, 24, 30)
    torch.testing.assert_close(back(x), net(x))
    st = load_stylizer(tmp_path / "s")
    assert isinstance(st, Stylizer) and isinstance(st, StudentStylizer)
    assert st(x[0]).shape == x[0].shape and st(x).shape == x.shape
    torch.testing.assert_close(st(x), net(x))
    assert len(st.version) == 16
    # the version follows the weights
    with torch.no_grad():
        net.head.bias.add_(0.1)
    save_student(net, tmp_path / "s")
    assert load_stylizer(tmp_path / "s").version != st.version


def test_missing_files_name_the_file(tmp_path):
    with pytest.raises(WeightsError, match="config is missing") as err:
        load_student(tmp_path / "none")
    assert "none.json" in str(err.value)
    save_student(StudentNet(), tmp_path / "s")
    (tmp_path / "s.safetensors").unlink()
    with pytest.raises(WeightsError, match="weights are missing") as err:
        load_student(tmp_path / "s")
    assert "s.safetensors" in str(err.value)


def test_mismatched_weights_name_the_file(tmp_path):
    save_student(StudentNet(StudentConfig(base_channels=4)), tmp_path / "small")
    save_student(StudentNet(StudentConfig(base_channels=8)), tmp_path / "big")
    (tmp_path / "big.safetensors").replace(tmp_path / "small.safetensors")
    with pytest.raises(WeightsError, match="do not match small.json.*wrong shape") as err:
        load_student(tmp_path / "small")
    assert "small.safetensors" in str(err.value)


def test_bad_config_and_garbage_files(tmp_path):
    save_student(StudentNet(), tmp_path / "s")
    doc = json.loads((tmp_path / "s.json").read_text())
    doc["config"]["wings"] = 2
    (tmp_path / "s.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"unknown keys in the student config: \['wings'\]") as err:
        load_student(tmp_path / "s")
    assert err.value.path == tmp_path / "s.json"
    (tmp_path / "s.json").write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        load_student(tmp_path / "s")
    save_student(StudentNet(), tmp_path / "t")
    (tmp_path / "t.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="cannot read student weights"):
        load_student(tmp_path / "t")
    with pytest.raises(ConfigError, match="padding"):
        StudentConfig(padding="circular").validate()


def test_nan_weights_are_refused(tmp_path):
    net = StudentNet()
    with torch.no_grad():
        net.stem.weight[0, 0, 0, 0] = float("nan")
    save_student(net, tmp_path / "s")
    with pytest.raises(WeightsError, match="NaN"):
        load_student(tmp_path / "s")


def test_bad_frames_are_typed_errors():
    st = StudentStylizer(StudentNet())
    with pytest.raises(ConfigError, match="channels"):
        st(torch.rand(1, 4, 8, 8))
    with pytest.raises(ConfigError, match="float"):
        st(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ConfigError, match="shape"):
        st(torch.rand(8, 8))


def test_half_needs_cuda():
    if torch.cuda.is_available():
        import copy

        net = StudentNet()
        x = torch.rand(2, 3, 64, 96)
        with torch.no_grad():
            ref = net(x)
        y = StudentStylizer(copy.deepcopy(net), device="cuda", half=True)(x)
        assert y.dtype == torch.float32 and y.device == x.device
        torch.testing.assert_close(y, ref, atol=5e-3, rtol=0)
    else:
        with pytest.raises(ConfigError, match="CUDA"):
            StudentStylizer(StudentNet(), half=True)


def test_bottleneck_norm_student_follows_the_whole_frame_and_round_trips(tmp_path):
    torch.manual_seed(0)
    cfg = StudentConfig(base_channels=4, growth=1.0, downsample=1, num_residual=1, stem_kernel=3,
                        norm="bottleneck", up_channels=[3])
    net = StudentNet(cfg).eval()
    plain = StudentNet(StudentConfig(base_channels=4, growth=1.0, downsample=1, num_residual=1, stem_kernel=3)).eval()
    x = torch.rand(1, 3, 37, 53)
    changed = x.clone()
    changed[..., :8, :8] = 1.0  # a change in one corner ...
    with torch.no_grad():
        far = (slice(None), slice(None), slice(24, None), slice(40, None))  # ... seen from the other corner
        # no norm: the far corner is outside the receptive field and does not move
        assert torch.equal(plain(x)[far], plain(changed)[far])
        # instance norm at the bottleneck: the frame's statistics reach every pixel (as in the teacher)
        assert not torch.allclose(net(x)[far], net(changed)[far])
        assert net(torch.rand(2, 3, 17, 129)).shape == (2, 3, 17, 129)
    save_student(net, tmp_path / "n")
    back = load_student(tmp_path / "n")
    assert back.config == cfg
    torch.testing.assert_close(back(x), net(x))


def test_student_files_from_before_the_norm_option_still_load(tmp_path):
    net = StudentNet(StudentConfig(base_channels=4, num_residual=1))
    _, cfg_path = save_student(net, tmp_path / "old")
    doc = json.loads(cfg_path.read_text())
    for key in ("norm", "up_channels"):
        del doc["config"][key]
    cfg_path.write_text(json.dumps(doc))
    back = load_student(tmp_path / "old")
    assert back.config.norm == "none" and back.config.up_path() == [8, 4]
    x = torch.rand(1, 3, 20, 24)
    torch.testing.assert_close(back(x), net.eval()(x))


@pytest.mark.parametrize("bad, match", [
    (dict(norm="batch"), "norm must be"),
    (dict(up_channels=[8, 4, 2]), "up_channels must be 2"),
    (dict(up_channels=[8, 0]), "up_channels must be 2"),
])
def test_bad_norm_options_are_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        StudentConfig(**bad).validate()
