"""The render farm: a camera path split across Ray workers, resumable, deterministic,
fault tolerant (``latentscape farm render``; docs/farm.md).

Ray is optional (``pip install 'latentscape[farm]'``); importing this package does not
import it.
"""

from latentscape.farm.driver import FarmError, FarmJob, FarmReport, import_ray, normalize_address, run_farm, status
from latentscape.farm.manifest import FarmFolder

__all__ = ["FarmError", "FarmFolder", "FarmJob", "FarmReport", "import_ray", "normalize_address", "run_farm", "status"]
