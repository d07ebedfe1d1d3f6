"""Moved to :mod:`latentscape.tools.recipes.make_adapter`; kept because the demo's locked
``scene.toml`` quotes ``python -m latentscape.tools.make_adapter``."""

from latentscape.tools.recipes.make_adapter import main

if __name__ == "__main__":
    main()
