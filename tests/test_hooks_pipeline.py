"""Wiring: scene.toml [guardrails] / [[plugins]] / [adapters] -> Session (assemble) -> `latentscape render --audit-log`."""

from __future__ import annotations

import json

import pytest

from latentscape.plugin_host import PluginHost
from latentscape.testing import make_tiny_scene


pytestmark = pytest.mark.usefixtures("one_thread")


def scene_with_plugins(tmp_path):
    cfg = {
        "guardrails": {"slate": "#202020", "budget_ms": 500.0, "audit_log": "audit.jsonl"},
        "plugins": [
            {"name": "flash_guard", "module": "latentscape.plugins.flash", "isolation": "inline", "settings": {"mode": "hold"}},
            {"name": "brand", "module": "latentscape.plugins.palette", "settings": {"max_luminance": 1.0}},
        ],
    }
    path = make_tiny_scene(tmp_path / "scene", adapters=("warm",), extra_config=cfg)
    text = (path / "scene.toml").read_text()
    assert "[[plugins]]" in text and "[plugins.settings]" in text  # the documented TOML shape
    return path


def test_session_assembles_scene_toml(tmp_path):
    from latentscape.session import Session

    with Session.open(scene_with_plugins(tmp_path), audit_log=tmp_path / "cli_audit.jsonl") as s:
        sc = s.scene
        assert isinstance(s.hooks, PluginHost) and s.adapters.names() == {"nerf.color": ["warm"]}
        assert [p.name for p in s.hooks.plugins] == ["flash_guard", "brand"]
        s.request_adapter("nerf.color", "warm")
        fr = s.render(0)
        assert fr.context.adapters["nerf.color"].startswith("warm@")
    assert s.closed
    rec = [json.loads(x) for x in (tmp_path / "cli_audit.jsonl").read_text().splitlines()]
    assert {r["plugin"] for r in rec} == {"flash_guard", "brand"} and all(r["scene_version"] == sc.version for r in rec)


def test_render_cli_audit_log(tmp_path):
    from typer.testing import CliRunner

    from latentscape.tools.cli import app

    scene = scene_with_plugins(tmp_path)
    audit = tmp_path / "render_audit.jsonl"
    res = CliRunner().invoke(app, ["render", str(scene), "--out", str(tmp_path / "frames"), "--frames", "3",
                                   "--audit-log", str(audit)])
    assert res.exit_code == 0, res.output
    rec = [json.loads(x) for x in audit.read_text().splitlines()]
    assert [r["frame"] for r in rec if r["plugin"] == "flash_guard"] == [0, 1, 2]
    assert len(list((tmp_path / "frames").glob("*.png"))) == 3


def test_scene_without_plugins_passes_frames(tmp_path):
    from latentscape.scene import load_scene
    from latentscape.scene.assemble import assemble

    parts = assemble(load_scene(make_tiny_scene(tmp_path / "plain")))
    assert parts.adapters is None and parts.hooks.plugins == []
    parts.close()
