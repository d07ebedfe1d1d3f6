"""One validator for every config table: an unknown key is a ConfigError naming the
file, the table and the key, whichever component reads the table."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import tomli_w
import tomllib

from latentscape.config import check_keys, config_from_dict, with_defaults
from latentscape.errors import ConfigError, PluginError


@dataclass
class Small:
    size: int = 1
    name: str = "x"


@dataclass
class Needs:
    size: int


def test_helpers_name_the_file_table_and_key(tmp_path):
    f = tmp_path / "scene.toml"
    with pytest.raises(ConfigError, match=r"unknown keys in \[small\]: \['sise'\]") as err:
        config_from_dict(Small, {"sise": 2}, where="[small]", path=f)
    assert err.value.path == f and "known keys: name, size" in str(err.value) and str(f) in str(err.value)
    assert config_from_dict(Small, {"size": 3}, where="[small]") == Small(3)
    with pytest.raises(ConfigError, match=r"\[small\] must be a table"):
        config_from_dict(Small, [1], where="[small]")
    with pytest.raises(ConfigError, match=r"invalid \[needs\]: .*missing"):
        config_from_dict(Needs, {}, where="[needs]")
    assert with_defaults({"a": 2}, {"a": 1, "b": 0}, where="opts") == {"a": 2, "b": 0}
    with pytest.raises(ConfigError, match=r"unknown keys in opts: \['c'\].*\n.*known keys: a, b; see docs"):
        check_keys({"c": 1}, ("a", "b"), where="opts", hint="see docs")


def _edit_scene(scene, edit):
    from latentscape.scene.lock import write_lock

    toml = scene / "scene.toml"
    cfg = tomllib.loads(toml.read_text())
    edit(cfg)
    toml.write_text(tomli_w.dumps(cfg))
    write_lock(scene)
    return toml


@pytest.mark.parametrize("table, edit", [
    ("[field.config]", lambda c: c["field"]["config"].update(n_levls=4)),
    ("[field.occupancy]", lambda c: c["field"].setdefault("occupancy", {}).update(resolutoin=8)),
    ("[render]", lambda c: c["render"].update(stpes=3)),
    ("[guardrails]", lambda c: c.update(guardrails={"slat": "#000000"})),
    ("[[plugins]] 'f'", lambda c: c.update(plugins=[{"name": "f", "module": "latentscape.plugins.flash", "mdoe": 1}])),
    ("[adapters.warm]", lambda c: c["adapters"]["warm"].update(alhpa=1.0)),
])
def test_scene_tables_share_the_validator(tmp_path, table, edit):
    from latentscape.session import Session
    from latentscape.testing import make_tiny_scene

    scene = make_tiny_scene(tmp_path / "s", adapters=("warm",))
    toml = _edit_scene(scene, edit)
    with pytest.raises(ConfigError, match="unknown keys in " + table.replace("[", r"\[").replace("]", r"\]")) as err:
        Session.open(scene).close()
    assert err.value.path == toml


@pytest.mark.parametrize("module, settings", [
    ("flash", {"mdoe": "hold"}), ("palette", {"colours": []}), ("latent_box", {"radius2": 1}),
    ("schedule", {"rulez": []}), ("schedule", {"rules": [{"adapter": "x", "form": "08:00"}]}),
    ("activity", {"half_life": 1}), ("osc", {"prot": 1}), ("nsfw", {"treshold": 0.5}),
])
def test_builtin_plugin_settings_share_the_validator(module, settings):
    from latentscape.plugin_host import PluginHost, PluginSpec, resolve_plugin_object

    try:
        obj = resolve_plugin_object(f"latentscape.plugins.{module}", name=module)
    except PluginError as err:  # an optional dependency that is not installed
        pytest.skip(str(err))
    with pytest.raises(PluginError, match="unknown keys in .*settings|unknown keys in schedule rule 0"):
        PluginHost([PluginSpec(module, obj=obj, settings=settings, isolation="inline")]).close()


def test_component_configs_share_the_validator():
    from latentscape.texture.latents import LatentProgram
    from latentscape.texture.stylegan3 import StyleGAN3Config

    with pytest.raises(ConfigError, match=r"unknown keys in the latent program \(kind 'walk'\): \['sedes'\]"):
        LatentProgram.from_dict({"kind": "walk", "seeds": [1, 2], "sedes": 3, "period": 2.0})
    with pytest.raises(ConfigError, match=r"unknown keys in the StyleGAN3 config: \['w_dimm'\]"):
        StyleGAN3Config.from_dict({"w_dimm": 3})
