"""LoRA adapters: file format, refusal before any change, frame-boundary swaps, blends, cross-fades."""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np
import pytest
import torch

from latentscape.errors import AdapterError
from latentscape.lora import AdapterManager, load_adapter, save_adapter
from latentscape.lora.targets import linear_modules, resolve_target


pytestmark = pytest.mark.usefixtures("one_thread")


def color_mlp(seed=0):
    from latentscape.field.nerf import make_mlp

    torch.manual_seed(seed)
    return make_mlp(7, 16, 1, 3)  # color_mlp.0 [16, 7], color_mlp.2 [3, 16]


def random_layers(rank=2, seed=1, scale=0.5, shapes=(("color_mlp.0", 16, 7), ("color_mlp.2", 3, 16))):
    g = torch.Generator().manual_seed(seed)
    return {m: (torch.randn(rank, i, generator=g) * scale, torch.randn(o, rank, generator=g) * scale) for m, o, i in shapes}


def manager_for(mlp):
    mgr = AdapterManager()
    mgr.add_target("nerf.color", linear_modules(mlp, "color_mlp"))
    return mgr


def weights(mlp):
    return {k: v.clone() for k, v in mlp.state_dict().items()}


def test_file_round_trip_and_version(tmp_path):
    layers = random_layers()
    p = save_adapter(tmp_path / "a.safetensors", layers, alpha=4.0)
    ad = load_adapter(p)
    assert ad.rank == 2 and ad.alpha == 4.0 and ad.version == hashlib.sha256(p.read_bytes()).hexdigest()
    a, b = layers["color_mlp.0"]
    torch.testing.assert_close(ad.delta("color_mlp.0"), b @ a * 2.0)


def test_peft_key_naming(tmp_path):
    layers = random_layers()
    p = save_adapter(tmp_path / "peft.safetensors", layers, peft_names=True)
    from safetensors import safe_open

    with safe_open(str(p), "pt") as f:
        assert "base_model.model.color_mlp.0.lora_A.weight" in f.keys()
    ad = load_adapter(p, alpha=2.0)
    assert set(ad.layers) == {"color_mlp.0", "color_mlp.2"} and ad.scale("color_mlp.0") == 1.0
    from safetensors.torch import save_file

    a, b = layers["color_mlp.2"]
    save_file({"base_model.model.color_mlp.2.lora_A.default.weight": a, "base_model.model.color_mlp.2.lora_B.default.weight": b,
               "color_mlp.2.alpha": torch.tensor(4.0)}, str(tmp_path / "named.safetensors"))
    ad = load_adapter(tmp_path / "named.safetensors")
    assert ad.scale("color_mlp.2") == 2.0


@pytest.mark.parametrize("case", ["nan", "inf", "in_dim", "out_dim", "rank", "unknown_module", "one_sided", "meta_rank"])
def test_incompatible_adapters_refused_before_any_change(tmp_path, case):
    mlp = color_mlp()
    mgr = manager_for(mlp)
    good = save_adapter(tmp_path / "good.safetensors", random_layers())
    mgr.preload("good", good, "nerf.color")
    mgr.request("nerf.color", "good")
    mgr.commit_pending()
    before, versions = weights(mlp), mgr.active_versions()
    layers = random_layers()
    if case == "nan":
        layers["color_mlp.2"][1][0, 0] = float("nan")
    elif case == "inf":
        layers["color_mlp.0"][0][1, 1] = float("inf")
    elif case == "in_dim":
        layers["color_mlp.0"] = (torch.randn(2, 9), torch.randn(16, 2))
    elif case == "out_dim":
        layers["color_mlp.2"] = (torch.randn(2, 16), torch.randn(4, 2))
    elif case == "rank":
        layers["color_mlp.0"] = (torch.randn(3, 7), torch.randn(16, 2))
    elif case == "unknown_module":
        layers["density_mlp.0"] = (torch.randn(2, 7), torch.randn(16, 2))
    path = save_adapter(tmp_path / "bad.safetensors", layers)
    if case == "one_sided":
        from safetensors.torch import save_file

        save_file({"color_mlp.0.lora_A": torch.randn(2, 7)}, str(path))
    if case == "meta_rank":
        from safetensors.torch import save_file

        a, b = random_layers()["color_mlp.0"]
        save_file({"color_mlp.0.lora_A": a, "color_mlp.0.lora_B": b}, str(path), metadata={"rank": "4"})
    with pytest.raises(AdapterError) as err:
        mgr.preload("bad", path, "nerf.color")
        mgr.request("nerf.color", "bad")
    assert "bad.safetensors" in str(err.value) or "bad" in str(err.value)
    mgr.commit_pending()
    for k, v in weights(mlp).items():
        assert torch.equal(v, before[k]), k
    assert mgr.active_versions() == versions and "bad" not in mgr.names()["nerf.color"]


def test_unknown_target_and_adapter_requests_refused(tmp_path):
    mlp = color_mlp()
    mgr = manager_for(mlp)
    p = save_adapter(tmp_path / "a.safetensors", random_layers())
    with pytest.raises(AdapterError, match="unknown target"):
        mgr.preload("a", p, "stylizer")
    mgr.preload("a", p, "nerf.color")
    with pytest.raises(AdapterError, match="not loaded"):
        mgr.request("nerf.color", "b")
    with pytest.raises(AdapterError, match="unknown adapter target"):
        mgr.request("generator", "a")
    with pytest.raises(AdapterError, match="blend weight"):
        mgr.request("nerf.color", {"a": float("nan")})
    with pytest.raises(AdapterError, match="unknown adapter target"):
        resolve_target("nope", None)
    with pytest.raises(AdapterError, match="not found"):
        load_adapter(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(AdapterError, match="safetensors"):
        load_adapter(tmp_path / "junk.safetensors")


def test_swap_lands_only_at_commit_in_place(tmp_path):
    mlp = color_mlp()
    base = weights(mlp)
    mgr = manager_for(mlp)
    layers = random_layers()
    ad = mgr.preload("a", save_adapter(tmp_path / "a.safetensors", layers, alpha=2.0), "nerf.color")
    ptrs = [m.weight.data_ptr() for m in mlp if isinstance(m, torch.nn.Linear)]
    mgr.request("nerf.color", "a")
    assert all(torch.equal(v, base[k]) for k, v in weights(mlp).items())  # not yet
    assert mgr.active_versions() == {"nerf.color": ""}
    mgr.commit_pending()
    a, b = layers["color_mlp.0"]
    torch.testing.assert_close(mlp[0].weight, base["0.weight"] + b @ a)
    assert mgr.active_versions() == {"nerf.color": f"a@{ad.version}"}
    assert [m.weight.data_ptr() for m in mlp if isinstance(m, torch.nn.Linear)] == ptrs  # copied in place
    mgr.request("nerf.color", None)
    mgr.commit_pending()
    assert all(torch.equal(v, base[k]) for k, v in weights(mlp).items())


def test_blend_and_timed_crossfade(tmp_path):
    from types import SimpleNamespace

    mlp = color_mlp()
    base = mlp[0].weight.clone()
    mgr = manager_for(mlp)
    mgr.preload("a", save_adapter(tmp_path / "a.safetensors", random_layers(seed=1)), "nerf.color")
    mgr.preload("b", save_adapter(tmp_path / "b.safetensors", random_layers(seed=2)), "nerf.color")
    da = mgr._adapters["a"].delta["color_mlp.0"]
    db = mgr._adapters["b"].delta["color_mlp.0"]
    mgr.request("nerf.color", {"a": 0.25, "b": 0.5})
    mgr.commit_pending(SimpleNamespace(time=0.0))
    torch.testing.assert_close(mlp[0].weight, base + 0.25 * da + 0.5 * db)
    assert "*0.25" in mgr.active_versions()["nerf.color"]
    mgr.request("nerf.color", "a")
    mgr.commit_pending(SimpleNamespace(time=0.0))
    mgr.request("nerf.color", "b", fade_s=1.0)
    seen = []
    for i in range(6):  # frame time 1.0, 1.25, ..., 2.25
        mgr.commit_pending(SimpleNamespace(time=1.0 + 0.25 * i))
        seen.append(mgr.active_versions()["nerf.color"])
        f = min(1.0, 0.25 * i)
        torch.testing.assert_close(mlp[0].weight, base + (1 - f) * da + f * db, atol=1e-6, rtol=1e-5)
    assert seen[0].startswith("a@") and seen[4].startswith("b@") and "*0.5" in seen[2] and not mgr.fading("nerf.color")


def test_requests_coalesce_latest_wins(tmp_path):
    mlp = color_mlp()
    mgr = manager_for(mlp)
    for n in "abc":
        mgr.preload(n, save_adapter(tmp_path / f"{n}.safetensors", random_layers(seed=ord(n))), "nerf.color")
    for n in "abcab":
        mgr.request("nerf.color", n)
    mgr.commit_pending()
    assert mgr.active_versions()["nerf.color"].startswith("b@") and mgr.coalesced == 4


# ---- through the frame loop

def test_scene_adapters_swap_on_frame_boundary(adapter_scene):
    from latentscape.testing import PluginHarness

    with PluginHarness(adapter_scene) as h:
        h.host.request_adapter("nerf.color", "warm")
        run = h.run(frames=3, before_frame=lambda i: h.host.request_adapter("nerf.color", "cool") if i == 2 else None)
        v = [x["nerf.color"] for x in run.versions]
        assert v[0].startswith("warm@") and v[1] == v[0] and v[2].startswith("cool@")
        assert [s[0] for s in run.swaps] == [0, 2]
        assert not np.array_equal(run.frames[1], run.frames[2])


def test_thousand_swaps_from_another_thread_never_mix_versions(adapter_scene):
    from latentscape.testing import PluginHarness

    with PluginHarness(adapter_scene) as h:
        cam = h.scene.camera_path().cameras[3]
        refs = {}
        for mix in (None, "warm", "cool"):
            h.adapters.request("nerf.color", mix)
            fr = h.loop.render(cam)
            refs[fr.context.adapters["nerf.color"]] = fr.rgb
        assert len({r.tobytes() for r in refs.values()}) == 3  # the versions look different
        done = threading.Event()
        sent = []

        def spam():
            names = [None, "warm", "cool"]
            for i in range(1000):
                h.host.request_adapter("nerf.color", names[i % 3])
                sent.append(i)
                if i % 2 == 0:
                    time.sleep(0.0005)
            done.set()

        th = threading.Thread(target=spam)
        th.start()
        frames, seen = 0, set()
        while not done.is_set() or frames < 20:
            fr = h.loop.render(cam, index=frames)
            v = fr.context.adapters["nerf.color"]
            assert np.array_equal(fr.rgb, refs[v]), f"frame {frames} mixes versions (claims {v[:12]})"
            seen.add(v)
            frames += 1
        th.join()
        assert len(sent) == 1000 and len(seen) >= 2 and frames >= 20
