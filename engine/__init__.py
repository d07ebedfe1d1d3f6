"""latentscape: a real-time neural rendering engine for generative art.

The engine package lives in ``engine/`` and imports as ``latentscape``; ``kernels/``,
``plugins/`` and ``tools/`` import as ``latentscape.kernels``, ``latentscape.plugins``
and ``latentscape.tools``. See ``docs/architecture.md`` for the layers.
"""

from latentscape.errors import LatentscapeError

__version__ = "0.1.0"

__all__ = ["LatentscapeError", "__version__"]
