"""The import direction of docs/architecture.md, enforced: kernels <- components <-
runtime <- applications. A module may import its own layer and the layers below,
never one above (imports inside functions count too); built-in plugins use only the
public hook API; nothing outside ``tools/`` imports ``latentscape.tools``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"engine": "latentscape", "kernels": "latentscape.kernels", "plugins": "latentscape.plugins",
           "tools": "latentscape.tools"}

BASE = ("latentscape", "latentscape.errors", "latentscape.config", "latentscape.outputs", "latentscape.interrupts")
"""Importable from every layer (and importing nothing but each other)."""
LAYERS = {
    0: ("latentscape.kernels",),
    1: ("latentscape.field", "latentscape.render", "latentscape.texture", "latentscape.stylize", "latentscape.lora",
        "latentscape.dataset", "latentscape.training"),
    2: ("latentscape.scene", "latentscape.scenes", "latentscape.frame", "latentscape.clock", "latentscape.session",
        "latentscape.hooks", "latentscape.plugin_host", "latentscape.sinks", "latentscape.testing", "latentscape.tracking",
        "latentscape.export"),
    3: ("latentscape.tools", "latentscape.serve", "latentscape.viewer", "latentscape.farm"),
}
NAMES = {0: "kernels", 1: "components", 2: "runtime", 3: "applications"}
PLUGIN_API = (*BASE, "latentscape.hooks")
"""What a built-in plugin may import: exactly what a third-party plugin gets."""


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def layer_of(name: str) -> int | None:
    """-1 for the base modules, 0-3 for a layer, None when no layer claims ``name``."""
    if name in BASE:
        return -1
    best = max(((len(p), layer) for layer, prefixes in LAYERS.items() for p in prefixes if _within(name, p)), default=None)
    return best[1] if best else None


def modules() -> dict[str, Path]:
    out = {}
    for folder, package in FOLDERS.items():
        for f in (ROOT / folder).rglob("*.py"):
            parts = [p for p in f.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            out[".".join([package, *parts])] = f
    return out


def imports_of(path: Path, name: str) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = name if path.name == "__init__.py" else name.rpartition(".")[0]
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                out.add(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                out.add(node.module)
    return {m for m in out if _within(m, "latentscape")}


MODULES = modules()


def test_every_module_has_a_layer():
    unplaced = sorted(n for n in MODULES if not _within(n, "latentscape.plugins") and layer_of(n) is None)
    assert not unplaced, f"add these to LAYERS here and to docs/architecture.md: {unplaced}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if not _within(n, "latentscape.plugins")))
def test_no_module_imports_a_higher_layer(name):
    mine = layer_of(name)
    bad = []
    for dep in sorted(imports_of(MODULES[name], name)):
        theirs = layer_of(dep)
        assert theirs is not None, f"{name} imports {dep}, which no layer claims"
        if mine == -1 and theirs != -1 or theirs > mine:
            bad.append(f"{dep} ({NAMES.get(theirs, 'base')})")
        if _within(dep, "latentscape.tools") and not _within(name, "latentscape.tools"):
            bad.append(f"{dep} (only tools/ imports tools/)")
    assert not bad, f"{name} ({NAMES.get(mine, 'base')}) imports a higher layer: {bad}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _within(n, "latentscape.plugins")))
def test_builtin_plugins_use_only_the_hook_api(name):
    bad = [d for d in imports_of(MODULES[name], name) if d not in PLUGIN_API and not _within(d, "latentscape.plugins")]
    assert not bad, f"{name} imports {bad}; plugins may import only {PLUGIN_API}"


def test_the_checker_sees_violations(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from latentscape.session import Session\n")
    assert imports_of(f, "latentscape.render.x") == {"latentscape.session"}
    f.write_text("from .cameras import Camera\nfrom .. import errors\n")
    assert imports_of(f, "latentscape.render.x") == {"latentscape.render.cameras", "latentscape"}
    assert layer_of("latentscape.render.x") == 1 and layer_of("latentscape.session") == 2
    assert layer_of("latentscape.kernels.reference.sh") == 0 and layer_of("latentscape.plugin_host.host") == 2


def test_architecture_page_names_every_layer_prefix():
    text = (ROOT / "docs" / "architecture.md").read_text()
    missing = [p for prefixes in LAYERS.values() for p in prefixes if f"`{p}" not in text]
    assert not missing, f"docs/architecture.md does not name {missing}"
