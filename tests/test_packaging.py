"""The package map in pyproject.toml covers every package folder, and no generic
top-level names (``engine``, ``kernels``...) are importable from site-packages."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAP = {"engine": "latentscape", "kernels": "latentscape.kernels", "plugins": "latentscape.plugins",
       "tools": "latentscape.tools", "scenes": "latentscape.scenes"}


def _declared():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(cfg["packages"]), cfg["package-dir"]


def test_every_package_folder_is_declared():
    declared, package_dir = _declared()
    for top, name in MAP.items():
        assert package_dir[name] == top
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top)
            if any(part.startswith((".", "_")) or part == "example_plugin" for part in rel.parts):
                continue
            # A folder under engine/ that is also mapped elsewhere is counted once.
            dotted = ".".join((name, *rel.parts)) if rel.parts else name
            if top == "engine" and rel.parts and rel.parts[0] in {"kernels", "plugins", "tools", "scenes"}:
                continue
            assert dotted in declared, f"{init.parent} has an __init__.py but {dotted} is not in pyproject packages"


def test_declared_packages_exist():
    declared, package_dir = _declared()
    for name in declared:
        base = max((k for k in package_dir if name == k or name.startswith(k + ".")), key=len)
        folder = ROOT / package_dir[base] / Path(*name[len(base):].strip(".").split(".")) if name != base else ROOT / package_dir[base]
        assert (folder / "__init__.py").is_file(), name


def test_import_names():
    import latentscape
    import latentscape.kernels
    import latentscape.plugins
    import latentscape.tools.cli

    assert Path(latentscape.__file__).parent.name == "engine"
    assert Path(latentscape.kernels.__file__).parent.name == "kernels"
