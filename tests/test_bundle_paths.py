"""One resolver for every path in a scene bundle (issue 11, class 4): a path in scene.toml
or scene.lock names a file inside the bundle, after symlinks, where the lock hashes it;
anything else is a SceneError naming the key. Plugins import only from the allow-list."""

from __future__ import annotations

import shutil
import tomllib

import pytest
import tomli_w

from latentscape.errors import LockMismatchError, SceneError
from latentscape.scene.bundle import PLUGIN_ALLOW_ENV, check_bundle_paths, load_scene
from latentscape.scene.lock import write_lock
from latentscape.testing import make_tiny_scene


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return make_tiny_scene(tmp_path_factory.mktemp("base") / "scene", adapters=("warm",))


def edited(base, tmp_path, edit) -> tuple:
    root = tmp_path / "scene"
    shutil.copytree(base, root)
    write_lock(root)
    cfg = tomllib.loads((root / "scene.toml").read_text())
    edit(cfg, root)
    (root / "scene.toml").write_text(tomli_w.dumps(cfg))
    try:
        write_lock(root)
    except SceneError:  # a link out of the bundle: keep the old lock plus the new entries, as an attacker would
        from latentscape.scene.lock import bundle_files, sha256_file

        lock = {"format": 1, "assets": {rel: sha256_file(root / rel) for rel in bundle_files(root)}}
        (root / "scene.lock").write_text(tomli_w.dumps(lock))
    return root, cfg


def outside(tmp_path):
    p = tmp_path / "outside.bin"
    p.write_bytes(b"secret")
    return p


CASES = {
    "[field] weights": lambda c, r, o: c["field"].update(weights=str(o)),
    "[field] weights ": lambda c, r, o: c["field"].update(weights="../outside.bin"),
    "[cameras.paths]": lambda c, r, o: c["cameras"]["paths"].update(evil="../outside.bin"),
    "[adapters.warm] file": lambda c, r, o: c["adapters"]["warm"].update(file="../../outside.bin"),
    "[guardrails] slate": lambda c, r, o: c.update(guardrails={"slate": str(o)}),
    "[guardrails] audit_log": lambda c, r, o: c.update(guardrails={"audit_log": "../audit.jsonl"}),
    "[guardrails] audit_log ": lambda c, r, o: c.update(guardrails={"audit_log": "/tmp/audit.jsonl"}),
    "[generators.g] path": lambda c, r, o: c.update(generators={"g": {"path": "/usr", "program": {}}}),
    "[stylizer] path": lambda c, r, o: c.update(stylizer={"path": ".."}),
    "[[plugins]] 'x' module": lambda c, r, o: c.update(plugins=[{"name": "x", "module": "os:system"}]),
}


@pytest.mark.parametrize("key", list(CASES))
def test_paths_outside_the_bundle_are_refused(base, tmp_path, key):
    o = outside(tmp_path)
    root, _ = edited(base, tmp_path, lambda c, r: CASES[key](c, r, o))
    with pytest.raises(SceneError) as err:
        load_scene(root)
    msg = str(err.value)
    assert key.strip() in msg and "scene.toml" in msg, msg


def test_a_symlink_out_of_the_bundle_is_refused(base, tmp_path):
    o = outside(tmp_path)

    def edit(cfg, root):
        (root / "cameras" / "link.json").symlink_to(o)
        cfg["cameras"]["paths"]["link"] = "cameras/link.json"

    root, _ = edited(base, tmp_path, edit)
    with pytest.raises(LockMismatchError, match=r"scene.lock entry 'cameras/link.json' is outside the scene bundle"):
        load_scene(root)
    with pytest.raises(SceneError, match=r"\[cameras.paths\] 'link'.*outside the scene bundle"):
        load_scene(root, verify=False)
    with pytest.raises(SceneError, match=r"bundle file 'cameras/link.json' is outside the scene bundle"):
        write_lock(root)  # `latentscape scene lock` tells the author at once


def test_hidden_files_the_lock_skips_cannot_be_assets(base, tmp_path):
    def edit(cfg, root):
        (root / ".hidden").mkdir()
        shutil.copy(root / "field.safetensors", root / ".hidden" / "field.safetensors")
        cfg["field"]["weights"] = ".hidden/field.safetensors"

    root, _ = edited(base, tmp_path, edit)
    with pytest.raises(SceneError, match="does not hash"):
        load_scene(root)


def test_lock_entries_must_name_bundle_files(base, tmp_path):
    root, _ = edited(base, tmp_path, lambda c, r: None)
    o = outside(tmp_path)
    lock = tomllib.loads((root / "scene.lock").read_text())
    for evil in (str(o), "../outside.bin"):
        bad = {**lock, "assets": {**lock["assets"], evil: "0" * 64}}
        (root / "scene.lock").write_text(tomli_w.dumps(bad))
        with pytest.raises(LockMismatchError, match="scene.lock entry"):
            load_scene(root)


def test_audit_log_inside_the_bundle_is_an_output_not_an_asset(base, tmp_path):
    from latentscape.session import CameraSpec, Session

    root, _ = edited(base, tmp_path, lambda c, r: c.update(guardrails={"audit_log": "audit.jsonl"}))
    for _ in range(2):  # the log the first run wrote does not break the lock for the second
        with Session.open(root, cameras=CameraSpec(width=8, height=8)) as s:
            s.render(0)
    assert (root / "audit.jsonl").is_file()


def test_plugin_allow_list(tmp_path, monkeypatch):
    toml = tmp_path / "scene.toml"
    ok = {"plugins": [{"name": "f", "module": "latentscape.plugins.flash"}]}
    check_bundle_paths(ok, tmp_path, toml)
    for evil in ("subprocess", "os:system", "latentscape.pluginsevil", "latentscape.session"):
        with pytest.raises(SceneError, match="not an allowed plugin module"):
            check_bundle_paths({"plugins": [{"name": "x", "module": evil}]}, tmp_path, toml)
    monkeypatch.setenv(PLUGIN_ALLOW_ENV, "my_studio_plugins")  # the operator's choice, not the scene's
    check_bundle_paths({"plugins": [{"name": "x", "module": "my_studio_plugins.guard:Guard"}]}, tmp_path, toml)
